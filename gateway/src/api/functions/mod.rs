//! The registry of API functions.
//!
//! Each function is a type implementing [`Function`]: its name, who may call it, and typed
//! parameters and result. Parsing, `get-metadata` and the OpenAPI document all come from
//! these types, so what is documented is what is accepted.

mod admin;
mod backup;
mod certificates;
mod mailboxes;
mod server;
mod settings;

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use super::jobs::Progress;
use super::{Answer, Api, ApiError, Caller, Params};

/// Who may call a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Access {
    /// The administrator, by password or API key, and the host.
    Admin,
    /// Also the administrator's first login with the initial password (from loopback only).
    OwnPassword,
    /// Only on the gateway's machine (control socket, CLI); network callers never see it.
    HostOnly,
}

/// One API function.
pub trait Function: 'static {
    const NAME: &'static str;
    const SUMMARY: &'static str;
    const ACCESS: Access = Access::Admin;
    type Params: DeserializeOwned + ToSchema + Send + 'static;
    type Output: Serialize + ToSchema;

    fn call(
        api: &Api,
        caller: &Caller,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;
}

/// A function that takes long (a backup): `prepare` checks the parameters and what can be
/// refused at once, then `run` works in the background while the caller polls
/// `get-status` with the token the first answer gave (see [`super::jobs`]).
pub trait LongFunction: 'static {
    const NAME: &'static str;
    const SUMMARY: &'static str;
    const ACCESS: Access = Access::Admin;
    type Params: DeserializeOwned + ToSchema + Send;
    /// The result of the finished run.
    type Output: Serialize + ToSchema;
    /// What `prepare` hands to `run`.
    type Job: Send + 'static;

    fn prepare(
        api: &Api,
        caller: &Caller,
        params: Self::Params,
    ) -> impl Future<Output = Result<Self::Job, ApiError>> + Send;

    fn run(
        job: Self::Job,
        progress: Progress,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send + 'static;
}

/// For functions without parameters: anything given is refused, so a typo is noticed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// For optional parameters: absent is `None`, but an explicit JSON `null` is refused like
/// any other value of the wrong type (the schema says a string, and a form cannot send null).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A boolean parameter as JSON clients send it (`true`) and as form-encoded callers and the
/// CLI send it (`"true"`, any case, blanks ignored). The schema says both: [`flag_schema`].
pub fn flag<'de, D>(deserializer: D) -> Result<bool, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(deserializer)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "must be true or false, got `{text}`"
            ))),
        },
    }
}

/// [`flag`] for an optional parameter (absent is `None`, `null` refused as with [`present`]).
pub fn optional_flag<'de, D>(deserializer: D) -> Result<Option<bool>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    flag(deserializer).map(Some)
}

/// The schema of a [`flag`]: a JSON boolean, or the string `true`/`false`.
pub fn flag_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*(?i:true|false)\s*$")),
        )
        .build();
    Schema::OneOf(one_of)
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A function with its types erased, as the registry holds it.
pub trait Spec: Sync {
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    fn access(&self) -> Access;
    /// (name, schema) of the parameters object and of the result, plus the schemas they
    /// reference.
    fn params_schema(&self) -> NamedSchema;
    fn output_schema(&self) -> NamedSchema;
    /// Whether the function answers `running` with a token first (its result then comes
    /// from `get-status`).
    fn long_running(&self) -> bool {
        false
    }
    /// Runs the function: its result, or a long-running function's `running` answer.
    fn call<'a>(
        &'a self,
        api: &'a Api,
        caller: &'a Caller,
        params: Params,
    ) -> BoxFuture<'a, Result<Answer, ApiError>>;
}

/// A schema by name, with the schemas it refers to.
pub struct NamedSchema {
    pub name: Cow<'static, str>,
    pub schema: RefOr<Schema>,
    pub referenced: Vec<(String, RefOr<Schema>)>,
}

pub fn named_schema<T: ToSchema>() -> NamedSchema {
    let mut referenced = Vec::new();
    T::schemas(&mut referenced);
    NamedSchema {
        name: T::name(),
        schema: T::schema(),
        referenced,
    }
}

