//! The administrator's own functions: password and API keys.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Access, Function, NoParams};
use crate::api::{Api, ApiError, Caller};
use crate::service::ApiKeyInfo;

/// A password shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewPassword {
    /// The administrator's new password: store it now, it is not shown again.
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetOwnPasswordParams {
    /// The password in use now (`admin` at the first login).
    pub current_password: String,
}

pub struct ResetOwnPassword;

impl Function for ResetOwnPassword {
    const NAME: &'static str = "ResetOwnPassword";
    const SUMMARY: &'static str = "Replaces the administrator's password with a new random one, shown only this once. The first login with the initial password may call only this.";
    const ACCESS: Access = Access::OwnPassword;
    type Params = ResetOwnPasswordParams;
    type Output = NewPassword;

    async fn call(
        api: &Api,
        _: &Caller,
        p: ResetOwnPasswordParams,
    ) -> Result<NewPassword, ApiError> {
        let password = api
            .gateway()
            .reset_admin_password(Some(&p.current_password))
            .await?;
        Ok(NewPassword {
            password: password.reveal().to_owned(),
        })
    }
}

/// Recovery on the host (`gateway admin reset-password`): no current password needed, since
/// only root or the service user can reach the control socket or the store.
pub struct ResetAdminPassword;

impl Function for ResetAdminPassword {
    const NAME: &'static str = "ResetAdminPassword";
    const SUMMARY: &'static str =
        "Gives the administrator a new random password without the current one (host only).";
    const ACCESS: Access = Access::HostOnly;
    type Params = NoParams;
    type Output = NewPassword;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<NewPassword, ApiError> {
        let password = api.gateway().reset_admin_password(None).await?;
        Ok(NewPassword {
            password: password.reveal().to_owned(),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyParams {
    /// What the key is for, e.g. the script that uses it.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
}

/// An API key with the key itself, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKeyOutput {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// Send as `Authorization: Bearer <key>`; it is stored only as a hash and not shown again.
    pub key: String,
}

pub struct CreateApiKey;

impl Function for CreateApiKey {
    const NAME: &'static str = "CreateApiKey";
    const SUMMARY: &'static str =
        "Creates an API key for scripts; the key is shown only this once.";
    type Params = CreateApiKeyParams;
    type Output = NewApiKeyOutput;

    async fn call(
        api: &Api,
        _: &Caller,
        p: CreateApiKeyParams,
    ) -> Result<NewApiKeyOutput, ApiError> {
        let created = api.gateway().create_api_key(&p.name).await?;
        Ok(NewApiKeyOutput {
            key: created.key.reveal().to_owned(),
            info: created.info,
        })
    }
}

pub struct GetApiKeys;

impl Function for GetApiKeys {
    const NAME: &'static str = "GetApiKeys";
    const SUMMARY: &'static str = "The API keys: id, name, when created and when last used.";
    type Params = NoParams;
    type Output = Vec<ApiKeyInfo>;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<Vec<ApiKeyInfo>, ApiError> {
        Ok(api.gateway().api_keys()?)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeApiKeyParams {
    /// The key's id as `GetApiKeys` lists it.
    pub id: String,
}

/// The id is not echoed: the parameter may hold a whole key, which must not travel back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: bool,
}

pub struct RevokeApiKey;

impl Function for RevokeApiKey {
    const NAME: &'static str = "RevokeApiKey";
    const SUMMARY: &'static str = "Revokes an API key at once.";
    type Params = RevokeApiKeyParams;
    type Output = Revoked;

    async fn call(api: &Api, _: &Caller, p: RevokeApiKeyParams) -> Result<Revoked, ApiError> {
        api.gateway().revoke_api_key(&p.id).await?;
        Ok(Revoked { revoked: true })
    }
}
