//! The administrator account and API keys: every rule about who may administer the gateway.
//!
//! - One account, `admin`, stored as an Argon2id hash. A new store holds the initial
//!   password `admin` ([`crate::crypto::INITIAL_ADMIN_PASSWORD`]), which logs in as
//!   [`AdminLogin::InitialPassword`]: good only to set a new one. A reset replaces it with a
//!   random password shown once, and from then on `admin`/`admin` is refused. A reset on the
//!   host ([`Gateway::reset_admin_password`] with `None`) needs no current password: whoever
//!   can run commands as the service user owns the store anyway.
//! - API keys (see [`super::api_key`]): created with the key shown once, listed, revoked.
//! - Login throttling, shared by every transport: per client ([`ClientKey`]) a few free
//!   attempts, then waits that double, and refusal while a client waits out its failures;
//!   per account, failures only delay the failed answers, never refuse, so nobody can lock
//!   the administrator out. Loopback clients skip the per-client throttle and have a password
//!   check slot of their own: the administrator on the host always gets in.
//! - Argon2id runs on tokio's blocking threads, a few at a time.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};
use zeroize::Zeroizing;

use super::api_key::ApiKey;
use super::{Gateway, ServiceError};
use crate::config::Language;
use crate::crypto::{self, AdminPassword};
use crate::metrics::LoginKind;
use crate::store::schema::ADMIN_ACCOUNT;
use crate::store::Coordination;
use crate::store::{AdminRecord, ApiKeyRecord, StoreError};
use crate::throttle::{ClientKey, Policy, SharedThrottle};

/// The administrator's login is a password login like a pick-up, and throttled the same:
/// per client, 5 failed logins free, then a growing wait and refusals
/// ([`super::CLIENT_POLICY`]); per account, a growing delay on failed answers, never a
/// refusal ([`super::MAILBOX_POLICY`]).
pub const CLIENT_POLICY: Policy = super::CLIENT_POLICY;
pub const ACCOUNT_POLICY: Policy = super::MAILBOX_POLICY;

/// Password checks (Argon2id, 19 MiB each) running at once for clients not on loopback.
const CHECK_SLOTS: usize = 2;
/// How long a check waits for a slot before the answer is "try again later".
const CHECK_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key (each write is a commit).
const LAST_USED_RESOLUTION_MS: u64 = 60_000;
/// API keys the store holds at most; revoke unused ones to make room.
pub const MAX_API_KEYS: usize = 1000;

/// How a correct administrator password logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminLogin {
    /// The password set by a reset: every function.
    Valid,
    /// The initial password `admin`: only to set a new one (see the module docs).
    InitialPassword,
}

/// What lists show of an API key. Holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds, to the minute; `None`: never used.
    pub last_used_at: Option<u64>,
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(record: &ApiKeyRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
        }
    }
}

/// An API key just created, with the key shown exactly this once.
#[derive(Debug)]
pub struct NewApiKey {
    pub info: ApiKeyInfo,
    pub key: ApiKey,
}

/// Login throttles and password check slots; one per gateway, shared by all transports.
#[derive(Debug)]
pub(super) struct AdminGuard {
    clients: SharedThrottle<ClientKey>,
    account: SharedThrottle<&'static str>,
    checks: Semaphore,
    /// One more slot only loopback may take, so a flood of guesses from elsewhere filling
    /// `checks` cannot make the administrator's own login on the host time out.
    loopback_checks: Semaphore,
    /// The initial password is known to be replaced; nothing ever brings it back, so once
    /// true this saves a store read per request.
    first_login_done: AtomicBool,
}

impl AdminGuard {
    /// Failures count on every node sharing `coordination` (see [`SharedThrottle`]).
    pub(super) fn new(coordination: Arc<dyn Coordination>) -> Self {
        Self {
            clients: SharedThrottle::new(CLIENT_POLICY, "admin-client", coordination.clone()),
            account: SharedThrottle::new(ACCOUNT_POLICY, "admin-account", coordination),
            checks: Semaphore::new(CHECK_SLOTS),
            loopback_checks: Semaphore::new(1),
            first_login_done: AtomicBool::new(false),
        }
    }
}