/// The part of [`Spec`] that [`Function`] and [`LongFunction`] both declare the same way,
/// as constants and types on `F`.
macro_rules! described_by_its_constants {
    () => {
        fn name(&self) -> &'static str {
            F::NAME
        }

        fn summary(&self) -> &'static str {
            F::SUMMARY
        }

        fn access(&self) -> Access {
            F::ACCESS
        }

        fn params_schema(&self) -> NamedSchema {
            named_schema::<F::Params>()
        }

        fn output_schema(&self) -> NamedSchema {
            named_schema::<F::Output>()
        }
    };
}

struct Entry<F>(PhantomData<fn() -> F>);

impl<F: Function> Spec for Entry<F> {
    described_by_its_constants!();

    fn call<'a>(
        &'a self,
        api: &'a Api,
        caller: &'a Caller,
        params: Params,
    ) -> BoxFuture<'a, Result<Answer, ApiError>> {
        Box::pin(async move {
            let output = F::call(api, caller, parse(params)?).await?;
            encode(output).map(Answer::ok)
        })
    }
}

fn parse<P: DeserializeOwned>(params: Params) -> Result<P, ApiError> {
    serde_json::from_value(serde_json::Value::Object(params))
        .map_err(|e| ApiError::invalid_parameters(e.to_string()))
}

fn encode<T: Serialize>(output: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(output).map_err(|e| {
        ApiError::new(500, "error", "the result could not be encoded").with_details(e.to_string())
    })
}

struct LongEntry<F>(PhantomData<fn() -> F>);

impl<F: LongFunction> Spec for LongEntry<F> {
    described_by_its_constants!();

    fn long_running(&self) -> bool {
        true
    }

    fn call<'a>(
        &'a self,
        api: &'a Api,
        caller: &'a Caller,
        params: Params,
    ) -> BoxFuture<'a, Result<Answer, ApiError>> {
        Box::pin(async move {
            let job = F::prepare(api, caller, parse(params)?).await?;
            Ok(api
                .jobs()
                .start(|progress| async move { encode(F::run(job, progress).await?) }))
        })
    }
}

const fn entry<F: Function>() -> &'static dyn Spec {
    &Entry::<F>(PhantomData)
}

const fn long_entry<F: LongFunction>() -> &'static dyn Spec {
    &LongEntry::<F>(PhantomData)
}

/// Every function, in the order `get-metadata` lists them.
pub static FUNCTIONS: &[&dyn Spec] = &[
    entry::<mailboxes::GetMailboxes>(),
    entry::<mailboxes::GetMailbox>(),
    entry::<mailboxes::CreateMailbox>(),
    entry::<mailboxes::SetMailboxProperties>(),
    entry::<mailboxes::DeleteMailbox>(),
    entry::<mailboxes::ResetMailboxPassword>(),
    entry::<server::GetServerInfo>(),
    entry::<server::GetCertificateInfo>(),
    entry::<certificates::CreateSelfSignedCertificate>(),
    entry::<certificates::ImportCertificate>(),
    long_entry::<certificates::RequestAcmeCertificate>(),
    long_entry::<certificates::RenewCertificate>(),
    entry::<settings::GetSettings>(),
    entry::<settings::SetSettings>(),
    entry::<admin::ResetOwnPassword>(),
    entry::<admin::CreateApiKey>(),
    entry::<admin::GetApiKeys>(),
    entry::<admin::RevokeApiKey>(),
    entry::<admin::ResetAdminPassword>(),
    long_entry::<backup::CreateBackup>(),
];

pub fn find(name: &str) -> Option<&'static dyn Spec> {
    FUNCTIONS.iter().copied().find(|f| f.name() == name)
}

