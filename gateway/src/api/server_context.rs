//! What the API reports about the running process: start time, listeners, certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::tls::{CertResolver, CertificateManager};

/// Whether a configured listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenerState {
    Listening,
    Disabled,
    /// The gateway is not running (the CLI answered from the store).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerInfo {
    /// `smtp`, `submission`, `smtps`, `pop3`, `pop3s`, `console`.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub state: ListenerState,
}

/// The running process as the API sees it.
pub struct ServerContext {
    pub host_name: String,
    started: Instant,
    /// Unix milliseconds.
    pub started_at: u64,
    listeners: Mutex<Vec<ListenerInfo>>,
    /// The certificate the listeners present; `None` when the gateway is not running.
    pub certificates: Option<Arc<CertResolver>>,
    /// The rules for choosing and obtaining certificates, and where the current one comes
    /// from (`self-signed`, `imported`, `files` or `acme`).
    certificate_manager: Arc<CertificateManager>,
    /// Where chosen certificates are stored; `None` in tests that have no data directory.
    data_dir: Option<PathBuf>,
    /// Listeners whose accept loop ended while the gateway runs (by service name).
    stopped_listeners: Mutex<Vec<&'static str>>,
    /// Set when graceful shutdown begins: from then on the gateway is not ready.
    shutting_down: AtomicBool,
    /// The last store write probe of `/readyz`.
    store_probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
    store_probe_interval: Duration,
    /// `[backup] snapshot_interval`; `None`: no rolling snapshots.
    snapshot_interval: Option<Duration>,
}

/// How long a store probe's result stands: `/readyz` needs no login, so a flood of requests
/// must not turn into a flood of commits.
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A commit slower than this counts as a store that does not take writes.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl ServerContext {
    pub fn new(
        host_name: String,
        certificates: Option<Arc<CertResolver>>,
        certificate_source: &'static str,
    ) -> Self {
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            started: Instant::now(),
            started_at,
            listeners: Mutex::new(Vec::new()),
            certificate_manager: Arc::new(CertificateManager::new(
                host_name.clone(),
                None,
                certificates.clone(),
                certificate_source,
            )),
            host_name,
            certificates,
            data_dir: None,
            stopped_listeners: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            store_probe: tokio::sync::Mutex::new(None),
            store_probe_interval: STORE_PROBE_INTERVAL,
            snapshot_interval: None,
        }
    }

    /// Where [`Self::data_dir`] points: certificate functions store their material there.
    pub fn with_data_dir(mut self, data_dir: PathBuf) -> Self {
        self.certificate_manager = Arc::new(CertificateManager::new(
            self.host_name.clone(),
            Some(data_dir.clone()),
            self.certificates.clone(),
            self.certificate_manager.source(),
        ));
        self.data_dir = Some(data_dir);
        self
    }

    /// Rolling snapshots are taken every `interval` (`[backup] snapshot_interval`).
    pub fn with_snapshot_interval(mut self, interval: Option<Duration>) -> Self {
        self.snapshot_interval = interval;
        self
    }

    /// `[backup] snapshot_interval`, when rolling snapshots are on.
    pub fn snapshot_interval(&self) -> Option<Duration> {
        self.snapshot_interval
    }

    /// How long a store probe's result stands (tests).
    pub fn with_store_probe_interval(mut self, interval: Duration) -> Self {
        self.store_probe_interval = interval;
        self
    }

    /// A manager set up with the configuration's ACME settings and challenge port (the
    /// default one knows neither).
    pub fn with_certificate_manager(mut self, manager: Arc<CertificateManager>) -> Self {
        self.certificate_manager = manager;
        self
    }

    pub fn certificate_manager(&self) -> &Arc<CertificateManager> {
        &self.certificate_manager
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub fn certificate_source(&self) -> &'static str {
        self.certificate_manager.source()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Records the configured listeners; `bound` holds those that serve, by name.
    pub fn set_listeners(
        &self,
        configured: &[(&'static str, SocketAddr, bool)],
        bound: &[(&'static str, SocketAddr)],
        running: bool,
    ) {
        let list = configured
            .iter()
            .map(|&(name, addr, enabled)| {
                let serving = bound.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
                let addr = serving.unwrap_or(addr);
                ListenerInfo {
                    name: name.to_owned(),
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    state: match (running, enabled, serving.is_some()) {
                        (false, _, _) => ListenerState::Stopped,
                        (true, _, true) => ListenerState::Listening,
                        _ => ListenerState::Disabled,
                    },
                }
            })
            .collect();
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// Records that the accept loop of `service` ended.
    pub fn listener_stopped(&self, service: &'static str) {
        let mut stopped = self
            .stopped_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !stopped.contains(&service) {
            stopped.push(service);
        }
    }

    /// Listeners that were serving and stopped, by service name.
    pub fn stopped_listeners(&self) -> Vec<&'static str> {
        self.stopped_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Graceful shutdown began.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether the store took a commit within `STORE_PROBE_TIMEOUT`, probed at most once
    /// per `STORE_PROBE_INTERVAL`; concurrent callers wait for one probe and share it.
    pub async fn store_writable(&self, gateway: &crate::service::Gateway) -> bool {
        let mut last = self.store_probe.lock().await;
        if let Some((at, writable)) = *last {
            if at.elapsed() < self.store_probe_interval {
                return writable;
            }
        }
        let writable = match tokio::time::timeout(STORE_PROBE_TIMEOUT, gateway.probe_store()).await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store does not take a commit");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout = ?STORE_PROBE_TIMEOUT,
                    "readiness: a commit to the store did not finish in time"
                );
                false
            }
        };
        *last = Some((Instant::now(), writable));
        writable
    }

    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
