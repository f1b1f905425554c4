//! Choosing the certificate every listener presents: a new self-signed one, one the
//! administrator imports, or one ordered over ACME (and renewed). The new certificate is
//! stored in the data directory (see `tls::imported` and `tls::acme` for how the choice
//! survives a restart) and swapped into the running listeners at once; open connections
//! keep the certificate they started with. The rules live in the
//! [`crate::tls::CertificateManager`]; these functions parse, check and report.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::server::{certificate_info, CertificateInfo};
use super::{flag, flag_schema, optional_flag, present, Function, LongFunction, NoParams};
use crate::api::jobs::Progress;
use crate::api::{Api, ApiError, Caller};
use crate::config::{AcmeSettings, CertificateSource};
use crate::tls::{self, CertifiedMaterial, TlsError};

/// The certificate now presented, and what the administrator should know about it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateChange {
    pub certificate: CertificateInfo,
    /// Reasons clients may reject the certificate (name not covered, expired, expiring
    /// within 30 days, not valid yet); the certificate is in use all the same.
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSelfSignedParams {
    /// Names besides the host name (DNS names or IP addresses), comma-separated.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        pattern = r"^\s*([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(\s*,\s*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)*)?\s*$"
    )]
    pub names: Option<String>,
}

pub struct CreateSelfSignedCertificate;

impl Function for CreateSelfSignedCertificate {
    const NAME: &'static str = "CreateSelfSignedCertificate";
    const SUMMARY: &'static str = "Creates a new self-signed certificate for the host name (and \
         the names given) and presents it on every listener at once.";
    type Params = CreateSelfSignedParams;
    type Output = CertificateChange;

    async fn call(
        api: &Api,
        _: &Caller,
        params: CreateSelfSignedParams,
    ) -> Result<CertificateChange, ApiError> {
        let server = api.server();
        let extra = split_names(params.names.as_deref().unwrap_or_default());
        // A certificate naming anything else would be refused by every client.
        if let Some(bad) = extra.iter().find(|name| {
            name.parse::<std::net::IpAddr>().is_err()
                && !crate::config::is_dns_name(name.strip_prefix("*.").unwrap_or(name))
        }) {
            return Err(ApiError::invalid_parameters(format!(
                "names: `{bad}` is neither a DNS name nor an IP address"
            )));
        }
        let data_dir = data_dir(api)?;
        let material = tls::create_self_signed(data_dir, &server.host_name, &extra)
            .map_err(|e| refused(e, "the certificate could not be created"))?;
        tls::forget_imported(data_dir)
            .map_err(|e| refused(e, "the imported certificate could not be removed"))?;
        Ok(put_in_use(api, material, "self-signed").await)
    }
}

/// Either `certificateChain` with `privateKey`, or `pkcs12` with `password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportCertificateParams {
    /// PEM certificates, the server's first, then the intermediates.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub certificate_chain: Option<String>,
    /// The unencrypted PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub private_key: Option<String>,
    /// A PKCS#12 file (`.p12`/`.pfx`), base64.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub pkcs12: Option<String>,
    /// The PKCS#12 file's password (empty when it has none).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub password: Option<String>,
}

pub struct ImportCertificate;

impl Function for ImportCertificate {
    const NAME: &'static str = "ImportCertificate";
    const SUMMARY: &'static str = "Checks a PEM certificate chain with its private key, stores \
         it and presents it on every listener at once; an expired or soon-expiring certificate \
         is accepted with a warning.";
    type Params = ImportCertificateParams;
    type Output = CertificateChange;

