//! The scenarios: what each one measures and its target, and one function per scenario that runs
//! it once against one server.
//!
//! To add a scenario, add a variant to [`Scenario`], its name and metrics, and a function that
//! returns one value per metric; the harness runs it for both servers and reports it like the
//! others. A scenario that compares two setups of its own (cluster, the history ones) runs in a
//! module of its own instead ([`Scenario::runs_own_servers`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client;

/// One measurement, as run once against one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Closed-loop echo throughput of small text messages over 100 connections.
    Echo32,
    /// Closed-loop echo throughput of 16 KiB binary messages over 10 connections.
    Echo16k,
    /// Round-trip time of one connection, one message at a time.
    Latency,
    /// New connections per second (handshake, one echo, close handshake).
    Connect,
    /// Server memory held per idle connection.
    IdleMemory,
    /// Broadcast to one room: Tachyon's `Rooms` against the seed's pattern on raw axum.
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
    pub(crate) const ALL: [Self; 10] = [
        Self::Echo32,
        Self::Echo16k,
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
                        metric("echo-32", "msg/s", 0, Goal::RatioAtLeast(0.97)),
                        metric("echo-32 cpu", "us/msg", 2, Goal::None),
                    ]
                }
            }
            Self::Echo16k => {
                const {
                    &[
                        metric("echo-16k", "msg/s", 0, Goal::RatioAtLeast(0.97)),
                        metric("echo-16k cpu", "us/msg", 2, Goal::None),
                    ]
                }
            }
            Self::Latency => {
                const {
                    &[
                        metric("latency p50", "us", 1, Goal::RatioAtMost(1.05)),
                        metric("latency p99", "us", 1, Goal::None),
                    ]
                }
            }
            Self::Connect => const { &[metric("connect", "conn/s", 0, Goal::RatioAtLeast(0.9))] },
            Self::IdleMemory => {
                const { &[metric("idle-memory", "KiB/conn", 2, Goal::AtMost(8.0))] }
            }
            // Against the seed's pattern (raw axum, one awaited send per member), not plain raw.
            Self::Fanout => {
                const {
                    &[
                        metric("fan-out first vs naive", "ms", 1, Goal::RatioAtMost(0.2)),
                        metric("fan-out first server cpu", "us/deliv", 2, Goal::None),
                        metric("fan-out first client cpu", "us/deliv", 2, Goal::None),
                        metric(
                            "fan-out burst vs naive",
                            "deliv/s",
                            0,
                            Goal::RatioAtLeast(5.0),
                        ),
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
            Self::Cluster | Self::History | Self::Recovery | Self::HistoryMemory
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
            Self::Fanout => {
                let fanout =
                    fanout(endpoint, settings.fanout_members, settings.fanout_burst).await?;
                vec![
                    fanout.first_ms,
                    fanout.first_server_cpu,
                    fanout.first_client_cpu,
                    fanout.burst_rate,
                ]
            }
            Self::Cluster | Self::History | Self::Recovery | Self::HistoryMemory => {
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

/// How long the whole of one fan-out part may take.
const FANOUT_LIMIT: Duration = Duration::from_secs(60);

/// How many members still wait for their first message, and for the whole burst.
#[derive(Debug)]
struct Progress {
    first: AtomicUsize,
    all: AtomicUsize,
    changed: Notify,
}

impl Progress {
    async fn wait(&self, counter: &AtomicUsize, what: &str) -> io::Result<()> {
        let waiting = async {
            while counter.load(Ordering::Acquire) > 0 {
                self.changed.notified().await;
            }
        };
        timeout(FANOUT_LIMIT, waiting)
            .await
            .map_err(|_| io::Error::other(format!("fan-out: {what} took over {FANOUT_LIMIT:?}")))
    }

    fn arrived(&self, counter: &AtomicUsize) {
        if counter.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }
}

/// What one fan-out run measured.
struct Fanout {
    /// Until every member had one message.
    first_ms: f64,
    /// The server's and this client's CPU time per delivery of that first message (NaN where
    /// unknown): where the time went.
    first_server_cpu: f64,
    first_client_cpu: f64,
    /// Deliveries per second of the burst.
    burst_rate: f64,
}

/// A room of `members` connections: the time until every member has one 64-byte message, then
/// deliveries per second of a burst of `burst` messages to each, measured from the request to
/// the broadcaster until the last member has the last message.
async fn fanout(endpoint: &Endpoint, members: usize, burst: usize) -> io::Result<Fanout> {
    let echo_url = endpoint.url.as_str();
    let base = echo_url.strip_suffix("/ws").unwrap_or(echo_url);
    let member_url: Arc<str> = format!("{base}/room").into();
    let progress = Arc::new(Progress {
        first: AtomicUsize::new(members),
        all: AtomicUsize::new(members),
        changed: Notify::new(),
    });
    let started = Instant::now();
    let mut readers = JoinSet::new();
    let mut joined = 0;
    while joined < members {
        if started.elapsed() > TIME_LIMIT {
            return Err(io::Error::other("fan-out: joining took too long"));
        }
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(members - joined) {
            let url = Arc::clone(&member_url);
            batch.spawn(async move {
                let mut socket = client::connect_small(&url).await?;
                // In the room once the server says so.
                match timeout(FANOUT_LIMIT, socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "joined" => Ok(socket),
                    other => Err(io::Error::other(format!("fan-out: no join: {other:?}"))),
                }
            });
        }
        for mut socket in join_all(batch).await? {
            joined += 1;
            let progress = Arc::clone(&progress);
            readers.spawn(async move {
                let mut got = 0;
                while let Some(Ok(message)) = socket.next().await {
                    if !matches!(&message, Message::Text(text) if text.as_str() == crate::server::FANOUT_MESSAGE) {
                        continue;
                    }
                    got += 1;
                    if got == 1 {
                        progress.arrived(&progress.first);
                    }
                    if got == 1 + burst {
                        progress.arrived(&progress.all);
                    }
                }
            });
        }
    }
    let mut control = client::connect(&format!("{base}/fire")).await?;
    let fire = |count: usize| Message::text(count.to_string());

    let server_before = endpoint.pid.and_then(server_cpu_ns);
    let client_before = server_cpu_ns(std::process::id());
    let first_sent = Instant::now();
    control.send(fire(1)).await.map_err(io::Error::other)?;
    progress.wait(&progress.first, "the first message").await?;
    let first = first_sent.elapsed();
    let per_delivery = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) => (after - before) as f64 / 1e3 / members as f64,
        _ => f64::NAN,
    };
    let first_server_cpu = per_delivery(server_before, endpoint.pid.and_then(server_cpu_ns));
    let first_client_cpu = per_delivery(client_before, server_cpu_ns(std::process::id()));
    expect_done(&mut control).await?;

    let burst_sent = Instant::now();
    control.send(fire(burst)).await.map_err(io::Error::other)?;
    progress.wait(&progress.all, "the burst").await?;
    let elapsed = burst_sent.elapsed();
    expect_done(&mut control).await?;

    client::close(control).await?;
    // Dropping the members closes their connections.
    readers.abort_all();
    let deliveries = (members * burst) as f64;
    Ok(Fanout {
        first_ms: first.as_secs_f64() * 1e3,
        first_server_cpu,
        first_client_cpu,
        burst_rate: deliveries / elapsed.as_secs_f64(),
    })
}

async fn expect_done(control: &mut client::Socket) -> io::Result<()> {
    match timeout(FANOUT_LIMIT, control.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "done" => Ok(()),
        other => Err(io::Error::other(format!(
            "fan-out: the broadcaster did not finish: {other:?}"
        ))),
    }
}
