//! The scenarios: what each one measures and its target, and one function per scenario that runs
//! it once against one server.
//!
//! To add a scenario, add a variant to [`Scenario`], its name and metrics, and a function that
//! returns one value per metric; the harness runs it for both servers and reports it like the
//! others. A scenario that compares two setups of its own (cluster, the history ones) runs in a
//! module of its own instead ([`Scenario::runs_own_servers`]); so do the fan-out (three
//! servers: `fanout.rs`) and the deflate echo (two routes of the Tachyon server: `deflate.rs`),
//! whose single runs are here, for `--url`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client;

/// One measurement, as run once against one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Closed-loop echo throughput of small text messages over 100 connections.
    Echo32,
    /// Closed-loop echo throughput of 16 KiB binary messages over 10 connections.
    Echo16k,
    /// A 16 KiB JSON text echo with permessage-deflate on, against off.
    EchoDeflate,
    /// The 32 B and 16 KiB echoes with Tachyon's `metrics` feature on (and a Prometheus
    /// recorder installed), against a build without it (`--only`, from scripts/bench-metrics).
    EchoMetrics,
    /// Round-trip time of one connection, one message at a time.
    Latency,
    /// New connections per second (handshake, one echo, close handshake).
    Connect,
    /// Server memory held per idle connection.
    IdleMemory,
    /// Broadcast to one room: Tachyon's `Rooms` against the floor (pre-framed bytes written in a
    /// plain loop) and the seed's pattern on raw axum.
    Fanout,
    /// Broadcast from one node to members on another through Redis, against in-process rooms.
    Cluster,
    /// Broadcast to a room whose history is on, against the same room without history.
    History,
    /// Members that resume after a gap get what they missed, against getting it live.
    Recovery,
    /// Memory held by room histories, against the size of the messages kept.
    HistoryMemory,
}

/// A number a scenario reports, and what it should be.
#[derive(Debug)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) decimals: usize,
    pub(crate) goal: Goal,
}

/// A metric's target.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Goal {
    /// tachyon / raw must be at least this.
    RatioAtLeast(f64),
    /// tachyon / raw must be at most this.
    RatioAtMost(f64),
    /// Tachyon's own value must be at most this.
    AtMost(f64),
    /// Reported only.
    None,
}

impl Goal {
    pub(crate) fn describe(self, unit: &str) -> String {
        match self {
            Self::RatioAtLeast(ratio) => format!(">= {ratio:.2}x"),
            Self::RatioAtMost(ratio) => format!("<= {ratio:.2}x"),
            Self::AtMost(value) => format!("<= {value} {unit}"),
            Self::None => "-".to_owned(),
        }
    }

    pub(crate) fn is_met(self, raw: f64, tachyon: f64) -> Option<bool> {
        match self {
            Self::RatioAtLeast(ratio) => Some(tachyon / raw >= ratio),
            Self::RatioAtMost(ratio) => Some(tachyon / raw <= ratio),
            Self::AtMost(value) => Some(tachyon <= value),
            Self::None => None,
        }
    }
}

/// Durations and counts: full, or short enough for the whole `--quick` run to take under a minute.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) duration: Duration,
    pub(crate) round_trips: usize,
    pub(crate) idle_connections: usize,
    pub(crate) fanout_members: usize,
    /// Messages per member in the sustained part of the fan-out.
    pub(crate) fanout_burst: usize,
    /// Sequential cross-node round trips of the cluster latency.
    pub(crate) cluster_round_trips: usize,
    /// Members, and messages to each, of the cluster throughput.
    pub(crate) cluster_members: usize,
    pub(crate) cluster_burst: usize,
    /// Members of the history scenario's room.
    pub(crate) history_members: usize,
    /// Bursts (of [`HISTORY_BURST`](crate::history::HISTORY_BURST) broadcasts) of its throughput.
    pub(crate) history_bursts: usize,
    /// Sequential broadcasts of its latency.
    pub(crate) history_round_trips: usize,
    /// Members that resume in the recovery scenario (each missed
    /// [`HISTORY_DEPTH`](crate::server::HISTORY_DEPTH) messages).
    pub(crate) recovery_members: usize,
    /// Rooms, and messages kept in each, of the history-memory scenario.
    pub(crate) memory_rooms: usize,
    pub(crate) memory_messages: usize,
}

