//! The fan-out scenario: one room, a broadcaster (`/fire`) and `members` members (`/room`), on
//! three servers, alternating round by round like the other scenarios:
//!
//! - **naive**: the raw axum server's seed pattern (a list of senders, one awaited send each);
//! - **floor**: [`crate::floor`], the cheapest correct broadcast (pre-framed bytes written to
//!   each member's socket in a plain loop, one write each);
//! - **tachyon**: the Tachyon server's `Rooms`, served by `axum::serve` as in the other
//!   scenarios, where rooms write a broadcast straight into an idle member's upgraded
//!   connection, under its lock;
//! - **tachyon-serve**: the same app served by `Tachyon::serve`'s accept loop (as the README
//!   serves it), where rooms write a broadcast straight into an idle member's TCP socket.
//!
//! Each run measures [`SINGLES`] single messages to every member, one at a time (the median
//! time until the last member has one, and the server's and this client's CPU time per
//! delivery over the five), then a burst of `burst` messages to every member (deliveries per
//! second, from the request until the last member has the last message, and the server's CPU
//! time per delivery). The members are light clients ([`crate::wire`]:
//! a raw TCP stream, each frame's header parsed and its payload compared), so that the client
//! takes less of the two cores than tokio-tungstenite would; the broadcaster's connection is
//! tokio-tungstenite.
//!
//! The rows compare both Tachyon sides with the floor (the targets of issue #16: a single
//! message ≤ 1.2 × the floor's server CPU per delivery; a burst's per delivery ≤ 0.2 × the
//! floor's single message) and with the naive pattern (the benchmarks issue's rows).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client;
use crate::report::{self, Medians, Row};
use crate::scenario::{CONNECT_BATCH, Endpoint, Goal, Metric, Scenario, Settings, server_cpu_ns};
use crate::server::{FANOUT_MESSAGE, Server, ServerKind};
use crate::wire::{self, OP_PING, OP_PONG, OP_TEXT};

/// How long the whole of one fan-out part may take.
const FANOUT_LIMIT: Duration = Duration::from_secs(60);
/// How long joining every member may take.
const JOIN_LIMIT: Duration = Duration::from_secs(120);
/// A member's read buffer: a burst of 100 messages is 6.6 KB.
const MEMBER_BUFFER: usize = 2 * 1024;
/// Single messages broadcast one at a time, each awaited until every member has it, before
/// the burst: their CPU per delivery is steadier over five than one.
const SINGLES: usize = 5;

/// The values of one run, in the order of [`Scenario::Fanout`]'s metrics.
const SINGLE_MS: usize = 0;
const SINGLE_SERVER_CPU: usize = 1;
const SINGLE_CLIENT_CPU: usize = 2;
const BURST_RATE: usize = 3;
const BURST_SERVER_CPU: usize = 4;

/// The sides, in the order they run in even rounds.
const NAIVE: usize = 0;
const FLOOR: usize = 1;
const TACHYON: usize = 2;
const TACHYON_SERVE: usize = 3;
const SIDES: [&str; 4] = ["naive", "floor", "tachyon", "tachyon-serve"];

/// A row of the report: `base`'s value (the "raw" column) against `measured`'s (the "tachyon"
/// column), each a side and the index of one of its values.
#[derive(Debug)]
struct Compared {
    metric: Metric,
    base: (usize, usize),
    measured: (usize, usize),
}

const fn compared(
    name: &'static str,
    unit: &'static str,
    decimals: usize,
    goal: Goal,
    base: (usize, usize),
    measured: (usize, usize),
) -> Compared {
    Compared {
        metric: Metric {
            name,
            unit,
            decimals,
            goal,
        },
        base,
        measured,
    }
}