/// Whether `caller` may call a function with `access`.
pub fn check_access(access: Access, caller: &Caller) -> Result<(), ApiError> {
    match (access, caller) {
        (_, Caller::Host) => Ok(()),
        (Access::HostOnly, _) => Err(ApiError::forbidden(
            "this function is available only on the gateway's machine",
        )),
        (_, Caller::AdminFirstLogin { client }) if !client.is_loopback() => {
            Err(ApiError::forbidden(FIRST_LOGIN_FROM_LOOPBACK))
        }
        (Access::OwnPassword, _) => Ok(()),
        (Access::Admin, Caller::AdminFirstLogin { .. }) => {
            Err(ApiError::forbidden(FIRST_LOGIN_REQUIRED))
        }
        (Access::Admin, Caller::Admin { .. } | Caller::ApiKey { .. }) => Ok(()),
    }
}

pub const FIRST_LOGIN_REQUIRED: &str = "the administrator still has the initial password: call \
     ResetOwnPassword with currentPassword=admin to get the new password first";
pub const FIRST_LOGIN_FROM_LOOPBACK: &str = "the administrator still has the initial password: \
     replace it from the gateway's own machine (https://127.0.0.1) first";

/// What `get-metadata` says of a function.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionMetadata {
    pub name: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub args: Vec<Argument>,
}

/// One parameter of a function (every value travels as a string).
#[derive(Debug, Serialize, ToSchema)]
pub struct Argument {
    pub name: String,
    /// The JSON type (`string`).
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub description: Option<String>,
    /// The values allowed, when the parameter takes one of a few words.
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<String>>,
}

/// `get-metadata`: each network-callable function with its parameters.
pub fn metadata() -> Vec<FunctionMetadata> {
    FUNCTIONS
        .iter()
        .filter(|f| f.access() != Access::HostOnly)
        .map(|f| FunctionMetadata {
            name: f.name(),
            summary: f.summary(),
            access: f.access(),
            args: arguments(&f.params_schema()),
        })
        .collect()
}

/// The parameters of a function, read from its schema: name, type, whether required.
fn arguments(params: &NamedSchema) -> Vec<Argument> {
    let schema = serde_json::to_value(&params.schema).unwrap_or_default();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            // `Option<T>` is `["T", "null"]`; a `$ref` (an enum type) is a string.
            let kind = match &property["type"] {
                serde_json::Value::String(kind) => kind.clone(),
                serde_json::Value::Array(kinds) => kinds
                    .iter()
                    .filter_map(|k| k.as_str())
                    .find(|k| *k != "null")
                    .unwrap_or("string")
                    .to_owned(),
                _ => "string".to_owned(),
            };
            Argument {
                name: name.clone(),
                kind,
                required: required.contains(&name.as_str()),
                description: property["description"].as_str().map(str::to_owned),
                allowed: property["enum"].as_array().map(|values| {
                    values
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn function_names_are_unique() {
        let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn the_first_login_may_only_replace_the_password_and_only_from_loopback() {
        let local = Caller::AdminFirstLogin {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let remote = Caller::AdminFirstLogin {
            client: "192.0.2.7".parse().unwrap(),
        };
        assert!(check_access(Access::OwnPassword, &local).is_ok());
        assert_eq!(
            check_access(Access::Admin, &local).unwrap_err().http_status,
            403
        );
        assert_eq!(
            check_access(Access::OwnPassword, &remote)
                .unwrap_err()
                .http_status,
            403
        );
        assert!(check_access(Access::HostOnly, &Caller::Host).is_ok());
        let admin = Caller::Admin {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        assert!(check_access(Access::HostOnly, &admin).is_err());
        assert!(check_access(Access::Admin, &admin).is_ok());
    }

    #[test]
    fn metadata_lists_parameters_from_the_types() {
        let metadata = serde_json::to_value(metadata()).unwrap();
        let create = metadata
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "CreateMailbox")
            .unwrap();
        let args = create["args"].as_array().unwrap();
        let name = args.iter().find(|a| a["name"] == "name").unwrap();
        assert_eq!(name["required"], true);
        let description = args.iter().find(|a| a["name"] == "description").unwrap();
        assert_eq!(description["required"], false);
    }
}
