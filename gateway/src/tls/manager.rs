//! The one place that decides which certificate the listeners present and where it comes
//! from: self-signed, imported, configured files, or ACME. The API functions (and so the
//! CLI and the console), `serve` and the renewal loop all go through a
//! [`CertificateManager`].
//!
//! It owns the ACME side: the challenge listener on `[listen.acme_http]` is open while the
//! source is ACME or an order runs, and closed otherwise; one order runs at a time;
//! [`CertificateManager::renew_now`] is the entry point for renewals (by hand or on
//! schedule). Choosing a self-signed or imported certificate while the source is ACME ends
//! ACME: the challenge listener closes and renewals stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::SystemTime;

use super::acme::renewal::{
    AttemptOutcome, Issue, Renewal, RenewalError, RenewalHandle, RenewalPolicy, RenewalState,
    SystemClock,
};
use super::acme::{self, AcmeError, AcmeOrder, ChallengeListener, Http01Responses};
use super::{CertResolver, CertificateInfo, CertifiedMaterial};
use crate::config::AcmeSettings;
use crate::net::{SocketOptions, TcpListener};

/// The order `settings` make for `host_name`; `staging` runs it on the staging directory
/// first.
fn acme_order(
    settings: &AcmeSettings,
    host_name: &str,
    staging: bool,
) -> Result<AcmeOrder, AcmeError> {
    let ca_pem = match &settings.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| AcmeError::CaFile {
                reason: format!("cannot read {}: {e}", path.display()),
            })?,
        ),
        None => None,
    };
    let domains = if settings.domains.is_empty() {
        vec![host_name.to_owned()]
    } else {
        settings.domains.clone()
    };
    Ok(AcmeOrder {
        domains,
        contact_email: settings.contact_email.clone(),
        directory_url: settings.directory_url.clone(),
        staging_directory_url: if staging {
            settings.staging_directory_url.clone()
        } else {
            None
        },
        ca_pem,
    })
}

/// Where the challenge listener opens (`[listen.acme_http]`).
#[derive(Debug, Clone, Copy)]
pub struct ChallengePort {
    pub addr: SocketAddr,
    pub options: SocketOptions,
}

struct State {
    /// `self-signed`, `imported`, `files` or `acme`.
    source: &'static str,
    /// Set while the source is ACME.
    acme: Option<AcmeSettings>,
}

/// See the module documentation. Shared as `Arc<CertificateManager>`.
pub struct CertificateManager {
    host_name: String,
    data_dir: Option<PathBuf>,
    /// `None` when the gateway is not running (the CLI on a stopped gateway).
    resolver: Option<Arc<CertResolver>>,
    state: Mutex<State>,
    /// `None` when `[listen.acme_http]` is disabled.
    challenge_port: Option<ChallengePort>,
    challenge: tokio::sync::Mutex<Option<ChallengeListener>>,
    responses: Http01Responses,
    /// One order at a time: a renewal and an order by hand must not race to store.
    ordering: tokio::sync::Mutex<()>,
    /// When the certificate is due (`[tls] acme_renew_*_days`).
    renewal_policy: RenewalPolicy,
    /// Only `serve` runs the renewal loop: a CLI process on a stopped gateway must not.
    renews: bool,
    /// The loop while the source is ACME (and `renews`).
    renewal: Mutex<Option<RunningRenewal>>,
}

struct RunningRenewal {
    task: tokio::task::JoinHandle<()>,
    handle: RenewalHandle,
}

impl Drop for CertificateManager {
    fn drop(&mut self) {
        // The loop holds only a weak reference; without its manager it has nothing to do.
        self.stop_renewal();
    }
}

/// The renewal loop's issuer: the same order as [`CertificateManager::renew_now`], on the
/// production directory.
struct ManagerIssuer(Weak<CertificateManager>);

impl Issue for ManagerIssuer {
    type Error = AcmeError;

    async fn issue(&self) -> Result<CertifiedMaterial, AcmeError> {
        let manager = self.0.upgrade().ok_or(AcmeError::NotAcme)?;
        manager.order_renewal().await
    }
}

impl RenewalError for AcmeError {
    fn retry_after(&self) -> Option<std::time::Duration> {
        AcmeError::retry_after(self)
    }

    fn is_permanent(&self) -> bool {
        AcmeError::is_permanent(self)
    }
}

