//! `gateway serve`.

use anyhow::Context;

use crate::api::control::ControlServer;
use crate::api::{Api, ServerContext};
use crate::config::{CertificateSource, Config};
use crate::service::Gateway;
use crate::tls::{self, CertificateSourceSpec};

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.gateway.data_dir;
    crate::service::prepare_data_dir(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let gateway = Gateway::open(&config).context("cannot open the store")?;
    let spec = match &config.tls.source {
        CertificateSource::SelfSigned => CertificateSourceSpec::SelfSigned,
        CertificateSource::Files {
            certificate_chain,
            private_key,
        } => CertificateSourceSpec::Files {
            chain: certificate_chain.clone(),
            key: private_key.clone(),
        },
        CertificateSource::Acme { .. } => {
            anyhow::bail!("tls.source = \"acme\" is not available in this version yet; use \"self-signed\" or \"files\"")
        }
    };
    let (resolver, material) = tls::prepare(&spec, data_dir, &config.gateway.host_name)
        .context("cannot prepare the TLS certificate")?;
    let mailboxes = gateway.list_mailboxes()?.len();
    let store = gateway.store().path().display().to_string();
    // Bind first: "ready" means the ports answer.
    let running = crate::server::start(&config, gateway.clone(), resolver.clone()).await?;
    for (name, addr) in config.listeners() {
        if running.address(name).is_none() {
            tracing::info!(service = name, %addr, "not started: this service is not available yet");
        }
    }
    // The CLI's way in, once the listeners are up.
    let api = Api::new(
        gateway,
        ServerContext::new(
            config.gateway.host_name.clone(),
            Some(resolver),
            super::api_call::certificate_source(&config),
        ),
    );
    let configured: Vec<_> = config
        .listeners()
        .into_iter()
        .map(|(name, addr)| (name, addr, true))
        .collect();
    api.server()
        .set_listeners(&configured, &running.addresses, true);
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
    wait_for_stop_signal().await?;
    tracing::info!("shutting down: finishing transactions in flight");
    control.stop().await;
    running.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