/// An attempt counted against a client (`None` on loopback, which is not counted).
struct Attempt(Option<ClientKey>);

impl AdminGuard {
    fn admit(&self, client: IpAddr) -> Result<(Attempt, Duration), ServiceError> {
        if is_loopback(client) {
            return Ok((Attempt(None), Duration::ZERO));
        }
        let key = ClientKey::from(client);
        let wait = self
            .clients
            .begin(&key)
            .map_err(|t| ServiceError::Throttled {
                retry_after: t.retry_after,
            })?;
        Ok((Attempt(Some(key)), wait))
    }

    /// The attempt failed: it stays counted here, and counts on the other nodes too.
    fn failed(&self, attempt: Attempt) {
        if let Some(key) = attempt.0 {
            self.clients.failed(&key);
        }
    }

    /// The attempt was right, or never checked: it does not count against the client.
    fn forgive(&self, attempt: Attempt) {
        if let Some(key) = attempt.0 {
            self.clients.forgive(&key);
        }
    }

    async fn slot(&self, loopback: bool) -> Result<SemaphorePermit<'_>, ServiceError> {
        let acquire = async {
            tokio::select! {
                permit = self.checks.acquire() => permit,
                permit = self.loopback_checks.acquire(), if loopback => permit,
            }
        };
        tokio::time::timeout(CHECK_QUEUE_TIMEOUT, acquire)
            .await
            .map_err(|_| ServiceError::Unavailable("too many administrator logins in progress"))?
            .map_err(|_| ServiceError::Unavailable("shutting down"))
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

impl Gateway {
    /// Checks a login as the administrator from `client`: [`AdminLogin`] for the right
    /// password, [`ServiceError::WrongAdminPassword`] for a wrong one or another user name
    /// (after the same Argon2id work, and after the account's failure delay), and
    /// [`ServiceError::Throttled`] without any check while the client waits out its
    /// failures. Loopback clients are never throttled.
    pub async fn check_admin_password(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<AdminLogin, ServiceError> {
        let guard = &self.admin;
        let loopback = is_loopback(client);
        let (attempt, wait) = guard.admit(client).inspect_err(|_| {
            self.metrics.login_throttled(LoginKind::Api);
        })?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let record = match self.admin_record() {
            Ok(record) => record,
            Err(e) => {
                guard.forgive(attempt);
                return Err(e);
            }
        };
        // The hash is checked whatever the user name, so a wrong name costs what a wrong
        // password costs.
        let right = match self
            .verify_admin_hash(password, &record.password_hash, loopback)
            .await
        {
            Ok(right) => right && user == ADMIN_ACCOUNT,
            Err(e) => {
                guard.forgive(attempt);
                return Err(e);
            }
        };
        if right {
            guard.forgive(attempt);
            guard.account.clear(&ADMIN_ACCOUNT);
            return Ok(if record.initial {
                AdminLogin::InitialPassword
            } else {
                AdminLogin::Valid
            });
        }
        // The attempt stays counted against the client.
        guard.failed(attempt);
        if user == ADMIN_ACCOUNT {
            self.admin_failure_delay().await;
        }
        tracing::info!(%client, "administrator login refused: wrong user name or password");
        self.metrics.login_failed(LoginKind::Api);
        Err(ServiceError::WrongAdminPassword)
    }

    /// Replaces the administrator's password with a new random one, returned this once.
    /// `Some(current)`: the administrator's own reset, which must confirm the current
    /// password (the initial one included: that is the first login). `None`: recovery on the
    /// host, no confirmation. Either way `admin`/`admin` is refused from then on.
    pub async fn reset_admin_password(
        &self,
        current: Option<&str>,
    ) -> Result<AdminPassword, ServiceError> {
        let record = self.admin_record()?;
        // The hash the confirmation was checked against; the write below only replaces
        // that one, so two resets racing with the same current password cannot both win.
        let confirmed = match current {
            Some(current) => {
                if !self
                    .verify_admin_hash(current, &record.password_hash, false)
                    .await?
                {
                    self.admin_failure_delay().await;
                    return Err(ServiceError::WrongAdminPassword);
                }
                Some(record.password_hash)
            }
            None => None,
        };
        let password = AdminPassword::generate();
        // A host reset may take the loopback slot: recovery must get through a flood.
        let new_hash = self
            .hash_admin_password(&password, current.is_none())
            .await?;
        let changed_at = self.now();
        self.store
            .write(move |t| {
                let stored = t.admin()?;
                if confirmed
                    .as_ref()
                    .is_some_and(|hash| *hash != stored.password_hash)
                {
                    return Ok(Err(ServiceError::WrongAdminPassword));
                }
                t.put_admin(&AdminRecord {
                    password_hash: new_hash.clone(),
                    initial: false,
                    changed_at: Some(changed_at),
                    ..stored
                })?;
                Ok(Ok(()))
            })
            .await?
            .value?;
        self.admin.account.clear(&ADMIN_ACCOUNT);
        let by = if current.is_some() {
            "the administrator"
        } else {
            "the host"
        };
        tracing::info!(by, "administrator password reset");
        Ok(password)
    }

    /// The console language the administrator chose (`None`: not chosen).
    pub fn admin_language(&self) -> Result<Option<Language>, ServiceError> {
        Ok(self.admin_record()?.language)
    }

    /// Remembers the administrator's console language (`None` forgets the choice).
    pub async fn set_admin_language(&self, language: Option<Language>) -> Result<(), ServiceError> {
        self.store
            .write(move |t| {
                let mut record = t.admin()?;
                record.language = language;
                t.put_admin(&record)
            })
            .await?;
        Ok(())
    }

    /// Whether the initial password has been replaced (until then the API serves only the
    /// reset, and only to loopback).
    pub fn admin_first_login_done(&self) -> Result<bool, ServiceError> {
        if self.admin.first_login_done.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let done = !self.admin_record()?.initial;
        if done {
            self.admin.first_login_done.store(true, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// The first-login rule for the network: until the initial password is replaced, a
    /// client not on loopback is refused whatever it presents
    /// ([`ServiceError::InitialAdminPassword`]), as the archiving server's API does. Loopback
    /// clients pass (and may then only reset the password, which the API enforces with
    /// [`AdminLogin::InitialPassword`]).
    pub fn check_admin_client(&self, client: IpAddr) -> Result<(), ServiceError> {
        if is_loopback(client) || self.admin_first_login_done()? {
            Ok(())
        } else {
            Err(ServiceError::InitialAdminPassword)
        }
    }

    /// Creates an API key named `name`; the key is returned this once and only its hash is
    /// stored.
    pub async fn create_api_key(&self, name: &str) -> Result<NewApiKey, ServiceError> {
        let name = super::mailboxes::check_name(name)?;
        let (key, parsed) = ApiKey::generate();
        let record = ApiKeyRecord {
            id: parsed.id.clone(),
            name,
            secret_hash: parsed.stored_hash(),
            created_at: self.now(),
            last_used_at: None,
        };
        let stored = record.clone();
        self.store
            .write(move |t| {
                let count = t.api_key_count()?;
                if count >= MAX_API_KEYS as u64 {
                    return Ok(Err(ServiceError::InvalidInput {
                        field: "name",
                        problem: format!(
                            "there are {MAX_API_KEYS} API keys already; revoke unused ones first"
                        ),
                    }));
                }
                // 64 random bits: a collision is unlikely, and checking is cheap.
                if t.api_key(&stored.id)?.is_some() {
                    return Err(StoreError::Internal("API key id collision".into()));
                }
                t.put_api_key(&stored)?;
                Ok(Ok(()))
            })
            .await?
            .value?;
        tracing::info!(key = %record.id, "API key created");
        Ok(NewApiKey {
            info: ApiKeyInfo::from(&record),
            key,
        })
    }

    /// Every API key, oldest first.
    pub fn api_keys(&self) -> Result<Vec<ApiKeyInfo>, ServiceError> {
        let mut keys: Vec<ApiKeyInfo> = self
            .store
            .read()?
            .api_keys()?
            .iter()
            .map(ApiKeyInfo::from)
            .collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Revokes an API key, named by its id (or by the whole key, which is then not echoed
    /// anywhere). It stops working at once.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), ServiceError> {
        let lowered = id.to_ascii_lowercase();
        let id = match ApiKey::parse(id) {
            Some(parsed) => parsed.id,
            // Ids are shown in lowercase; typed in any case they name the same key.
            None if ApiKey::is_id(&lowered) => lowered,
            None => {
                return Err(ServiceError::InvalidInput {
                    field: "id",
                    problem: "not an API key id (16 hex digits, as GetApiKeys lists them)".into(),
                })
            }
        };
        let target = id.clone();
        let removed = self
            .store
            .write(move |t| t.remove_api_key(&target))
            .await?
            .value;
        if !removed {
            return Err(ServiceError::ApiKeyNotFound(id));
        }
        tracing::info!(key = %id, "API key revoked");
        Ok(())
    }

    /// Authenticates a presented API key (from `Authorization: Bearer`); returns its id.
    /// Malformed, unknown and revoked keys are one error, and count against the client like
    /// wrong passwords (loopback excepted).
    pub async fn check_api_key(&self, key: &str, client: IpAddr) -> Result<String, ServiceError> {
        let guard = &self.admin;
        let (attempt, wait) = guard.admit(client).inspect_err(|_| {
            self.metrics.login_throttled(LoginKind::Api);
        })?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let parsed = ApiKey::parse(key);
        let found = match &parsed {
            Some(parsed) => match self.store.read().and_then(|s| s.api_key(&parsed.id)) {
                Ok(found) => found,
                Err(e) => {
                    guard.forgive(attempt);
                    return Err(e.into());
                }
            },
            None => None,
        };
        let (Some(parsed), Some(record)) = (parsed, found) else {
            guard.failed(attempt);
            tracing::info!(%client, "API key refused");
            self.metrics.login_failed(LoginKind::Api);
            return Err(ServiceError::InvalidApiKey);
        };
        if !parsed.matches(&record.secret_hash) {
            guard.failed(attempt);
            tracing::info!(%client, key = %record.id, "API key refused");
            self.metrics.login_failed(LoginKind::Api);
            return Err(ServiceError::InvalidApiKey);
        }
        guard.forgive(attempt);
        self.note_api_key_use(&record).await;
        Ok(record.id)
    }

    /// Records when a key was last used, at most once a minute per key. Best effort: a
    /// store that cannot write now (a full disk) must not lock scripts out.
    async fn note_api_key_use(&self, record: &ApiKeyRecord) {
        let now = self.now();
        let fresh = move |last: Option<u64>| {
            last.is_some_and(|last| now.saturating_sub(last) < LAST_USED_RESOLUTION_MS)
        };
        if fresh(record.last_used_at) {
            return;
        }
        let id = record.id.clone();
        let written = self
            .store
            .write(move |t| {
                // Checked again: revoked meanwhile (never bring it back) or noted by another
                // request of the same minute.
                let Some(mut record) = t.api_key(&id)? else {
                    return Ok(());
                };
                if !fresh(record.last_used_at) {
                    record.last_used_at = Some(now);
                    t.put_api_key(&record)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(key = %record.id, error = %e, "could not record the API key's last use");
        }
    }

    fn admin_record(&self) -> Result<AdminRecord, ServiceError> {
        Ok(self.store.read()?.admin()?)
    }

    /// The account's failure delay before a wrong password's answer.
    async fn admin_failure_delay(&self) {
        let delay = self.admin.account.fail(&ADMIN_ACCOUNT);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Argon2id verification in a check slot on a blocking thread.
    async fn verify_admin_hash(
        &self,
        password: &str,
        hash: &str,
        loopback: bool,
    ) -> Result<bool, ServiceError> {
        let _slot = self.admin.slot(loopback).await?;
        let password = Zeroizing::new(password.to_owned());
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || crypto::verify_password(password.as_bytes(), &hash))
            .await
            .map_err(|_| ServiceError::Unavailable("password check failed"))?
            .map_err(ServiceError::Crypto)
    }

    /// Argon2id hashing of a new password in a check slot on a blocking thread.
    async fn hash_admin_password(
        &self,
        password: &AdminPassword,
        loopback: bool,
    ) -> Result<String, ServiceError> {
        let _slot = self.admin.slot(loopback).await?;
        let password = password.clone();
        let kdf = self.options.kdf;
        tokio::task::spawn_blocking(move || {
            crypto::hash_password(password.reveal().as_bytes(), kdf)
        })
        .await
        .map_err(|_| ServiceError::Unavailable("password hashing failed"))?
        .map_err(ServiceError::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::super::test_support::{gateway, gateway_in, gateway_with, redb_gateway};
    use super::*;
    use crate::crypto::INITIAL_ADMIN_PASSWORD;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn loopback() -> IpAddr {
        ip("127.0.0.1")
    }

    /// A gateway whose administrator has replaced the initial password; and that password.
    async fn set_up_admin() -> (tempfile::TempDir, Gateway, AdminPassword) {
        let (dir, gw) = gateway();
        let password = gw.reset_admin_password(None).await.unwrap();
        (dir, gw, password)
    }

    #[tokio::test]
    async fn the_initial_password_logs_in_only_as_initial_and_is_refused_after_the_first_reset() {
        let (_dir, gw) = gateway();
        assert!(!gw.admin_first_login_done().unwrap());
        assert_eq!(
            gw.check_admin_password("admin", INITIAL_ADMIN_PASSWORD, loopback())
                .await,
            Ok(AdminLogin::InitialPassword)
        );
        let new = gw
            .reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
            .await
            .unwrap();
        assert!(gw.admin_first_login_done().unwrap());
        assert_eq!(
            gw.check_admin_password("admin", INITIAL_ADMIN_PASSWORD, loopback())
                .await,
            Err(ServiceError::WrongAdminPassword)
        );
        assert_eq!(
            gw.reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
                .await
                .err(),
            Some(ServiceError::WrongAdminPassword),
            "the initial password cannot reset twice"
        );
        assert_eq!(
            gw.check_admin_password("admin", new.reveal(), ip("192.0.2.1"))
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test]
    async fn before_the_first_reset_only_loopback_clients_are_let_in() {
        let (_dir, gw) = gateway();
        for remote in [ip("192.0.2.1"), ip("2001:db8::1"), ip("::ffff:192.0.2.1")] {
            assert_eq!(
                gw.check_admin_client(remote),
                Err(ServiceError::InitialAdminPassword)
            );
        }
        for local in [loopback(), ip("127.0.0.2"), ip("::1")] {
            assert_eq!(gw.check_admin_client(local), Ok(()));
        }
        gw.reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
            .await
            .unwrap();
        assert_eq!(gw.check_admin_client(ip("192.0.2.1")), Ok(()));
    }

    #[tokio::test]
    async fn the_console_language_is_remembered_across_resets_and_restarts() {
        let (dir, gw) = gateway();
        assert_eq!(gw.admin_language().unwrap(), None);
        gw.set_admin_language(Some(Language::De)).await.unwrap();
        gw.reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
            .await
            .unwrap();
        assert_eq!(gw.admin_language().unwrap(), Some(Language::De));
        drop(gw);
        let gw = gateway_in(dir.path());
        assert_eq!(gw.admin_language().unwrap(), Some(Language::De));
        gw.set_admin_language(None).await.unwrap();
        assert_eq!(gw.admin_language().unwrap(), None);
    }

    #[test]
    fn admin_records_written_before_the_console_read_without_a_language() {
        let old = br#"{"password_hash":"$argon2id$x","initial":false,"changed_at":5}"#;
        let record = AdminRecord::decode(old).unwrap();
        assert_eq!(record.language, None);
        assert!(!record.initial);
    }

    #[tokio::test]
    async fn the_first_reset_survives_a_restart() {
        let (dir, gw) = gateway();
        let new = gw
            .reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
            .await
            .unwrap();
        drop(gw);
        let gw = gateway_in(dir.path());
        assert!(gw.admin_first_login_done().unwrap());
        assert_eq!(
            gw.check_admin_password("admin", INITIAL_ADMIN_PASSWORD, loopback())
                .await,
            Err(ServiceError::WrongAdminPassword)
        );
        assert_eq!(
            gw.check_admin_password("admin", new.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test]
    async fn a_wrong_current_password_refuses_the_reset_and_changes_nothing() {
        let (_dir, gw, password) = set_up_admin().await;
        for wrong in ["", "admin", &password.reveal().to_lowercase()] {
            assert_eq!(
                gw.reset_admin_password(Some(wrong)).await.err(),
                Some(ServiceError::WrongAdminPassword)
            );
        }
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
        let newer = gw
            .reset_admin_password(Some(password.reveal()))
            .await
            .unwrap();
        assert_ne!(newer.reveal(), password.reveal());
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), loopback())
                .await,
            Err(ServiceError::WrongAdminPassword)
        );
    }

    #[tokio::test]
    async fn a_host_reset_needs_no_current_password_and_the_old_one_stops_working() {
        let (_dir, gw, old) = set_up_admin().await;
        let new = gw.reset_admin_password(None).await.unwrap();
        assert_eq!(
            gw.check_admin_password("admin", old.reveal(), loopback())
                .await,
            Err(ServiceError::WrongAdminPassword)
        );
        assert_eq!(
            gw.check_admin_password("admin", new.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test]
    async fn a_host_reset_before_the_first_login_ends_the_initial_password_too() {
        let (_dir, gw) = gateway();
        let new = gw.reset_admin_password(None).await.unwrap();
        assert!(gw.admin_first_login_done().unwrap());
        assert_eq!(
            gw.check_admin_password("admin", INITIAL_ADMIN_PASSWORD, loopback())
                .await,
            Err(ServiceError::WrongAdminPassword)
        );
        assert_eq!(
            gw.check_admin_password("admin", new.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test]
    async fn two_resets_racing_with_the_same_current_password_give_one_password() {
        let (_dir, gw) = gateway();
        let (a, b) = tokio::join!(
            gw.reset_admin_password(Some(INITIAL_ADMIN_PASSWORD)),
            gw.reset_admin_password(Some(INITIAL_ADMIN_PASSWORD))
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("exactly one reset must win: {other:?}"),
        };
        assert_eq!(lost, ServiceError::WrongAdminPassword);
        assert_eq!(
            gw.check_admin_password("admin", won.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test]
    async fn other_user_names_are_wrong_credentials_even_with_the_right_password() {
        let (_dir, gw, password) = set_up_admin().await;
        for user in ["Admin", "root", "", "admin "] {
            assert_eq!(
                gw.check_admin_password(user, password.reveal(), loopback())
                    .await,
                Err(ServiceError::WrongAdminPassword),
                "{user:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_password_is_stored_only_as_an_argon2id_hash() {
        let (dir, gw, password) = set_up_admin().await;
        let record = gw.admin_record().unwrap();
        assert!(record.password_hash.starts_with("$argon2id$"));
        assert!(!record.initial);
        assert!(record.changed_at.is_some());
        drop(gw);
        let bytes = super::super::test_support::stored_bytes(dir.path());
        let shown = password.reveal().as_bytes();
        assert!(!bytes.windows(shown.len()).any(|w| w == shown));
    }

    #[tokio::test]
    async fn a_store_upgraded_from_version_3_starts_with_the_initial_administrator() {
        use crate::store::schema::{ADMIN, API_KEYS, META, META_SCHEMA_VERSION};
        let (dir, gw) = redb_gateway();
        let mailbox = gw.create_mailbox("kept", "").await.unwrap().info.id;
        // What version 3 left on disk: no account, no key table.
        gw.store()
            .write(|t| {
                let t = t.redb_for_tests().unwrap();
                t.open_table(META)?.insert(META_SCHEMA_VERSION, 3)?;
                t.delete_table(ADMIN)?;
                t.delete_table(API_KEYS)?;
                Ok(())
            })
            .await
            .unwrap();
        drop(gw);
        let gw = gateway_in(dir.path());
        assert!(!gw.admin_first_login_done().unwrap());
        assert_eq!(
            gw.check_admin_password("admin", INITIAL_ADMIN_PASSWORD, loopback())
                .await,
            Ok(AdminLogin::InitialPassword)
        );
        assert!(gw.api_keys().unwrap().is_empty());
        assert_eq!(gw.mailbox(&mailbox).unwrap().name, "kept");
    }

    #[tokio::test]
    async fn api_keys_are_created_listed_checked_and_revoked() {
        let (_dir, gw) = gateway();
        let first = gw.create_api_key("backup script").await.unwrap();
        let second = gw.create_api_key("  monitoring  ").await.unwrap();
        assert_eq!(second.info.name, "monitoring");
        assert_eq!(first.info.last_used_at, None);
        let listed = gw.api_keys().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&first.info) && listed.contains(&second.info));

        let client = ip("192.0.2.10");
        assert_eq!(
            gw.check_api_key(first.key.reveal(), client).await,
            Ok(first.info.id.clone())
        );
        gw.revoke_api_key(&first.info.id.to_uppercase())
            .await
            .unwrap();
        assert_eq!(
            gw.check_api_key(first.key.reveal(), client).await,
            Err(ServiceError::InvalidApiKey),
            "a revoked key is refused at once"
        );
        assert_eq!(
            gw.check_api_key(second.key.reveal(), client).await,
            Ok(second.info.id.clone()),
            "other keys go on working"
        );
        assert_eq!(
            gw.revoke_api_key(&first.info.id).await,
            Err(ServiceError::ApiKeyNotFound(first.info.id.clone()))
        );
        let ids: Vec<_> = gw.api_keys().unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(ids, std::slice::from_ref(&second.info.id));

        // Revoking by the whole key works, and the key is echoed nowhere.
        gw.revoke_api_key(second.key.reveal()).await.unwrap();
        assert!(gw.api_keys().unwrap().is_empty());
        let err = gw.revoke_api_key(second.key.reveal()).await.unwrap_err();
        assert!(
            !err.to_string().contains(&second.key.reveal()[21..]),
            "{err}"
        );
        let err = gw.revoke_api_key("gwk_not-a-key_secret").await.unwrap_err();
        assert!(matches!(
            err,
            ServiceError::InvalidInput { field: "id", .. }
        ));
        assert!(!err.to_string().contains("secret"), "{err}");

        assert!(matches!(
            gw.create_api_key(" ").await,
            Err(ServiceError::InvalidInput { field: "name", .. })
        ));
    }

    #[tokio::test]
    async fn keys_of_the_wrong_form_or_with_a_wrong_secret_are_refused() {
        let (_dir, gw) = gateway();
        let created = gw.create_api_key("k").await.unwrap();
        let key = created.key.reveal();
        let wrong_secret = format!("{}{}", &key[..21], "0".repeat(64));
        for bad in [
            "",
            "Bearer x",
            key.trim_start_matches("gwk_"),
            &wrong_secret,
        ] {
            assert_eq!(
                gw.check_api_key(bad, loopback()).await,
                Err(ServiceError::InvalidApiKey),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_key_itself_is_never_stored() {
        let (dir, gw) = gateway();
        let created = gw.create_api_key("k").await.unwrap();
        gw.check_api_key(created.key.reveal(), loopback())
            .await
            .unwrap();
        drop(gw);
        let bytes = super::super::test_support::stored_bytes(dir.path());
        let key = created.key.reveal();
        let secret_hex = &key[21..];
        let secret_raw = data_encoding::HEXLOWER
            .decode(secret_hex.as_bytes())
            .unwrap();
        for needle in [key.as_bytes(), secret_hex.as_bytes(), &secret_raw] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the key's secret is on disk"
            );
        }
        let id = created.info.id.as_bytes();
        assert!(
            bytes.windows(id.len()).any(|w| w == id),
            "the search would find what is there"
        );
    }

    #[tokio::test]
    async fn last_use_is_recorded_at_most_once_a_minute() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = now.clone();
        let (_dir, gw) = gateway_with(|o| o.clock = Arc::new(move || clock.load(Ordering::SeqCst)));
        let created = gw.create_api_key("k").await.unwrap();
        let last_used = |gw: &Gateway| gw.api_keys().unwrap()[0].last_used_at;
        assert_eq!(last_used(&gw), None);
        gw.check_api_key(created.key.reveal(), loopback())
            .await
            .unwrap();
        assert_eq!(last_used(&gw), Some(1_000_000));
        now.store(1_059_999, Ordering::SeqCst);
        gw.check_api_key(created.key.reveal(), loopback())
            .await
            .unwrap();
        assert_eq!(last_used(&gw), Some(1_000_000), "within the minute");
        now.store(1_060_000, Ordering::SeqCst);
        gw.check_api_key(created.key.reveal(), loopback())
            .await
            .unwrap();
        assert_eq!(last_used(&gw), Some(1_060_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_guessing_client_is_refused_but_the_administrator_on_loopback_still_gets_in() {
        let (_dir, gw, password) = set_up_admin().await;
        let attacker = ip("203.0.113.9");
        let mut refused = None;
        for _ in 0..50 {
            match gw.check_admin_password("admin", "guess", attacker).await {
                Err(ServiceError::WrongAdminPassword) => {}
                Err(ServiceError::Throttled { retry_after }) => {
                    refused = Some(retry_after);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let retry_after = refused.expect("the guessing client is refused");
        assert!(retry_after > Duration::ZERO);
        // Refused before any check: even the right password from there waits its turn.
        assert!(matches!(
            gw.check_admin_password("admin", password.reveal(), attacker)
                .await,
            Err(ServiceError::Throttled { .. })
        ));
        // The administrator on the host gets in at once, over IPv4 and IPv6.
        for host in [loopback(), ip("::1"), ip("::ffff:127.0.0.1")] {
            let started = tokio::time::Instant::now();
            assert_eq!(
                gw.check_admin_password("admin", password.reveal(), host)
                    .await,
                Ok(AdminLogin::Valid)
            );
            assert_eq!(started.elapsed(), Duration::ZERO, "no wait for {host}");
        }
        // A fresh client elsewhere is not affected by the attacker's address.
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), ip("198.51.100.1"))
                .await,
            Ok(AdminLogin::Valid)
        );
        // Once the attacker waited out its failures it may try again.
        tokio::time::advance(retry_after).await;
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), attacker)
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn loopback_failures_are_never_refused() {
        let (_dir, gw, password) = set_up_admin().await;
        for _ in 0..30 {
            assert_eq!(
                gw.check_admin_password("admin", "typo", loopback()).await,
                Err(ServiceError::WrongAdminPassword)
            );
        }
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), loopback())
                .await,
            Ok(AdminLogin::Valid)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn account_failures_only_delay_failed_answers() {
        let (_dir, gw, password) = set_up_admin().await;
        // Many clients, each within its free attempts, spray the account.
        let mut last_delay = Duration::ZERO;
        for n in 0..40u32 {
            let client = ip(&format!("198.51.100.{n}"));
            let started = tokio::time::Instant::now();
            assert_eq!(
                gw.check_admin_password("admin", "guess", client).await,
                Err(ServiceError::WrongAdminPassword)
            );
            last_delay = started.elapsed();
            assert!(last_delay <= ACCOUNT_POLICY.max);
        }
        assert_eq!(last_delay, ACCOUNT_POLICY.max, "failed answers are delayed");
        // The right password from anywhere is answered at once, and ends the delay.
        let started = tokio::time::Instant::now();
        assert_eq!(
            gw.check_admin_password("admin", password.reveal(), ip("192.0.2.77"))
                .await,
            Ok(AdminLogin::Valid)
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        let started = tokio::time::Instant::now();
        let _ = gw
            .check_admin_password("admin", "guess", ip("192.0.2.78"))
            .await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_api_keys_count_against_the_client_like_wrong_passwords() {
        let (_dir, gw) = gateway();
        let created = gw.create_api_key("k").await.unwrap();
        let attacker = ip("2001:db8:5:5::1");
        let mut throttled = false;
        for n in 0..50u32 {
            let guess = format!("gwk_{}_{n:064x}", created.info.id);
            match gw.check_api_key(&guess, attacker).await {
                Err(ServiceError::InvalidApiKey) => {}
                Err(ServiceError::Throttled { .. }) => {
                    throttled = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(throttled);
        // The same /64 is the same client; the key still works from loopback.
        assert!(matches!(
            gw.check_api_key(created.key.reveal(), ip("2001:db8:5:5::2"))
                .await,
            Err(ServiceError::Throttled { .. })
        ));
        assert_eq!(
            gw.check_api_key(created.key.reveal(), ip("::1")).await,
            Ok(created.info.id.clone())
        );
    }
}
