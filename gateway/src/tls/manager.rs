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
//!
//! On a store several nodes share ([`Self::with_share`]) the certificate is one for all of
//! them: a node adopts the published one at start (publishing its own when none was),
//! follows what another node publishes ([`Self::follow_shared`]), publishes its own changes
//! (an import, a new self-signed certificate, an ACME order or renewal), and orders from
//! the CA only while it holds the ordering task, so exactly one node orders at a time; the
//! others answer its HTTP-01 challenges from the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use super::acme::renewal::{
    AttemptOutcome, Issue, Renewal, RenewalError, RenewalHandle, RenewalPolicy, RenewalState,
    SystemClock,
};
use super::acme::{self, AcmeError, AcmeOrder, ChallengeListener, Http01Responses};
use super::{
    CertResolver, CertificateInfo, CertificateShare, CertifiedMaterial, SharedCertificate, TlsError,
};
use crate::config::AcmeSettings;
use crate::net::{ShutdownSignal, SocketOptions, TcpListener};
use crate::store::coordination::SETTINGS_FOLLOW_EVERY;

/// How long a node may hold the ordering task: a staging and a production order, each
/// bounded by [`acme::ORDER_TIMEOUT`], with room to spare. A node that dies mid-order
/// holds it no longer than this.
const ORDERING_TTL: Duration = Duration::from_secs(15 * 60);

