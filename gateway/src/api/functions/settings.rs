//! What the product's Configuration Tool sets: email domain, log level, console language.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{Function, NoParams};
use crate::api::{Api, ApiError, Caller};
use crate::settings::{Settings, SettingsChange, SettingsError};

pub struct GetSettings;

impl Function for GetSettings {
    const NAME: &'static str = "GetSettings";
    const SUMMARY: &'static str = "The email domain, log level and console language in use.";
    type Params = NoParams;
    type Output = Settings;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<Settings, ApiError> {
        Ok(api.settings().current())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetSettingsParams {
    /// The domain of the mailbox addresses; new RCPTs are checked against it at once.
    #[schema(
        nullable = false,
        max_length = 253,
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub email_domain: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`; takes effect at once.
    #[schema(nullable = false, value_type = Option<crate::config::LogLevel>)]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub log_level: Option<String>,
    /// The console's language for administrators who have not chosen one: `en` or `de`.
    #[schema(nullable = false, value_type = Option<crate::config::Language>)]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub console_language: Option<String>,
}

pub struct SetSettings;

impl Function for SetSettings {
    const NAME: &'static str = "SetSettings";
    const SUMMARY: &'static str = "Changes settings: applied at once and saved in the configuration file (comments kept), all or nothing.";
    type Params = SetSettingsParams;
    type Output = Settings;

    async fn call(api: &Api, _: &Caller, p: SetSettingsParams) -> Result<Settings, ApiError> {
        let change = SettingsChange::parse(
            p.email_domain.as_deref(),
            p.log_level.as_deref(),
            p.console_language.as_deref(),
        )
        .map_err(settings_error)?;
        api.settings().apply(change).await.map_err(settings_error)
    }
}

fn settings_error(e: SettingsError) -> ApiError {
    match e {
        SettingsError::Invalid(_) => ApiError::new(400, "invalid_input", e.to_string()),
        SettingsError::File(_) | SettingsError::Reload(_) => {
            ApiError::new(503, "config", e.to_string())
        }
        SettingsError::Interrupted => ApiError::new(503, "error", e.to_string()),
        SettingsError::Shared(_) => ApiError::new(503, "storage", e.to_string()),
    }
}