impl Settings {
    /// `open_files` is the file descriptor limit; idle connections stay well below it.
    pub(crate) fn new(quick: bool, open_files: u64) -> Self {
        let wanted: usize = if quick { 1_000 } else { 10_000 };
        let allowed = usize::try_from(open_files.saturating_sub(256)).unwrap_or(usize::MAX);
        Self {
            duration: Duration::from_secs(if quick { 1 } else { 3 }),
            round_trips: if quick { 2_000 } else { 10_000 },
            idle_connections: wanted.min(allowed).max(1),
            fanout_members: wanted.min(allowed).max(1),
            fanout_burst: if quick { 50 } else { 100 },
            cluster_round_trips: if quick { 500 } else { 2_000 },
            cluster_members: if quick { 20 } else { 100 },
            cluster_burst: if quick { 200 } else { 500 },
            history_members: 100,
            history_bursts: if quick { 8 } else { 20 },
            history_round_trips: if quick { 200 } else { 1_000 },
            // The full run's 1,000 x 1,000 is a million deliveries a run: --quick replays the
            // same 1,000 messages to fewer members (and says so).
            recovery_members: (if quick { 100 } else { 1_000 }).min(allowed).max(1),
            memory_rooms: if quick { 1_000 } else { 10_000 },
            memory_messages: 100,
        }
    }
}

/// The server a scenario runs against.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    /// Its process, to read its memory.
    pub(crate) pid: Option<u32>,
}

/// Round trips each connection makes before the clock starts.
const WARM_UP_ECHOES: usize = 20;
/// Connections opened and closed before the idle-memory baseline is read.
const WARM_UP_CONNECTIONS: usize = 50;
/// Idle connections opened at once: below the listen backlog of the servers (tokio's default,
/// 128), whose overflow would cost one-second SYN retransmissions.
pub(crate) const CONNECT_BATCH: usize = 100;
/// A bound on any loop's count that a timed loop never reaches in practice.
const MAX_ITERATIONS: u64 = 100_000_000;
/// The longest the sequential parts (latency, opening idle connections) may take in all.
const TIME_LIMIT: Duration = Duration::from_secs(120);

impl Scenario {
    pub(crate) const ALL: [Self; 12] = [
        Self::Echo32,
        Self::Echo16k,
        Self::EchoDeflate,
        Self::EchoMetrics,
        Self::Latency,
        Self::Connect,
        Self::IdleMemory,
        Self::Fanout,
        Self::Cluster,
        Self::History,
        Self::Recovery,
        Self::HistoryMemory,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Echo32 => "echo-32",
            Self::Echo16k => "echo-16k",
            Self::EchoDeflate => "echo-deflate",
            Self::EchoMetrics => "echo-metrics",
            Self::Latency => "latency",
            Self::Connect => "connect",
            Self::IdleMemory => "idle-memory",
            Self::Fanout => "fan-out",
            Self::Cluster => "cluster",
            Self::History => "history",
            Self::Recovery => "recovery",
            Self::HistoryMemory => "history-memory",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    /// What the scenario reports, in the order [`run`](Self::run) returns it.
    pub(crate) fn metrics(self) -> &'static [Metric] {
        const fn metric(
            name: &'static str,
            unit: &'static str,
            decimals: usize,
            goal: Goal,
        ) -> Metric {
            Metric {
                name,
                unit,
                decimals,
                goal,
            }
        }
        match self {
            // Server CPU time per message is steadier than throughput on a shared machine: it
            // does not depend on how much of the machine the server got.
            Self::Echo32 => {
                const {
                    &[
                        metric("echo-32", "msg/s", 0, Goal::RatioAtLeast(1.0)),
                        metric("echo-32 cpu", "us/msg", 2, Goal::RatioAtMost(0.8)),
                    ]
                }
            }
            Self::Echo16k => {
                const {
                    &[
                        metric("echo-16k", "msg/s", 0, Goal::RatioAtLeast(1.0)),
                        metric("echo-16k cpu", "us/msg", 2, Goal::RatioAtMost(0.8)),
                    ]
                }
            }
            // The 32 B echo's values, then the 16 KiB echo's.
            Self::EchoMetrics => crate::metrics_cost::ROWS,
            // One server's run; the rows that compare deflate off and on are
            // `deflate::ROWS`, in the same order.
            Self::EchoDeflate => {
                const {
                    &[
                        metric("echo-deflate", "msg/s", 0, Goal::None),
                        metric("echo-deflate server cpu", "us/msg", 2, Goal::None),
                        metric("echo-deflate client cpu", "us/msg", 2, Goal::None),
                        metric("echo-deflate wire client->server", "B/msg", 0, Goal::None),
                        metric("echo-deflate wire server->client", "B/msg", 0, Goal::None),
                    ]
                }
            }
            Self::Latency => {
                const {
                    &[
                        metric("latency p50", "us", 1, Goal::RatioAtMost(1.0)),
                        metric("latency p99", "us", 1, Goal::None),
                    ]
                }
            }
            Self::Connect => const { &[metric("connect", "conn/s", 0, Goal::RatioAtLeast(0.9))] },
            Self::IdleMemory => {
                const { &[metric("idle-memory", "KiB/conn", 2, Goal::AtMost(8.0))] }
            }
            // One server's run; the rows that compare Tachyon with the floor and the naive
            // pattern (and their targets) are `fanout::ROWS`.
            Self::Fanout => {
                const {
                    &[
                        metric("fan-out single", "ms", 1, Goal::None),
                        metric("fan-out single server cpu", "us/deliv", 2, Goal::None),
                        metric("fan-out single client cpu", "us/deliv", 2, Goal::None),
                        metric("fan-out burst", "deliv/s", 0, Goal::None),
                        metric("fan-out burst server cpu", "us/deliv", 3, Goal::None),
                    ]
                }
            }
            Self::Cluster => Self::CLUSTER,
            Self::History => Self::HISTORY,
            Self::Recovery => Self::RECOVERY,
            Self::HistoryMemory => Self::HISTORY_MEMORY,
        }
    }

