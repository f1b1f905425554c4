//! Certificates from an ACME CA (RFC 8555: Let's Encrypt, or a private CA) with HTTP-01.
//!
//! [`obtain`] runs one order to the end: the account (created once per directory and
//! reused, `storage`), the order, the HTTP-01 challenges (published in [`Http01Responses`],
//! answered by the [`ChallengeListener`] on `[listen.acme_http]`), a CSR for a fresh ECDSA
//! P-256 key, the certificate. The chain is checked like any other certificate before it is
//! stored; on any failure nothing is replaced and the error says why in words
//! ([`AcmeError`]). With a staging directory the same order runs there first and its
//! certificate is thrown away: a setup mistake then costs nothing against the production
//! CA's rate limits.
//!
//! instant-acme retries a `badNonce` answer three times per request; Pebble (and real CAs
//! under load) reject more than that in a row now and then, so every step here is retried
//! on `badNonce` a bounded number of times as well.

mod error;
mod http01;
pub mod renewal;
mod storage;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub use error::AcmeError;
pub use http01::{ChallengeListener, Http01Responses, CHALLENGE_PATH};
pub use storage::{
    account_id, account_path, acme_dir, load_acme, read_account, store_ca_pem, store_certificate,
    write_account, ACME_CA_FILE, ACME_CHAIN_FILE, ACME_KEY_FILE,
};

use super::{parse_pem, CertifiedMaterial};

/// The longest one order (against one directory) may take, validation and issuance included.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one HTTP request to the CA may take to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a step is tried again after `badNonce` (each try is three requests inside
/// instant-acme).
const NONCE_ATTEMPTS: u32 = 10;
/// Requests instant-acme makes per call before it gives up on `badNonce`.
const CRATE_NONCE_TRIES: u32 = 3;

/// What to ask for, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrder {
    /// DNS names; the first is the certificate's common name.
    pub domains: Vec<String>,
    /// Where the CA sends expiry and policy mail.
    pub contact_email: Option<String>,
    pub directory_url: String,
    /// Tried first when `Some`: the whole order runs there and its certificate is discarded.
    pub staging_directory_url: Option<String>,
    /// Extra trust (PEM) for the ACME server's HTTPS, e.g. a private CA or Pebble.
    pub ca_pem: Option<String>,
}

impl AcmeOrder {
    /// The names are DNS names (no wildcards: HTTP-01 cannot prove them), at least one.
    fn check(&self) -> Result<(), AcmeError> {
        if self.domains.is_empty() {
            return Err(AcmeError::InvalidOrder {
                reason: "no domain names to order a certificate for".to_owned(),
            });
        }
        for name in &self.domains {
            if name.starts_with("*.") {
                return Err(AcmeError::NoHttp01 { name: name.clone() });
            }
            if !crate::config::is_dns_name(name) {
                return Err(AcmeError::InvalidOrder {
                    reason: format!("`{name}` is not a DNS name"),
                });
            }
        }
        Ok(())
    }
}

