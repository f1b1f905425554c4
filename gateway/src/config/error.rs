//! The one error type of the configuration module.
//!
//! Every variant renders as a single line that names the offending key, so an operator can
//! fix the file from the message alone.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8, ...).
    // The cause is part of the one-line message, not a `#[source]`, so error chains printed
    // with `{:#}` do not repeat it.
    #[error("config file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The text is not valid TOML, or does not fit the expected shape (unknown key, wrong
    /// type, bad value for a typed field).
    #[error("{0}")]
    Parse(ParseError),
    /// The file parsed but a value breaks a semantic rule.
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key the error is about, when known (`limits.max_message_size`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse(p) => p.key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    /// Attaches the file name to a parse error (from_toml_str does not know it).
    pub(crate) fn in_file(self, path: PathBuf) -> Self {
        match self {
            ConfigError::Parse(mut p) => {
                p.path = Some(path);
                ConfigError::Parse(p)
            }
            other => other,
        }
    }
}

/// A TOML syntax or shape error, located by line, column and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file, when the text came from one.
    pub path: Option<PathBuf>,
    /// 1-based line and column of the offending text, when the parser reported a span.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path (`listen.smtp.port`), when the parser reported one.
    pub key: Option<String>,
    /// The parser's own description, on one line.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "config file {}: ", path.display())?,
            None => write!(f, "configuration: ")?,
        }
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ParseError {
    /// Converts a toml error, computing the line and column from its span over `text`.
    pub(crate) fn from_toml(error: &toml::de::Error, text: &str) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let (l, c) = line_column(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ParseError {
            path: None,
            line,
            column,
            key: key_path(error),
            message: one_line(error.message()),
        }
    }
}

/// The toml crate keeps the key path private but prints it as "in `a.b`" when it has no
/// input to quote, so render a copy without input and read it back. If a future toml
/// version changes that format we only lose the key, never the message (and a test notices).
fn key_path(error: &toml::de::Error) -> Option<String> {
    let mut bare = error.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let rest = rendered.strip_prefix(error.message())?;
    let start = rest.rfind("\nin `")? + "\nin `".len();
    let tail = rest.get(start..)?;
    let end = tail.rfind('`')?;
    let key = tail.get(..end)?;
    (!key.is_empty()).then(|| key.to_owned())
}

/// 1-based line and column (in characters) of byte offset `offset` in `text`. Works on
/// bytes so that an offset past the end or inside a character can never panic.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    // Count characters, i.e. bytes that are not UTF-8 continuation bytes.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count()
        + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        // Past the end and mid-character offsets do not panic.
        assert_eq!(line_column(text, 1000).0, 3);
        let _ = line_column(text, 8);
    }

    #[test]
    fn invalid_renders_key_and_message() {
        let e = ConfigError::invalid("limits.max_recipients", "must be at least 1, got 0");
        assert_eq!(
            e.to_string(),
            "invalid configuration: limits.max_recipients: must be at least 1, got 0"
        );
        assert_eq!(e.key(), Some("limits.max_recipients"));
    }
}
