//! Writing changed settings back into the configuration file, so a restart keeps them.
//!
//! The file is edited, not regenerated: `toml_edit` changes the values of the keys set and
//! keeps every comment, blank line, key order and unrelated value byte for byte. The result
//! is checked to load as a valid configuration before anything is written, then replaces
//! the file atomically (a temporary file beside it, synced, renamed over it, with the old
//! file's mode), so a crash leaves the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, Value};

use super::SettingsChange;
use crate::config::{CertificateSource, Config, ConfigError, DEFAULT_TEMPLATE};

/// Mode of a configuration file the gateway creates: like `gateway config init` under the
/// usual umask. The file holds no secret.
const NEW_FILE_MODE: u32 = 0o644;

/// Where settings are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsFile {
    pub path: PathBuf,
    /// The gateway started without a configuration file: the first change creates this one
    /// from the commented template. When false, a file that has disappeared is an error
    /// rather than replaced by defaults the running gateway never had.
    pub create_if_missing: bool,
}

/// Why the configuration file could not be updated. Nothing was changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "the configuration file {} no longer exists; restore it (nothing was changed)",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "the configuration file {} is not valid TOML ({message}); correct it by hand (nothing was changed)",
        path.display()
    )]
    NotToml { path: PathBuf, message: String },
    #[error(
        "`{key}` in the configuration file {} is not a table; correct it by hand (nothing was changed)",
        path.display()
    )]
    NotATable { path: PathBuf, key: &'static str },
    /// The file, with the change, would not load: it was edited into an invalid state since
    /// the gateway started.
    #[error(
        "the configuration file {} would not load after the change ({source}); correct it by hand (nothing was changed)",
        path.display()
    )]
    WouldNotLoad {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    #[error("cannot write the configuration file {}: {cause} (nothing was changed)", path.display())]
    Write { path: PathBuf, cause: io::Error },
}

/// Sets the changed keys in the configuration file, keeping everything else; creates the
/// file from the template when allowed. Returns the configuration the file now holds.
pub fn update(file: &SettingsFile, change: &SettingsChange) -> Result<Config, ConfigFileError> {
    rewrite(file, DEFAULT_TEMPLATE, |text, path| {
        edit(text, change, path)
    })
}

/// Rewrites `[tls]` for a certificate source chosen at run time (ACME ordered, a
/// self-signed or imported certificate chosen instead): `source` and its keys are set, keys
/// of other sources removed, every other line kept.
pub fn update_tls(
    file: &SettingsFile,
    source: &CertificateSource,
) -> Result<Config, ConfigFileError> {
    rewrite(file, DEFAULT_TEMPLATE, |text, path| {
        edit_tls(text, source, path)
    })
}

/// One change `gateway setup` makes to the file.
#[derive(Clone, Debug)]
pub enum KeyEdit {
    /// `[table] key = value`, keeping the old value's comment.
    Set {
        table: &'static str,
        key: &'static str,
        value: toml_edit::Value,
    },
}

/// Applies `edits` to the configuration file (created from `template` when missing and
/// allowed), with the same guarantees as [`update`]: comments kept, the result validated
/// before anything is written, the file replaced atomically.
/// `tls`, when given, rewrites `[tls]` for that source as [`update_tls`] does.
pub fn apply_edits(
    file: &SettingsFile,
    template: &str,
    edits: &[KeyEdit],
    tls: Option<&CertificateSource>,
) -> Result<Config, ConfigFileError> {
    rewrite(file, template, |text, path| {
        let edited = edit_keys(text, edits, path)?;
        match tls {
            Some(source) => edit_tls(&edited, source, path),
            None => Ok(edited),
        }
    })
}