/// Runs the order (first against the staging directory when one is given), stores the
/// certificate and its key in `<data_dir>/tls/acme/` and returns them. On failure nothing
/// is replaced.
pub async fn obtain(
    order: &AcmeOrder,
    data_dir: &Path,
    http01: &Http01Responses,
) -> Result<CertifiedMaterial, AcmeError> {
    order.check()?;
    let http = AcmeHttp::new(order.ca_pem.as_deref())?;
    if let Some(staging) = &order.staging_directory_url {
        tracing::info!(directory = %staging, domains = ?order.domains, "ACME: trial order against the staging CA");
        issue(staging, order, data_dir, http01, &http)
            .await
            .and_then(|(chain, key)| checked(&chain, &key, order))
            .map_err(|source| AcmeError::Staging {
                url: staging.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(directory = %staging, "ACME: the staging CA issued a certificate (discarded)");
    }
    tracing::info!(directory = %order.directory_url, domains = ?order.domains, "ACME: ordering a certificate");
    let (chain, key) = issue(&order.directory_url, order, data_dir, http01, &http).await?;
    checked(&chain, &key, order)?;
    let material = storage::store_certificate(data_dir, chain.as_bytes(), key.as_bytes())?;
    tracing::info!(
        sha256 = material.fingerprint(),
        not_after = %time::OffsetDateTime::from(material.not_after()),
        "ACME: certificate issued and stored"
    );
    Ok(material)
}

/// Parses the issued chain with our key exactly as start-up will, and checks it names what
/// was ordered.
fn checked(chain: &str, key: &str, order: &AcmeOrder) -> Result<CertifiedMaterial, AcmeError> {
    let material = parse_pem(
        chain.as_bytes(),
        key.as_bytes(),
        Path::new("the issued chain"),
        Path::new("the new key"),
    )
    .map_err(|e| AcmeError::InvalidCertificate {
        reason: e.to_string(),
    })?;
    if let Some(missing) = order
        .domains
        .iter()
        .find(|name| !material.info().covers(name))
    {
        return Err(AcmeError::InvalidCertificate {
            reason: format!("it does not name {missing}"),
        });
    }
    Ok(material)
}

/// One order against one directory, bounded by [`ORDER_TIMEOUT`]: (chain PEM, key PEM).
async fn issue(
    directory_url: &str,
    order: &AcmeOrder,
    data_dir: &Path,
    http01: &Http01Responses,
    http: &AcmeHttp,
) -> Result<(String, String), AcmeError> {
    let mut step = "creating the account";
    let run = Run {
        directory_url,
        order,
        data_dir,
        http01,
        http,
    };
    let outcome = tokio::time::timeout(ORDER_TIMEOUT, run.issue(&mut step)).await;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(AcmeError::Timeout {
            after: ORDER_TIMEOUT,
            step,
        }),
    }
}

/// Retries `$call` (an expression doing one ACME request) on `badNonce`.
macro_rules! nonce_retry {
    ($call:expr) => {{
        let mut attempt = 1;
        loop {
            match $call {
                Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                    tracing::debug!(attempt, "ACME: badNonce; trying again");
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}

struct Run<'a> {
    directory_url: &'a str,
    order: &'a AcmeOrder,
    data_dir: &'a Path,
    http01: &'a Http01Responses,
    http: &'a AcmeHttp,
}

impl Run<'_> {
    async fn issue(&self, step: &mut &'static str) -> Result<(String, String), AcmeError> {
        let url = self.directory_url;
        *step = "creating the account";
        let (account, stored) = self.account(false).await?;
        let identifiers: Vec<Identifier> = self
            .order
            .domains
            .iter()
            .map(|name| Identifier::Dns(name.clone()))
            .collect();

        *step = "creating the order";
        let new_order = NewOrder::new(&identifiers);
        let mut acme_order = match nonce_retry!(account.new_order(&new_order).await) {
            // The CA forgot the stored account (a test CA restarted, an account deleted):
            // register again once.
            Err(e) if stored && has_problem(&e, "accountDoesNotExist") => {
                tracing::warn!(
                    directory = url,
                    "ACME: the CA does not know the stored account; registering a new one"
                );
                let (account, _) = self.account(true).await?;
                nonce_retry!(account.new_order(&new_order).await)
            }
            other => other,
        }
        .map_err(|e| self.classify(e, Step::NewOrder))?;

        *step = "answering the challenges";
        // Published tokens stay answerable until the order ends, however it ends.
        let mut published = Vec::new();
        let mut handled = std::collections::HashSet::new();
        let mut attempt = 1;
        'authorizations: loop {
            let mut authorizations = acme_order.authorizations();
            while let Some(next) = authorizations.next().await {
                let mut authz = match next {
                    Ok(authz) => authz,
                    // The stream moved past it; start over, skipping the handled ones.
                    Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                        attempt += 1;
                        continue 'authorizations;
                    }
                    Err(e) => return Err(self.classify(e, Step::Authorization)),
                };
                let authz_url = authz.url().to_owned();
                if !handled.insert(authz_url) {
                    continue;
                }
                let name = authz.identifier().to_string();
                match authz.status {
                    // Validated recently for this account: nothing to prove.
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(AcmeError::Server {
                            url: url.to_owned(),
                            reason: format!("the authorization for {name} is {other:?}"),
                            retry_after: None,
                        })
                    }
                }
                let mut challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::NoHttp01 { name: name.clone() })?;
                let key_authorization = challenge.key_authorization();
                published.push(
                    self.http01
                        .publish(&challenge.token, key_authorization.as_str())?,
                );
                nonce_retry!(challenge.set_ready().await)
                    .map_err(|e| self.classify(e, Step::Challenge))?;
            }
            break;
        }

        *step = "waiting for the CA to validate the challenges";
        let ready = nonce_retry!(acme_order.poll_ready(&poll_policy()).await);
        match ready {
            Ok(OrderStatus::Ready) => {}
            Ok(_) => return Err(self.challenge_failure(&mut acme_order, None).await),
            Err(e) if is_bad_nonce(&e) || matches!(e, instant_acme::Error::Timeout(_)) => {
                return Err(self.classify(e, Step::Validation))
            }
            Err(e) => return Err(self.challenge_failure(&mut acme_order, Some(e)).await),
        }
        drop(published);

        *step = "finalizing the order";
        let (csr, key_pem) = csr(&self.order.domains)?;
        nonce_retry!(acme_order.finalize_csr(&csr).await)
            .map_err(|e| self.classify(e, Step::Finalize))?;
        *step = "waiting for the certificate";
        let chain = nonce_retry!(acme_order.poll_certificate(&poll_policy()).await)
            .map_err(|e| self.classify(e, Step::Certificate))?;
        Ok((chain, key_pem))
    }

    /// The account for this directory: the stored one, or a new one (stored at once).
    /// `(account, whether it was stored before)`.
    async fn account(&self, force_new: bool) -> Result<(Account, bool), AcmeError> {
        let url = self.directory_url;
        if !force_new {
            if let Some(bytes) = storage::read_account(self.data_dir, url)? {
                match serde_json::from_slice::<AccountCredentials>(&bytes) {
                    Ok(credentials) => {
                        let account = Account::builder_with_http(Box::new(self.http.clone()))
                            .from_credentials(credentials)
                            .await
                            .map_err(|e| self.classify(e, Step::Directory))?;
                        return Ok((account, true));
                    }
                    Err(e) => {
                        tracing::warn!(directory = url, error = %e, "ACME: the stored account is unreadable; registering a new one");
                    }
                }
            }
        }
        let contact = self
            .order
            .contact_email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            // Configuring ACME (or `--accept-tos`) is the administrator's agreement.
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = nonce_retry!(
            Account::builder_with_http(Box::new(self.http.clone()))
                .create(&new_account, url.to_owned(), None)
                .await
        )
        .map_err(|e| self.classify(e, Step::Account))?;
        let json = serde_json::to_vec(&credentials).map_err(|e| AcmeError::Server {
            url: url.to_owned(),
            reason: format!("cannot serialize the account: {e}"),
            retry_after: None,
        })?;
        storage::write_account(self.data_dir, url, &json)?;
        tracing::info!(
            directory = url,
            account = account.id(),
            "ACME: account registered"
        );
        Ok((account, false))
    }

    /// Why validation failed: the first invalid challenge's error, fetched fresh.
    async fn challenge_failure(
        &self,
        acme_order: &mut instant_acme::Order,
        error: Option<instant_acme::Error>,
    ) -> AcmeError {
        let mut authorizations = acme_order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            for _ in 0..NONCE_ATTEMPTS {
                match authz.refresh().await {
                    Ok(state) => {
                        if let Some(failure) = invalid_challenge(state) {
                            return failure;
                        }
                        break;
                    }
                    Err(e) if is_bad_nonce(&e) => continue,
                    Err(_) => break,
                }
            }
        }
        match error {
            Some(e) => self.classify(e, Step::Validation),
            None => AcmeError::Server {
                url: self.directory_url.to_owned(),
                reason: "the order became invalid without saying why".to_owned(),
                retry_after: None,
            },
        }
    }

    /// Puts instant-acme's error into the administrator's words.
    fn classify(&self, error: instant_acme::Error, step: Step) -> AcmeError {
        let url = self.directory_url.to_owned();
        let names = self.order.domains.join(", ");
        match error {
            instant_acme::Error::Api(problem) => {
                let reason = problem_text(&problem);
                let kind = problem
                    .r#type
                    .as_deref()
                    .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
                    .unwrap_or_default();
                match kind {
                    "badNonce" => AcmeError::BadNonce {
                        attempts: NONCE_ATTEMPTS * CRATE_NONCE_TRIES,
                        reason,
                    },
                    "rateLimited" => AcmeError::RateLimited {
                        retry_after: None,
                        reason,
                    },
                    "rejectedIdentifier" | "unsupportedIdentifier" | "caa" => AcmeError::Refused {
                        name: problem_name(&problem).unwrap_or(names),
                        reason,
                    },
                    "malformed" if step == Step::NewOrder => AcmeError::Refused {
                        name: problem_name(&problem).unwrap_or(names),
                        reason,
                    },
                    _ => AcmeError::Server {
                        url,
                        reason,
                        retry_after: None,
                    },
                }
            }
            instant_acme::Error::Timeout(_) => AcmeError::Timeout {
                after: ORDER_TIMEOUT,
                step: step.describe(),
            },
            instant_acme::Error::Other(inner) => match inner.downcast::<Transport>() {
                Ok(transport) => AcmeError::Unreachable {
                    url,
                    reason: transport.0,
                },
                Err(other) => AcmeError::Unreachable {
                    url,
                    reason: innermost(other.as_ref()),
                },
            },
            instant_acme::Error::Json(e) => AcmeError::Unreachable {
                url,
                reason: format!(
                    "the answer is not an ACME document ({e}); is this the directory URL?"
                ),
            },
            instant_acme::Error::InvalidUri(e) => AcmeError::InvalidOrder {
                reason: format!("the directory URL {url} is invalid: {e}"),
            },
            other => AcmeError::Server {
                url,
                reason: other.to_string(),
                retry_after: None,
            },
        }
    }
}