    /// Whether the scenario starts servers of its own (or none) and compares two setups of its
    /// own instead of raw axum and Tachyon: `main` hands it to its module.
    pub(crate) fn runs_own_servers(self) -> bool {
        matches!(
            self,
            Self::Cluster
                | Self::History
                | Self::Recovery
                | Self::HistoryMemory
                | Self::EchoMetrics
        )
    }

    // The history rows compare rooms without history ("raw" column) and with
    // `History::messages(1000)` ("tachyon" column), on two fresh Tachyon servers that differ in
    // that only. The target is the issue's: history costs at most 1.3 x the server's CPU time
    // per broadcast.
    const HISTORY: &'static [Metric] = &[
        Metric {
            name: "history burst (off vs on)",
            unit: "bcast/s",
            decimals: 0,
            goal: Goal::None,
        },
        Metric {
            name: "history burst server cpu (off vs on)",
            unit: "us/bcast",
            decimals: 2,
            goal: Goal::RatioAtMost(1.3),
        },
        Metric {
            name: "history latency p50 (off vs on)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "history latency p99 (off vs on)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "history one-by-one server cpu (off vs on)",
            unit: "us/bcast",
            decimals: 2,
            goal: Goal::RatioAtMost(1.3),
        },
    ];

    // The recovery rows compare the same messages delivered live to members that stayed
    // ("raw" column) with their replay to members that resume after missing them ("tachyon"
    // column), on one server whose rooms keep history.
    const RECOVERY: &'static [Metric] = &[
        Metric {
            name: "recovery until all caught up (live vs replay)",
            unit: "ms",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "recovery server cpu (live vs replay)",
            unit: "us/msg",
            decimals: 3,
            goal: Goal::None,
        },
        Metric {
            name: "recovery client cpu (live vs replay)",
            unit: "us/msg",
            decimals: 3,
            goal: Goal::None,
        },
        Metric {
            name: "recovery messages delivered (live vs replay)",
            unit: "msgs",
            decimals: 0,
            goal: Goal::None,
        },
        Metric {
            name: "recovery payload delivered (live vs replay)",
            unit: "MB",
            decimals: 1,
            goal: Goal::None,
        },
    ];

    // The history-memory rows compare the payload kept ("raw" column) with the growth of the
    // resident memory of a process that keeps it ("tachyon" column): the ratio is the memory
    // per byte of payload.
    const HISTORY_MEMORY: &'static [Metric] = &[
        Metric {
            name: "history memory per message (payload vs RSS)",
            unit: "B/msg",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "history memory per room (payload vs RSS)",
            unit: "KiB/room",
            decimals: 2,
            goal: Goal::None,
        },
    ];

    // The cluster's rows compare in-process rooms ("raw" column) with rooms through Redis
    // ("tachyon" column): what crossing servers costs, reported without a target.
    const CLUSTER: &'static [Metric] = &[
        Metric {
            name: "cluster latency p50 (in-process vs Redis)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "cluster latency p99 (in-process vs Redis)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "cluster broadcast (in-process vs Redis)",
            unit: "deliv/s",
            decimals: 0,
            goal: Goal::None,
        },
        Metric {
            name: "cluster broadcast cpu, all processes (in-process vs Redis)",
            unit: "us/bcast",
            decimals: 1,
            goal: Goal::None,
        },
        // Then rooms through Redis without history ("raw" column) and with (`History::messages`
        // of 1,000 in a Redis stream, "tachyon" column).
        Metric {
            name: "cluster history latency p50 (Redis, off vs on)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "cluster history latency p99 (Redis, off vs on)",
            unit: "us",
            decimals: 1,
            goal: Goal::None,
        },
        Metric {
            name: "cluster history broadcast (Redis, off vs on)",
            unit: "deliv/s",
            decimals: 0,
            goal: Goal::None,
        },
        Metric {
            name: "cluster history cpu, nodes + Redis (off vs on)",
            unit: "us/bcast",
            decimals: 1,
            goal: Goal::None,
        },
    ];

    /// Whether each run needs a server process of its own (its memory must start clean).
    pub(crate) fn needs_fresh_server(self) -> bool {
        matches!(self, Self::IdleMemory)
    }

    /// Runs the scenario once; returns one value per metric.
    pub(crate) async fn run(
        self,
        endpoint: &Endpoint,
        settings: &Settings,
    ) -> io::Result<Vec<f64>> {
        let url = endpoint.url.as_str();
        let values = match self {
            Self::Echo32 => {
                let text = Message::text("x".repeat(32));
                let (rate, cpu) = echo_throughput(endpoint, 100, text, settings.duration).await?;
                vec![rate, cpu]
            }
            Self::Echo16k => {
                let bytes = Message::binary(vec![0xa5_u8; 16 * 1024]);
                let (rate, cpu) = echo_throughput(endpoint, 10, bytes, settings.duration).await?;
                vec![rate, cpu]
            }
            Self::Latency => {
                let (p50, p99) = latency(url, settings.round_trips).await?;
                vec![p50, p99]
            }
            Self::Connect => vec![connect_rate(url, 16, settings.duration).await?],
            Self::Fanout => crate::fanout::run(endpoint, settings).await?,
            Self::EchoDeflate => {
                let document = crate::deflate::json_document(crate::deflate::DOCUMENT_SIZE);
                crate::deflate::run(url, endpoint.pid, &document, settings, None).await?
            }
            Self::Cluster
            | Self::History
            | Self::Recovery
            | Self::HistoryMemory
            | Self::EchoMetrics => {
                return Err(io::Error::other(format!(
                    "{} runs servers of its own: see main::compare",
                    self.name()
                )));
            }
            Self::IdleMemory => {
                let pid = endpoint
                    .pid
                    .ok_or_else(|| io::Error::other("idle-memory needs a pid"))?;
                vec![idle_memory(url, pid, settings.idle_connections).await?]
            }
        };
        Ok(values)
    }
}