/// The text with `edits` applied; comments and every other byte are kept.
pub fn edit_keys(text: &str, edits: &[KeyEdit], path: &Path) -> Result<String, ConfigFileError> {
    let mut doc = parse(text, path)?;
    for edit in edits {
        match edit {
            KeyEdit::Set { table, key, value } => set_value(&mut doc, table, key, value.clone()),
        }
        .map_err(|key| ConfigFileError::NotATable {
            path: path.to_owned(),
            key,
        })?;
    }
    Ok(doc.to_string())
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut, ConfigFileError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| ConfigFileError::NotToml {
            path: path.to_owned(),
            // The parser's message spans lines (it quotes the offending one).
            message: e.message().replace('\n', " "),
        })
}

/// Reads the file (or `template` when it is missing and may be created), applies `change`,
/// checks the result loads, and replaces the file atomically with its mode and owner kept.
fn rewrite(
    file: &SettingsFile,
    template: &str,
    change: impl FnOnce(&str, &Path) -> Result<String, ConfigFileError>,
) -> Result<Config, ConfigFileError> {
    // Write through a symbolic link (a file kept by configuration management) rather than
    // replacing the link with a plain file.
    let path = match fs::canonicalize(&file.path) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => file.path.clone(),
        Err(cause) => {
            return Err(ConfigFileError::Read {
                path: file.path.clone(),
                cause,
            })
        }
    };
    let existing = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(cause) => return Err(ConfigFileError::Read { path, cause }),
    };
    let text = match &existing {
        Some(text) => text.as_str(),
        None if file.create_if_missing => template,
        None => return Err(ConfigFileError::Missing { path }),
    };
    let edited = change(text, &path)?;
    let config =
        Config::from_toml_str(&edited).map_err(|source| ConfigFileError::WouldNotLoad {
            path: path.clone(),
            source: Box::new(source),
        })?;
    let write_error = |cause| ConfigFileError::Write {
        path: path.clone(),
        cause,
    };
    let owner = match &existing {
        Some(_) => {
            // A file the administrator made read-only for us stays unchanged: replacing it
            // by rename would go around its permissions.
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(write_error)?;
            let meta = fs::metadata(&path).map_err(write_error)?;
            Some((meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()))
        }
        None => None,
    };
    let mode = owner.map_or(NEW_FILE_MODE, |(mode, _, _)| mode);
    let ids = owner.map(|(_, uid, gid)| (uid, gid));
    replace(&path, edited.as_bytes(), mode, ids).map_err(write_error)?;
    Ok(config)
}

/// The text with the changed keys set. Comments and every other byte are kept; a value's
/// trailing comment stays with the new value. Missing tables and keys are added at the end.
pub fn edit(text: &str, change: &SettingsChange, path: &Path) -> Result<String, ConfigFileError> {
    let mut doc = parse(text, path)?;
    let mut set = |table: &'static str, key: &str, value: &str| {
        set_string(&mut doc, table, key, value).map_err(|key| ConfigFileError::NotATable {
            path: path.to_owned(),
            key,
        })
    };
    if let Some(domain) = &change.email_domain {
        set("gateway", "email_domain", domain)?;
    }
    if let Some(level) = change.log_level {
        set("gateway", "log_level", level.as_str())?;
    }
    if let Some(language) = change.console_language {
        set("console", "language", language.as_str())?;
    }
    Ok(doc.to_string())
}

/// The commented template with `[gateway] data_dir` set, for `gateway config init
/// --data-dir` (packages put the data directory outside the working directory).
pub fn template_with_data_dir(data_dir: &Path) -> Result<String, ConfigFileError> {
    let mut doc: DocumentMut = DEFAULT_TEMPLATE
        .parse()
        .expect("the built-in template is valid TOML");
    let path = data_dir.to_string_lossy();
    set_string(&mut doc, "gateway", "data_dir", &path).map_err(|key| {
        ConfigFileError::NotATable {
            path: PathBuf::from("(built-in template)"),
            key,
        }
    })?;
    Ok(doc.to_string())
}

/// Keys of `[tls]` that belong to one source or another (the renewal keys included: they
/// start with `acme_`).
const FILES_KEYS: [&str; 2] = ["certificate_chain", "private_key"];

