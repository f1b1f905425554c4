//! The gateway under test, run as a child process so that its memory (VmHWM) and CPU are its
//! own and the load generator does not share its runtime.
//!
//! The runner re-executes its own binary with [`CHILD_FLAG`]; the child serves exactly what
//! `gateway serve` serves (same library calls), creates one mailbox, prints one `READY` line
//! and runs until its standard input closes. It then stops gracefully and prints how many
//! messages the mailbox holds, so the runner can check the load generators' counts.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{anyhow, bail, Context};
use gateway::config::{Config, Listener};
use gateway::service::Gateway;
use gateway::tls::{self, CertificateSourceSpec};

/// Hidden command-line flag that turns the runner binary into the gateway child.
pub const CHILD_FLAG: &str = "--gateway-child";
/// The child's log (its standard error), in its data directory.
pub const LOG_FILE: &str = "gateway.log";
/// Name the self-signed certificate is issued for.
pub const HOST_NAME: &str = "gateway.bench.test";
pub const EMAIL_DOMAIN: &str = "archive.bench.test";

/// The benchmark configuration: SMTP and SMTPS on 127.0.0.1, ephemeral ports, nothing else;
/// connection limits raised above the largest session count.
pub fn bench_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.gateway.data_dir = data_dir.to_path_buf();
    config.gateway.host_name = HOST_NAME.to_owned();
    config.gateway.email_domain = EMAIL_DOMAIN.to_owned();
    // The default level (info), as an administrator runs it: a line per stored message.
    // The child's lines go to `LOG_FILE` in its data directory.
    config.gateway.log_level = gateway::config::LogLevel::default();
    let local = |enabled| Listener {
        address: "127.0.0.1".parse().expect("literal address"),
        port: 0,
        enabled,
    };
    config.listen.smtp = local(true);
    config.listen.smtps = local(true);
    config.listen.submission = local(false);
    config.listen.pop3 = local(false);
    config.listen.pop3s = local(false);
    config.listen.console = local(false);
    config.listen.acme_http = local(false);
    config.limits.max_connections = 1000;
    config.limits.max_connections_per_ip = 1000;
    config
}

/// Creates mailboxes in the (not running) gateway's store before the child starts, so the
/// caller knows their passwords: `(id, address, password as displayed)` each, named
/// `{prefix}-{i:03}` so that the child serves the first one.
pub fn create_mailboxes(
    config: &Config,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    std::fs::create_dir_all(&config.gateway.data_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let gateway = Gateway::open(config).context("cannot open the store")?;
        let mut created = Vec::with_capacity(count);
        for i in 0..count {
            let new = gateway
                .create_mailbox(&format!("{prefix}-{i:03}"), "")
                .await?;
            created.push((
                new.info.id.to_string(),
                new.info.address.clone(),
                new.password.reveal_for_display().to_string(),
            ));
        }
        anyhow::Ok(created)
    })
}

/// Runs the gateway child when this process was started as one (`<binary> --gateway-child
/// CONFIG.toml`). Call it first in a runner's `main`: `Some` is the child's outcome to
/// return, `None` means carry on as the runner.
pub fn child_if_asked() -> Option<anyhow::Result<()>> {
    let mut argv = std::env::args_os();
    if argv.nth(1).is_none_or(|a| a != CHILD_FLAG) {
        return None;
    }
    Some(
        argv.next()
            .context("missing configuration path")
            .and_then(|config| child_main(Path::new(&config))),
    )
}

/// Entry point of the child: `<binary> --gateway-child CONFIG.toml`.
pub fn child_main(config_path: &Path) -> anyhow::Result<()> {
    // Parsed without `Config::load`'s validation, which refuses port 0 (the benchmark wants
    // ephemeral ports; `Running::address` reports them).
    let text = std::fs::read_to_string(config_path)?;
    let config: Config = toml::from_str(&text).context("bad benchmark configuration")?;
    gateway::logging::init(config.gateway.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let data_dir = &config.gateway.data_dir;
        std::fs::create_dir_all(data_dir)?;
        let gateway = Gateway::open(&config).context("cannot open the store")?;
        let mailbox = match gateway.list_mailboxes()?.into_iter().next() {
            Some(existing) => existing,
            None => gateway.create_mailbox("bench", "").await?.info,
        };
        let (resolver, _) = tls::prepare(
            &CertificateSourceSpec::SelfSigned,
            data_dir,
            &config.gateway.host_name,
        )?;
        let running = gateway::server::start(&config, gateway.clone(), resolver).await?;
        let addr = |name| {
            running
                .address(name)
                .ok_or_else(|| anyhow!("{name} did not start"))
        };
        // The other listeners that started (POP3 once the build has it) as NAME=ADDR.
        let others: String = running
            .addresses
            .iter()
            .filter(|(name, _)| !matches!(*name, "smtp" | "smtps"))
            .map(|(name, addr)| format!(" {name}={addr}"))
            .collect();
        // Our own pid last: under a wrapper (perf, a memory limit) the runner's child is the
        // wrapper, and its CPU time and memory are not the gateway's.
        println!(
            "READY {} {} {} {}{others} pid={}",
            addr("smtp")?,
            addr("smtps")?,
            mailbox.address,
            data_dir
                .join(tls::TLS_DIR)
                .join(tls::SELF_SIGNED_CERT_FILE)
                .display(),
            std::process::id()
        );
        std::io::stdout().flush()?;
        // Run until the parent closes our standard input.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                sink.clear();
            }
        })
        .await?;
        running.stop().await;
        let stored = gateway.mailbox(&mailbox.id)?.message_count;
        println!("STORED {stored}");
        std::io::stdout().flush()?;
        anyhow::Ok(())
    })
}

