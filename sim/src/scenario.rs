//! Scenarios and the plan of one run, drawn from its seed: who sends what, how the archiver
//! behaves, and which faults the driver injects when.

use std::time::Duration;

use gateway::mailbox::MailboxId;
use rand::rngs::SmallRng;
use rand::Rng;

use crate::hosts::gateway::{NAME as GATEWAY, NODES};

/// A family of faults. `Mixed` (the default) draws a little of everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// No faults: the baseline every other scenario departs from.
    Calm,
    /// Gateway crashes and restarts at random moments.
    Crash,
    /// Power cuts in the middle of a commit (a chosen sync never completes; unsynced writes
    /// are kept, dropped or torn), then a restart.
    PowerCut,
    /// Clients dropping connections mid-DATA, after the dot and mid-RETR; links stalling or
    /// partitioned for a while; variable latency.
    Network,
    /// The disk fills up for a while.
    FullDisk,
    /// Senders that dribble their data out with long stalls, on slow links.
    SlowClients,
    /// All of the above at once, at random.
    Mixed,
    /// Proxy mode: clients submit through the gateway to an upstream provider that refuses
    /// messages, drops connections and stalls, over a link that stalls or breaks for a
    /// while, as the gateway crashes and loses power.
    Proxy,
    /// Attackers who know the archiver's mailbox id guess its password from their own
    /// addresses, several connections at once, while the archiver picks up: the archiver
    /// must never be refused.
    Guessing,
    /// POP3 proxy mode: clients retrieve their maildrops at an upstream provider through the
    /// gateway, several sessions each, retrieving again, deleting and breaking off mid-RETR,
    /// while the upstream drops connections mid-RETR, stalls and refuses logins for a while,
    /// links stall or break and the gateway crashes and loses power.
    Pop3Proxy,
    /// Two gateway nodes share one database (the model of a networked one): senders and the
    /// archiver use either node, while nodes crash, a node loses the database for a while,
    /// the database restarts, and a commit loses its connection after or without taking
    /// effect.
    Cluster,
}

impl Scenario {
    /// The single-node scenarios, which seeds without a named scenario rotate through.
    pub const ALL: [Scenario; 10] = [
        Scenario::Calm,
        Scenario::Crash,
        Scenario::PowerCut,
        Scenario::Network,
        Scenario::FullDisk,
        Scenario::SlowClients,
        Scenario::Mixed,
        Scenario::Proxy,
        Scenario::Guessing,
        Scenario::Pop3Proxy,
    ];

    /// Every scenario a name selects: [`Scenario::ALL`] and the cluster.
    pub fn named() -> impl Iterator<Item = Scenario> {
        Self::ALL.into_iter().chain([Scenario::Cluster])
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Calm => "calm",
            Scenario::Crash => "crash",
            Scenario::PowerCut => "power-cut",
            Scenario::Network => "network",
            Scenario::FullDisk => "full-disk",
            Scenario::SlowClients => "slow-clients",
            Scenario::Mixed => "mixed",
            Scenario::Proxy => "proxy",
            Scenario::Guessing => "guessing",
            Scenario::Pop3Proxy => "pop3-proxy",
            Scenario::Cluster => "cluster",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::named().find(|s| s.name() == name)
    }

    fn has(self, other: Scenario) -> bool {
        self == other
            || (self == Scenario::Mixed
                && !matches!(
                    other,
                    Scenario::Calm
                        | Scenario::Proxy
                        | Scenario::Guessing
                        | Scenario::Pop3Proxy
                        | Scenario::Cluster
                ))
    }
}