/// The failed HTTP-01 challenge of an invalid authorization, in words.
fn invalid_challenge(state: &instant_acme::AuthorizationState) -> Option<AcmeError> {
    if state.status != AuthorizationStatus::Invalid {
        return None;
    }
    let name = state.identifier().to_string();
    let challenge = state
        .challenges
        .iter()
        .find(|c| c.r#type == ChallengeType::Http01)?;
    let url = format!("http://{name}{CHALLENGE_PATH}{}", challenge.token);
    let reason = challenge
        .error
        .as_ref()
        .map(problem_text)
        .unwrap_or_else(|| "the challenge is invalid".to_owned());
    Some(AcmeError::ChallengeFailed { url, reason })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Directory,
    Account,
    NewOrder,
    Authorization,
    Challenge,
    Validation,
    Finalize,
    Certificate,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Self::Directory => "reading the directory",
            Self::Account => "creating the account",
            Self::NewOrder => "creating the order",
            Self::Authorization => "reading the authorizations",
            Self::Challenge => "answering the challenges",
            Self::Validation => "waiting for the CA to validate the challenges",
            Self::Finalize => "finalizing the order",
            Self::Certificate => "waiting for the certificate",
        }
    }
}

/// Polls every second or so (starting fast: Pebble and Let's Encrypt often answer within
/// a second), within the order's overall bound.
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT)
}