const ROWS: &[Compared] = &[
    compared(
        "fan-out single server cpu (floor vs tachyon)",
        "us/deliv",
        2,
        Goal::RatioAtMost(1.2),
        (FLOOR, SINGLE_SERVER_CPU),
        (TACHYON, SINGLE_SERVER_CPU),
    ),
    compared(
        "fan-out burst server cpu (floor's single vs tachyon's burst)",
        "us/deliv",
        3,
        Goal::RatioAtMost(0.2),
        (FLOOR, SINGLE_SERVER_CPU),
        (TACHYON, BURST_SERVER_CPU),
    ),
    compared(
        "fan-out burst server cpu (floor vs tachyon)",
        "us/deliv",
        3,
        Goal::None,
        (FLOOR, BURST_SERVER_CPU),
        (TACHYON, BURST_SERVER_CPU),
    ),
    compared(
        "fan-out single (floor vs tachyon)",
        "ms",
        1,
        Goal::None,
        (FLOOR, SINGLE_MS),
        (TACHYON, SINGLE_MS),
    ),
    compared(
        "fan-out single client cpu (floor vs tachyon)",
        "us/deliv",
        2,
        Goal::None,
        (FLOOR, SINGLE_CLIENT_CPU),
        (TACHYON, SINGLE_CLIENT_CPU),
    ),
    // The benchmarks issue's first-message target (0.2 x the naive pattern) is replaced by the
    // floor's: its client could not measure it on two cores.
    compared(
        "fan-out single vs naive",
        "ms",
        1,
        Goal::None,
        (NAIVE, SINGLE_MS),
        (TACHYON, SINGLE_MS),
    ),
    compared(
        "fan-out single server cpu (naive vs tachyon)",
        "us/deliv",
        2,
        Goal::None,
        (NAIVE, SINGLE_SERVER_CPU),
        (TACHYON, SINGLE_SERVER_CPU),
    ),
    compared(
        "fan-out single client cpu (naive vs tachyon)",
        "us/deliv",
        2,
        Goal::None,
        (NAIVE, SINGLE_CLIENT_CPU),
        (TACHYON, SINGLE_CLIENT_CPU),
    ),
    compared(
        "fan-out burst vs naive",
        "deliv/s",
        0,
        Goal::RatioAtLeast(5.0),
        (NAIVE, BURST_RATE),
        (TACHYON, BURST_RATE),
    ),
    compared(
        "fan-out burst server cpu (naive vs tachyon)",
        "us/deliv",
        3,
        Goal::None,
        (NAIVE, BURST_SERVER_CPU),
        (TACHYON, BURST_SERVER_CPU),
    ),
    // The same app served by `Tachyon::serve`'s accept loop, where rooms write a broadcast
    // straight into an idle member's TCP socket.
    compared(
        "fan-out single server cpu (floor vs tachyon-serve)",
        "us/deliv",
        2,
        Goal::RatioAtMost(1.2),
        (FLOOR, SINGLE_SERVER_CPU),
        (TACHYON_SERVE, SINGLE_SERVER_CPU),
    ),
    compared(
        "fan-out burst server cpu (floor's single vs tachyon-serve's burst)",
        "us/deliv",
        3,
        Goal::RatioAtMost(0.2),
        (FLOOR, SINGLE_SERVER_CPU),
        (TACHYON_SERVE, BURST_SERVER_CPU),
    ),
    compared(
        "fan-out burst server cpu (floor vs tachyon-serve)",
        "us/deliv",
        3,
        Goal::None,
        (FLOOR, BURST_SERVER_CPU),
        (TACHYON_SERVE, BURST_SERVER_CPU),
    ),
    compared(
        "fan-out single (floor vs tachyon-serve)",
        "ms",
        1,
        Goal::None,
        (FLOOR, SINGLE_MS),
        (TACHYON_SERVE, SINGLE_MS),
    ),
    compared(
        "fan-out burst vs naive (tachyon-serve)",
        "deliv/s",
        0,
        Goal::RatioAtLeast(5.0),
        (NAIVE, BURST_RATE),
        (TACHYON_SERVE, BURST_RATE),
    ),
];

