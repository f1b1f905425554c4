//! `gateway serve`.

use anyhow::Context;

use crate::api::control::ControlServer;
use crate::config::{CertificateSource, Config};
use crate::logging::LogControl;
use crate::service::Gateway;
use crate::settings::{LiveSettings, SettingsFile};
use crate::tls::{self, CertificateSourceSpec};

/// `settings_file` is where settings changed at run time are saved; `log` changes the level
/// of the subscriber `cli` installed (`None` if another one was installed first).
/// `data_dir_override` is `--data-dir` / `GATEWAY_DATA_DIR` (already applied to `config`),
/// which a reload applies to the re-read file too.
pub fn run(
    config: Config,
    data_dir_override: Option<std::path::PathBuf>,
    settings_file: SettingsFile,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, data_dir_override, settings_file, log))
}

async fn serve(
    config: Config,
    data_dir_override: Option<std::path::PathBuf>,
    settings_file: SettingsFile,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action would end the process, and SIGTERM's
    // would skip the drain if it came right after "gateway ready" is logged.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let data_dir = &config.gateway.data_dir;
    crate::service::prepare_data_dir(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let gateway = Gateway::open(&config).context("cannot open the store")?;
    // The service's email domain handle: a change reaches the service and SMTP alike.
    let settings = LiveSettings::new(
        &config,
        gateway.email_domain_handle().clone(),
        log,
        settings_file,
    );
    if let Some(rust_log) = settings.rust_log() {
        tracing::info!(
            rust_log,
            "RUST_LOG decides what is logged; gateway.log_level and its changes apply once the gateway runs without it"
        );
    }
    if config.gateway.email_domain == crate::config::DEFAULT_EMAIL_DOMAIN {
        tracing::warn!(
            email_domain = %config.gateway.email_domain,
            "the email domain is still the default: no mail from outside can reach a mailbox; set it with `gateway setup` or `gateway settings set --email-domain`"
        );
    }
    let spec = match &config.tls.source {
        CertificateSource::SelfSigned => CertificateSourceSpec::SelfSigned,
        CertificateSource::Files {
            certificate_chain,
            private_key,
        } => CertificateSourceSpec::Files {
            chain: certificate_chain.clone(),
            key: private_key.clone(),
        },
        CertificateSource::Acme(_) => CertificateSourceSpec::Acme,
    };
    let (resolver, material) = tls::prepare(&spec, data_dir, &config.gateway.host_name)
        .context("cannot prepare the TLS certificate")?;
    let mailboxes = gateway.list_mailboxes()?.len();
    let store = gateway.store_path().display().to_string();
    // Bind first: "ready" means the ports answer.
    let running =
        crate::server::start_with_settings(&config, gateway, resolver, settings.clone()).await?;
    for (name, addr) in config.listeners() {
        if running.address(name).is_none() {
            tracing::info!(service = name, %addr, "not started: this service is not available yet");
        }
    }
    let reloads = tokio::spawn(super::reload::reload_on_hangup(
        hangup,
        settings.clone(),
        running.api().server().certificate_manager().clone(),
        super::reload::Started {
            config: config.clone(),
            data_dir_override,
        },
    ));
    // The CLI's way in, once the listeners are up: the same API the console serves (one
    // table of long-running jobs, one view of the listeners).
    let api = running.api().clone();
    let control = match ControlServer::start(api, data_dir) {
        Ok(control) => control,
        Err(e) => {
            running.stop().await;
            return Err(e).context("the CLI could not reach this gateway");
        }
    };
    tracing::info!(
        email_domain = %config.gateway.email_domain,
        host_name = %config.gateway.host_name,
        data_dir = %data_dir.display(),
        store,
        mailboxes,
        certificate = %material.fingerprint(),
        "gateway ready"
    );
    wait_for_stop_signal(terminate).await?;
    reloads.abort();
    tracing::info!("shutting down: finishing transactions in flight");
    control.stop().await;
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn wait_for_stop_signal(mut terminate: tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