/// One message a sender will deliver.
#[derive(Debug, Clone)]
pub struct MessagePlan {
    pub label: String,
    pub body: Vec<u8>,
    /// Mailbox indexes.
    pub rcpts: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct SenderPlan {
    pub name: String,
    /// The gateway hosts it delivers to (one at random per attempt when several).
    pub gateways: Vec<String>,
    pub start: Duration,
    pub messages: Vec<MessagePlan>,
    pub mailboxes: Vec<MailboxId>,
    /// Chance that an attempt drops its connection mid-data or after the dot.
    pub cut_rate: f64,
    pub tls_rate: f64,
    /// Largest piece of data written at once.
    pub max_piece: usize,
    /// Longest stall between pieces (0: none).
    pub max_stall_ms: u64,
    pub max_pause_ms: u64,
    /// How long the sender waits for any reply.
    pub patience: Duration,
    /// Attempts allowed per message once the faults are over: more is a liveness failure.
    pub max_attempts_after_faults: u32,
}

/// A proxy-mode client: submits its messages through the gateway to the upstream.
#[derive(Debug, Clone)]
pub struct ProxyClientPlan {
    pub name: String,
    pub start: Duration,
    /// `rcpts` is the one mailbox of the login.
    pub messages: Vec<MessagePlan>,
    /// The mailbox the copies go to.
    pub mailbox: MailboxId,
    pub cut_rate: f64,
    pub max_piece: usize,
    pub max_pause_ms: u64,
    pub patience: Duration,
    pub max_attempts_after_faults: u32,
}

/// A message in a maildrop at the upstream (POP3 proxy mode).
#[derive(Debug, Clone)]
pub struct UpstreamMessage {
    pub uidl: String,
    pub label: String,
    /// Exactly the message (CRLF lines, some starting with a dot).
    pub body: Vec<u8>,
}

/// A POP3 proxy client: retrieves its maildrop at the upstream through the gateway, as
/// `<name>%upstream%<mailbox>`, in several sessions.
#[derive(Debug, Clone)]
pub struct Pop3ClientPlan {
    /// Also the account's user name at the upstream.
    pub name: String,
    pub start: Duration,
    /// The mailbox the copies go to, and its index.
    pub mailbox: MailboxId,
    pub mailbox_index: usize,
    /// The account's maildrop at the upstream.
    pub messages: Vec<UpstreamMessage>,
    pub sessions_during_faults: usize,
    pub max_gap_ms: u64,
    /// Chance that a session breaks off mid-RETR or before QUIT.
    pub cut_rate: f64,
    pub patience: Duration,
    /// Sessions allowed to empty the maildrop once the faults are over.
    pub max_attempts_after_faults: u32,
}

/// Proxy mode's part of a plan.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    pub clients: Vec<ProxyClientPlan>,
    /// POP3 proxy clients (the `pop3-proxy` scenario).
    pub pop3_clients: Vec<Pop3ClientPlan>,
    pub upstream: crate::hosts::upstream::UpstreamPlan,
}

#[derive(Debug, Clone)]
pub struct ArchiverPlan {
    /// The gateway hosts it picks up from (one at random per session when several).
    pub gateways: Vec<String>,
    /// Mailbox id and password.
    pub mailboxes: Vec<(MailboxId, String)>,
    pub sessions_during_faults: usize,
    pub max_gap_ms: u64,
    pub cut_rate: f64,
    pub patience: Duration,
    pub max_drain_attempts: u32,
    /// Any `-ERR` to a login other than `[IN-USE]` is a violation (the guessing scenario,
    /// whose only fault is the attackers).
    pub never_refused: bool,
    /// A QUIT after DELE must never be refused: on a full disk (and nothing worse) the
    /// gateway's space reserve lets the deletion commit, so pick-up always frees space.
    pub pickup_always_frees: bool,
}

/// An attacker guessing the password of one mailbox.
#[derive(Debug, Clone)]
pub struct AttackerPlan {
    pub name: String,
    pub start: Duration,
    pub mailbox: MailboxId,
    /// Connections guessing at once.
    pub connections: usize,
    /// Longest pause before reconnecting after the gateway closed a session.
    pub max_pause_ms: u64,
}