/// Runs the scenario `rounds` times on each side: `naive` is the harness's raw server,
/// `tachyon` its Tachyon server; the floor and the Tachyon server served by `Tachyon::serve`
/// are servers of their own.
pub(crate) async fn compare(
    naive: &Server,
    tachyon: &Server,
    settings: &Settings,
    rounds: usize,
) -> io::Result<Vec<Row>> {
    let floor = Server::start(ServerKind::Floor).await?;
    let tachyon_serve = Server::start(ServerKind::TachyonServe).await?;
    let servers = [naive, &floor, tachyon, &tachyon_serve];
    let mut runs: [Vec<Vec<f64>>; 4] = Default::default();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for side in order {
            let endpoint = Endpoint {
                url: servers[side].url(),
                pid: servers[side].pid(),
            };
            let values = run(&endpoint, settings).await?;
            crate::progress(Scenario::Fanout, round, rounds, SIDES[side], &values);
            runs[side].push(values);
        }
    }
    floor.stop().await?;
    tachyon_serve.stop().await?;
    let median = |(side, index): (usize, usize)| {
        let mut values: Vec<f64> = runs[side].iter().map(|values| values[index]).collect();
        report::median(&mut values)
    };
    Ok(ROWS
        .iter()
        .map(|row| Row {
            metric: &row.metric,
            medians: Medians::Compared {
                raw: median(row.base),
                tachyon: median(row.measured),
            },
        })
        .collect())
}

/// For each of the [`SINGLES`] single messages and then the burst, how many members still
/// wait for it.
#[derive(Debug)]
struct Progress {
    waiting: [AtomicUsize; SINGLES + 1],
    changed: Notify,
}

impl Progress {
    async fn wait(&self, stage: usize, what: &str) -> io::Result<()> {
        let waiting = async {
            while self.waiting[stage].load(Ordering::Acquire) > 0 {
                self.changed.notified().await;
            }
        };
        timeout(FANOUT_LIMIT, waiting)
            .await
            .map_err(|_| io::Error::other(format!("fan-out: {what} took over {FANOUT_LIMIT:?}")))
    }

    fn arrived(&self, stage: usize) {
        if self.waiting[stage].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }
}

/// A member of the room at `url`, in it once the server says so.
async fn join(url: &str) -> io::Result<wire::Reader<TcpStream>> {
    let connected = wire::connect(url, None).await?;
    let mut member = wire::Reader::new(connected.stream, connected.leftover, MEMBER_BUFFER);
    let joined = match timeout(FANOUT_LIMIT, member.frame()).await {
        Ok(Ok(Some((header, payload)))) if header.opcode == OP_TEXT && payload == b"joined" => {
            Ok(())
        }
        Ok(Ok(Some((header, _)))) => Err(format!("a frame of opcode {}", header.opcode)),
        Ok(Ok(None)) => Err("the end of the stream".to_owned()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("nothing in {FANOUT_LIMIT:?}")),
    };
    match joined {
        Ok(()) => Ok(member),
        Err(what) => Err(io::Error::other(format!(
            "fan-out: no `joined` from the server: {what}"
        ))),
    }
}

/// Reads `member`'s messages until its connection ends, and counts them into `progress`: each
/// of the single messages, then the last of the burst. Pings are answered.
async fn receive(mut member: wire::Reader<TcpStream>, progress: Arc<Progress>, burst: usize) {
    let mut masks = wire::Masks::new(0);
    let mut got = 0;
    while let Ok(Some((header, payload))) = member.frame().await {
        if header.opcode == OP_PING {
            let mut pong = Vec::with_capacity(payload.len() + 6);
            wire::encode(&mut pong, OP_PONG, false, payload, Some(masks.next()));
            if member.get_mut().write_all(&pong).await.is_err() {
                return;
            }
            continue;
        }
        if header.opcode != OP_TEXT || payload != FANOUT_MESSAGE.as_bytes() {
            continue;
        }
        got += 1;
        if got <= SINGLES {
            progress.arrived(got - 1);
        }
        if got == SINGLES + burst {
            progress.arrived(SINGLES);
        }
    }
}

