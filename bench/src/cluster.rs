//! The cluster scenario: what it costs to cross servers through Redis.
//!
//! Two sides, alternating round by round like the other scenarios. In-process: the broadcaster
//! (`/fire`) and the members (`/room`) on one Tachyon server with in-process `Rooms`. Through
//! Redis: the broadcaster on node A and the members on node B, two `serve node` processes whose
//! rooms go through one `redis-server` that the harness starts on a free loopback port. Measured:
//! the latency from a broadcast request to a member's receipt (sequential, p50 and p99), the
//! deliveries per second of a burst to every member, and the CPU time per broadcast of the burst
//! (the server's; through Redis, both nodes' and Redis's together).
//!
//! A third side, through Redis with history: two more nodes whose rooms keep a history of
//! [`HISTORY_DEPTH`](crate::server::HISTORY_DEPTH) broadcasts, which through Redis is a Redis
//! stream per room (a script gives each broadcast its position, appends and trims, then
//! publishes); on the same Redis, under a prefix of their own. Its rows compare it with the side
//! through Redis without history.

use std::io;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Socket};
use crate::report::{self, Medians, Row};
use crate::scenario::{Scenario, Settings, server_cpu_ns};
use crate::server::{FANOUT_MESSAGE, Server};

/// The longest any wait of this scenario may take.
const LIMIT: Duration = Duration::from_secs(30);
/// Broadcasts tried, at most, before the members' node is known to listen to the room.
const MAX_PROBES: usize = 500;

/// A `redis-server` child process without persistence, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                io::Error::other(format!(
                    "cluster: cannot start redis-server ({error}); install it \
                     (`apt-get install redis-server`) or leave this scenario out with --only"
                ))
            })?;
        let redis = Self { child, port };
        let started = Instant::now();
        while !redis.answers().await {
            if started.elapsed() > LIMIT {
                return Err(io::Error::other(
                    "cluster: redis-server did not answer PING",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(redis)
    }

    async fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut answer).await.is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stop(mut self) -> io::Result<()> {
        self.child.kill().await
    }
}

/// One side of the comparison: where the broadcaster and the members are, and the processes
/// whose CPU time a broadcast costs.
struct Side {
    name: &'static str,
    fire: String,
    members: String,
    pids: Vec<Option<u32>>,
}

/// Metrics per side (latency p50 and p99, burst deliveries per second, CPU per broadcast): the
/// first half of [`Scenario::CLUSTER`] compares side 0 with 1, the second half 1 with 2.
const PER_SIDE: usize = 4;

/// Runs the scenario `rounds` times on each side; `in_process` is the harness's Tachyon server.
pub(crate) async fn compare(
    in_process: &Server,
    settings: &Settings,
    rounds: usize,
) -> io::Result<Vec<Row>> {
    let redis = Redis::start().await?;
    let (a, b) = (
        Server::start_node(&redis.url(), false).await?,
        Server::start_node(&redis.url(), false).await?,
    );
    let (history_a, history_b) = (
        Server::start_node(&redis.url(), true).await?,
        Server::start_node(&redis.url(), true).await?,
    );
    let sides = [
        Side {
            name: "in-process",
            fire: in_process.base(),
            members: in_process.base(),
            pids: vec![in_process.pid()],
        },
        Side {
            name: "redis",
            fire: a.base(),
            members: b.base(),
            pids: vec![a.pid(), b.pid(), redis.pid()],
        },
        Side {
            name: "history",
            fire: history_a.base(),
            members: history_b.base(),
            pids: vec![history_a.pid(), history_b.pid(), redis.pid()],
        },
    ];
    let mut runs: [Vec<Vec<f64>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for side in order {
            let Side {
                name,
                fire,
                members,
                pids,
            } = &sides[side];
            let (p50, p99) = latency(fire, members, settings.cluster_round_trips).await?;
            let (rate, cpus) = throughput(
                fire,
                members,
                pids,
                settings.cluster_members,
                settings.cluster_burst,
            )
            .await?;
            let cpu: f64 = cpus.iter().sum();
            let values = vec![p50, p99, rate, cpu];
            // Each process's share: the broadcaster's node, the members' node, Redis.
            let shares: Vec<String> = cpus.iter().map(|cpu| format!("{cpu:.1}")).collect();
            eprintln!(
                "{:<12} round {}/{rounds} {name:<10} p50 {p50:.1} us, p99 {p99:.1} us, {rate:.0} deliv/s, {cpu:.1} us/bcast ({})",
                Scenario::Cluster.name(),
                round + 1,
                shares.join(" + "),
            );
            runs[side].push(values);
        }
    }
    for node in [a, b, history_a, history_b] {
        node.stop().await?;
    }
    redis.stop().await?;
    let median = |runs: &[Vec<f64>], index: usize| {
        let mut values: Vec<f64> = runs.iter().map(|values| values[index]).collect();
        report::median(&mut values)
    };
    Ok(Scenario::Cluster
        .metrics()
        .iter()
        .enumerate()
        .map(|(index, metric)| {
            // In-process against Redis, then Redis against Redis with history.
            let (base, side, index) = (index / PER_SIDE, index / PER_SIDE + 1, index % PER_SIDE);
            Row {
                metric,
                medians: Medians::Compared {
                    raw: median(&runs[base], index),
                    tachyon: median(&runs[side], index),
                },
            }
        })
        .collect())
}

/// The CPU time of each of `pids`, in nanoseconds (`None` for one that cannot be read).
fn cpu_ns(pids: &[Option<u32>]) -> Vec<Option<u64>> {
    pids.iter().map(|pid| pid.and_then(server_cpu_ns)).collect()
}

/// A member of the room on `base`, in it once the server says so.
async fn join(base: &str) -> io::Result<Socket> {
    let mut socket = client::connect_small(&format!("{base}/room")).await?;
    match timeout(LIMIT, socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "joined" => Ok(socket),
        other => Err(io::Error::other(format!("cluster: no join: {other:?}"))),
    }
}

/// Asks the broadcaster for `count` broadcasts and waits until it says they were made.
async fn fire(control: &mut Socket, count: usize) -> io::Result<()> {
    control
        .send(Message::text(count.to_string()))
        .await
        .map_err(io::Error::other)?;
    match timeout(LIMIT, control.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "done" => Ok(()),
        other => Err(io::Error::other(format!(
            "cluster: the broadcaster did not finish: {other:?}"
        ))),
    }
}

/// Whether `member` gets a fan-out message within `wait`.
async fn receives(member: &mut Socket, wait: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline.into(), member.next()).await {
            Err(_) => return Ok(false),
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == FANOUT_MESSAGE => {
                return Ok(true);
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(io::Error::other(format!("cluster: member: {other:?}"))),
        }
    }
}