/// What `GetCertificateInfo` shows about renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalStatus {
    pub state: RenewalState,
    /// When the certificate in use is due by the policy.
    pub due: Option<SystemTime>,
    /// Whether a renewal loop runs in this process (false on a stopped gateway).
    pub scheduled: bool,
}

impl CertificateManager {
    pub fn new(
        host_name: String,
        data_dir: Option<PathBuf>,
        resolver: Option<Arc<CertResolver>>,
        source: &'static str,
    ) -> Self {
        Self {
            host_name,
            data_dir,
            resolver,
            state: Mutex::new(State { source, acme: None }),
            challenge_port: None,
            challenge: tokio::sync::Mutex::new(None),
            responses: Http01Responses::new(),
            ordering: tokio::sync::Mutex::new(()),
            renewal_policy: RenewalPolicy::default(),
            renews: false,
            renewal: Mutex::new(None),
        }
    }

    /// Renews on schedule (with the policy [`Self::from_config`] read, else the default)
    /// while the source is ACME; only `serve` asks for it.
    pub fn with_renewal(mut self) -> Self {
        self.renews = true;
        self
    }

    /// A manager for `config`: its ACME settings, its challenge port, `source` as start-up
    /// chose it ([`super::source_name`]).
    pub fn from_config(
        config: &crate::config::Config,
        resolver: Option<Arc<CertResolver>>,
    ) -> Self {
        let data_dir = config.gateway.data_dir.clone();
        let source = super::source_name(config.tls.source.name(), &data_dir);
        let listener = &config.listen.acme_http;
        let port = listener.enabled.then(|| ChallengePort {
            addr: listener.socket_addr(),
            options: SocketOptions {
                backlog: config.limits.listen_backlog,
                keepalive: config.limits.tcp_keepalive(),
            },
        });
        Self::new(
            config.gateway.host_name.clone(),
            Some(data_dir),
            resolver,
            source,
        )
        .with_acme(config.tls.source.acme().cloned(), port)
        .with_policy(RenewalPolicy::from_days(
            config.tls.acme_renewal.renew_after_days,
            config.tls.acme_renewal.renew_before_days,
        ))
    }

    /// The renewal policy (for showing when the certificate is due) without running a loop.
    fn with_policy(mut self, policy: RenewalPolicy) -> Self {
        self.renewal_policy = policy;
        self
    }

    /// The renewal policy in force.
    pub fn renewal_policy(&self) -> RenewalPolicy {
        self.renewal_policy
    }

    /// The ACME settings in force (when the source is ACME) and where challenges are
    /// answered.
    pub fn with_acme(mut self, acme: Option<AcmeSettings>, port: Option<ChallengePort>) -> Self {
        self.state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .acme = acme;
        self.challenge_port = port;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only whole assignments happen under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The listeners' resolver; `None` on a stopped gateway.
    pub fn resolver(&self) -> Option<&Arc<CertResolver>> {
        self.resolver.as_ref()
    }

    pub fn source(&self) -> &'static str {
        self.state().source
    }

    /// The ACME settings while the source is ACME.
    pub fn acme_settings(&self) -> Option<AcmeSettings> {
        self.state().acme.clone()
    }

    /// Presents `material` from now on (when running) and records where it came from.
    /// Leaving ACME closes the challenge listener and stops renewals; returns whether it did.
    pub async fn put_in_use(&self, material: &CertifiedMaterial, source: &'static str) -> bool {
        if let Some(resolver) = &self.resolver {
            resolver.swap(material.clone());
        }
        let left_acme = {
            let mut state = self.state();
            let was_acme = state.source == "acme";
            state.source = source;
            if source != "acme" {
                state.acme = None;
            }
            was_acme && source != "acme"
        };
        if left_acme {
            tracing::info!(source, "certificate chosen by hand: ACME renewal stops");
            self.stop_renewal();
            self.close_challenge_listener().await;
        }
        left_acme
    }

    /// Where the challenge listener listens, if it is open.
    pub async fn challenge_listener_addr(&self) -> Option<SocketAddr> {
        self.challenge
            .lock()
            .await
            .as_ref()
            .map(ChallengeListener::local_addr)
    }