    async fn call(
        api: &Api,
        _: &Caller,
        params: ImportCertificateParams,
    ) -> Result<CertificateChange, ApiError> {
        let data_dir = data_dir(api)?;
        let imported = match params {
            ImportCertificateParams {
                certificate_chain: Some(chain),
                private_key: Some(key),
                pkcs12: None,
                password: None,
            } => tls::import_pem(data_dir, chain.as_bytes(), key.as_bytes()),
            ImportCertificateParams {
                certificate_chain: None,
                private_key: None,
                pkcs12: Some(pkcs12),
                password,
            } => {
                // MIME-style line breaks are common in pasted base64.
                let compact: String = pkcs12.split_whitespace().collect();
                let bytes = data_encoding::BASE64
                    .decode(compact.as_bytes())
                    .map_err(|e| {
                        ApiError::invalid_parameters(format!("pkcs12 is not base64: {e}"))
                    })?;
                tls::import_pkcs12(data_dir, &bytes, password.as_deref().unwrap_or_default())
            }
            _ => {
                return Err(ApiError::invalid_parameters(
                    "give certificateChain with privateKey, or pkcs12 with password",
                ))
            }
        };
        let material = imported.map_err(|e| refused(e, "the certificate was not imported"))?;
        Ok(put_in_use(api, material, "imported").await)
    }
}

fn data_dir(api: &Api) -> Result<&std::path::Path, ApiError> {
    api.server()
        .data_dir()
        .ok_or_else(|| ApiError::new(503, "error", "this gateway has no data directory"))
}

/// Swaps the new certificate into the running listeners (if the gateway runs) and says what
/// is presented now. Leaving ACME stops it and rewrites `[tls]` to self-signed (which
/// presents an imported certificate when there is one).
async fn put_in_use(
    api: &Api,
    material: CertifiedMaterial,
    source: &'static str,
) -> CertificateChange {
    let server = api.server();
    let manager = server.certificate_manager();
    let now = SystemTime::now();
    let mut warnings = tls::warnings(&material, &server.host_name, now);
    if manager.source() == "files" {
        warnings.push(
            "[tls] source = \"files\" in the configuration: the configured files are presented \
             again after a restart; set source = \"self-signed\" to keep this certificate"
                .to_owned(),
        );
    }
    if manager.put_in_use(&material, source).await {
        if let Err(e) = api
            .settings()
            .save_tls_source(CertificateSource::SelfSigned)
            .await
        {
            warnings.push(format!(
                "ACME renewal stopped, but [tls] could not be saved ({e}): after a restart the \
                 gateway would order from ACME again; set source = \"self-signed\" by hand"
            ));
        }
    }
    CertificateChange {
        certificate: certificate_info(&material, source, now),
        warnings,
    }
}