/// The text with `[tls]` describing `source`.
pub fn edit_tls(
    text: &str,
    source: &CertificateSource,
    path: &Path,
) -> Result<String, ConfigFileError> {
    let mut doc = parse(text, path)?;
    set_string(&mut doc, "tls", "source", source.name()).map_err(|key| {
        ConfigFileError::NotATable {
            path: path.to_owned(),
            key,
        }
    })?;
    let not_a_table = |key| ConfigFileError::NotATable {
        path: path.to_owned(),
        key,
    };
    let tls = doc
        .get_mut("tls")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| not_a_table("tls"))?;
    let keys: Vec<String> = tls.iter().map(|(key, _)| key.to_owned()).collect();
    let acme = matches!(source, CertificateSource::Acme(_));
    let files = matches!(source, CertificateSource::Files { .. });
    for key in keys {
        let foreign =
            (key.starts_with("acme_") && !acme) || (FILES_KEYS.contains(&key.as_str()) && !files);
        if foreign {
            tls.remove(&key);
        }
    }
    let mut set = |key: &'static str, value: Option<Value>| match value {
        Some(new) => set_in_table(tls, key, new),
        None => {
            tls.remove(key);
        }
    };
    match source {
        CertificateSource::SelfSigned => {}
        CertificateSource::Files {
            certificate_chain,
            private_key,
        } => {
            set(
                "certificate_chain",
                Some(Value::from(certificate_chain.display().to_string())),
            );
            set(
                "private_key",
                Some(Value::from(private_key.display().to_string())),
            );
        }
        CertificateSource::Acme(acme) => {
            set(
                "acme_directory_url",
                Some(Value::from(acme.directory_url.as_str())),
            );
            set(
                "acme_contact_email",
                acme.contact_email.as_deref().map(Value::from),
            );
            set(
                "acme_ca_file",
                acme.ca_file
                    .as_ref()
                    .map(|p| Value::from(p.display().to_string())),
            );
            set(
                "acme_domains",
                (!acme.domains.is_empty())
                    .then(|| Value::Array(acme.domains.iter().map(String::as_str).collect())),
            );
            set(
                "acme_staging_directory_url",
                acme.staging_directory_url.as_deref().map(Value::from),
            );
        }
    }
    Ok(doc.to_string())
}

/// Sets `key = new` in a table, keeping an old value's decor (white space, comment).
fn set_in_table(table: &mut dyn toml_edit::TableLike, key: &str, mut new: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
        Some(other) => *other = Item::Value(new),
        None => {
            table.insert(key, Item::Value(new));
        }
    }
}

/// Sets `[table] key = "value"`; the error names a `table` that is not one.
fn set_string(
    doc: &mut DocumentMut,
    table: &'static str,
    key: &str,
    value: &str,
) -> Result<(), &'static str> {
    set_value(doc, table, key, Value::from(value))
}

/// Sets `[table] key = value`; the error names a `table` that is not one.
fn set_value(
    doc: &mut DocumentMut,
    table: &'static str,
    key: &str,
    value: Value,
) -> Result<(), &'static str> {
    let item = doc.as_table_mut().entry(table).or_insert_with(|| {
        let mut new = Table::new();
        // A blank line before a table the gateway adds, as between the template's tables.
        new.decor_mut().set_prefix("\n");
        Item::Table(new)
    });
    let table_like = item.as_table_like_mut().ok_or(table)?;
    set_in_table(table_like, key, value);
    Ok(())
}

/// Atomically replaces `path` with `bytes`: a temporary file in the same directory (so the
/// rename cannot cross file systems), synced, given `mode` (and the old owner, where the
/// process may set it), renamed over the file; then the directory is synced so the rename
/// itself survives a crash.
fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".gateway-config.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        let meta = temp.as_file().metadata()?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            // Only root (or the owner, for one of its groups) may; otherwise the file
            // becomes the gateway user's, which can write it anyway.
            if let Err(e) = std::os::unix::fs::fchown(temp.as_file(), Some(uid), Some(gid)) {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "the configuration file's owner could not be kept; it now belongs to the gateway's user"
                );
            }
        }
    }
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AcmeSettings, Language, LogLevel};

    const HAND_WRITTEN: &str = r#"# Our archive gateway. Managed by ops.