/// Broadcasts until `member` gets one (its node listens to the room only once its join went
/// through Redis), then drains what was still on its way.
async fn until_linked(control: &mut Socket, member: &mut Socket) -> io::Result<()> {
    for _ in 0..MAX_PROBES {
        fire(control, 1).await?;
        if receives(member, Duration::from_millis(50)).await? {
            while receives(member, Duration::from_millis(100)).await? {}
            return Ok(());
        }
    }
    Err(io::Error::other(
        "cluster: the member never got a broadcast",
    ))
}

/// p50 and p99 in microseconds of `round_trips` sequential broadcasts, from the request to the
/// member's receipt.
async fn latency(fire_base: &str, member_base: &str, round_trips: usize) -> io::Result<(f64, f64)> {
    let mut member = join(member_base).await?;
    let mut control = client::connect(&format!("{fire_base}/fire")).await?;
    until_linked(&mut control, &mut member).await?;
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let sent = Instant::now();
        control
            .send(Message::text("1"))
            .await
            .map_err(io::Error::other)?;
        if !receives(&mut member, LIMIT).await? {
            return Err(io::Error::other("cluster: a broadcast was lost"));
        }
        samples.push(sent.elapsed().as_secs_f64() * 1e6);
        match timeout(LIMIT, control.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "done" => {}
            other => return Err(io::Error::other(format!("cluster: fire: {other:?}"))),
        }
    }
    client::close(control).await?;
    client::close(member).await?;
    samples.sort_unstable_by(f64::total_cmp);
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile) as usize];
    Ok((at(0.5), at(0.99)))
}

/// Deliveries per second of `burst` broadcasts to each of `members` members, and the CPU time
/// of each of `pids` per broadcast, in microseconds (NaN if unknown).
async fn throughput(
    fire_base: &str,
    member_base: &str,
    pids: &[Option<u32>],
    members: usize,
    burst: usize,
) -> io::Result<(f64, Vec<f64>)> {
    let mut sockets = Vec::with_capacity(members);
    for _ in 0..members {
        sockets.push(join(member_base).await?);
    }
    let mut control = client::connect(&format!("{fire_base}/fire")).await?;
    let Some(mut probe) = sockets.pop() else {
        return Ok((f64::NAN, vec![f64::NAN]));
    };
    until_linked(&mut control, &mut probe).await?;
    sockets.push(probe);
    // The probes reached the other members too: let them arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let received = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    for mut socket in sockets {
        let received = Arc::clone(&received);
        readers.spawn(async move {
            // Only what is already buffered from the probes is skipped: nothing is fired yet.
            while let Ok(Some(_)) = timeout(Duration::from_millis(1), socket.next()).await {}
            while let Some(Ok(message)) = socket.next().await {
                if matches!(&message, Message::Text(text) if text.as_str() == FANOUT_MESSAGE) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expected = members * burst;
    let cpu_before = cpu_ns(pids);
    let started = Instant::now();
    control
        .send(Message::text(burst.to_string()))
        .await
        .map_err(io::Error::other)?;
    while received.load(Ordering::Relaxed) < expected {
        if started.elapsed() > LIMIT {
            return Err(io::Error::other(format!(
                "cluster: {} of {expected} deliveries in {LIMIT:?}",
                received.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .iter()
        .zip(cpu_ns(pids))
        .map(|pair| match pair {
            (Some(before), Some(after)) => (after - before) as f64 / 1e3 / burst as f64,
            _ => f64::NAN,
        })
        .collect();
    match timeout(LIMIT, control.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "done" => {}
        other => return Err(io::Error::other(format!("cluster: fire: {other:?}"))),
    }
    client::close(control).await?;
    readers.abort_all();
    Ok((expected as f64 / elapsed.as_secs_f64(), cpu))
}
