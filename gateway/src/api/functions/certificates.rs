//! Choosing the certificate every listener presents: a new self-signed one, or one the
//! administrator imports. The new certificate is stored in the data directory (see
//! `tls::imported` for how the choice survives a restart) and swapped into the running
//! listeners at once; open connections keep the certificate they started with.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::server::{certificate_info, CertificateInfo};
use super::{present, Function};
use crate::api::{Api, ApiError, Caller};
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
        let extra: Vec<String> = params
            .names
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
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
        Ok(put_in_use(api, material, "self-signed"))
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
        Ok(put_in_use(api, material, "imported"))
    }
}

fn data_dir(api: &Api) -> Result<&std::path::Path, ApiError> {
    api.server()
        .data_dir()
        .ok_or_else(|| ApiError::new(503, "error", "this gateway has no data directory"))
}

/// Swaps the new certificate into the running listeners (if the gateway runs) and says what
/// is presented now.
fn put_in_use(api: &Api, material: CertifiedMaterial, source: &'static str) -> CertificateChange {
    let server = api.server();
    let now = SystemTime::now();
    let mut warnings = tls::warnings(&material, &server.host_name, now);
    if server.certificate_source() == "files" {
        warnings.push(
            "[tls] source = \"files\" in the configuration: the configured files are presented \
             again after a restart; set source = \"self-signed\" to keep this certificate"
                .to_owned(),
        );
    }
    if let Some(resolver) = &server.certificates {
        resolver.swap(material.clone());
        server.set_certificate_source(source);
    }
    CertificateChange {
        certificate: certificate_info(&material, source, now),
        warnings,
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