/// Waits for every task; returns their results, or the first error.
async fn join_all<T: 'static>(mut tasks: JoinSet<io::Result<T>>) -> io::Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.map_err(io::Error::other)??);
    }
    Ok(results)
}

/// Messages per second, and the server's CPU time per message in microseconds (NaN without its
/// process id): `connections` connections each echo `message` as fast as the server answers, one
/// at a time, for `duration`.
async fn echo_throughput(
    endpoint: &Endpoint,
    connections: usize,
    message: Message,
    duration: Duration,
) -> io::Result<(f64, f64)> {
    let url = endpoint.url.as_str();
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut socket = client::connect(url).await?;
        for _ in 0..WARM_UP_ECHOES {
            client::echo(&mut socket, &message).await?;
        }
        sockets.push(socket);
    }
    let cpu_before = endpoint.pid.and_then(server_cpu_ns);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for mut socket in sockets {
        let message = message.clone();
        tasks.spawn(async move {
            let mut echoes = 0_u64;
            while echoes < MAX_ITERATIONS && Instant::now() < deadline {
                client::echo(&mut socket, &message).await?;
                echoes += 1;
            }
            let end = Instant::now();
            Ok((echoes, end, socket))
        });
    }
    let mut counts = Vec::with_capacity(connections);
    let mut sockets = Vec::with_capacity(connections);
    for (echoes, end, socket) in join_all(tasks).await? {
        counts.push((echoes, end));
        sockets.push(socket);
    }
    // Read before the closes, which are not part of the measurement.
    let cpu_after = endpoint.pid.and_then(server_cpu_ns);
    for socket in sockets {
        client::close(socket).await?;
    }
    let messages: u64 = counts.iter().map(|&(count, _)| count).sum();
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if messages > 0 => {
            (after - before) as f64 / 1e3 / messages as f64
        }
        _ => f64::NAN,
    };
    Ok((rate(start, counts), cpu))
}

