//! The console's side of sessions: the cookie, the extractors that guard pages, and the
//! CSRF check of forms. The sessions themselves live in the service layer
//! ([`crate::service::Sessions`]).
//!
//! - [`SignedIn`]: the signed-in administrator. Without a live session the request is
//!   answered with 303 to the login page; while a new password waits to be acknowledged,
//!   with 303 to that page.
//! - [`Acknowledging`]: a signed-in session, pending acknowledgement or not (the
//!   acknowledgement page and sign-out).
//! - [`Form<G>`]: a POST's form fields, after guard `G` and the CSRF check (403 page
//!   without the session's token in the `csrf` field).
//! - [`Visitor`]: anyone (the login page): the language from `Accept-Language`.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{ACCEPT_LANGUAGE, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::Value;
use zeroize::Zeroizing;

use super::i18n;
use super::render::{self, Viewer};
use crate::api::http::{BodyTimeout, ClientAddr};
use crate::api::{Api, Caller, Params};
use crate::config::Language;
use crate::service::{Session, SessionToken};

/// The session cookie. `__Host-`: the browser accepts it only `Secure`, with `Path=/` and
/// no `Domain`, so no other host (a sibling subdomain) can set or shadow it.
pub const COOKIE_NAME: &str = "__Host-gw_session";

/// Where a request without a live session is sent.
pub const LOGIN_PATH: &str = "/console/login";
/// Where a session with a new password to acknowledge is sent.
pub const ACKNOWLEDGE_PATH: &str = "/console/new-password";
/// The main page.
pub const MAIN_PATH: &str = "/console/";

/// The `Set-Cookie` value that hands `token` to the browser. No `Max-Age`: the cookie goes
/// with the browser session, and the server ends the session on its own schedule.
pub fn set_cookie(token: &SessionToken) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        token.reveal()
    );
    // The token is base64url, always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| clear_cookie())
}

/// The `Set-Cookie` value that makes the browser forget the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-gw_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// The session token the request carries, if any.
pub fn token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| Zeroizing::new(value.trim().to_owned()))
        .filter(|value| !value.is_empty())
}

/// The client's address (unspecified, the stricter case, for a request that did not come
/// through the listener).
pub fn client(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
}

/// The language for a visitor: `Accept-Language`, else the configured default.
pub fn visitor_language(api: &Api, headers: &HeaderMap) -> Language {
    let header = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok());
    i18n::from_accept_language(header, api.settings().console_language())
}

/// 303 to `path`.
pub fn redirect(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// 303 to the login page, and the browser forgets its (dead) cookie.
fn to_login() -> Response {
    let mut response = redirect(LOGIN_PATH);
    response.headers_mut().insert(SET_COOKIE, clear_cookie());
    response
}

/// 503: the session could not be checked or changed (the shared table is out of reach; the
/// failure is in the log). Nothing is let in, and the cookie stays: the session may well be
/// alive, so signing the administrator out over a passing outage would be wrong.
pub fn session_unavailable(viewer: &Viewer) -> Response {
    render::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        viewer,
        &i18n::text(viewer.lang, "error-session-unavailable"),
    )
}

/// The signed-in administrator (a live session whose new password, if any, is
/// acknowledged). See the module docs.
pub struct SignedIn {
    api: Api,
    token: Zeroizing<String>,
    session: Session,
    viewer: Viewer,
    client: IpAddr,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("client", &self.client)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl SignedIn {
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Language and CSRF token for rendering.
    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    pub fn lang(&self) -> Language {
        self.viewer.lang
    }

    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The caller the console acts as: the administrator, from the browser's address.
    pub fn caller(&self) -> Caller {
        Caller::Admin {
            client: self.client,
        }
    }

    /// The session's token (sign-out, acknowledgement).
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Calls an API function as the administrator: its result, or the failure to show.
    pub async fn invoke(
        &self,
        function: &str,
        params: Params,
    ) -> Result<serde_json::Value, Failure> {
        let answer = self.answer(function, params).await;
        match answer.envelope.error {
            None => Ok(answer.envelope.result),
            Some(error) => Err(Failure {
                status: StatusCode::from_u16(answer.http_status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                message: error.message,
            }),
        }
    }

    /// Calls an API function as the administrator and returns the whole answer: for a
    /// long-running function the token and status are in the envelope, not the result.
    pub async fn answer(&self, function: &str, params: Params) -> crate::api::Answer {
        let answer = self.api.invoke(&self.caller(), function, params).await;
        tracing::info!(
            client = %self.client,
            caller = "admin (console)",
            function,
            status = answer.http_status,
            "API call"
        );
        answer
    }

    /// Renders `template` for this administrator.
    pub fn page(&self, template: &str, context: Value) -> Response {
        render::page(&self.viewer, template, context)
    }

    /// The error page for a failed call.
    pub fn failure_page(&self, failure: &Failure) -> Response {
        render::error_page(failure.status, &self.viewer, &failure.message)
    }

    async fn from_parts(parts: &Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = token(&parts.headers) else {
            return Err(to_login());
        };
        let session = match api.gateway().sessions().get(&token).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(to_login()),
            Err(_) => {
                let viewer = Viewer {
                    lang: visitor_language(api, &parts.headers),
                    csrf: None,
                };
                return Err(session_unavailable(&viewer));
            }
        };
        let chosen = api.gateway().admin_language().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the administrator's language could not be read");
            None
        });
        let lang = chosen.unwrap_or_else(|| visitor_language(api, &parts.headers));
        Ok(Self {
            api: api.clone(),
            viewer: Viewer {
                lang,
                csrf: Some(session.csrf().to_owned()),
            },
            token,
            session,
            client: client(parts),
        })
    }
}