/// Something the driver does at a moment of simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Crash the gateway now and restart it after the pause.
    Crash { down: Duration },
    /// Cut the power at the n-th sync from now (then restart after the pause).
    CutAtSync { n: u64, down: Duration },
    /// Stall the link between a client and the gateway for a while (packets held, not lost).
    Stall { client: String, for_: Duration },
    /// Cut the link for a while: packets are lost, and since turmoil's TCP does not
    /// retransmit, the connections across it hang until a side gives up.
    Partition { client: String, for_: Duration },
    /// The disk is full (growth beyond `slack` bytes fails) for a while.
    DiskFull { slack: u64, for_: Duration },
    /// Cluster: crash a node now and restart it after the pause.
    NodeCrash { node: usize, down: Duration },
    /// Cluster: cut the network between a node and the database for a while.
    DbPartition { node: usize, for_: Duration },
    /// Cluster: the database server restarts (down for the pause).
    DbRestart { down: Duration },
    /// Cluster: the next commit loses its connection; it took effect if `applied`.
    AmbiguousCommit { applied: bool },
}

/// The cluster scenario's nodes and their database.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Each node's round trip to the database, waited before each batch of its writer.
    pub latency: Vec<Duration>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub senders: Vec<SenderPlan>,
    pub archiver: ArchiverPlan,
    /// Faults by time, in order.
    pub faults: Vec<(Duration, Fault)>,
    /// When every fault is healed.
    pub faults_end: Duration,
    pub min_latency: Duration,
    pub max_latency: Duration,
    /// Proxy mode (the gateway offers proxy logins, an upstream host runs).
    pub proxy: Option<ProxyPlan>,
    /// The guessing scenario's attackers.
    pub attackers: Vec<AttackerPlan>,
    /// The cluster scenario's nodes.
    pub cluster: Option<ClusterPlan>,
}

/// Mailboxes created before the run, with their passwords.
pub type Mailboxes = Vec<(MailboxId, String)>;

