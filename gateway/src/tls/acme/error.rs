//! Why an ACME order failed, in words an administrator can act on, plus what the renewal
//! schedule needs to know: when to try again ([`AcmeError::retry_after`]) and whether trying
//! the same order again soon can help at all ([`AcmeError::is_permanent`]).

use std::time::Duration;

use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The order itself is unusable (no names, a name that is not a DNS name...).
    #[error("the ACME order is invalid: {reason}")]
    InvalidOrder { reason: String },

    /// The extra CA for the ACME server's HTTPS (`acme_ca_file`, `--ca-file`) is unusable.
    #[error("the CA certificate for the ACME server's HTTPS is unusable: {reason}")]
    CaFile { reason: String },

    /// No answer, a TLS failure or a timeout talking to the directory or another ACME URL.
    #[error("cannot reach the ACME server at {url}: {reason}")]
    Unreachable { url: String, reason: String },

    /// The CA tried the HTTP-01 challenge and failed: it could not connect, or got the wrong
    /// answer (another web server on port 80).
    #[error(
        "the CA could not reach {url}: {reason}; is port 80 forwarded to this machine \
         (the gateway's challenge listener, [listen.acme_http])?"
    )]
    ChallengeFailed { url: String, reason: String },

    /// The CA will not issue for this name (policy, blocklist, CAA, malformed name).
    #[error("the CA refuses to issue a certificate for {name}: {reason}")]
    Refused { name: String, reason: String },

    /// Too many certificates or failed validations recently.
    #[error("rate limited by the CA; retry after {}: {reason}", retry_text(*.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        reason: String,
    },

    /// The CA kept rejecting our requests' anti-replay nonces.
    #[error(
        "the ACME server rejected the request's anti-replay nonce {attempts} times in a row \
         (badNonce); try again later: {reason}"
    )]
    BadNonce { attempts: u32, reason: String },

    /// Any other problem document the CA answered with.
    #[error("the ACME server at {url} refused the request: {reason}")]
    Server {
        url: String,
        reason: String,
        retry_after: Option<Duration>,
    },

    /// The CA offers no challenge the gateway can answer.
    #[error("the CA offers no HTTP-01 challenge for {name} (wildcard names need DNS-01, which the gateway does not do)")]
    NoHttp01 { name: String },

    /// The order did not finish in time (validation or issuance pending too long).
    #[error("the ACME order did not complete within {} s (while {step}); the CA may be slow, try again later", .after.as_secs())]
    Timeout { after: Duration, step: &'static str },

    /// The CA sent something that is not a usable certificate chain for our key.
    #[error("the certificate the CA issued is unusable: {reason}")]
    InvalidCertificate { reason: String },

    /// The trial order against the staging directory failed, so production was not tried.
    #[error(
        "the trial order against the staging CA ({url}) failed, so the production CA was not \
         asked: {source}"
    )]
    Staging {
        url: String,
        #[source]
        source: Box<AcmeError>,
    },

    /// The challenge listener could not be opened.
    #[error("cannot open the ACME challenge listener{}: {reason}", .addr.map(|a| format!(" on {a}")).unwrap_or_default())]
    ChallengeListener {
        addr: Option<std::net::SocketAddr>,
        reason: String,
    },

    /// Another node of the shared store holds the ordering task; it publishes the
    /// certificate for every node when it is issued.
    #[error(
        "another node of the shared store is ordering the certificate now; every node \
         presents it when it is issued (try again in a few minutes if it does not come)"
    )]
    OrderedElsewhere,

    /// A renewal was asked for, but the certificate does not come from ACME.
    #[error("the certificate does not come from ACME; order one first (`gateway cert acme`)")]
    NotAcme,

    /// The account or the certificate could not be stored or read back.
    #[error("cannot store the ACME files: {0}")]
    Storage(#[from] TlsError),

    /// A renewal the renewal loop ran (on request) failed; the loop has planned the next
    /// attempt already.
    #[error("{reason}; the renewal is retried at {}", when(*next_attempt))]
    RenewalFailed {
        reason: String,
        next_attempt: std::time::SystemTime,
    },
}

fn when(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn retry_text(after: Option<Duration>) -> String {
    match after {
        Some(after) => format!("{} s", after.as_secs()),
        None => "a while".to_owned(),
    }
}

impl AcmeError {
    /// How long the CA asked us to wait (Retry-After, rate limits), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Server { retry_after, .. } => {
                *retry_after
            }
            Self::Staging { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    /// Whether retrying the same order soon cannot help: the administrator has to change
    /// something (names, configuration) first.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidOrder { .. }
            | Self::CaFile { .. }
            | Self::Refused { .. }
            | Self::NoHttp01 { .. }
            | Self::NotAcme => true,
            Self::Staging { source, .. } => source.is_permanent(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_names_are_permanent_and_rate_limits_say_when() {
        let refused = AcmeError::Refused {
            name: "mail.example.com".into(),
            reason: "policy".into(),
        };
        assert!(refused.is_permanent());
        let limited = AcmeError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            reason: "too many certificates".into(),
        };
        assert!(!limited.is_permanent());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3600)));
        assert!(
            limited.to_string().contains("retry after 3600 s"),
            "{limited}"
        );
        let staged = AcmeError::Staging {
            url: "https://staging.test/dir".into(),
            source: Box::new(refused),
        };
        assert!(staged.is_permanent());
        assert!(staged.to_string().contains("refuses"), "{staged}");
    }
}
