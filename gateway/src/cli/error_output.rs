//! How a failed command reports its error.
//!
//! For people: `error: ...` on stderr. For a `--json` command: one JSON object on stdout with
//! a stable shape, so a script can parse failures like results:
//!
//! ```json
//! {"error": {"kind": "not_found", "message": "no mailbox mbx-..."}}
//! ```
//!
//! `kind` is one of the values [`kind`] returns and does not change between releases;
//! `message` is the human text and may. The exit code is the same either way.

use crate::config::ConfigError;
use crate::mailbox::InvalidMailboxId;
use crate::service::ServiceError;
use crate::store::StoreError;

/// The stable kinds, for scripts: the API's, so a script sees the same word either way.
pub use crate::api::envelope::KINDS;
use crate::api::envelope::{service_kind, store_kind};

/// Prints `error` the way the command's output is written.
pub fn report(error: &anyhow::Error, json: bool) {
    if json {
        println!("{}", to_json(error));
    } else {
        eprintln!("error: {error:#}");
    }
}

/// The JSON object for `error`.
pub fn to_json(error: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "kind": kind(error),
            "message": format!("{error:#}"),
        }
    })
}

/// The stable kind of `error`: the first cause in its chain that says what went wrong.
pub fn kind(error: &anyhow::Error) -> &'static str {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<crate::api::FunctionFailed>() {
            return e.kind;
        }
        if let Some(e) = cause.downcast_ref::<ServiceError>() {
            return service_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return store_kind(e);
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return "config";
        }
        if cause.downcast_ref::<InvalidMailboxId>().is_some() {
            return "invalid_input";
        }
        if let Some(e) = cause.downcast_ref::<crate::backup::BackupError>() {
            // The API's words, so `restore --json` and `CreateBackup` fail alike.
            return crate::api::envelope::backup_kind(e);
        }
    }
    "error"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;

    #[test]
    fn json_errors_have_a_stable_shape_and_kind() {
        let id = MailboxId::parse("mbx-0123456789abcdef0123456789abcdef").unwrap();
        let error = anyhow::Error::new(ServiceError::MailboxNotFound(id)).context("show");
        let value = to_json(&error);
        assert_eq!(value["error"]["kind"], "not_found");
        assert!(value["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("show: no mailbox"));
        assert_eq!(value.as_object().unwrap().len(), 1);
        assert_eq!(value["error"].as_object().unwrap().len(), 2);

        let locked = anyhow::Error::new(StoreError::Locked).context("the store is in use");
        assert_eq!(kind(&locked), "store_in_use");
        assert_eq!(kind(&anyhow::anyhow!("something else")), "error");
        for k in [kind(&error), kind(&locked)] {
            assert!(KINDS.contains(&k));
        }
    }
}
