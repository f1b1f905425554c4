//! How every management command reaches the API: through the running gateway's control
//! socket, or, when no gateway runs, by calling the same [`Api::invoke`] on the store
//! directly. Either way the command gets the same [`Answer`], so it prints the same thing
//! and fails with the same kinds. The store is never opened beside a running gateway: its
//! lock refuses that, and then the command says so.

use crate::api::control::{answer_as_host, socket_path, ControlClient, GET_STATUS};
use crate::api::{into_result, Answer, Api, Params, ServerContext, StatusCode};
use crate::config::Config;
use crate::service::{Gateway, ServiceError};
use crate::settings::{LiveSettings, SettingsFile};
use crate::store::StoreError;

/// The gateway a command administers: its configuration, and where a stopped gateway's
/// settings changes are saved (the file `serve` would use).
pub struct Target {
    pub config: Config,
    pub settings_file: SettingsFile,
}

/// Parameters from optional values; absent ones are left out.
pub fn params<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Params {
    pairs
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?.into())))
        .collect()
}

/// Calls `function` and returns its result, or the failure as an error.
pub fn call(target: &Target, function: &str, params: Params) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(answer(target, function, params))?;
    into_result(function, answer)
}

/// Calls a long-running `function` (see [`call_long`]), telling `progress` each new status
/// text only once.
pub fn call_polling(
    target: &Target,
    function: &str,
    params: Params,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let mut shown: Option<String> = None;
    call_long(target, function, params, &mut |_, text| {
        if shown.as_deref() != Some(text) {
            progress(text);
            shown = Some(text.to_owned());
        }
    })
}

/// The answer of the running gateway if one listens, else of the stopped gateway's store.
pub async fn answer(target: &Target, function: &str, params: Params) -> anyhow::Result<Answer> {
    Connection::open(target)
        .await?
        .invoke(function, params)
        .await
}

/// Calls a long-running function and polls it until it finishes, telling `progress` each
/// percentage and status text on the way; returns its result, or the failure as an error.
pub fn call_long(
    target: &Target,
    function: &str,
    params: Params,
    progress: &mut dyn FnMut(Option<u8>, &str),
) -> anyhow::Result<serde_json::Value> {
    // Two workers: on a stopped gateway the run (an ACME order, with its challenge listener
    // answering the CA) happens in this process while this thread polls it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        // One connection throughout: on a stopped gateway, the run lives in this process.
        let mut connection = Connection::open(target).await?;
        let mut answer = connection.invoke(function, params).await?;
        while answer.envelope.status_code == StatusCode::Running {
            let envelope = &answer.envelope;
            progress(
                envelope.percent_progress,
                envelope.status_text.as_deref().unwrap_or("started"),
            );
            let token = envelope
                .token
                .clone()
                .ok_or_else(|| anyhow::anyhow!("{function} is running but gave no token"))?;
            let version = envelope.status_version.unwrap_or(1).to_string();
            let poll = self::params([
                ("token", Some(token.as_str())),
                ("lastKnownStatusVersion", Some(version.as_str())),
                ("millisecondsTimeout", Some("30000")),
            ]);
            answer = connection.invoke(GET_STATUS, poll).await?;
        }
        anyhow::Ok(answer)
    })?;
    into_result(function, answer)
}

/// Where a command's functions run: the running gateway's control socket, or an API over
/// the stopped gateway's store in this process.
enum Connection {
    Socket(ControlClient),
    Local(Api),
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let config = &target.config;
        let data_dir = &config.gateway.data_dir;
        if let Some(client) = ControlClient::connect(data_dir).await? {
            return Ok(Connection::Socket(client));
        }
        let gateway = Gateway::open(config).map_err(|e| explain_open_error(e, config))?;
        // The certificate rules as the running gateway has them; an ACME order opens the
        // challenge listener itself. On a shared store a new certificate reaches the
        // running nodes.
        let certificates = std::sync::Arc::new(
            crate::tls::CertificateManager::from_config(config, None)
                .with_share(gateway.certificate_share()),
        );
        let server = ServerContext::new(
            config.gateway.host_name.clone(),
            None,
            certificates.source(),
        )
        .with_data_dir(data_dir.clone())
        .with_certificate_manager(certificates);
        let configured: Vec<_> = config
            .listeners()
            .into_iter()
            .map(|(name, addr)| (name, addr, true))
            .collect();
        server.set_listeners(&configured, &[], false);
        // Settings changed here are saved where the running gateway would save them; there is
        // no subscriber to change the level of.
        let settings = LiveSettings::new(
            config,
            gateway.email_domain_handle().clone(),
            None,
            target.settings_file.clone(),
        );
        // On a store other nodes share, an email domain set here is published for them
        // too, as a running node's `SetSettings` does; this node took the shared one when
        // the store opened.
        settings.share_through(gateway.store().coordination().clone());
        Ok(Connection::Local(Api::new(gateway, settings, server)))
    }

    async fn invoke(&mut self, function: &str, params: Params) -> anyhow::Result<Answer> {
        Ok(match self {
            Connection::Socket(client) => client.invoke(function, params).await?,
            Connection::Local(api) => answer_as_host(api, function, params).await,
        })
    }
}

fn explain_open_error(e: ServiceError, config: &Config) -> anyhow::Error {
    match e {
        // Locked, yet nobody answered on the socket: a gateway that is starting, stopping,
        // or too old to have one. The typed error stays in the chain for `--json`.
        ServiceError::Store(StoreError::Locked) => anyhow::Error::new(StoreError::Locked).context(format!(
            "the store is in use by a running gateway, but it does not answer on its control socket {}: \
             it may be starting or stopping (try again in a moment), or be a version without one (stop it first)",
            socket_path(&config.gateway.data_dir).display()
        )),
        other => anyhow::Error::new(other).context("cannot open the store"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;
    use serde_json::Value;

    #[test]
    fn a_failed_answer_is_an_error_with_its_message_details_and_stable_kind() {
        let answer = ApiError::new(409, "conflict", "suspend it first")
            .with_details("still holds 3 message(s)")
            .into_answer();
        let error = into_result("DeleteMailbox", answer).unwrap_err();
        assert_eq!(super::super::error_output::kind(&error), "conflict");
        assert_eq!(
            format!("{error:#}"),
            "suspend it first (still holds 3 message(s))"
        );
        let json = super::super::error_output::to_json(&error);
        assert_eq!(json["error"]["kind"], "conflict");

        // A kind this version does not know (a newer gateway) is reported as `error`.
        let answer = ApiError::new(400, "brand_new", "whatever").into_answer();
        let error = into_result("GetMailboxes", answer).unwrap_err();
        assert_eq!(super::super::error_output::kind(&error), "error");

        // A function the gateway lacks: it is older than this command.
        let answer = ApiError::unknown_function("ResetAdminPassword").into_answer();
        let error = into_result("ResetAdminPassword", answer).unwrap_err();
        assert_eq!(super::super::error_output::kind(&error), "unknown_function");
        assert!(error.to_string().contains("restart it with the version"));
    }

    #[test]
    fn a_succeeded_answer_gives_its_result() {
        let answer = Answer::ok(serde_json::json!({"a": 1}));
        assert_eq!(
            into_result("GetSettings", answer).unwrap(),
            serde_json::json!({"a": 1})
        );
    }

    #[test]
    fn absent_parameters_are_left_out() {
        let p = params([("id", Some("x")), ("name", None)]);
        assert_eq!(Value::Object(p), serde_json::json!({"id": "x"}));
    }
}
