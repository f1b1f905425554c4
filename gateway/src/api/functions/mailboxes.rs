//! Mailbox functions. A mailbox is named by `id`: its id or its address.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Function, NoParams};
use crate::api::{Api, ApiError, Caller};
use crate::mailbox::{parse_id_or_address, MailboxId};
use crate::service::{MailboxInfo, NewMailbox};
use crate::store::MailboxStatus;

/// Names one mailbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxParams {
    /// The mailbox id (`mbx-` and 32 hex digits) or its address.
    #[schema(pattern = r"^\s*[mM][bB][xX]-[0-9a-fA-F]{32}(@[^@]*)?\s*$")]
    pub id: String,
}

fn mailbox_id(text: &str) -> Result<MailboxId, ApiError> {
    Ok(parse_id_or_address(text)?)
}

pub struct GetMailboxes;

impl Function for GetMailboxes {
    const NAME: &'static str = "GetMailboxes";
    const SUMMARY: &'static str =
        "All mailboxes with their message count, stored bytes and oldest message.";
    type Params = NoParams;
    type Output = Vec<MailboxInfo>;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<Vec<MailboxInfo>, ApiError> {
        Ok(api.gateway().list_mailboxes()?)
    }
}

pub struct GetMailbox;

impl Function for GetMailbox {
    const NAME: &'static str = "GetMailbox";
    const SUMMARY: &'static str = "One mailbox.";
    type Params = MailboxParams;
    type Output = MailboxInfo;

    async fn call(api: &Api, _: &Caller, p: MailboxParams) -> Result<MailboxInfo, ApiError> {
        Ok(api.gateway().mailbox(&mailbox_id(&p.id)?)?)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMailboxParams {
    /// A name for people, e.g. the company or the journal it receives.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub name: String,
    /// Free text.
    #[schema(
        nullable = false,
        max_length = 2000,
        pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*$"
    )]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub description: Option<String>,
}

/// A mailbox with its password, which is shown this once and never stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxWithPassword {
    #[serde(flatten)]
    pub mailbox: MailboxInfo,
    /// Shown only this once; without it nobody can decrypt this mailbox's mail.
    pub password: String,
}

impl From<NewMailbox> for MailboxWithPassword {
    fn from(created: NewMailbox) -> Self {
        let password = created.password.reveal_for_display().as_str().to_owned();
        Self {
            mailbox: created.info,
            password,
        }
    }
}

pub struct CreateMailbox;

impl Function for CreateMailbox {
    const NAME: &'static str = "CreateMailbox";
    const SUMMARY: &'static str =
        "Creates an active mailbox; the answer holds its password, shown only this once.";
    type Params = CreateMailboxParams;
    type Output = MailboxWithPassword;

    async fn call(
        api: &Api,
        _: &Caller,
        p: CreateMailboxParams,
    ) -> Result<MailboxWithPassword, ApiError> {
        let created = api
            .gateway()
            .create_mailbox(&p.name, p.description.as_deref().unwrap_or(""))
            .await?;
        Ok(created.into())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMailboxPropertiesParams {
    /// The mailbox id or its address.
    #[schema(pattern = r"^\s*[mM][bB][xX]-[0-9a-fA-F]{32}(@[^@]*)?\s*$")]
    pub id: String,
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub name: Option<String>,
    #[schema(
        nullable = false,
        max_length = 2000,
        pattern = r"^[^\x00-\x09\x0B-\x1F\x7F-\x9F]*$"
    )]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub description: Option<String>,
    /// `suspended` refuses new mail (temporarily) while pick-up goes on.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub status: Option<MailboxStatus>,
}

pub struct SetMailboxProperties;

impl Function for SetMailboxProperties {
    const NAME: &'static str = "SetMailboxProperties";
    const SUMMARY: &'static str =
        "Changes a mailbox's name, description or status (active or suspended).";
    type Params = SetMailboxPropertiesParams;
    type Output = MailboxInfo;

    async fn call(
        api: &Api,
        _: &Caller,
        p: SetMailboxPropertiesParams,
    ) -> Result<MailboxInfo, ApiError> {
        let id = mailbox_id(&p.id)?;
        let gateway = api.gateway();
        // Nothing to change changes nothing: the answer is the mailbox as it is.
        let mut info = gateway.mailbox(&id)?;
        if p.name.is_some() || p.description.is_some() {
            info = gateway
                .edit_mailbox(&id, p.name.as_deref(), p.description.as_deref())
                .await?;
        }
        if let Some(status) = p.status {
            if status != info.status {
                info = gateway.set_status(&id, status).await?;
            }
        }
        Ok(info)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    #[schema(value_type = String)]
    pub id: MailboxId,
    pub deleted: bool,
}

pub struct DeleteMailbox;

impl Function for DeleteMailbox {
    const NAME: &'static str = "DeleteMailbox";
    const SUMMARY: &'static str = "Deletes a mailbox that is suspended and empty.";
    type Params = MailboxParams;
    type Output = Deleted;

    async fn call(api: &Api, _: &Caller, p: MailboxParams) -> Result<Deleted, ApiError> {
        let id = mailbox_id(&p.id)?;
        api.gateway().delete_mailbox(&id).await?;
        Ok(Deleted { id, deleted: true })
    }
}

pub struct ResetMailboxPassword;

impl Function for ResetMailboxPassword {
    const NAME: &'static str = "ResetMailboxPassword";
    const SUMMARY: &'static str = "New key pair and password for a suspended, empty mailbox; the password is shown only this once.";
    type Params = MailboxParams;
    type Output = MailboxWithPassword;

    async fn call(
        api: &Api,
        _: &Caller,
        p: MailboxParams,
    ) -> Result<MailboxWithPassword, ApiError> {
        let id = mailbox_id(&p.id)?;
        Ok(api.gateway().reset_password(&id).await?.into())
    }
}