fn body(rng: &mut SmallRng, label: &str, slow: bool) -> Vec<u8> {
    let mut out = format!("X-Sim-Label: {label}\r\nSubject: journal {label}\r\n\r\n").into_bytes();
    // Mostly small; sometimes several sealed chunks (just under 64 KiB each).
    let size = match rng.random_range(0..10) {
        0 if !slow => rng.random_range(70_000..200_000),
        1..=3 => rng.random_range(2_000..20_000),
        _ => rng.random_range(10..2_000),
    };
    while out.len() < size {
        let len = rng.random_range(0..78);
        // Lines starting with a dot exercise transparency both ways.
        if rng.random_bool(0.05) {
            out.push(b'.');
        }
        for _ in 0..len {
            out.push(rng.random_range(b' '..=b'~'));
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Plan {
    /// Draws a plan. Consumes `rng` only, so the plan is a function of the seed.
    pub fn draw(scenario: Scenario, rng: &mut SmallRng, mailboxes: &Mailboxes) -> Self {
        let network = scenario.has(Scenario::Network);
        let slow = scenario.has(Scenario::SlowClients);
        let faults_end = Duration::from_secs(rng.random_range(60..180));
        let sender_count = rng.random_range(1..=3);
        let ids: Vec<MailboxId> = mailboxes.iter().map(|(id, _)| id.clone()).collect();
        let mut senders = Vec::new();
        for s in 0..sender_count {
            let name = format!("sender-{s}");
            let count = rng.random_range(2..=6);
            let messages = (0..count)
                .map(|m| {
                    let label = format!("s{s}-m{m}");
                    let mut rcpts = vec![rng.random_range(0..ids.len())];
                    if ids.len() > 1 && rng.random_bool(0.3) {
                        rcpts = (0..ids.len()).collect();
                    }
                    MessagePlan {
                        body: body(rng, &label, slow),
                        label,
                        rcpts,
                    }
                })
                .collect();
            senders.push(SenderPlan {
                gateways: vec![GATEWAY.to_owned()],
                start: Duration::from_millis(rng.random_range(0..20_000)),
                messages,
                mailboxes: ids.clone(),
                cut_rate: if network { 0.3 } else { 0.0 },
                tls_rate: 0.3,
                max_piece: if slow { 200 } else { 64 * 1024 },
                max_stall_ms: if slow { 20_000 } else { 0 },
                max_pause_ms: 10_000,
                patience: Duration::from_secs(if slow { 120 } else { 30 }),
                max_attempts_after_faults: 10,
                name,
            });
        }
        let archiver = ArchiverPlan {
            gateways: vec![GATEWAY.to_owned()],
            mailboxes: mailboxes.clone(),
            sessions_during_faults: rng.random_range(1..=5),
            max_gap_ms: 30_000,
            cut_rate: if network { 0.3 } else { 0.0 },
            patience: Duration::from_secs(30),
            // A session hung by a partition keeps the maildrop until the gateway's 10-minute
            // idle timeout; the drain outlasts that.
            max_drain_attempts: 40,
            never_refused: false,
            // Crashes and power cuts may fail an UPDATE; a full disk alone must not.
            pickup_always_frees: scenario == Scenario::FullDisk,
        };

        let mut faults = Vec::new();
        let at = |rng: &mut SmallRng| {
            Duration::from_millis(rng.random_range(1_000..faults_end.as_millis() as u64))
        };
        if scenario.has(Scenario::Crash) {
            for _ in 0..rng.random_range(1..=3) {
                let down = Duration::from_millis(rng.random_range(100..5_000));
                faults.push((at(rng), Fault::Crash { down }));
            }
        }
        if scenario.has(Scenario::PowerCut) {
            for _ in 0..rng.random_range(1..=3) {
                let n = rng.random_range(1..6);
                let down = Duration::from_millis(rng.random_range(100..5_000));
                faults.push((at(rng), Fault::CutAtSync { n, down }));
            }
        }
        if network {
            for _ in 0..rng.random_range(1..=4) {
                let client = if rng.random_bool(0.3) {
                    "archiver".to_owned()
                } else {
                    format!("sender-{}", rng.random_range(0..sender_count))
                };
                let fault = link_fault(rng, client);
                faults.push((at(rng), fault));
            }
        }
        if scenario.has(Scenario::FullDisk) {
            // While the senders are busy, so that commits meet it.
            let when = Duration::from_millis(rng.random_range(0..30_000));
            let slack = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(0..64 * 1024)
            };
            let for_ = Duration::from_millis(rng.random_range(5_000..60_000));
            faults.push((when, Fault::DiskFull { slack, for_ }));
        }
        faults.sort_by_key(|(at, _)| *at);
        let (min_latency, max_latency) = if network || slow {
            (
                Duration::from_millis(1),
                Duration::from_millis(rng.random_range(5..500)),
            )
        } else {
            (Duration::from_millis(1), Duration::from_millis(10))
        };
        // Proxy mode's draws come last, so the other scenarios' plans stay as they were.
        let mut archiver = archiver;
        let mut proxy = (scenario == Scenario::Proxy).then(|| {
            // One journal sender beside the proxy clients; the archiver only drains at the
            // end, as a copy of a refused message lives until the refusal (see invariants).
            senders.truncate(1);
            archiver.sessions_during_faults = 0;
            let clients = (0..rng.random_range(1..=3))
                .map(|c| {
                    let name = format!("client-{c}");
                    let mailbox = rng.random_range(0..ids.len());
                    let messages = (0..rng.random_range(2..=6))
                        .map(|m| {
                            let label = format!("p{c}-m{m}");
                            MessagePlan {
                                body: body(rng, &label, false),
                                label,
                                rcpts: vec![mailbox],
                            }
                        })
                        .collect();
                    ProxyClientPlan {
                        start: Duration::from_millis(rng.random_range(0..20_000)),
                        messages,
                        mailbox: ids[mailbox].clone(),
                        cut_rate: 0.2,
                        max_piece: 64 * 1024,
                        max_pause_ms: 10_000,
                        patience: Duration::from_secs(60),
                        max_attempts_after_faults: 10,
                        name,
                    }
                })
                .collect();
            proxy_faults(rng, &mut faults, &at);
            ProxyPlan {
                clients,
                pop3_clients: Vec::new(),
                upstream: crate::hosts::upstream::UpstreamPlan {
                    fault_rate: 0.4,
                    seed: rng.random(),
                    maildrops: Vec::new(),
                },
            }
        });
        // The guessing scenario's draws come last too.
        let mut attackers = Vec::new();
        if scenario == Scenario::Guessing {
            archiver.never_refused = true;
            archiver.sessions_during_faults = rng.random_range(2..=6);
            // Mostly the first mailbox, so the archiver meets the attack often.
            let target = if rng.random_bool(0.8) {
                0
            } else {
                1 % ids.len()
            };
            for a in 0..rng.random_range(1..=3) {
                attackers.push(AttackerPlan {
                    name: format!("attacker-{a}"),
                    start: Duration::from_millis(rng.random_range(0..10_000)),
                    mailbox: ids[target].clone(),
                    connections: rng.random_range(1..=4),
                    max_pause_ms: rng.random_range(200..5_000),
                });
            }
        }
        // And the POP3 proxy's, last of all.
        if scenario == Scenario::Pop3Proxy {
            senders.truncate(1);
            archiver.sessions_during_faults = 0;
            proxy = Some(pop3_proxy(rng, &ids, &mut faults, &at));
        }
        // The cluster's, after everything else.
        let cluster = (scenario == Scenario::Cluster)
            .then(|| cluster(rng, &mut senders, &mut archiver, &mut faults, &at));
        Plan {
            scenario,
            senders,
            archiver,
            faults,
            faults_end,
            min_latency,
            max_latency,
            proxy,
            attackers,
            cluster,
        }
    }
}

/// Proxy mode's gateway faults: crashes and power cuts, and the link between the gateway and
/// the upstream stalling or breaking for a while. Sorts `faults`.
fn proxy_faults(
    rng: &mut SmallRng,
    faults: &mut Vec<(Duration, Fault)>,
    at: &dyn Fn(&mut SmallRng) -> Duration,
) {
    for _ in 0..rng.random_range(1..=3) {
        let down = Duration::from_millis(rng.random_range(100..5_000));
        let fault = if rng.random_bool(0.5) {
            Fault::Crash { down }
        } else {
            Fault::CutAtSync {
                n: rng.random_range(1..6),
                down,
            }
        };
        faults.push((at(rng), fault));
    }
    link_faults(rng, faults, at, 0..=2, &[crate::hosts::upstream::NAME]);
}

/// The link between `client` and the gateway stalls (mostly) or breaks, for a while.
fn link_fault(rng: &mut SmallRng, client: String) -> Fault {
    let for_ = Duration::from_millis(rng.random_range(100..40_000));
    if rng.random_bool(0.3) {
        Fault::Partition { client, for_ }
    } else {
        Fault::Stall { client, for_ }
    }
}

/// Up to `count` stalls or cuts of the links between some of `hosts` and the gateway.
fn link_faults(
    rng: &mut SmallRng,
    faults: &mut Vec<(Duration, Fault)>,
    at: &dyn Fn(&mut SmallRng) -> Duration,
    count: std::ops::RangeInclusive<usize>,
    hosts: &[&str],
) {
    for _ in 0..rng.random_range(count) {
        let client = if hosts.len() == 1 {
            hosts[0].to_owned()
        } else {
            hosts[rng.random_range(0..hosts.len())].to_owned()
        };
        let fault = link_fault(rng, client);
        faults.push((at(rng), fault));
    }
    faults.sort_by_key(|(at, _)| *at);
}

/// The `pop3-proxy` scenario's part: maildrops at the upstream, the clients that retrieve
/// them through the gateway, and the faults (as in SMTP proxy mode, and the clients' links).
fn pop3_proxy(
    rng: &mut SmallRng,
    ids: &[MailboxId],
    faults: &mut Vec<(Duration, Fault)>,
    at: &dyn Fn(&mut SmallRng) -> Duration,
) -> ProxyPlan {
    let pop3_clients: Vec<Pop3ClientPlan> = (0..rng.random_range(1..=2))
        .map(|c| {
            let mailbox_index = rng.random_range(0..ids.len());
            let messages = (0..rng.random_range(2..=6))
                .map(|m| {
                    let label = format!("r{c}-m{m}");
                    UpstreamMessage {
                        uidl: format!("up{c}.{m}.{:08x}", rng.random::<u32>()),
                        body: body(rng, &label, false),
                        label,
                    }
                })
                .collect();
            Pop3ClientPlan {
                name: format!("pop3-client-{c}"),
                start: Duration::from_millis(rng.random_range(0..20_000)),
                mailbox: ids[mailbox_index].clone(),
                mailbox_index,
                messages,
                sessions_during_faults: rng.random_range(2..=5),
                max_gap_ms: 20_000,
                cut_rate: 0.3,
                patience: Duration::from_secs(60),
                max_attempts_after_faults: 10,
            }
        })
        .collect();
    proxy_faults(rng, faults, at);
    let names: Vec<&str> = pop3_clients.iter().map(|c| c.name.as_str()).collect();
    link_faults(rng, faults, at, 0..=2, &names);
    ProxyPlan {
        clients: Vec::new(),
        upstream: crate::hosts::upstream::UpstreamPlan {
            fault_rate: 0.3,
            seed: rng.random(),
            maildrops: pop3_clients
                .iter()
                .map(|c| (c.name.clone(), c.messages.clone()))
                .collect(),
        },
        pop3_clients,
    }
}

/// The `cluster` scenario's part: every client uses both nodes; node crashes, partitions
/// between a node and the database, database restarts and ambiguous commits. Sorts
/// `faults`.
fn cluster(
    rng: &mut SmallRng,
    senders: &mut [SenderPlan],
    archiver: &mut ArchiverPlan,
    faults: &mut Vec<(Duration, Fault)>,
    at: &dyn Fn(&mut SmallRng) -> Duration,
) -> ClusterPlan {
    let nodes: Vec<String> = NODES.iter().map(|n| (*n).to_owned()).collect();
    for sender in senders.iter_mut() {
        sender.gateways = nodes.clone();
    }
    archiver.gateways = nodes;
    let down = |rng: &mut SmallRng| Duration::from_millis(rng.random_range(100..5_000));
    for _ in 0..rng.random_range(0..=2) {
        let node = rng.random_range(0..NODES.len());
        let down = down(rng);
        faults.push((at(rng), Fault::NodeCrash { node, down }));
    }
    for _ in 0..rng.random_range(1..=3) {
        let node = rng.random_range(0..NODES.len());
        let for_ = Duration::from_millis(rng.random_range(100..30_000));
        faults.push((at(rng), Fault::DbPartition { node, for_ }));
    }
    // Restarts and broken commits mostly while the senders are busy, so that commits meet
    // them (and their retries meet the duplicates an applied one leaves).
    let busy = |rng: &mut SmallRng| Duration::from_millis(rng.random_range(1_000..40_000));
    for _ in 0..rng.random_range(0..=2) {
        let down = down(rng);
        let when = if rng.random_bool(0.7) {
            busy(rng)
        } else {
            at(rng)
        };
        faults.push((when, Fault::DbRestart { down }));
    }
    for _ in 0..rng.random_range(1..=3) {
        let applied = rng.random_bool(0.5);
        faults.push((busy(rng), Fault::AmbiguousCommit { applied }));
    }
    faults.sort_by_key(|(at, _)| *at);
    ClusterPlan {
        latency: (0..NODES.len())
            .map(|_| Duration::from_millis(rng.random_range(0..30)))
            .collect(),
    }
}