/// The CPU time all threads of process `pid` have used, in nanoseconds (Linux schedstat); of this
/// process too.
pub(crate) fn server_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let stat = std::fs::read_to_string(path).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The count of all workers over the time from `start` to the last worker's end.
fn rate(start: Instant, counts: Vec<(u64, Instant)>) -> f64 {
    let end = counts.iter().map(|&(_, end)| end).max().unwrap_or(start);
    let total: u64 = counts.iter().map(|&(count, _)| count).sum();
    total as f64 / (end - start).as_secs_f64()
}

/// The 50th and 99th percentile round trip, in microseconds, of `round_trips` echoes of a small
/// message on one connection.
async fn latency(url: &str, round_trips: usize) -> io::Result<(f64, f64)> {
    let message = Message::text("x".repeat(32));
    let mut socket = client::connect(url).await?;
    for _ in 0..WARM_UP_ECHOES * 10 {
        client::echo(&mut socket, &message).await?;
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let sent = Instant::now();
        client::echo(&mut socket, &message).await?;
        samples.push(sent.elapsed());
        if started.elapsed() > TIME_LIMIT {
            return Err(io::Error::other("latency: the round trips took too long"));
        }
    }
    client::close(socket).await?;
    samples.sort_unstable();
    let percentile = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e6
    };
    Ok((percentile(0.50), percentile(0.99)))
}

/// Connections per second: `workers` workers each connect, echo once and close, in a loop, for
/// `duration`.
async fn connect_rate(url: &str, workers: usize, duration: Duration) -> io::Result<f64> {
    let url: Arc<str> = url.into();
    let message = Message::text("x".repeat(32));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (url, message) = (Arc::clone(&url), message.clone());
        tasks.spawn(async move {
            let mut connections = 0_u64;
            while connections < MAX_ITERATIONS && Instant::now() < deadline {
                let mut socket = client::connect(&url).await?;
                client::echo(&mut socket, &message).await?;
                client::close(socket).await?;
                connections += 1;
            }
            Ok((connections, Instant::now()))
        });
    }
    Ok(rate(start, join_all(tasks).await?))
}

/// KiB of server memory (resident set) per idle connection: the growth of the server's RSS when
/// `count` connections, each past its handshake and one echo, sit idle.
async fn idle_memory(url: &str, pid: u32, count: usize) -> io::Result<f64> {
    let message = Message::text("x".repeat(32));
    for _ in 0..WARM_UP_CONNECTIONS {
        let mut socket = client::connect(url).await?;
        client::echo(&mut socket, &message).await?;
        client::close(socket).await?;
    }
    let before = settled_rss_kib(pid).await?;

    let url: Arc<str> = url.into();
    let started = Instant::now();
    let mut idle = Vec::with_capacity(count);
    while idle.len() < count {
        if started.elapsed() > TIME_LIMIT {
            return Err(io::Error::other(
                "idle-memory: opening connections took too long",
            ));
        }
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(count - idle.len()) {
            let (url, message) = (Arc::clone(&url), message.clone());
            batch.spawn(async move {
                let mut socket = client::connect(&url).await?;
                client::echo(&mut socket, &message).await?;
                Ok(socket)
            });
        }
        idle.extend(join_all(batch).await?);
    }
    let after = settled_rss_kib(pid).await?;
    // The server is killed next; dropping the connections is close enough to closing them.
    drop(idle);
    Ok((after as f64 - before as f64) / count as f64)
}

/// The process's resident set size, read once its change between two reads 250 ms apart is
/// below 0.5% (or after 2 s).
pub(crate) async fn settled_rss_kib(pid: u32) -> io::Result<u64> {
    let mut last = rss_kib(pid)?;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) <= last / 200 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}