/// Names are comma-separated in a string, as every parameter travels.
fn split_names(names: &str) -> Vec<String> {
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

fn https_url(name: &str, url: &str) -> Result<(), ApiError> {
    if crate::config::is_https_url(url) {
        Ok(())
    } else {
        Err(ApiError::invalid_parameters(format!(
            "{name}: must be an https:// URL"
        )))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAcmeParams {
    /// DNS names for the certificate, comma-separated; the first is its common name.
    #[schema(
        pattern = r"^\s*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(\s*,\s*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)*\s*$"
    )]
    pub domains: String,
    /// Contact address the CA sends expiry and policy notices to.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub email: Option<String>,
    /// Must be `true` (a JSON boolean, or the string from a form): ordering means agreeing
    /// to the CA's terms of service.
    #[serde(deserialize_with = "flag")]
    #[schema(schema_with = flag_schema)]
    pub accept_terms_of_service: bool,
    /// The CA's ACME directory; default: the configured one, else Let's Encrypt.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub directory_url: Option<String>,
    /// PEM certificate(s) to trust for the ACME server's HTTPS (a private CA).
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub ca_pem: Option<String>,
    /// `true`: run the whole order against the staging directory first (its certificate is
    /// discarded), then against production.
    #[serde(default, deserialize_with = "optional_flag")]
    #[schema(schema_with = flag_schema, required = false)]
    pub staging_first: Option<bool>,
    /// The staging directory; default: Let's Encrypt's when ordering from Let's Encrypt.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub staging_directory_url: Option<String>,
}

/// The parameters checked: (settings, staging first).
fn acme_settings(api: &Api, params: &RequestAcmeParams) -> Result<(AcmeSettings, bool), ApiError> {
    if !params.accept_terms_of_service {
        return Err(ApiError::invalid_parameters(
            "acceptTermsOfService: must be true; ordering a certificate means agreeing to the \
             CA's terms of service",
        ));
    }
    let domains = split_names(&params.domains);
    if domains.is_empty() {
        return Err(ApiError::invalid_parameters(
            "domains: give at least one DNS name",
        ));
    }
    if let Some(bad) = domains.iter().find(|d| !crate::config::is_dns_name(d)) {
        return Err(ApiError::invalid_parameters(format!(
            "domains: `{bad}` is not a DNS name (HTTP-01 cannot prove wildcards or addresses)"
        )));
    }
    if let Some(email) = &params.email {
        if !crate::config::is_email_address(email) {
            return Err(ApiError::invalid_parameters(format!(
                "email: `{email}` is not an email address"
            )));
        }
    }
    let configured = api.server().certificate_manager().acme_settings();
    let directory_url = match (&params.directory_url, &configured) {
        (Some(url), _) => url.trim().to_owned(),
        (None, Some(configured)) => configured.directory_url.clone(),
        (None, None) => crate::config::LETS_ENCRYPT_DIRECTORY.to_owned(),
    };
    https_url("directoryUrl", &directory_url)?;
    let staging_first = params.staging_first.unwrap_or(false);
    let staging_directory_url = match &params.staging_directory_url {
        Some(url) => Some(url.trim().to_owned()),
        None if directory_url == crate::config::LETS_ENCRYPT_DIRECTORY => {
            Some(crate::config::LETS_ENCRYPT_STAGING_DIRECTORY.to_owned())
        }
        None => None,
    };
    if let Some(url) = &staging_directory_url {
        https_url("stagingDirectoryUrl", url)?;
    }
    if staging_first && staging_directory_url.is_none() {
        return Err(ApiError::invalid_parameters(
            "stagingFirst: this CA's staging directory is not known; give stagingDirectoryUrl",
        ));
    }
    Ok((
        AcmeSettings {
            directory_url,
            contact_email: params.email.clone(),
            ca_file: None,
            domains,
            staging_directory_url,
        },
        staging_first,
    ))
}

/// A failed order: the reason in words as the message.
fn acme_failed(error: tls::acme::AcmeError) -> ApiError {
    use tls::acme::AcmeError;
    let status = match &error {
        AcmeError::NotAcme | AcmeError::OrderedElsewhere => 409,
        AcmeError::InvalidOrder { .. } | AcmeError::CaFile { .. } | AcmeError::NoHttp01 { .. } => {
            400
        }
        AcmeError::Storage(_) | AcmeError::ChallengeListener { .. } => 500,
        _ => 502,
    };
    let kind = match status {
        409 => "conflict",
        400 => "invalid_input",
        _ => "acme",
    };
    let mut failed = ApiError::new(status, kind, error.to_string());
    failed.retry_after = error.retry_after();
    failed
}

pub struct RequestAcmeCertificate;

impl LongFunction for RequestAcmeCertificate {
    const NAME: &'static str = "RequestAcmeCertificate";
    const SUMMARY: &'static str = "Orders a certificate from an ACME CA (Let's Encrypt by \
         default) with HTTP-01 on the challenge listener, presents it on every listener and \
         renews it from then on; on failure the certificate in use stays. Long-running: \
         answers with a token for get-status.";
    type Params = RequestAcmeParams;
    type Output = CertificateChange;
    type Job = AcmeJob;

    /// What can be refused at once: the order's parameters, a gateway without a data
    /// directory. The run uses them as checked here.
    async fn prepare(
        api: &Api,
        _: &Caller,
        params: RequestAcmeParams,
    ) -> Result<AcmeJob, ApiError> {
        let (settings, staging_first) = acme_settings(api, &params)?;
        data_dir(api)?;
        Ok(AcmeJob {
            api: api.clone(),
            settings,
            staging_first,
            ca_pem: params.ca_pem,
        })
    }

    async fn run(job: AcmeJob, progress: Progress) -> Result<CertificateChange, ApiError> {
        request_acme(job, &progress).await
    }
}

