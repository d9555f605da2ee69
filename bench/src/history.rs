//! The history scenarios: what it costs that rooms keep a history of their broadcasts
//! (`Rooms::builder().history(History::messages(1000))`), so that members that drop can resume
//! with `Rooms::join_since`.
//!
//! - `history`: the same room (members, message, broadcasts) on two fresh Tachyon servers that
//!   differ only in their rooms, `Rooms::new()` and rooms with history: broadcasts per second
//!   of bursts, the latency of broadcasts one by one, and the server's CPU time per broadcast.
//! - `recovery`: members that come back after missing [`HISTORY_DEPTH`] broadcasts and resume
//!   from their position, against members that stayed and got the same broadcasts live: the
//!   time until every member has them all, CPU time, what was delivered.
//! - `history-memory`: a child process fills the histories of many rooms without members; the
//!   growth of its resident memory, against the payload it keeps.
//!
//! Rooms with history through Redis are not measured: see BENCHMARKS.md.

use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tachyon::Rooms;
use tachyon::rooms::{History, Position};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Socket};
use crate::report::{self, Medians, Row};
use crate::scenario::{self, CONNECT_BATCH, Scenario, Settings};
use crate::server::{HISTORY_DEPTH, HISTORY_MESSAGE, Server, ServerKind};

/// Broadcasts per request of the history throughput: far below a member's queue bound (1,024
/// messages), so that no member is ever closed for being slow.
pub(crate) const HISTORY_BURST: usize = 250;
/// The longest any wait of these scenarios may take.
const LIMIT: Duration = Duration::from_secs(60);

// --- history: broadcasts with history on and off ------------------------------------------------

/// Runs the history scenario `rounds` times on each side: a fresh Tachyon server without
/// history ("raw" column) and one with (the "tachyon" column).
pub(crate) async fn compare_history(settings: &Settings, rounds: usize) -> io::Result<Vec<Row>> {
    let sides = [
        ("off", Server::start(ServerKind::Tachyon).await?),
        ("on", Server::start(ServerKind::History).await?),
    ];
    let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (name, server) = &sides[side];
            let values = history_run(server, &format!("history-{round}"), settings).await?;
            crate::progress(Scenario::History, round, rounds, name, &values);
            runs[side].push(values);
        }
    }
    for (_, server) in sides {
        server.stop().await?;
    }
    Ok(rows(Scenario::History, &runs))
}

/// One run: a room of `history_members` members on `server`; the history filled first (every
/// measured broadcast then also drops the oldest, as in a room that has been talking for a
/// while), then bursts, then broadcasts one by one.
async fn history_run(server: &Server, room: &str, settings: &Settings) -> io::Result<Vec<f64>> {
    let base = server.base();
    let pid = server.pid();
    let members = settings.history_members;
    let tally = Arc::new(Tally::default());
    let mut readers = JoinSet::new();
    for socket in join_live(&base, room, members).await? {
        let tally = Arc::clone(&tally);
        readers.spawn(read_member(socket, tally, Expect::Plain));
    }
    let mut control = client::connect(&format!("{base}/publish")).await?;
    let mut delivered = 0;
    for _ in 0..HISTORY_DEPTH.div_ceil(HISTORY_BURST) {
        delivered += members * HISTORY_BURST;
        publish(&mut control, room, HISTORY_BURST, "plain").await?;
        tally.until(delivered, "the warm-up").await?;
    }

    // Bursts: each waits until every member has it all, so no queue ever holds more than one.
    let broadcasts = settings.history_bursts * HISTORY_BURST;
    let cpu_before = pid.and_then(scenario::server_cpu_ns);
    let started = Instant::now();
    for _ in 0..settings.history_bursts {
        delivered += members * HISTORY_BURST;
        request(&mut control, room, HISTORY_BURST, "plain").await?;
        tally.until(delivered, "a burst").await?;
        done(&mut control).await?;
    }
    let elapsed = started.elapsed();
    let burst_cpu = per(
        cpu_before,
        pid.and_then(scenario::server_cpu_ns),
        broadcasts,
    );

    // One by one: each from the request until the last member has it.
    let mut samples = Vec::with_capacity(settings.history_round_trips);
    let cpu_before = pid.and_then(scenario::server_cpu_ns);
    for _ in 0..settings.history_round_trips {
        delivered += members;
        let sent = Instant::now();
        request(&mut control, room, 1, "plain").await?;
        tally.until(delivered, "a broadcast").await?;
        samples.push(sent.elapsed().as_secs_f64() * 1e6);
        done(&mut control).await?;
    }
    let one_cpu = per(
        cpu_before,
        pid.and_then(scenario::server_cpu_ns),
        settings.history_round_trips,
    );
    client::close(control).await?;
    // Dropping the members closes their connections.
    readers.abort_all();
    samples.sort_unstable_by(f64::total_cmp);
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile) as usize];
    Ok(vec![
        broadcasts as f64 / elapsed.as_secs_f64(),
        burst_cpu,
        at(0.5),
        at(0.99),
        one_cpu,
    ])
}

