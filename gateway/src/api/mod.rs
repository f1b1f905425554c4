//! The Management API: one dispatcher for every administrative function.
//!
//! The HTTPS listener, the local control socket and the CLI all call [`Api::invoke`]; none of
//! them implements a rule. A function is a typed [`functions::Function`]: its parameters and
//! result types give `get-metadata`, the OpenAPI document and the parameter parsing, so the
//! three cannot drift apart. Every rule about mailboxes stays in the service layer
//! ([`crate::service::Gateway`]); this module only checks who may call what and maps errors
//! to answers ([`envelope`]) in one place.

pub mod control;
pub mod envelope;
mod function_failed;
pub mod functions;
pub mod http;
pub mod jobs;
pub mod openapi;
mod server_context;

use std::net::IpAddr;
use std::sync::Arc;

pub use envelope::{Answer, ApiError, Envelope, EnvelopeError, StatusCode};
pub use function_failed::{into_result, FunctionFailed};
pub use functions::Access;
pub use server_context::{ListenerInfo, ListenerState, ServerContext};

use crate::service::Gateway;
use crate::settings::LiveSettings;

/// A function's parameters as the transport received them (form fields become strings).
pub type Params = serde_json::Map<String, serde_json::Value>;

/// Who calls. The transports authenticate and build this; [`Api::invoke`] decides what each
/// caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// On the gateway's own machine: the control socket (the operating system checked who
    /// may open it) or the CLI on a stopped gateway's store.
    Host,
    /// HTTP Basic as `admin` with the administrator's password.
    Admin { client: IpAddr },
    /// HTTP Basic as `admin` with the initial password, before the first login replaced it:
    /// only `ResetOwnPassword`, and only from the gateway's own machine.
    AdminFirstLogin { client: IpAddr },
    /// `Authorization: Bearer` with an API key.
    ApiKey { key_id: String, client: IpAddr },
}

impl Caller {
    /// The network address of a remote caller.
    pub fn client(&self) -> Option<IpAddr> {
        match self {
            Caller::Host => None,
            Caller::Admin { client }
            | Caller::AdminFirstLogin { client }
            | Caller::ApiKey { client, .. } => Some(*client),
        }
    }
}

/// The API over one running (or, for the CLI, stopped) gateway. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Gateway,
    settings: LiveSettings,
    server: ServerContext,
    jobs: jobs::Jobs,
}

impl Api {
    pub fn new(gateway: Gateway, settings: LiveSettings, server: ServerContext) -> Self {
        Self {
            inner: Arc::new(Inner {
                gateway,
                settings,
                server,
                jobs: jobs::Jobs::default(),
            }),
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.inner.settings
    }

    pub fn server(&self) -> &ServerContext {
        &self.inner.server
    }

    /// Runs `function` for `caller`. Never panics on input and always answers.
    pub async fn invoke(&self, caller: &Caller, function: &str, params: Params) -> Answer {
        let Some(spec) = functions::find(function) else {
            return ApiError::unknown_function(function).into_answer();
        };
        if let Err(refusal) = functions::check_access(spec.access(), caller) {
            // A host-only function does not exist for network callers.
            if spec.access() == Access::HostOnly {
                return ApiError::unknown_function(function).into_answer();
            }
            return refusal.into_answer();
        }
        match spec.call(self, caller, params).await {
            Ok(answer) => answer,
            Err(e) => e.into_answer(),
        }
    }

    /// Every function a network caller can invoke, with its parameters.
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::to_value(functions::metadata()).unwrap_or_default()
    }

    /// `POST /api/get-metadata`, which takes no parameters.
    pub fn get_metadata(&self, caller: &Caller, params: Params) -> Answer {
        if let Err(refusal) = functions::check_access(Access::Admin, caller) {
            return refusal.into_answer();
        }
        match serde_json::from_value::<functions::NoParams>(serde_json::Value::Object(params)) {
            Ok(_) => Answer::ok(self.metadata()),
            Err(e) => ApiError::invalid_parameters(e.to_string()).into_answer(),
        }
    }

    /// The runs of long-running functions.
    pub fn jobs(&self) -> &jobs::Jobs {
        &self.inner.jobs
    }

    /// `POST /api/get-status`: the status of a long-running function's run.
    pub async fn status(&self, caller: &Caller, params: Params) -> Answer {
        if let Err(refusal) = functions::check_access(Access::Admin, caller) {
            return refusal.into_answer();
        }
        match serde_json::from_value(serde_json::Value::Object(params)) {
            Ok(params) => self.inner.jobs.status(params).await,
            Err(e) => ApiError::invalid_parameters(e.to_string()).into_answer(),
        }
    }

    /// `GET /api/openapi.json`.
    pub fn openapi(&self) -> serde_json::Value {
        openapi::document()
    }
}

#[cfg(test)]
mod tests;

/// Set-ups shared by the API's, the HTTPS listener's and the console's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Api, ServerContext};
    use crate::service::Gateway;
    use crate::settings::{LiveSettings, SettingsFile};

    /// A test gateway with live settings saved beside its store.
    pub fn gateway_and_settings() -> (tempfile::TempDir, Gateway, LiveSettings) {
        let (dir, gateway) = crate::service::test_support::gateway();
        let settings = LiveSettings::new(
            &crate::config::Config::default(),
            gateway.email_domain_handle().clone(),
            None,
            SettingsFile {
                path: dir.path().join("gateway.toml"),
                create_if_missing: true,
            },
        );
        (dir, gateway, settings)
    }

    /// An API over a test gateway, without certificates or listeners.
    pub fn api(host_name: &str) -> (tempfile::TempDir, Api) {
        let (dir, gateway, settings) = gateway_and_settings();
        let server = ServerContext::new(host_name.into(), None, "self-signed");
        (dir, Api::new(gateway, settings, server))
    }
}