[gateway]
email_domain = "old.example"   # the journal domain
host_name = "mx.example"
# quiet please
log_level = "warn"

[smtp]
# only the journal server
allowed_networks = ["192.0.2.0/24"]
"#;

    fn change() -> SettingsChange {
        SettingsChange {
            email_domain: Some("new.example".into()),
            log_level: Some(LogLevel::Debug),
            console_language: Some(Language::De),
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("gateway.toml");
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_template_with_a_data_dir_keeps_its_comments_and_loads_with_it() {
        let text = template_with_data_dir(Path::new("/var/lib/gateway")).expect("template");
        let config = Config::from_toml_str(&text).expect("loads");
        assert_eq!(config.gateway.data_dir, Path::new("/var/lib/gateway"));
        assert_eq!(
            text.lines().count(),
            DEFAULT_TEMPLATE.lines().count(),
            "only the value changed"
        );
    }

    /// The Debian package ships `contrib/gateway.toml`; it must stay the current template.
    /// Regenerate it with `gateway --data-dir /var/lib/gateway config init --force
    /// contrib/gateway.toml`.
    #[test]
    fn the_packaged_configuration_is_the_template_with_the_package_data_dir() {
        let packaged = include_str!("../../../contrib/gateway.toml");
        assert_eq!(
            packaged,
            template_with_data_dir(Path::new("/var/lib/gateway")).expect("template"),
            "contrib/gateway.toml is stale: regenerate it (see this test's comment)"
        );
    }

    #[test]
    fn comments_and_other_keys_survive_and_missing_tables_are_added() {
        let edited = edit(HAND_WRITTEN, &change(), Path::new("gateway.toml")).unwrap();
        assert_eq!(
            edited,
            r#"# Our archive gateway. Managed by ops.

[gateway]
email_domain = "new.example"   # the journal domain
host_name = "mx.example"
# quiet please
log_level = "debug"

[smtp]
# only the journal server
allowed_networks = ["192.0.2.0/24"]

[console]
language = "de"
"#
        );
    }

    #[test]
    fn only_the_keys_changed_are_touched() {
        let only_level = SettingsChange {
            log_level: Some(LogLevel::Error),
            ..SettingsChange::default()
        };
        let edited = edit(HAND_WRITTEN, &only_level, Path::new("gateway.toml")).unwrap();
        assert_eq!(
            edited,
            HAND_WRITTEN.replace("log_level = \"warn\"", "log_level = \"error\"")
        );
    }

    #[test]
    fn dotted_and_inline_tables_are_edited_in_their_own_form() {
        let dotted = "gateway.email_domain = \"old.example\"\n";
        let edited = edit(dotted, &change(), Path::new("g.toml")).unwrap();
        assert!(
            edited.starts_with(
                "gateway.email_domain = \"new.example\"\ngateway.log_level = \"debug\"\n"
            ),
            "{edited}"
        );
        let inline = "gateway = { email_domain = \"old.example\" }\n";
        let edited = edit(inline, &change(), Path::new("g.toml")).unwrap();
        let config = Config::from_toml_str(&edited).unwrap();
        assert_eq!(config.gateway.email_domain, "new.example");
        assert_eq!(config.gateway.log_level, LogLevel::Debug);
        assert_eq!(config.console.language, Language::De);
    }

    #[test]
    fn a_table_that_is_not_one_is_refused() {
        let error = edit("gateway = 5\n", &change(), Path::new("g.toml")).unwrap_err();
        assert!(
            matches!(error, ConfigFileError::NotATable { key: "gateway", .. }),
            "{error}"
        );
        let error = edit("[gateway\n", &change(), Path::new("g.toml")).unwrap_err();
        assert!(matches!(error, ConfigFileError::NotToml { .. }), "{error}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }

    #[test]
    fn update_keeps_the_mode_and_reloads_to_the_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), HAND_WRITTEN);
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let file = SettingsFile {
            path: path.clone(),
            create_if_missing: false,
        };
        let returned = update(&file, &change()).unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded, returned);
        assert_eq!(loaded.gateway.email_domain, "new.example");
        assert_eq!(loaded.gateway.log_level, LogLevel::Debug);
        assert_eq!(loaded.console.language, Language::De);
        assert_eq!(loaded.gateway.host_name, "mx.example");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["gateway.toml"]);
    }

    #[test]
    fn without_a_file_the_commented_template_is_written_with_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        let file = SettingsFile {
            path: path.clone(),
            create_if_missing: true,
        };
        update(&file, &change()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let expected = DEFAULT_TEMPLATE
            .replace(
                "email_domain = \"localhost\"",
                "email_domain = \"new.example\"",
            )
            .replace("log_level = \"info\"", "log_level = \"debug\"")
            .replace("language = \"en\"", "language = \"de\"");
        assert_eq!(text, expected);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, NEW_FILE_MODE);
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.gateway.email_domain, "new.example");
        assert_eq!(loaded.console.language, Language::De);
    }

    #[test]
    fn a_configuration_file_that_vanished_is_not_replaced_by_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile {
            path: dir.path().join("gateway.toml"),
            create_if_missing: false,
        };
        let error = update(&file, &change()).unwrap_err();
        assert!(matches!(error, ConfigFileError::Missing { .. }), "{error}");
        assert!(!file.path.exists());
    }

    #[test]
    fn a_file_edited_into_an_invalid_state_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let broken = HAND_WRITTEN.replace("[smtp]", "[smtp]\nrequire_tls = \"yes\"");
        let path = write(dir.path(), &broken);
        let file = SettingsFile {
            path: path.clone(),
            create_if_missing: false,
        };
        let error = update(&file, &change()).unwrap_err();
        assert!(
            matches!(error, ConfigFileError::WouldNotLoad { .. }),
            "{error}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    }

    #[test]
    fn a_symbolic_link_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(dir.path(), HAND_WRITTEN);
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let file = SettingsFile {
            path: link.clone(),
            create_if_missing: false,
        };
        update(&file, &change()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let loaded = Config::load(&target).unwrap();
        assert_eq!(loaded.gateway.email_domain, "new.example");
    }

    #[test]
    fn tls_is_rewritten_for_acme_and_back_keeping_comments() {
        let text = "[gateway]\nhost_name = \"mx.example\"\n\n[tls]\n# where the certificate comes from\nsource = \"self-signed\"   # for now\n";
        let acme = CertificateSource::Acme(AcmeSettings {
            directory_url: "https://ca.test/dir".into(),
            contact_email: Some("ops@example.com".into()),
            ca_file: None,
            domains: vec!["mx.example".into(), "mail.example".into()],
            staging_directory_url: None,
        });
        let edited = edit_tls(text, &acme, Path::new("gateway.toml")).unwrap();
        assert!(
            edited.contains("# where the certificate comes from\nsource = \"acme\"   # for now\n"),
            "{edited}"
        );
        let config = Config::from_toml_str(&edited).unwrap();
        assert_eq!(config.tls.source, acme);

        let back = edit_tls(
            &edited,
            &CertificateSource::SelfSigned,
            Path::new("gateway.toml"),
        )
        .unwrap();
        assert!(!back.contains("acme_"), "{back}");
        assert_eq!(
            Config::from_toml_str(&back).unwrap().tls.source,
            CertificateSource::SelfSigned
        );
        assert!(
            back.contains("# where the certificate comes from"),
            "{back}"
        );
    }
}