// --- recovery: members that resume after a gap ---------------------------------------------------

/// Runs the recovery scenario `rounds` times on each side, on one fresh server whose rooms keep
/// history: the messages delivered live to members in the room ("raw" column), and replayed to
/// members that resume after missing them ("tachyon" column). Each run has a room of its own.
pub(crate) async fn compare_recovery(settings: &Settings, rounds: usize) -> io::Result<Vec<Row>> {
    let server = Server::start(ServerKind::History).await?;
    let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let name = ["live", "replay"][side];
            let room = format!("recovery-{round}-{name}");
            let members = settings.recovery_members;
            let values = if side == 0 {
                recovery_live(&server, &room, members).await?
            } else {
                recovery_replay(&server, &room, members).await?
            };
            crate::progress(Scenario::Recovery, round, rounds, name, &values);
            runs[side].push(values);
        }
    }
    server.stop().await?;
    Ok(rows(Scenario::Recovery, &runs))
}

/// The baseline: `members` join the room live, then [`HISTORY_DEPTH`] broadcasts; measured from
/// the request until every member has every one.
async fn recovery_live(server: &Server, room: &str, members: usize) -> io::Result<Vec<f64>> {
    let base = server.base();
    let tally = Arc::new(Tally::default());
    let mut readers = JoinSet::new();
    for socket in join_live(&base, room, members).await? {
        let expect = Expect::Positioned { next: 1 };
        readers.spawn(read_member(socket, Arc::clone(&tally), expect));
    }
    let mut control = client::connect(&format!("{base}/publish")).await?;
    let measure = Measure::start(server);
    request(&mut control, room, HISTORY_DEPTH, "positioned").await?;
    tally
        .until(members * HISTORY_DEPTH, "the live messages")
        .await?;
    let values = measure.values(&tally);
    done(&mut control).await?;
    client::close(control).await?;
    readers.abort_all();
    Ok(values)
}

/// The members had the room's position P when they left; [`HISTORY_DEPTH`] broadcasts later,
/// `members` connections each ask to resume from P. Measured from the first request until every
/// member has every message it missed. (The members' earlier connections are not simulated:
/// the server keeps nothing of them but the room's history. Their new connections are open
/// before the clock starts: the handshakes are what the connect scenario measures.)
async fn recovery_replay(server: &Server, room: &str, members: usize) -> io::Result<Vec<f64>> {
    let base = server.base();
    let mut control = client::connect(&format!("{base}/publish")).await?;
    let since = publish(&mut control, room, 1, "positioned")
        .await?
        .ok_or_else(|| io::Error::other("recovery: the room has no history"))?;
    let last = publish(&mut control, room, HISTORY_DEPTH, "positioned").await?;
    if last.map(|last| last.offset()) != Some(since.offset() + HISTORY_DEPTH as u64) {
        return Err(io::Error::other(format!(
            "recovery: {HISTORY_DEPTH} broadcasts after {since} ended at {last:?}"
        )));
    }
    client::close(control).await?;

    let mut sockets = Vec::with_capacity(members);
    while sockets.len() < members {
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(members - sockets.len()) {
            let url = format!("{base}/resume");
            batch.spawn(async move { client::connect_small(&url).await });
        }
        while let Some(joined) = batch.join_next().await {
            sockets.push(joined.map_err(io::Error::other)??);
        }
    }
    let tally = Arc::new(Tally::default());
    let mut readers = JoinSet::new();
    let resume = Message::text(format!("{room} {since}"));
    let measure = Measure::start(server);
    for mut socket in sockets {
        socket
            .send(resume.clone())
            .await
            .map_err(io::Error::other)?;
        let expect = Expect::Positioned {
            next: since.offset() + 1,
        };
        readers.spawn(read_member(socket, Arc::clone(&tally), expect));
    }
    tally.until(members * HISTORY_DEPTH, "the replays").await?;
    let values = measure.values(&tally);
    readers.abort_all();
    Ok(values)
}

/// The clock and both processes' CPU time, from the start of a recovery.
struct Measure {
    started: Instant,
    pid: Option<u32>,
    server: Option<u64>,
    client: Option<u64>,
}

impl Measure {
    fn start(server: &Server) -> Self {
        let pid = server.pid();
        Self {
            pid,
            server: pid.and_then(scenario::server_cpu_ns),
            client: scenario::server_cpu_ns(std::process::id()),
            started: Instant::now(),
        }
    }