/// An API call that failed: the HTTP status and the envelope's message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl FromRequestParts<Api> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        let signed_in = Self::from_parts(parts, api).await?;
        if signed_in.session.acknowledgement_pending {
            return Err(redirect(ACKNOWLEDGE_PATH));
        }
        Ok(signed_in)
    }
}

/// A signed-in session whether or not a new password waits to be acknowledged.
#[derive(Debug)]
pub struct Acknowledging(pub SignedIn);

impl FromRequestParts<Api> for Acknowledging {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        SignedIn::from_parts(parts, api).await.map(Acknowledging)
    }
}

/// A guard that has a session, so its forms can be checked for the CSRF token.
pub trait HasSession {
    fn signed_in(&self) -> &SignedIn;
}

impl HasSession for SignedIn {
    fn signed_in(&self) -> &SignedIn {
        self
    }
}

impl HasSession for Acknowledging {
    fn signed_in(&self) -> &SignedIn {
        &self.0
    }
}

/// A form's fields (every value a string).
#[derive(Default)]
pub struct Fields(Params);

impl Fields {
    pub fn from_params(params: Params) -> Self {
        Self(params)
    }

    /// The field `name`, `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }

    /// Whether checkbox `name` was ticked (browsers send ticked boxes only).
    pub fn checked(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The fields without `csrf`, for handing to an API function.
    pub fn into_params(mut self) -> Params {
        self.0.remove("csrf");
        self.0
    }
}

impl std::fmt::Debug for Fields {
    /// Field names only: values hold passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A POST's form after guard `G` and the CSRF check.
#[derive(Debug)]
pub struct Form<G> {
    pub guard: G,
    pub fields: Fields,
}

/// Whether a POST comes from a page of this console: browsers send `Origin` with every form
/// POST, and one from another site is refused (the login form has no session, hence no CSRF
/// token yet; for the other forms this is a second line behind the token). Without `Origin`
/// (a client that is not a browser) the request passes on to the token check.
fn same_origin(parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return true;
    };
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the request's authority.
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("https://")
            .is_some_and(|o| o.eq_ignore_ascii_case(&host)),
        _ => false,
    }
}

/// Reads a form body (bounded in size and time, as the API's); a body that cannot be read,
/// or a POST from another site, gets the error page for `viewer`.
async fn read_fields(parts: &Parts, body: Body, viewer: &Viewer) -> Result<Fields, Response> {
    if !same_origin(parts) {
        tracing::info!(client = %client(parts), "console form refused: posted from another site");
        return Err(render::error_page(
            StatusCode::FORBIDDEN,
            viewer,
            &i18n::text(viewer.lang, "error-csrf"),
        ));
    }
    let timeout = parts
        .extensions
        .get::<BodyTimeout>()
        .map_or(crate::api::http::DEFAULT_BODY_TIMEOUT, |t| t.0);
    match crate::api::http::read_params(&parts.headers, body, timeout).await {
        Ok(params) => Ok(Fields(params)),
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST);
            Err(render::error_page(status, viewer, &e.message))
        }
    }
}

impl<G> FromRequest<Api> for Form<G>
where
    G: FromRequestParts<Api, Rejection = Response> + HasSession + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, api: &Api) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        // The session first: a signed-out browser goes to the login page, body unread.
        let guard = G::from_request_parts(&mut parts, api).await?;
        let signed_in = guard.signed_in();
        let fields = read_fields(&parts, body, signed_in.viewer()).await?;
        if !signed_in.session.csrf_matches(fields.get("csrf")) {
            tracing::info!(client = %signed_in.client, "console form refused: no valid CSRF token");
            return Err(render::error_page(
                StatusCode::FORBIDDEN,
                signed_in.viewer(),
                &i18n::text(signed_in.lang(), "error-csrf"),
            ));
        }
        Ok(Form { guard, fields })
    }
}

/// Anyone, signed in or not: the language from `Accept-Language`, and the session token
/// the browser presented (replaced at sign-in).
pub struct Visitor {
    pub api: Api,
    pub viewer: Viewer,
    pub client: IpAddr,
    pub presented: Option<Zeroizing<String>>,
}

impl FromRequestParts<Api> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        Ok(Self {
            api: api.clone(),
            viewer: Viewer {
                lang: visitor_language(api, &parts.headers),
                csrf: None,
            },
            client: client(parts),
            presented: token(&parts.headers),
        })
    }
}

/// A visitor's form (the login form; there is no session yet to hold a CSRF token, and the
/// `SameSite=Strict` cookie it sets is what later forms rely on).
pub struct VisitorForm {
    pub visitor: Visitor,
    pub fields: Fields,
}

impl FromRequest<Api> for VisitorForm {
    type Rejection = Response;

    async fn from_request(request: Request, api: &Api) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, api).await?;
        let fields = read_fields(&parts, body, &visitor.viewer).await?;
        Ok(Self { visitor, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cookie_is_host_only_secure_http_only_and_strict() {
        let sessions = crate::service::Sessions::default();
        let (token, _) = sessions.create(None, false).await.unwrap();
        let value = set_cookie(&token);
        let value = value.to_str().unwrap();
        assert!(value.starts_with(&format!("__Host-gw_session={};", token.reveal())));
        for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(value.split("; ").any(|a| a == attribute), "{value}");
        }
        assert!(!value.contains("Domain"));
    }

    #[test]
    fn the_token_is_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=b; other=1"));
        headers.append(
            COOKIE,
            HeaderValue::from_static("x=y; __Host-gw_session=abc ; z=1"),
        );
        assert_eq!(token(&headers).as_deref().map(String::as_str), Some("abc"));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("gw_session=abc"));
        assert!(token(&headers).is_none());
        headers.insert(COOKIE, HeaderValue::from_static("__Host-gw_session="));
        assert!(token(&headers).is_none());
    }
}