/// Set to a command line (`perf record -g -o gw.perf`, `valgrind --tool=massif`) to run
/// the gateway child under it, for profiles of the gateway alone.
pub const CHILD_WRAPPER_VAR: &str = "BENCH_GATEWAY_WRAPPER";

/// The command that starts the child: this executable, or the wrappers running it
/// (`outer` first, e.g. a memory limit, then the one [`CHILD_WRAPPER_VAR`] names).
fn child_command(outer: &[String]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe()?;
    let wrapper = std::env::var(CHILD_WRAPPER_VAR).unwrap_or_default();
    let mut words = outer
        .iter()
        .map(String::as_str)
        .chain(wrapper.split_whitespace());
    Ok(match words.next() {
        None => Command::new(exe),
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
    })
}

/// A running gateway child.
pub struct GatewayProcess {
    child: Child,
    /// The gateway's own process: the child, or the wrapper's child when one runs it.
    gateway_pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub smtp: SocketAddr,
    pub smtps: SocketAddr,
    /// Address of the mailbox that accepts the benchmark's mail.
    pub mailbox: String,
    /// The self-signed certificate, to trust in TLS clients.
    pub ca_file: PathBuf,
    /// The other listeners that started, by service name (`pop3`, `pop3s`, ...).
    pub services: Vec<(String, SocketAddr)>,
    /// Where its data and its log ([`LOG_FILE`]) are.
    data_dir: PathBuf,
}

impl GatewayProcess {
    /// Writes the benchmark configuration into `data_dir` and starts the child.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(&bench_config(data_dir))
    }

    /// Starts the child on `config` (written into its data directory). The child serves the
    /// first existing mailbox (by name) or creates one.
    pub fn start_with(config: &Config) -> anyhow::Result<Self> {
        Self::start_wrapped(config, &[])
    }

    /// Like [`Self::start_with`], the child run by the command `wrapper` (its words; the
    /// child's command line follows them), e.g. one that puts it under a memory limit.
    pub fn start_wrapped(config: &Config, wrapper: &[String]) -> anyhow::Result<Self> {
        let data_dir = config.gateway.data_dir.as_path();
        std::fs::create_dir_all(data_dir)?;
        let config_path = data_dir.join("bench-gateway.toml");
        std::fs::write(&config_path, config.to_toml_string())?;
        let mut child = child_command(wrapper)?
            .arg(CHILD_FLAG)
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data_dir.join(LOG_FILE))?)
            .spawn()
            .context("cannot start the gateway child process")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [ready, smtp, smtps, mailbox, ca_file, ref others @ ..] = fields[..] else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the gateway child did not start (said {line:?}); its log ends:\n{}",
                log_tail(data_dir)
            );
        };
        if ready != "READY" {
            bail!("unexpected line from the gateway child: {line:?}");
        }
        let mut gateway_pid = None;
        let mut services = Vec::new();
        for field in others {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("bad field {field:?} from the gateway child"))?;
            match name {
                "pid" => gateway_pid = Some(value.parse()?),
                _ => services.push((name.to_owned(), value.parse()?)),
            }
        }
        let gateway_pid =
            gateway_pid.ok_or_else(|| anyhow!("no pid from the gateway child: {line:?}"))?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            services,
            gateway_pid,
            smtp: smtp.parse()?,
            smtps: smtps.parse()?,
            mailbox: mailbox.to_owned(),
            ca_file: PathBuf::from(ca_file),
            child,
            stdin,
            stdout,
        })
    }

    /// Address of another listener (`pop3s`), if it started.
    pub fn service(&self, name: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// The gateway's process id (not a wrapper's), for its CPU time and memory.
    pub fn pid(&self) -> u32 {
        self.gateway_pid
    }

    /// How the child ended, if it has (killed by a memory limit, crashed), without waiting.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Graceful stop; returns the number of messages stored in the mailbox.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        drop(self.stdin.take());
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "the gateway child exited with {status}; its log ends:\n{}",
                log_tail(&self.data_dir)
            );
        }
        line.trim()
            .strip_prefix("STORED ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected final line from the gateway child: {line:?}"))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of the child's log in `data_dir`, for an error.
fn log_tail(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join(LOG_FILE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of `pid` (its sockets among them), from /proc.
pub fn open_descriptors(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