    /// The recovery's metrics, once `tally` has everything.
    fn values(&self, tally: &Tally) -> Vec<f64> {
        let elapsed = self.started.elapsed();
        let messages = tally.count.load(Ordering::Acquire);
        let bytes = tally.bytes.load(Ordering::Acquire);
        vec![
            elapsed.as_secs_f64() * 1e3,
            per(
                self.server,
                self.pid.and_then(scenario::server_cpu_ns),
                messages,
            ),
            per(
                self.client,
                scenario::server_cpu_ns(std::process::id()),
                messages,
            ),
            messages as f64,
            bytes as f64 / 1e6,
        ]
    }
}

// --- The members and the broadcaster, over WebSockets --------------------------------------------

/// `members` connections in `room` on `base`, joined live (no position), each in once the
/// server says so.
async fn join_live(base: &str, room: &str, members: usize) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(members);
    while sockets.len() < members {
        let mut batch = JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(members - sockets.len()) {
            let (url, request) = (format!("{base}/resume"), format!("{room} none"));
            batch.spawn(async move {
                let mut socket = client::connect_small(&url).await?;
                socket
                    .send(Message::text(request))
                    .await
                    .map_err(io::Error::other)?;
                match timeout(LIMIT, socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.starts_with("live ") => Ok(socket),
                    other => Err(io::Error::other(format!("history: no join: {other:?}"))),
                }
            });
        }
        while let Some(joined) = batch.join_next().await {
            sockets.push(joined.map_err(io::Error::other)??);
        }
    }
    Ok(sockets)
}

/// What a member checks of the broadcasts it gets.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// [`HISTORY_MESSAGE`] every time.
    Plain,
    /// Messages that start with their position, the first at offset `next`, then one more
    /// each: none missing, none twice, in order.
    Positioned { next: u64 },
}

/// Reads a member's messages until its connection ends, counting the broadcasts in `tally`;
/// a message it did not expect fails the run.
async fn read_member(mut socket: Socket, tally: Arc<Tally>, mut expect: Expect) {
    while let Some(received) = socket.next().await {
        let text = match received {
            Ok(Message::Text(text)) => text,
            Ok(_) => continue,
            Err(error) => return tally.fail(format!("a member's connection failed: {error}")),
        };
        // The server's answer to a resume, after the replay: the count already told.
        if text.starts_with("recovered ") {
            continue;
        }
        match &mut expect {
            Expect::Plain if text.as_str() == HISTORY_MESSAGE => {}
            Expect::Positioned { next } => {
                let offset = text
                    .get(..Position::TEXT_LEN)
                    .and_then(|position| position.parse::<Position>().ok())
                    .map(|position| position.offset());
                if offset != Some(*next) || text.len() != HISTORY_MESSAGE.len() {
                    return tally.fail(format!(
                        "a member expected offset {next} and got `{}`",
                        text.as_str()
                    ));
                }
                *next += 1;
            }
            Expect::Plain => {
                return tally.fail(format!("a member got `{}`", text.as_str()));
            }
        }
        tally.add(text.len());
    }
    tally.fail("a member's connection ended".to_owned());
}

/// Sends a publish request: `count` broadcasts to `room`, `plain` or `positioned`.
async fn request(control: &mut Socket, room: &str, count: usize, kind: &str) -> io::Result<()> {
    control
        .send(Message::text(format!("{room} {count} {kind}")))
        .await
        .map_err(io::Error::other)
}

/// Waits for the broadcaster's answer; returns the last broadcast's position, if it had one.
async fn done(control: &mut Socket) -> io::Result<Option<Position>> {
    match timeout(LIMIT, control.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.starts_with("done ") => Ok(text
            .as_str()
            .strip_prefix("done ")
            .and_then(|position| position.parse().ok())),
        other => Err(io::Error::other(format!(
            "history: the broadcaster did not finish: {other:?}"
        ))),
    }
}

/// Asks for `count` broadcasts and waits until they were made.
async fn publish(
    control: &mut Socket,
    room: &str,
    count: usize,
    kind: &str,
) -> io::Result<Option<Position>> {
    request(control, room, count, kind).await?;
    done(control).await
}

/// Broadcasts the members got, and their bytes, and a wait until there are enough.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicUsize,
    bytes: AtomicUsize,
    goal: AtomicUsize,
    failed: Mutex<Option<String>>,
    changed: Notify,
}

impl Tally {
    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if count >= self.goal.load(Ordering::Acquire) {
            self.changed.notify_one();
        }
    }

    fn fail(&self, why: String) {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(why);
        self.changed.notify_one();
    }

    /// Waits until `goal` broadcasts arrived in all.
    async fn until(&self, goal: usize, what: &str) -> io::Result<()> {
        self.goal.store(goal, Ordering::Release);
        let waiting = async {
            loop {
                if let Some(why) = self
                    .failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                {
                    return Err(io::Error::other(format!("history: {what}: {why}")));
                }
                if self.count.load(Ordering::Acquire) >= goal {
                    return Ok(());
                }
                self.changed.notified().await;
            }
        };
        timeout(LIMIT, waiting).await.map_err(|_| {
            io::Error::other(format!(
                "history: {what}: {} of {goal} deliveries in {LIMIT:?}",
                self.count.load(Ordering::Acquire)
            ))
        })?
    }
}

