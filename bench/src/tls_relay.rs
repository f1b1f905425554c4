//! The least work any proxy that keeps both of its legs encrypted must do: a relay that
//! ends the client's TLS, opens TLS to the target and copies the bytes both ways. No
//! protocol, no copy, no store. Set beside a direct connection and the gateway's proxy, it
//! shows how much of the proxy's cost on a given machine is the second TLS leg and the extra
//! hop alone, which no proxy can avoid.
//!
//! It runs as a child process, like the gateway under test ([`crate::gateway_proc`]), so that
//! its CPU is its own and the load generator's runtime is not shared: the runner re-executes
//! its own binary with [`CHILD_FLAG`]; the child prints one `READY <address>` line and runs
//! until its standard input closes.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context};
use test_support::pki::{self, Ca, Leaf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::load::TlsTarget;

/// Hidden command-line flag that turns the runner binary into the relay child.
pub const CHILD_FLAG: &str = "--tls-relay-child";
/// The name the relay's certificate is issued for.
pub const HOST_NAME: &str = "relay.bench.test";
/// The root the relay's certificate chains to, in the directory it is given.
const CA_FILE: &str = "relay-ca.pem";
/// Each direction's copy buffer: the size the gateway reads its clients with.
const BUFFER: usize = 64 * 1024;
/// The child's standard error (a failed connection's line), in its directory.
const LOG_FILE: &str = "relay.log";

/// A running relay child; stopped when dropped.
pub struct TlsRelay {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    ca_file: PathBuf,
}

/// Where the relay connects: the target's address, the root it trusts and the name it
/// verifies.
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub ca_file: &'a Path,
    pub server_name: &'a str,
}

impl TlsRelay {
    /// Starts the child, which issues its certificate into `dir` and relays every connection
    /// to `target`; returns once it listens.
    pub fn start(dir: &Path, target: &Target<'_>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(LOG_FILE);
        let mut child = Command::new(std::env::current_exe()?)
            .arg(CHILD_FLAG)
            .arg(dir)
            .arg(target.addr.to_string())
            .arg(target.ca_file)
            .arg(target.server_name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("start the TLS relay child")?;
        let stdout = child
            .stdout
            .take()
            .context("the relay child has no stdout")?;
        // From here on, dropping it (on any error) closes its input and waits for it.
        let mut relay = Self {
            stdin: child.stdin.take(),
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ca_file: dir.join(CA_FILE),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("READY ") else {
            bail!(
                "the TLS relay child did not start (said {line:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        relay.addr = addr.parse().context("the relay child's address")?;
        Ok(relay)
    }

    /// What a client of the relay connects to and trusts.
    pub fn tls_target(&self) -> TlsTarget {
        TlsTarget {
            ca_file: self.ca_file.clone(),
            server_name: HOST_NAME.to_owned(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        // Closing its standard input ends the child.
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the relay child when this process was started as one. Call it first in a runner's
/// `main`: `Some` is the child's outcome to return, `None` means carry on as the runner.
pub fn child_if_asked() -> Option<anyhow::Result<()>> {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    if argv.first().is_none_or(|a| a != CHILD_FLAG) {
        return None;
    }
    let [_, dir, target, ca_file, server_name] = &argv[..] else {
        return Some(Err(anyhow::anyhow!(
            "usage: {CHILD_FLAG} DIR TARGET CA_FILE SERVER_NAME"
        )));
    };
    let run = || -> anyhow::Result<()> {
        let target = target.to_str().context("target")?.parse()?;
        let server_name = server_name.to_str().context("server name")?;
        child_main(Path::new(dir), target, Path::new(ca_file), server_name)
    };
    Some(run())
}

fn child_main(
    dir: &Path,
    target: SocketAddr,
    target_ca: &Path,
    target_name: &str,
) -> anyhow::Result<()> {
    let relay = Relay {
        acceptor: TlsAcceptor::from(server_config(dir)?),
        connector: pki::connector_for_file(target_ca)?,
        target,
        target_name: ServerName::try_from(target_name.to_owned())?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        println!("READY {}", listener.local_addr()?);
        // The runner closes our standard input to stop us.
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        relay.serve(listener).await
    })
}

/// What the relay needs for each connection.
#[derive(Clone)]
struct Relay {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    target: SocketAddr,
    target_name: ServerName<'static>,
}

impl Relay {
    /// Relays every connection `listener` accepts, each on its own task.
    async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (client, _) = listener.accept().await?;
            let relay = self.clone();
            tokio::spawn(async move {
                if let Err(e) = relay.connection(client).await {
                    eprintln!("tls relay: {e:#}");
                }
            });
        }
    }

    /// One connection: TLS from the client, TLS to the target, bytes both ways until both
    /// end.
    async fn connection(self, client: TcpStream) -> anyhow::Result<()> {
        client.set_nodelay(true)?;
        let mut client = self.acceptor.accept(client).await?;
        let upstream = TcpStream::connect(self.target).await?;
        upstream.set_nodelay(true)?;
        let mut upstream = self.connector.connect(self.target_name, upstream).await?;
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER)
            .await?;
        Ok(())
    }
}

/// Issues the relay's certificate (the root written to `dir` for its clients) and serves
/// it with the gateway's own TLS server configuration (provider, versions, cipher order,
/// tickets, session cache).
fn server_config(dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let ca = Ca::new("tls relay bench CA")?;
    let leaf = ca.issue(Leaf::names(&[HOST_NAME]))?;
    std::fs::write(dir.join(CA_FILE), ca.pem())?;
    let origin = dir.join("relay certificate (in memory)");
    let material = gateway::tls::parse_pem(
        leaf.chain_pem().as_bytes(),
        leaf.key_pem().as_bytes(),
        &origin,
        &origin,
    )?;
    Ok(gateway::tls::server_config(Arc::new(
        gateway::tls::CertResolver::new(material),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, PrivateKeyDer};

    /// A TLS server on loopback that echoes each connection's bytes back; its root's path.
    async fn tls_echo(dir: &Path) -> (SocketAddr, PathBuf) {
        let files = pki::server_files(dir, "echo CA", &["echo.test"], "echo").unwrap();
        let chain = pki::certs(&std::fs::read(&files.cert).unwrap()).unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A connection that is not TLS ends here: nothing is echoed.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (mut read, mut write) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        (addr, files.ca)
    }

    #[tokio::test]
    async fn bytes_cross_both_tls_legs_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (echo, echo_ca) = tls_echo(&dir.path().join("echo")).await;
        let relay_dir = dir.path().join("relay");
        std::fs::create_dir_all(&relay_dir).unwrap();
        let relay = Relay {
            acceptor: TlsAcceptor::from(server_config(&relay_dir).unwrap()),
            connector: pki::connector_for_file(&echo_ca).unwrap(),
            target: echo,
            target_name: ServerName::try_from("echo.test").unwrap(),
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(relay.serve(listener));

        // The client trusts only the relay's root, and the relay only the echo server's.
        let connector = pki::connector_for_file(&relay_dir.join(CA_FILE)).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(HOST_NAME).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        // More than one buffer and one TLS record, not a multiple of either.
        let sent: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = tokio::io::split(&mut tls);
        let writer = async {
            write.write_all(&sent).await.unwrap();
            write.flush().await.unwrap();
        };
        let mut echoed = vec![0; sent.len()];
        let reader = read.read_exact(&mut echoed);
        let ((), read_result) = tokio::join!(writer, reader);
        read_result.unwrap();
        assert!(echoed == sent, "the echo differs from what was sent");
    }
}