fn is_bad_nonce(error: &instant_acme::Error) -> bool {
    has_problem(error, "badNonce")
}

fn has_problem(error: &instant_acme::Error, kind: &str) -> bool {
    matches!(error, instant_acme::Error::Api(problem)
        if problem.r#type.as_deref().and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:")) == Some(kind))
}

/// The problem's detail (and its subproblems'), else its type.
fn problem_text(problem: &instant_acme::Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .or_else(|| problem.r#type.clone())
        .unwrap_or_else(|| "no reason given".to_owned());
    for sub in &problem.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str("; ");
            text.push_str(detail);
        }
    }
    text
}

fn problem_name(problem: &instant_acme::Problem) -> Option<String> {
    let names: Vec<String> = problem
        .subproblems
        .iter()
        .filter_map(|sub| sub.identifier.as_ref())
        .map(|id| id.authorized(false).to_string())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// A CSR for the names with a fresh ECDSA P-256 key: (CSR DER, key PEM).
fn csr(domains: &[String]) -> Result<(Vec<u8>, String), AcmeError> {
    let fail = |e: rcgen::Error| AcmeError::InvalidOrder {
        reason: format!("cannot make the certificate request: {e}"),
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec()).map_err(fail)?;
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(first) = domains.first().filter(|name| name.len() <= 64) {
        dn.push(rcgen::DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    let request = params.serialize_request(&key).map_err(fail)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}

/// A transport failure in words (connection refused, TLS, no answer in time).
#[derive(Debug)]
struct Transport(String);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transport {}

/// The most specific cause: "Connection refused (os error 111)", "invalid peer
/// certificate: UnknownIssuer", rather than hyper's "client error (Connect)".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// instant-acme's HTTP client, ours: the ring provider (not the process default), the
/// system's roots plus the configured CA, a connect and answer timeout per request.
#[derive(Clone)]
struct AcmeHttp {
    client: HyperClient<Connector, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    fn new(ca_pem: Option<&str>) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system roots only matter for a public CA; that order then fails with
        // an unknown-issuer error naming the server.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(pem) = ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| AcmeError::CaFile {
                    reason: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| AcmeError::CaFile {
                    reason: e.to_string(),
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(AcmeError::CaFile {
                    reason: "it holds no PEM certificate".to_owned(),
                });
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::CaFile {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        request: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.client.request(request);
        Box::pin(async move {
            let transport =
                |reason: String| instant_acme::Error::Other(Box::new(Transport(reason)));
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return Err(transport(innermost(&e))),
                Err(_) => {
                    return Err(transport(format!(
                        "no answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    )))
                }
            };
            // The body too, within the same bound: a CA that stalls mid-answer must not
            // hold the order until the overall timeout.
            let (parts, body) = response.into_parts();
            let body = match tokio::time::timeout(REQUEST_TIMEOUT, body.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) => return Err(transport(innermost(&e))),
                Err(_) => {
                    return Err(transport(format!(
                        "the answer did not complete within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    )))
                }
            };
            Ok(BytesResponse::from(hyper::Response::from_parts(
                parts,
                http_body_util::Full::new(body),
            )))
        })
    }
}