    /// Opens the challenge listener unless it is open; returns its address.
    pub async fn open_challenge_listener(&self) -> Result<SocketAddr, AcmeError> {
        let mut slot = self.challenge.lock().await;
        if let Some(open) = slot.as_ref() {
            return Ok(open.local_addr());
        }
        let Some(port) = self.challenge_port else {
            return Err(AcmeError::ChallengeListener {
                addr: None,
                reason: "[listen.acme_http] is disabled; HTTP-01 needs it (enable it and \
                         forward port 80 to it)"
                    .to_owned(),
            });
        };
        let bound = TcpListener::bind(port.addr, port.options).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                }
                std::io::ErrorKind::AddrInUse => {
                    " (another program, e.g. a web server, uses this port)"
                }
                _ => "",
            };
            AcmeError::ChallengeListener {
                addr: Some(port.addr),
                reason: format!("{e}{hint}"),
            }
        })?;
        let listener = ChallengeListener::start(bound, self.responses.clone()).map_err(|e| {
            AcmeError::ChallengeListener {
                addr: Some(port.addr),
                reason: e.to_string(),
            }
        })?;
        let addr = listener.local_addr();
        *slot = Some(listener);
        Ok(addr)
    }

    /// Closes the challenge listener if it is open.
    pub async fn close_challenge_listener(&self) {
        let open = self.challenge.lock().await.take();
        if let Some(listener) = open {
            listener.stop().await;
        }
    }

    /// Orders a certificate with `settings` (on their staging directory first when
    /// `staging_first`), presents it and makes ACME the source. On failure the certificate
    /// and the source in use stay, and the challenge listener is closed again unless the
    /// source is ACME.
    pub async fn request_acme(
        self: &Arc<Self>,
        settings: AcmeSettings,
        staging_first: bool,
    ) -> Result<CertifiedMaterial, AcmeError> {
        let order = acme_order(&settings, &self.host_name, staging_first)?;
        let material = self.order(&order, true).await?;
        self.put_in_use(&material, "acme").await;
        self.state().acme = Some(settings);
        self.record_new_certificate();
        self.start_renewal(&material);
        Ok(material)
    }

    /// The order a renewal makes: production directory only (the setup was proven when it
    /// was made). Stores the certificate but does not present it.
    async fn order_renewal(&self) -> Result<CertifiedMaterial, AcmeError> {
        let settings = self.acme_settings().ok_or(AcmeError::NotAcme)?;
        let order = acme_order(&settings, &self.host_name, false)?;
        self.order(&order, false).await
    }

    /// Presents a renewed certificate on every listener, unless the administrator chose
    /// another certificate while the order ran.
    fn present_renewed(&self, material: CertifiedMaterial) {
        if self.source() == "acme" {
            if let Some(resolver) = &self.resolver {
                resolver.swap(material);
            }
        }
    }

    /// Starts (or restarts) the renewal loop for `current`, the ACME certificate in use.
    /// Does nothing outside `serve` or without a data directory.
    pub fn start_renewal(self: &Arc<Self>, current: &CertifiedMaterial) {
        if !self.renews {
            return;
        }
        let Some(data_dir) = self.data_dir.clone() else {
            return;
        };
        let mut seed = [0u8; 8];
        // Jitter spreads gateways; a seed that cannot be drawn only costs that spread.
        if let Err(e) = getrandom::fill(&mut seed) {
            tracing::warn!(error = %e, "no random seed for the renewal jitter");
        }
        let renewal = Renewal::new(
            self.renewal_policy,
            SystemClock,
            ManagerIssuer(Arc::downgrade(self)),
            &data_dir,
            current,
            u64::from_le_bytes(seed),
        );
        let handle = renewal.handle();
        tracing::info!(
            next_attempt = %time::OffsetDateTime::from(renewal.next_attempt()),
            "ACME renewal scheduled"
        );
        let manager = Arc::downgrade(self);
        let task = tokio::spawn(renewal.run(move |material| {
            if let Some(manager) = manager.upgrade() {
                manager.present_renewed(material);
            }
        }));
        let previous = self
            .renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(RunningRenewal { task, handle });
        if let Some(previous) = previous {
            previous.task.abort();
        }
    }

    /// Stops the renewal loop, if one runs.
    pub fn stop_renewal(&self) {
        let running = self
            .renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            running.task.abort();
        }
    }

    /// The running loop's handle.
    pub fn renewal_handle(&self) -> Option<RenewalHandle> {
        self.renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.handle.clone())
    }

    /// A certificate ordered by hand (or at first start) starts the record afresh: old
    /// failures belong to the previous setup.
    fn record_new_certificate(&self) {
        let Some(data_dir) = &self.data_dir else {
            return;
        };
        let now = SystemTime::now();
        let fresh = RenewalState {
            last_success: Some(now),
            last_attempt: Some(now),
            ..RenewalState::default()
        };
        if let Err(e) = fresh.save(&acme::renewal::state_path(data_dir)) {
            tracing::error!(error = %e, "cannot store the ACME renewal state");
        }
    }

    /// The renewal record while the source is ACME: the loop's when it runs, else the
    /// state file's (a stopped gateway).
    pub fn renewal_status(&self, current: Option<&CertificateInfo>) -> Option<RenewalStatus> {
        self.acme_settings()?;
        let due = current.map(|info| self.renewal_policy.due_at(info.not_before, info.not_after));
        if let Some(handle) = self.renewal_handle() {
            return Some(RenewalStatus {
                state: handle.state(),
                due,
                scheduled: true,
            });
        }
        let state = RenewalState::load(&acme::renewal::state_path(self.data_dir.as_deref()?));
        Some(RenewalStatus {
            state,
            due,
            scheduled: false,
        })
    }

    /// "Renew now": through the loop when it runs, so its record (failures, next attempt)
    /// stays right; directly otherwise (the CLI on a stopped gateway).
    pub async fn renew(&self) -> Result<CertifiedMaterial, AcmeError> {
        let Some(handle) = self.renewal_handle() else {
            return self.renew_now().await;
        };
        match handle.renew_now().await {
            Some(AttemptOutcome::Renewed { .. }) => self
                .resolver
                .as_ref()
                .map(|r| r.current())
                .ok_or(AcmeError::NotAcme),
            Some(AttemptOutcome::Failed {
                error,
                next_attempt,
            }) => Err(AcmeError::RenewalFailed {
                reason: error,
                next_attempt,
            }),
            // The loop was stopped meanwhile: another certificate was chosen.
            None => Err(AcmeError::NotAcme),
        }
    }

    /// Renews the ACME certificate now (production directory only: the setup was proven
    /// when it was made) and presents the new one. The renewal schedule calls this too.
    pub async fn renew_now(&self) -> Result<CertifiedMaterial, AcmeError> {
        let material = self.order_renewal().await?;
        self.present_renewed(material.clone());
        Ok(material)
    }

    /// `serve` with ACME configured: presents the stored ACME certificate if there is a
    /// usable one that names every domain; otherwise orders one in the background (the
    /// listeners start on the self-signed certificate meanwhile) and swaps it in when it
    /// arrives. Errors are logged in words.
    pub fn start_acme(self: &Arc<Self>) {
        let Some(settings) = self.acme_settings() else {
            return;
        };
        let Some(data_dir) = self.data_dir.clone() else {
            return;
        };
        let domains = if settings.domains.is_empty() {
            vec![self.host_name.clone()]
        } else {
            settings.domains.clone()
        };
        if let Some(Ok(stored)) = acme::load_acme(&data_dir) {
            let fits = domains.iter().all(|d| stored.info().covers(d))
                && !stored
                    .info()
                    .invalid_within(std::time::SystemTime::now(), std::time::Duration::ZERO);
            if fits {
                self.start_renewal(&stored);
                return;
            }
        }
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            tracing::info!(domains = ?domains, "ACME: no usable stored certificate; ordering one (serving the self-signed certificate meanwhile)");
            // A first order for this setup: staging first, as with a new setup by hand.
            let result = match acme_order(&settings, &manager.host_name, true) {
                Ok(order) => manager.order(&order, false).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(material) if manager.source() == "acme" => {
                    manager.record_new_certificate();
                    manager.start_renewal(&material);
                    manager.present_renewed(material);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "ACME: no certificate obtained; the current certificate stays in use")
                }
            }
        });
    }

    /// Runs one order with the challenge listener open, one order at a time; the
    /// listener is closed again afterwards unless the source is ACME.
    async fn order(
        &self,
        order: &AcmeOrder,
        becomes_acme: bool,
    ) -> Result<CertifiedMaterial, AcmeError> {
        let data_dir = self
            .data_dir
            .clone()
            .ok_or_else(|| AcmeError::InvalidOrder {
                reason: "this gateway has no data directory to keep the certificate in".to_owned(),
            })?;
        let _one_at_a_time = self.ordering.lock().await;
        self.open_challenge_listener().await?;
        let result = acme::obtain(order, &data_dir, &self.responses).await;
        // Renewals need the port later; anything else closes it again.
        let keep_open = self.source() == "acme" || (becomes_acme && result.is_ok());
        if !keep_open {
            self.close_challenge_listener().await;
        }
        result
    }
}