/// One run against one server: the values of [`Scenario::Fanout`]'s metrics.
pub(crate) async fn run(endpoint: &Endpoint, settings: &Settings) -> io::Result<Vec<f64>> {
    let (members, burst) = (settings.fanout_members, settings.fanout_burst);
    let echo_url = endpoint.url.as_str();
    let base = echo_url.strip_suffix("/ws").unwrap_or(echo_url);
    let member_url: Arc<str> = format!("{base}/room").into();
    let progress = Arc::new(Progress {
        waiting: std::array::from_fn(|_| AtomicUsize::new(members)),
        changed: Notify::new(),
    });
    let started = Instant::now();
    let mut readers = JoinSet::new();
    let mut joined = 0;
    while joined < members {
        if started.elapsed() > JOIN_LIMIT {
            return Err(io::Error::other("fan-out: joining took too long"));
        }
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(members - joined) {
            let url = Arc::clone(&member_url);
            batch.spawn(async move { join(&url).await });
        }
        while let Some(member) = batch.join_next().await {
            let member = member.map_err(io::Error::other)??;
            joined += 1;
            readers.spawn(receive(member, Arc::clone(&progress), burst));
        }
    }
    let mut control = client::connect(&format!("{base}/fire")).await?;
    // Every reader has been polled once, and whatever the joins left the server to do is done.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server_cpu = || endpoint.pid.and_then(server_cpu_ns);
    let client_cpu = || server_cpu_ns(std::process::id());
    let per_delivery =
        |before: Option<u64>, after: Option<u64>, deliveries: usize| match (before, after) {
            (Some(before), Some(after)) => (after - before) as f64 / 1e3 / deliveries as f64,
            _ => f64::NAN,
        };

    // One message at a time, each until every member has it; the CPU of those windows only.
    let (mut times, mut server_ns, mut client_ns) = (Vec::with_capacity(SINGLES), Some(0), Some(0));
    for single in 0..SINGLES {
        let (server_before, client_before) = (server_cpu(), client_cpu());
        let sent = Instant::now();
        fire(&mut control, 1).await?;
        progress.wait(single, "a single message").await?;
        times.push(sent.elapsed().as_secs_f64() * 1e3);
        let add = |total: Option<u64>, before: Option<u64>, after: Option<u64>| {
            Some(total? + after?.checked_sub(before?)?)
        };
        server_ns = add(server_ns, server_before, server_cpu());
        client_ns = add(client_ns, client_before, client_cpu());
        expect_done(&mut control).await?;
    }
    let singles = members * SINGLES;

    let server_before = server_cpu();
    let burst_sent = Instant::now();
    fire(&mut control, burst).await?;
    progress.wait(SINGLES, "the burst").await?;
    let elapsed = burst_sent.elapsed();
    let burst_server_cpu = per_delivery(server_before, server_cpu(), members * burst);
    expect_done(&mut control).await?;

    client::close(control).await?;
    // Dropping the members closes their connections.
    readers.abort_all();
    let mut values = vec![f64::NAN; 5];
    values[SINGLE_MS] = report::median(&mut times);
    values[SINGLE_SERVER_CPU] = per_delivery(Some(0), server_ns, singles);
    values[SINGLE_CLIENT_CPU] = per_delivery(Some(0), client_ns, singles);
    values[BURST_RATE] = (members * burst) as f64 / elapsed.as_secs_f64();
    values[BURST_SERVER_CPU] = burst_server_cpu;
    Ok(values)
}

/// Asks the broadcaster for `count` broadcasts.
async fn fire(control: &mut client::Socket, count: usize) -> io::Result<()> {
    let request = Message::text(count.to_string());
    timeout(FANOUT_LIMIT, control.send(request))
        .await
        .map_err(|_| io::Error::other("fan-out: the broadcaster took no request"))?
        .map_err(io::Error::other)
}

async fn expect_done(control: &mut client::Socket) -> io::Result<()> {
    match timeout(FANOUT_LIMIT, control.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "done" => Ok(()),
        other => Err(io::Error::other(format!(
            "fan-out: the broadcaster did not finish: {other:?}"
        ))),
    }
}