/// An order whose parameters were checked.
pub struct AcmeJob {
    api: Api,
    settings: AcmeSettings,
    staging_first: bool,
    ca_pem: Option<String>,
}

async fn request_acme(
    AcmeJob {
        api,
        mut settings,
        staging_first,
        ca_pem,
    }: AcmeJob,
    progress: &Progress,
) -> Result<CertificateChange, ApiError> {
    let api = &api;
    {
        let data_dir = data_dir(api)?;
        if let Some(pem) = &ca_pem {
            let path = tls::acme::store_ca_pem(data_dir, pem.as_bytes())
                .map_err(|e| refused(e, "the CA certificate could not be stored"))?;
            settings.ca_file = Some(path);
        } else if let Some(configured) = api.server().certificate_manager().acme_settings() {
            // The same CA as configured keeps its trust.
            if configured.directory_url == settings.directory_url {
                settings.ca_file = configured.ca_file;
            }
        }
        progress.update(
            Some(5),
            format!(
                "ordering a certificate for {} from {}{}",
                settings.domains.join(", "),
                settings.directory_url,
                if staging_first {
                    " (staging directory first)"
                } else {
                    ""
                }
            ),
        );
        let manager = api.server().certificate_manager();
        let material = manager
            .request_acme(settings.clone(), staging_first)
            .await
            .map_err(acme_failed)?;
        let now = SystemTime::now();
        let mut warnings = tls::warnings(&material, &api.server().host_name, now);
        if let Err(e) = api
            .settings()
            .save_tls_source(CertificateSource::Acme(settings))
            .await
        {
            warnings.push(format!(
                "the certificate is in use, but [tls] could not be saved ({e}): after a restart \
                 the previous source is used again; set source = \"acme\" by hand"
            ));
        }
        Ok(CertificateChange {
            certificate: certificate_info(&material, "acme", now),
            warnings,
        })
    }
}

pub struct RenewCertificate;

impl LongFunction for RenewCertificate {
    const NAME: &'static str = "RenewCertificate";
    const SUMMARY: &'static str = "Renews the ACME certificate now and presents the new one \
         on every listener; open connections keep the old one. 409 when the certificate does \
         not come from ACME. Long-running: answers with a token for get-status.";
    type Params = NoParams;
    type Output = CertificateChange;
    type Job = Api;

    /// A certificate that does not come from ACME is refused at once (409).
    async fn prepare(api: &Api, _: &Caller, _: NoParams) -> Result<Api, ApiError> {
        match api.server().certificate_manager().acme_settings() {
            Some(_) => Ok(api.clone()),
            None => Err(acme_failed(tls::acme::AcmeError::NotAcme)),
        }
    }

    async fn run(api: Api, progress: Progress) -> Result<CertificateChange, ApiError> {
        renew(&api, &progress).await
    }
}

async fn renew(api: &Api, progress: &Progress) -> Result<CertificateChange, ApiError> {
    {
        let manager = api.server().certificate_manager();
        progress.update(Some(5), "renewing the ACME certificate");
        // Through the renewal loop when it runs, so its record stays right.
        let material = manager.renew().await.map_err(acme_failed)?;
        let now = SystemTime::now();
        Ok(CertificateChange {
            warnings: tls::warnings(&material, &api.server().host_name, now),
            certificate: certificate_info(&material, "acme", now),
        })
    }
}

/// Input the administrator can fix is a 400 with the reason; a disk failure is ours.
fn refused(error: TlsError, message: &str) -> ApiError {
    let status = match error {
        TlsError::Write { .. } | TlsError::Read { .. } => 500,
        _ => 400,
    };
    let kind = if status == 400 {
        "invalid_input"
    } else {
        "error"
    };
    ApiError::new(status, kind, message).with_details(error.to_string())
}