/// What a published certificate is told apart by: its source and leaf.
fn identity(source: &str, material: &CertifiedMaterial) -> String {
    format!("{source}:{}", material.fingerprint())
}

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
    /// The certificate store of the nodes sharing this node's database, if any.
    share: Option<Arc<dyn CertificateShare>>,
    /// The shared certificate this node last published or adopted ([`identity`]): another
    /// one in the database is a change to follow.
    shared_seen: Mutex<Option<String>>,
    /// A change of this node could not be published yet (whether it is a start-up default,
    /// [`SharedCertificate::by_default`]); the follower tries again.
    unpublished: Mutex<Option<bool>>,
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
            share: None,
            shared_seen: Mutex::new(None),
            unpublished: Mutex::new(None),
        }
    }

    /// Shares the certificate with the other nodes of this node's database (see the module
    /// documentation); `None` for a node alone.
    pub fn with_share(mut self, share: Option<Arc<dyn CertificateShare>>) -> Self {
        if let Some(share) = &share {
            self.responses = Http01Responses::shared(share.clone());
        }
        self.share = share;
        self
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

    /// Presents `material` from now on (when running), records where it came from and, on a
    /// shared store, publishes it for every node. Leaving ACME closes the challenge listener
    /// and stops renewals; returns whether it did.
    pub async fn put_in_use(&self, material: &CertifiedMaterial, source: &'static str) -> bool {
        let left_acme = self.present(material, source).await;
        self.publish(false).await;
        left_acme
    }

    /// [`Self::put_in_use`] without publishing: for what this node adopts from the others.
    async fn present(&self, material: &CertifiedMaterial, source: &'static str) -> bool {
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
            if !self.answers_for_other_nodes() {
                self.close_challenge_listener().await;
            }
        }
        left_acme
    }

    /// On a shared store a serving node keeps its challenge listener open whatever its
    /// source: the CA may ask it for another node's order.
    fn answers_for_other_nodes(&self) -> bool {
        self.share.is_some() && self.renews
    }

    /// Runs `call` on the share off the async workers; `None` without a share.
    async fn on_share<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn CertificateShare) -> Result<T, TlsError> + Send + 'static,
    ) -> Option<Result<T, TlsError>> {
        let share = self.share.clone()?;
        let done = tokio::task::spawn_blocking(move || call(share.as_ref())).await;
        Some(done.unwrap_or_else(|e| {
            Err(TlsError::Shared {
                reason: format!("the call was lost: {e}"),
            })
        }))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.shared_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unpublished(&self) -> std::sync::MutexGuard<'_, Option<bool>> {
        self.unpublished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the certificate this node presents for every node of a shared store,
    /// unless it comes from `[tls] source = "files"` (each node's own) or is not issued
    /// yet. A failure is logged and retried by [`Self::follow_shared`].
    async fn publish(&self, by_default: bool) {
        let Some(data_dir) = self.data_dir.clone() else {
            return;
        };
        let (source, acme) = {
            let state = self.state();
            (state.source, state.acme.clone())
        };
        let seen = self.seen().clone();
        let published = self
            .on_share(move |share| {
                let Some(mut certificate) =
                    SharedCertificate::from_data_dir(&data_dir, source, acme.as_ref())?
                else {
                    return Ok(None);
                };
                certificate.by_default = by_default;
                let published = identity(source, &certificate.material()?);
                let new = seen.as_deref() != Some(published.as_str());
                if new {
                    share.publish_certificate(&certificate)?;
                }
                Ok(Some((published, new)))
            })
            .await;
        match published {
            None => {}
            Some(Ok(None)) => *self.unpublished() = None,
            Some(Ok(Some((published, new)))) => {
                if new {
                    tracing::info!(
                        source,
                        "published the certificate for every node of the shared store"
                    );
                }
                *self.seen() = Some(published);
                *self.unpublished() = None;
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot publish the certificate to the other nodes; trying again in a few seconds");
                *self.unpublished() = Some(by_default);
            }
        }
    }

    /// Whether this node leaves `shared` alone: another node's start-up default while
    /// this one is configured for ACME (it orders, and publishes what it gets).
    fn passes_over(&self, shared: &SharedCertificate) -> bool {
        shared.by_default && self.source() == "acme"
    }

    /// At start on a shared store: presents the certificate the nodes share, or publishes
    /// this node's when none was. A database that cannot be read fails the start (the
    /// node would present another certificate than its peers). A node on `[tls] source =
    /// "files"` keeps its own.
    pub async fn adopt_shared(self: &Arc<Self>) -> Result<(), TlsError> {
        if self.share.is_none() {
            return Ok(());
        }
        if self.answers_for_other_nodes() && self.challenge_port.is_some() {
            if let Err(e) = self.open_challenge_listener().await {
                tracing::warn!(error = %e, "ACME: the challenge listener cannot open; this node cannot answer the CA for the other nodes' orders");
            }
        }
        if self.source() == "files" {
            return Ok(());
        }
        match self.on_share(|share| share.certificate()).await {
            None => Ok(()),
            Some(Ok(Some(shared))) if self.passes_over(&shared) => {
                tracing::info!("ACME: the other nodes present a default self-signed certificate; this node orders one for all of them");
                *self.seen() = shared.material().ok().map(|m| identity(shared.source, &m));
                Ok(())
            }
            Some(Ok(Some(shared))) => {
                if shared.source != self.source() {
                    tracing::warn!(
                        configured = self.source(),
                        shared = shared.source,
                        "the nodes share a certificate from another source than this node's configuration names; using the shared one"
                    );
                }
                self.adopt(shared).await;
                Ok(())
            }
            Some(Ok(None)) => {
                self.publish(self.source() == "self-signed").await;
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Presents a certificate another node published: written into this node's files for
    /// its source, ACME settings and renewal taken over. An unusable one is logged and
    /// the current certificate stays.
    async fn adopt(self: &Arc<Self>, shared: SharedCertificate) {
        let Some(data_dir) = self.data_dir.clone() else {
            return;
        };
        let source = shared.source;
        let installed = tokio::task::spawn_blocking(move || shared.install(&data_dir)).await;
        let (material, acme) = match installed {
            Ok(Ok(installed)) => installed,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot use the certificate the other nodes share; this node's stays");
                return;
            }
            Err(_) => return,
        };
        let adopted = identity(source, &material);
        let is_acme = acme.is_some();
        self.present(&material, source).await;
        if is_acme {
            self.state().acme = acme;
            if self.renews {
                if let Err(e) = self.open_challenge_listener().await {
                    tracing::warn!(error = %e, "ACME: the challenge listener cannot open; this node cannot renew the certificate");
                }
            }
            self.start_renewal(&material);
        }
        tracing::info!(
            source,
            sha256 = material.fingerprint(),
            "presenting the certificate the nodes of the shared store share"
        );
        *self.seen() = Some(adopted);
    }

    /// Follows the certificate other nodes publish, every [`SETTINGS_FOLLOW_EVERY`], until
    /// `shutdown`; returns at once without a share.
    pub async fn follow_shared(self: Arc<Self>, shutdown: ShutdownSignal) {
        if self.share.is_none() {
            return;
        }
        shutdown
            .every(SETTINGS_FOLLOW_EVERY, || async {
                self.follow_once().await;
                std::ops::ControlFlow::Continue(())
            })
            .await;
    }

    /// One look at the shared certificate: publishes what could not be published before,
    /// adopts what another node published since.
    pub async fn follow_once(self: &Arc<Self>) {
        if self.source() == "files" {
            return;
        }
        let unpublished = *self.unpublished();
        if let Some(by_default) = unpublished {
            self.publish(by_default).await;
            return;
        }
        let shared = match self.on_share(|share| share.certificate()).await {
            Some(Ok(Some(shared))) => shared,
            Some(Ok(None)) | None => return,
            // Out of reach for now: the next tick tries again.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the shared certificate is unreadable");
                return;
            }
        };
        let Ok(material) = shared.material() else {
            tracing::error!("the certificate the other nodes share is unusable; this node's stays");
            return;
        };
        let published = identity(shared.source, &material);
        if self.seen().as_deref() == Some(published.as_str()) {
            return;
        }
        if self.passes_over(&shared) {
            *self.seen() = Some(published);
            return;
        }
        tracing::info!(
            source = shared.source,
            sha256 = material.fingerprint(),
            "following the certificate another node published"
        );
        self.adopt(shared).await;
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
        self.present(&material, "acme").await;
        self.state().acme = Some(settings);
        self.record_new_certificate();
        self.start_renewal(&material);
        self.publish(false).await;
        Ok(material)
    }

    /// The order a renewal makes: production directory only (the setup was proven when it
    /// was made). Stores the certificate but does not present it.
    async fn order_renewal(&self) -> Result<CertifiedMaterial, AcmeError> {
        let settings = self.acme_settings().ok_or(AcmeError::NotAcme)?;
        if let Some(renewed) = self.renewed_elsewhere().await {
            return Ok(renewed);
        }
        let order = acme_order(&settings, &self.host_name, false)?;
        self.order(&order, false).await
    }

    /// On a shared store: an ACME certificate another node renewed that is not due yet,
    /// installed here (the renewal loop then presents it instead of ordering again).
    async fn renewed_elsewhere(&self) -> Option<CertifiedMaterial> {
        let shared = self.on_share(|share| share.certificate()).await?.ok()??;
        let current = self.resolver.as_ref().map(|r| r.current());
        let material = shared.material().ok()?;
        let info = material.info();
        let fresh = shared.source == "acme"
            && current.is_none_or(|c| c.fingerprint() != material.fingerprint())
            && self.renewal_policy.due_at(info.not_before, info.not_after) > SystemTime::now();
        if !fresh {
            return None;
        }
        let data_dir = self.data_dir.clone()?;
        let installed = tokio::task::spawn_blocking(move || shared.install(&data_dir)).await;
        let (material, _) = installed.ok()?.ok()?;
        tracing::info!(
            sha256 = material.fingerprint(),
            "ACME: another node renewed the certificate; using it"
        );
        *self.seen() = Some(identity("acme", &material));
        Some(material)
    }

    /// Presents a renewed certificate on every listener, unless the administrator chose
    /// another certificate while the order ran, and publishes it for the other nodes.
    fn present_renewed(self: &Arc<Self>, material: CertifiedMaterial) {
        if self.source() == "acme" {
            if let Some(resolver) = &self.resolver {
                resolver.swap(material);
            }
            if self.share.is_some() {
                let manager = Arc::clone(self);
                tokio::spawn(async move { manager.publish(false).await });
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
    pub async fn renew(self: &Arc<Self>) -> Result<CertifiedMaterial, AcmeError> {
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
    pub async fn renew_now(self: &Arc<Self>) -> Result<CertifiedMaterial, AcmeError> {
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
                Err(AcmeError::OrderedElsewhere) => {
                    tracing::info!("ACME: another node of the shared store is ordering the certificate; this node presents it when it is published")
                }
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
        match self
            .on_share(|share| share.take_ordering(ORDERING_TTL))
            .await
        {
            None | Some(Ok(true)) => {}
            Some(Ok(false)) => return Err(AcmeError::OrderedElsewhere),
            Some(Err(e)) => return Err(AcmeError::Storage(e)),
        }
        let result = self.order_holding_the_task(order, &data_dir).await;
        if let Some(Err(e)) = self.on_share(|share| share.release_ordering()).await {
            // It expires by itself; another node only waits longer.
            tracing::warn!(error = %e, "ACME: cannot hand the ordering task back");
        }
        // Renewals need the port later, and so do the other nodes' orders; anything else
        // closes it again.
        let keep_open = self.source() == "acme"
            || (becomes_acme && result.is_ok())
            || self.answers_for_other_nodes();
        if !keep_open {
            self.close_challenge_listener().await;
        }
        result
    }

    /// The order itself, with the nodes' ACME account: taken from the share before (so
    /// the nodes register one account per CA, not one each) and published after.
    async fn order_holding_the_task(
        &self,
        order: &AcmeOrder,
        data_dir: &Path,
    ) -> Result<CertifiedMaterial, AcmeError> {
        let directories: Vec<String> = std::iter::once(order.directory_url.clone())
            .chain(order.staging_directory_url.clone())
            .collect();
        let (dir, urls) = (data_dir.to_owned(), directories.clone());
        let taken = self
            .on_share(move |share| {
                for url in &urls {
                    if let Some(credentials) = share.account(url)? {
                        acme::write_account(&dir, url, &credentials)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Some(Err(e)) = taken {
            return Err(AcmeError::Storage(e));
        }
        self.open_challenge_listener().await?;
        let result = acme::obtain(order, data_dir, &self.responses).await;
        let dir = data_dir.to_owned();
        let published = self
            .on_share(move |share| {
                for url in &directories {
                    if let Some(credentials) = acme::read_account(&dir, url)? {
                        share.publish_account(url, &credentials)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Some(Err(e)) = published {
            tracing::warn!(error = %e, "ACME: cannot share the account with the other nodes; another node may register its own");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::tls::shared::memory::MemoryShare;
    use crate::tls::CertificateSourceSpec;

    const HOST: &str = "mail.example.com";

    /// A serving node on `database` with its own data directory and self-signed
    /// certificate.
    fn node(
        database: &Arc<MemoryShare>,
        name: &str,
        source: &'static str,
    ) -> (tempfile::TempDir, Arc<CertificateManager>) {
        let dir = tempfile::tempdir().unwrap();
        let (resolver, _) =
            crate::tls::prepare(&CertificateSourceSpec::SelfSigned, dir.path(), HOST).unwrap();
        let manager = CertificateManager::new(
            HOST.to_owned(),
            Some(dir.path().to_owned()),
            Some(resolver),
            source,
        )
        .with_renewal()
        .with_share(Some(database.node(name)));
        (dir, Arc::new(manager))
    }

    fn presented(manager: &CertificateManager) -> String {
        manager
            .resolver()
            .unwrap()
            .current()
            .fingerprint()
            .to_owned()
    }

    /// A certificate for `HOST` valid from yesterday for 90 days (not due for renewal).
    fn fresh_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(89);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn imported(dir: &Path) -> CertifiedMaterial {
        let (chain, key) = fresh_pair();
        crate::tls::import_pem(dir, chain.as_bytes(), key.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn the_nodes_present_the_first_ones_certificate_and_follow_a_change() {
        let database = Arc::new(MemoryShare::default());
        let (_a_dir, a) = node(&database, "a", "self-signed");
        let (b_dir, b) = node(&database, "b", "self-signed");
        assert_ne!(presented(&a), presented(&b));
        a.adopt_shared().await.unwrap();
        b.adopt_shared().await.unwrap();
        assert_eq!(presented(&b), presented(&a), "B took A's");
        // The key is in the database only as the share keeps it (the service seals it).
        let new = imported(_a_dir.path());
        a.put_in_use(&new, "imported").await;
        b.follow_once().await;
        assert_eq!(presented(&b), new.fingerprint());
        assert_eq!(b.source(), "imported");
        // Written where B's own start-up finds it.
        let on_disk = crate::tls::load_imported(b_dir.path()).unwrap().unwrap();
        assert_eq!(on_disk.fingerprint(), new.fingerprint());
        // Nothing new: following changes nothing.
        b.follow_once().await;
        assert_eq!(presented(&b), new.fingerprint());
    }

    #[tokio::test]
    async fn a_change_the_database_missed_is_published_later_and_never_undone() {
        let database = Arc::new(MemoryShare::default());
        let (a_dir, a) = node(&database, "a", "self-signed");
        let (_b_dir, b) = node(&database, "b", "self-signed");
        a.adopt_shared().await.unwrap();
        b.adopt_shared().await.unwrap();
        database.down.store(true, Ordering::Relaxed);
        let new = imported(a_dir.path());
        a.put_in_use(&new, "imported").await;
        a.follow_once().await;
        assert_eq!(presented(&a), new.fingerprint(), "A keeps its change");
        database.down.store(false, Ordering::Relaxed);
        a.follow_once().await;
        a.follow_once().await;
        assert_eq!(
            presented(&a),
            new.fingerprint(),
            "not undone by the old one"
        );
        b.follow_once().await;
        assert_eq!(
            presented(&b),
            new.fingerprint(),
            "published once it could be"
        );
    }

    #[tokio::test]
    async fn a_node_on_its_own_files_neither_publishes_nor_follows() {
        let database = Arc::new(MemoryShare::default());
        let (_dir, files) = node(&database, "files", "files");
        let own = presented(&files);
        files.adopt_shared().await.unwrap();
        assert!(database.db().certificate.is_none());
        let (_a_dir, a) = node(&database, "a", "self-signed");
        a.adopt_shared().await.unwrap();
        files.follow_once().await;
        assert_eq!(presented(&files), own);
    }

    /// A serving node configured for ACME (it orders nothing in these tests).
    fn acme_node(
        database: &Arc<MemoryShare>,
        name: &str,
    ) -> (tempfile::TempDir, Arc<CertificateManager>) {
        let (dir, manager) = node(database, name, "acme");
        let manager = Arc::into_inner(manager)
            .unwrap()
            .with_acme(Some(acme_settings()), None);
        (dir, Arc::new(manager))
    }

    fn acme_settings() -> AcmeSettings {
        AcmeSettings {
            directory_url: "https://acme.invalid/directory".into(),
            contact_email: None,
            ca_file: None,
            domains: vec![HOST.to_owned()],
            staging_directory_url: None,
        }
    }

    #[tokio::test]
    async fn only_the_node_holding_the_ordering_task_orders() {
        let database = Arc::new(MemoryShare::default());
        let (_dir, a) = acme_node(&database, "a");
        database.db().ordering = Some("b".into());
        assert!(matches!(
            a.renew_now().await,
            Err(AcmeError::OrderedElsewhere)
        ));
        // Free: A takes it and gets as far as its challenge port (none here), then hands
        // the task back.
        database.db().ordering = None;
        let failed = a.renew_now().await;
        assert!(
            matches!(failed, Err(AcmeError::ChallengeListener { .. })),
            "{failed:?}"
        );
        assert_eq!(database.db().ordering, None);
    }

    #[tokio::test]
    async fn a_renewal_another_node_made_is_taken_instead_of_ordering_again() {
        let database = Arc::new(MemoryShare::default());
        let (_dir, a) = acme_node(&database, "a");
        let (chain, key) = fresh_pair();
        let renewed = SharedCertificate {
            source: "acme",
            chain_pem: chain,
            key_pem: zeroize::Zeroizing::new(key),
            acme: None,
            by_default: false,
        };
        let fingerprint = renewed.material().unwrap().fingerprint().to_owned();
        database.db().certificate = Some(renewed);
        // The other node holds the task: had A tried to order, it would have been refused.
        database.db().ordering = Some("b".into());
        let material = a.renew_now().await.unwrap();
        assert_eq!(material.fingerprint(), fingerprint);
        assert_eq!(presented(&a), fingerprint);
    }

    #[tokio::test]
    async fn an_acme_node_passes_over_another_nodes_default_but_follows_a_choice() {
        let database = Arc::new(MemoryShare::default());
        let (a_dir, a) = node(&database, "a", "self-signed");
        let (_b_dir, b) = acme_node(&database, "b");
        let own = presented(&b);
        a.adopt_shared().await.unwrap();
        assert!(database.db().certificate.as_ref().unwrap().by_default);
        b.adopt_shared().await.unwrap();
        b.follow_once().await;
        assert_eq!(presented(&b), own, "B orders instead");
        assert_eq!(b.source(), "acme");
        // A self-signed certificate an administrator creates is a choice for every node.
        let chosen = crate::tls::create_self_signed(a_dir.path(), HOST, &[]).unwrap();
        a.put_in_use(&chosen, "self-signed").await;
        assert!(!database.db().certificate.as_ref().unwrap().by_default);
        b.follow_once().await;
        assert_eq!(presented(&b), chosen.fingerprint());
        assert_eq!(b.source(), "self-signed");
        assert!(b.acme_settings().is_none(), "ACME ends on B too");
    }
}
