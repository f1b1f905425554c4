//! Who is calling: `Authorization: Basic` as `admin`, or `Authorization: Bearer <API key>`.
//!
//! One function, [`authenticate`], turns a request's headers and client address into a
//! [`Caller`] or the refusal to send; the service layer checks passwords and keys (with its
//! throttling) and [`ApiError::from`] maps its errors, so no rule is decided here twice.
//! Credentials are never logged: they live in [`Credentials`], whose `Debug` hides them.

use std::net::IpAddr;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use zeroize::Zeroizing;

use crate::api::{Api, ApiError, Caller};
use crate::crypto::Secret;
use crate::service::AdminLogin;

/// The administrator's user name for HTTP Basic.
pub const ADMIN_USER: &str = "admin";

/// Credentials as the client sent them.
#[derive(Debug)]
pub enum Credentials {
    Basic {
        user: String,
        password: Secret<String>,
    },
    Bearer(Secret<String>),
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, "unauthorized", message)
}

const LOG_IN: &str = "log in with HTTP Basic as `admin`, or send an API key as \
     `Authorization: Bearer <key>`";

/// The credentials in `Authorization`; 401 when there are none or they are malformed.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized(LOG_IN));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is malformed"))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = Zeroizing::new(
            data_encoding::BASE64
                .decode(rest.as_bytes())
                .map_err(|_| unauthorized("the Basic credentials are not valid base64"))?,
        );
        let text = std::str::from_utf8(&decoded)
            .map_err(|_| unauthorized("the Basic credentials are not UTF-8"))?;
        let Some((user, password)) = text.split_once(':') else {
            return Err(unauthorized(
                "the Basic credentials have no `user:password`",
            ));
        };
        Ok(Credentials::Basic {
            user: user.to_owned(),
            password: Secret::new(password),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Credentials::Bearer(Secret::new(rest)))
    } else {
        Err(unauthorized(LOG_IN))
    }
}

/// Authenticates a request from `client`.
///
/// Until the initial password is replaced, a client not on loopback is refused (403)
/// before its credentials are even looked at, as the archiving server's API does.
pub async fn authenticate(
    api: &Api,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<Caller, ApiError> {
    let client = client.to_canonical();
    let gateway = api.gateway();
    gateway.check_admin_client(client)?;
    match credentials(headers)? {
        Credentials::Basic { user, password } => {
            match gateway
                .check_admin_password(&user, password.expose(), client)
                .await?
            {
                AdminLogin::Valid => Ok(Caller::Admin { client }),
                AdminLogin::InitialPassword => Ok(Caller::AdminFirstLogin { client }),
            }
        }
        Credentials::Bearer(key) => {
            let key_id = gateway.check_api_key(key.expose(), client).await?;
            Ok(Caller::ApiKey { key_id, client })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_and_bearer_are_read_and_never_printed() {
        // admin:s3cret:with:colons
        let basic = credentials(&with("Basic YWRtaW46czNjcmV0OndpdGg6Y29sb25z")).unwrap();
        let Credentials::Basic { user, password } = &basic else {
            panic!("{basic:?}");
        };
        assert_eq!(user, "admin");
        assert_eq!(password.expose(), "s3cret:with:colons");
        assert!(!format!("{basic:?}").contains("s3cret"));
        let bearer = credentials(&with("bearer gwk_abc_def")).unwrap();
        assert!(matches!(&bearer, Credentials::Bearer(key) if key.expose() == "gwk_abc_def"));
        assert!(!format!("{bearer:?}").contains("gwk_abc"));
    }

    #[test]
    fn missing_or_malformed_credentials_are_401() {
        for value in [
            "Basic !!!",
            "Basic YWRtaW4=",
            "Bearer",
            "Digest abc",
            "Basic",
        ] {
            let e = credentials(&with(value)).unwrap_err();
            assert_eq!(e.http_status, 401, "{value}");
            assert_eq!(e.kind, "unauthorized");
        }
        assert_eq!(credentials(&HeaderMap::new()).unwrap_err().http_status, 401);
    }
}