// --- history-memory: what the histories hold -----------------------------------------------------

/// What the history-memory child fills: `messages` messages of `size` bytes in the history of
/// each of `rooms` rooms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fill {
    pub(crate) rooms: usize,
    pub(crate) messages: usize,
    pub(crate) size: usize,
}

/// Runs the history-memory scenario `rounds` times, each in a fresh child process (memory that
/// a process freed stays its own): the payload kept ("raw" column) against the growth of the
/// child's resident memory (the "tachyon" column), per message and per room.
pub(crate) async fn compare_memory(settings: &Settings, rounds: usize) -> io::Result<Vec<Row>> {
    let fill = Fill {
        rooms: settings.memory_rooms,
        messages: settings.memory_messages,
        size: HISTORY_MESSAGE.len(),
    };
    let messages = (fill.rooms * fill.messages) as f64;
    let payload = [
        fill.size as f64,
        (fill.messages * fill.size) as f64 / 1024.0,
    ];
    let mut runs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let grown_kib = memory_run(fill).await?;
        let values = vec![grown_kib * 1024.0 / messages, grown_kib / fill.rooms as f64];
        crate::progress(Scenario::HistoryMemory, round, rounds, "rss", &values);
        runs[0].push(payload.to_vec());
        runs[1].push(values);
    }
    Ok(rows(Scenario::HistoryMemory, &runs))
}

/// The growth in KiB of a fresh child's resident memory while it fills the histories.
async fn memory_run(fill: Fill) -> io::Result<f64> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("history-memory")
        .args([fill.rooms, fill.messages, fill.size].map(|number| number.to_string()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("history-memory: the child has no pid"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    expect_line(&mut lines, "ready").await?;
    let before = scenario::settled_rss_kib(pid).await?;
    stdin.write_all(b"fill\n").await?;
    stdin.flush().await?;
    expect_line(&mut lines, "filled").await?;
    let after = scenario::settled_rss_kib(pid).await?;
    drop(stdin);
    child.kill().await?;
    Ok(after as f64 - before as f64)
}

/// Waits for the child to say `line`.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, line: &str) -> io::Result<()> {
    match timeout(LIMIT, lines.next_line()).await {
        Ok(Ok(Some(got))) if got == line => Ok(()),
        other => Err(io::Error::other(format!(
            "history-memory: the child said {other:?}, not `{line}`"
        ))),
    }
}

/// The child: rooms that keep `fill.messages` broadcasts, no members; on `fill` from standard
/// input, broadcasts that many messages of `fill.size` bytes to each room (round by round over
/// the rooms, as rooms that talk at once), each in a `String` of its own; then waits for the end
/// of standard input.
pub(crate) async fn serve_memory(fill: Fill) -> io::Result<()> {
    let rooms = Rooms::builder()
        .history(History::messages(fill.messages))
        .build();
    // The names are made before the baseline: they are the app's, not the history's.
    let names: Vec<String> = (0..fill.rooms)
        .map(|room| format!("room-{room:06}"))
        .collect();
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if lines.next_line().await?.as_deref() != Some("fill") {
        return Ok(());
    }
    let message = "m".repeat(fill.size);
    for _ in 0..fill.messages {
        for name in &names {
            rooms.to(name).send(message.clone());
        }
    }
    stdout.write_all(b"filled\n").await?;
    stdout.flush().await?;
    while lines.next_line().await?.is_some() {}
    drop(rooms);
    Ok(())
}

// --- Shared ------------------------------------------------------------------------------------

/// Microseconds of CPU time per item, from two readings in nanoseconds (NaN if either is
/// missing).
fn per(before: Option<u64>, after: Option<u64>, items: usize) -> f64 {
    match (before, after) {
        (Some(before), Some(after)) if items > 0 => (after - before) as f64 / 1e3 / items as f64,
        _ => f64::NAN,
    }
}

/// One row per metric of `scenario`: the median of each side over the rounds.
fn rows(scenario: Scenario, runs: &[Vec<Vec<f64>>; 2]) -> Vec<Row> {
    let median = |runs: &[Vec<f64>], index: usize| {
        let mut values: Vec<f64> = runs.iter().map(|values| values[index]).collect();
        report::median(&mut values)
    };
    scenario
        .metrics()
        .iter()
        .enumerate()
        .map(|(index, metric)| Row {
            metric,
            medians: Medians::Compared {
                raw: median(&runs[0], index),
                tachyon: median(&runs[1], index),
            },
        })
        .collect()
}
