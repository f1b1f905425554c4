//! `CreateBackup`: a consistent backup of the running gateway, written while mail flows.
//!
//! Where it may write: the host (control socket, CLI) names any absolute path, as an
//! administrator with a shell could. A network caller names only a folder under
//! `<data_dir>/backups/`: a backup holds the TLS private key and the proxy's retrieval key,
//! and an API key that could choose the path could drop those into a world-readable or
//! web-served directory, or fill another file system. The backup then leaves the machine
//! with the administrator's own tools.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::LongFunction;
use crate::api::jobs::Progress;
use crate::api::{Api, ApiError, Caller};
use crate::backup::{self, BackupKind, Manifest, Sources, BACKUPS_DIR};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackupParams {
    /// A new or empty directory. Over the network: a folder name (letters, digits, `.`,
    /// `_`, `-`), created under the data directory's `backups/`; on the gateway's machine
    /// also an absolute path.
    #[schema(pattern = r"^\s*[A-Za-z0-9][A-Za-z0-9._-]{0,63}\s*$")]
    pub directory: String,
}

/// A finished backup.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// Where it was written, on the gateway's machine.
    pub directory: String,
    pub manifest: Manifest,
}

pub struct CreateBackup;

impl LongFunction for CreateBackup {
    const NAME: &'static str = "CreateBackup";
    const SUMMARY: &'static str = "Writes a consistent backup of the store (messages stay \
         encrypted), the certificates, the proxy's retrieval key and the configuration, with \
         a manifest of SHA-256 checksums, while mail keeps flowing. Long-running: poll \
         get-status with the token.";
    type Params = CreateBackupParams;
    type Output = BackupResult;
    type Job = (Sources, PathBuf);

    async fn prepare(
        api: &Api,
        caller: &Caller,
        params: CreateBackupParams,
    ) -> Result<(Sources, PathBuf), ApiError> {
        let data_dir = api
            .server()
            .data_dir()
            .ok_or_else(|| ApiError::new(503, "error", "this gateway has no data directory"))?;
        let target = target(data_dir, caller, params.directory.trim())?;
        backup::prepare_target(&target)?;
        let sources = Sources {
            store: api.gateway().store().clone(),
            data_dir: data_dir.to_owned(),
            config_file: Some(api.settings().config_file().to_owned()),
        };
        Ok((sources, target))
    }

    async fn run(
        (sources, target): (Sources, PathBuf),
        progress: Progress,
    ) -> Result<BackupResult, ApiError> {
        let directory = target.display().to_string();
        let written = tokio::task::spawn_blocking(move || {
            backup::create_backup(
                &sources,
                &target,
                BackupKind::Backup,
                &mut |percent, text| progress.update(Some(percent), text),
            )
        })
        .await
        .map_err(|e| {
            ApiError::new(500, "error", "the backup stopped").with_details(e.to_string())
        })?;
        match written {
            Ok(manifest) => {
                tracing::info!(
                    directory,
                    mailboxes = manifest.mailboxes,
                    messages = manifest.messages,
                    "backup written"
                );
                Ok(BackupResult {
                    directory,
                    manifest,
                })
            }
            Err(e) => {
                tracing::error!(directory, error = %e, "backup failed");
                Err(e.into())
            }
        }
    }
}

/// Where a caller's backup goes (see the module's comment).
fn target(
    data_dir: &std::path::Path,
    caller: &Caller,
    directory: &str,
) -> Result<PathBuf, ApiError> {
    let path = std::path::Path::new(directory);
    if path.is_absolute() {
        return match caller {
            Caller::Host => Ok(path.to_owned()),
            _ => Err(ApiError::forbidden(format!(
                "over the network a backup goes into the data directory's {BACKUPS_DIR}/ folder: \
                 give a folder name; any other path only on the gateway's machine \
                 (gateway backup --to DIR)"
            ))),
        };
    }
    let plain = !directory.is_empty()
        && directory.len() <= 64
        && !directory.starts_with('.')
        && directory
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(ApiError::invalid_parameters(format!(
            "directory: give a folder name of letters, digits, `.`, `_` and `-` (created under \
             {BACKUPS_DIR}/ in the data directory){}",
            if matches!(caller, Caller::Host) {
                ", or an absolute path"
            } else {
                ""
            }
        )));
    }
    Ok(data_dir.join(BACKUPS_DIR).join(directory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    #[tokio::test]
    async fn an_api_key_backs_up_into_the_backups_folder_polling_for_the_result() {
        let (dir, gateway, settings) = crate::api::test_support::gateway_and_settings();
        let server = crate::api::ServerContext::new("mx.test".into(), None, "self-signed")
            .with_data_dir(dir.path().to_owned());
        let api = Api::new(gateway, settings, server);
        let caller = Caller::ApiKey {
            key_id: "k".into(),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let params = |directory: &str| {
            let mut p = crate::api::Params::new();
            p.insert("directory".into(), directory.into());
            p
        };
        let started = api.invoke(&caller, "CreateBackup", params("nightly")).await;
        assert_eq!(
            started.envelope.status_code,
            crate::api::StatusCode::Running
        );
        let token = started.envelope.token.unwrap();
        let mut version = started.envelope.status_version.unwrap();
        let done = loop {
            let mut poll = crate::api::Params::new();
            poll.insert("token".into(), token.clone().into());
            poll.insert("lastKnownStatusVersion".into(), version.to_string().into());
            poll.insert("millisecondsTimeout".into(), "60000".into());
            let status = api.status(&caller, poll).await;
            if status.envelope.status_code != crate::api::StatusCode::Running {
                break status;
            }
            version = status.envelope.status_version.unwrap();
        };
        assert_eq!(
            done.envelope.status_code,
            crate::api::StatusCode::Succeeded,
            "{done:?}"
        );
        let written = dir.path().join(BACKUPS_DIR).join("nightly");
        assert_eq!(
            done.envelope.result["directory"],
            written.display().to_string()
        );
        Manifest::read(&written).unwrap().verify(&written).unwrap();

        // The same folder again: refused at once, no run started.
        let again = api.invoke(&caller, "CreateBackup", params("nightly")).await;
        assert_eq!(again.http_status, 409, "{again:?}");
        assert!(again.envelope.token.is_none());
        let elsewhere = api.invoke(&caller, "CreateBackup", params("/tmp/x")).await;
        assert_eq!(elsewhere.http_status, 403);
    }

    #[test]
    fn network_callers_write_only_under_the_backups_folder() {
        let data = Path::new("/var/lib/gateway");
        let admin = Caller::Admin {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        assert_eq!(
            target(data, &admin, "nightly-1").unwrap(),
            Path::new("/var/lib/gateway/backups/nightly-1")
        );
        for bad in ["/tmp/x", "../x", "a/b", "..", ".hidden", "", "a b"] {
            assert!(target(data, &admin, bad).is_err(), "{bad}");
        }
        assert_eq!(
            target(data, &admin, "/srv/www").unwrap_err().http_status,
            403
        );
        assert_eq!(
            target(data, &Caller::Host, "/srv/backups/1").unwrap(),
            Path::new("/srv/backups/1")
        );
        assert!(target(data, &Caller::Host, "../x").is_err());
    }
}
