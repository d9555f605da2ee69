//! The two servers under test, and how the harness runs each as a child process of its own binary.
//!
//! Both are echo servers on `/ws` served by `axum::serve` with default settings, so they differ only
//! in the WebSocket layer: axum's `WebSocketUpgrade` or Tachyon's `#[websocket]`. The Tachyon
//! server also echoes on `/ws-deflate`, with permessage-deflate on (the deflate echo). For the
//! fan-out scenario both also have a room (`/room` joins it, `/fire` broadcasts to it): the raw
//! server keeps the seed's connection manager written in Rust (a list of senders, one awaited
//! send each), the Tachyon server uses `Rooms`; a third server, `serve floor`
//! ([`crate::floor`]), has the same two routes and nothing else, and a fourth, `serve
//! tachyon-serve`, is the Tachyon server served by `Tachyon::serve`'s accept loop. For the history scenarios the Tachyon server also
//! has `/publish` (broadcasts to a named room on request) and `/resume` (joins a named room with
//! `join_since`), and runs a third way, `serve history`: the same routes on rooms that keep a
//! history. A server runs in its own process so that its memory and CPU time can be read from
//! `/proc`; it prints `listening ADDR` once bound, and exits when killed or when its standard
//! input closes (so a harness that dies leaves no server behind).

use std::future::IntoFuture;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{self, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tachyon::rooms::{History, Position, Recovery, RedisConfig};
use tachyon::{Message, Rooms, WebSocket};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server: the baseline or the one under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// `axum::extract::ws` used directly.
    Raw,
    /// A `#[tachyon::websocket]` handler.
    Tachyon,
    /// The Tachyon server with rooms that keep a history of [`HISTORY_DEPTH`] broadcasts (the
    /// history and recovery scenarios; not one of the two compared by the others).
    History,
    /// The fan-out scenario's floor ([`crate::floor`]): `/room` and `/fire` only, with no
    /// WebSocket library.
    Floor,
    /// The Tachyon server served by Tachyon's own accept loop (`Tachyon::serve_listener`, what
    /// `Tachyon::serve` runs) instead of `axum::serve`: rooms write broadcasts straight into
    /// idle members' TCP sockets there, instead of into their upgraded connections under a lock
    /// (the fan-out scenario's fourth side).
    TachyonServe,
    /// The Tachyon server with Tachyon's `metrics` feature on and a Prometheus recorder
    /// installed (the echo-metrics scenario's "on" side; a bench built with `--features
    /// metrics` only).
    TachyonMetrics,
}

impl ServerKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tachyon => "tachyon",
            Self::History => "history",
            Self::Floor => "floor",
            Self::TachyonServe => "tachyon-serve",
            Self::TachyonMetrics => "tachyon-metrics",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        [
            Self::Raw,
            Self::Tachyon,
            Self::History,
            Self::Floor,
            Self::TachyonServe,
            Self::TachyonMetrics,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

// --- The servers, as they run in the child process ---------------------------------------------

/// The seed's connection manager, ported literally: every member's sending half in a list, and a
/// broadcast that awaits one send after the other. (The list is copied out before sending, which
/// is kinder to it than holding its lock across the sends.)
#[derive(Clone, Default)]
struct NaiveRoom(Arc<Mutex<Vec<Member>>>);

type Member = Arc<Mutex<SplitSink<ws::WebSocket, ws::Message>>>;

/// The read buffer of fan-out members, on both servers: 10,000 of axum's default 128 KiB would
/// measure memory, not broadcasting.
const MEMBER_READ_BUFFER: usize = 4 * 1024;

async fn naive_member(upgrade: WebSocketUpgrade, State(room): State<NaiveRoom>) -> Response {
    upgrade
        .read_buffer_size(MEMBER_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let (mut sink, mut stream) = socket.split();
            if sink.send(ws::Message::text("joined")).await.is_err() {
                return;
            }
            let member = Arc::new(Mutex::new(sink));
            room.0.lock().await.push(Arc::clone(&member));
            while let Some(Ok(_)) = stream.next().await {}
            room.0
                .lock()
                .await
                .retain(|other| !Arc::ptr_eq(other, &member));
        })
}

async fn naive_fire(upgrade: WebSocketUpgrade, State(room): State<NaiveRoom>) -> Response {
    upgrade.on_upgrade(move |mut socket| async move {
        // Reading on after a close frame lets axum send the close reply.
        while let Some(Ok(message)) = socket.recv().await {
            let ws::Message::Text(count) = message else {
                continue;
            };
            let count: usize = count.parse().unwrap_or(0);
            let message = ws::Utf8Bytes::from(FANOUT_MESSAGE);
            for _ in 0..count {
                let members = room.0.lock().await.clone();
                for member in members {
                    let _ = member
                        .lock()
                        .await
                        .send(ws::Message::Text(message.clone()))
                        .await;
                }
            }
            if socket.send(ws::Message::text("done")).await.is_err() {
                return;
            }
        }
    })
}

/// The 64-byte message of the fan-out scenario.
pub(crate) const FANOUT_MESSAGE: &str =
    "fan-out message, sixty-four bytes long, the same for every member";

#[tachyon::websocket("/room", read_buffer_size = MEMBER_READ_BUFFER)]
async fn member(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("fan-out", &ws)?;
    ws.send_text("joined").await?;
    loop {
        ws.receive().await?;
    }
}

#[tachyon::websocket("/fire")]
async fn fire(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let count: usize = ws.receive_text().await?.parse().unwrap_or(0);
        let message = tachyon::Utf8Bytes::from(FANOUT_MESSAGE);
        for _ in 0..count {
            rooms.to("fan-out").send(message.clone());
        }
        ws.send_text("done").await?;
    }
}

/// The 100-byte message of the history scenario: the same text on every broadcast, in a `String`
/// of its own each time, as an app builds a new message for every broadcast.
pub(crate) const HISTORY_MESSAGE: &str = "history message, a hundred bytes long, the same for every broadcast and every member, history or not";

/// How many broadcasts the history server's rooms keep.
pub(crate) const HISTORY_DEPTH: usize = 1_000;

/// A message of [`HISTORY_MESSAGE`]'s length that starts with its position in the room (the
/// text of a [`Position`], or `none`) and a space, as an app puts the position in its messages
/// for the client to resume from.
pub(crate) fn positioned_message(position: Option<Position>) -> String {
    let mut text = String::with_capacity(HISTORY_MESSAGE.len());
    match position {
        Some(position) => text.push_str(&position.to_string()),
        None => text.push_str("none"),
    }
    text.push(' ');
    while text.len() < HISTORY_MESSAGE.len() {
        text.push('.');
    }
    text
}

/// Broadcasts on request: each text `ROOM COUNT plain|positioned` broadcasts COUNT messages to
/// ROOM ([`HISTORY_MESSAGE`], or [`positioned_message`] with `send_with`), then answers
/// `done POSITION` (the last broadcast's position) or `done none` (no history).
#[tachyon::websocket("/publish")]
async fn publish(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let request = ws.receive_text().await?;
        let mut words = request.split(' ');
        let room = words.next().unwrap_or_default();
        let count: usize = words
            .next()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        let positioned = words.next() == Some("positioned");
        let mut last = None;
        for _ in 0..count {
            let delivery = if positioned {
                rooms.to(room).send_with(positioned_message)
            } else {
                rooms.to(room).send(HISTORY_MESSAGE.to_owned())
            };
            last = delivery.position();
        }
        let answer = match last {
            Some(position) => format!("done {position}"),
            None => "done none".to_owned(),
        };
        ws.send_text(answer).await?;
    }
}

/// A member that resumes: its first text, `ROOM POSITION` or `ROOM none`, joins ROOM with
/// `join_since` (what it missed is queued first), then it answers `recovered MISSED` or
/// `live REASON`, after the replay.
#[tachyon::websocket("/resume", read_buffer_size = MEMBER_READ_BUFFER)]
async fn resume(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    let request = ws.receive_text().await?;
    let (room, since) = request.split_once(' ').unwrap_or((&request, "none"));
    let since = since.parse::<Position>().ok();
    let answer = match rooms.join_since(room, &ws, since).await? {
        Recovery::Recovered { missed } => format!("recovered {missed}"),
        Recovery::NotRecovered(reason) => format!("live {reason:?}"),
        other => format!("live {other:?}"),
    };
    ws.send_text(answer).await?;
    loop {
        ws.receive().await?;
    }
}

async fn raw_upgrade(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(raw_echo)
}

/// Sends every data message back as it came; axum answers pings and replies to a close itself.
async fn raw_echo(mut socket: ws::WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, ws::Message::Text(_) | ws::Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

#[tachyon::websocket("/ws")]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive().await? {
            Message::Text(text) => ws.send_text(text).await?,
            Message::Binary(bytes) => ws.send_bytes(bytes).await?,
        }
    }
}

/// The same echo with permessage-deflate on, with the defaults (the deflate echo's "on" side).
#[tachyon::websocket("/ws-deflate", deflate = tachyon::settings::Deflate::new())]
async fn echo_deflate(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive().await? {
            Message::Text(text) => ws.send_text(text).await?,
            Message::Binary(bytes) => ws.send_bytes(bytes).await?,
        }
    }
}

/// Serves `kind` on 127.0.0.1 (a port the system picks) until standard input closes. With
/// `TACHYON_BENCH_PROMETHEUS` set (a bench built with `--features metrics`), every Tachyon
/// server records into a Prometheus recorder, so that any scenario can run with metrics on.
pub(crate) async fn serve(kind: ServerKind) -> io::Result<()> {
    let tachyon = !matches!(
        kind,
        ServerKind::Raw | ServerKind::Floor | ServerKind::TachyonMetrics
    );
    if tachyon && std::env::var_os("TACHYON_BENCH_PROMETHEUS").is_some() {
        install_prometheus()?;
    }
    let app = match kind {
        ServerKind::Raw => axum::Router::new()
            .route("/ws", get(raw_upgrade))
            .route("/room", get(naive_member))
            .route("/fire", get(naive_fire))
            .with_state(NaiveRoom::default()),
        ServerKind::Tachyon => tachyon_app(Rooms::new()),
        ServerKind::History => tachyon_app(
            Rooms::builder()
                .history(History::messages(HISTORY_DEPTH))
                .build(),
        ),
        ServerKind::Floor => return crate::floor::serve().await,
        ServerKind::TachyonServe => return serve_tachyon(tachyon_routes(Rooms::new())).await,
        ServerKind::TachyonMetrics => {
            install_prometheus()?;
            tachyon_app(Rooms::new())
        }
    };
    serve_app(app).await
}

/// Installs a Prometheus recorder, as an app that exports its metrics would, with the upkeep a
/// scrape would do every few seconds.
#[cfg(feature = "metrics")]
fn install_prometheus() -> io::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
            drop(handle.render());
        }
    });
    Ok(())
}

#[cfg(not(feature = "metrics"))]
fn install_prometheus() -> io::Result<()> {
    Err(io::Error::other(
        "serve tachyon-metrics: this bench was built without `--features metrics`",
    ))
}

/// The Tachyon server's routes, on `rooms`, as a router.
fn tachyon_app(rooms: Rooms) -> axum::Router {
    tachyon_routes(rooms).into_router()
}

/// Serves `app` with Tachyon's own accept loop on 127.0.0.1, until standard input closes.
async fn serve_tachyon(app: tachyon::Tachyon<Rooms>) -> io::Result<()> {
    let listener = announced_listener().await?;
    tokio::select! {
        served = app.serve_listener(listener, std::future::pending()) => served,
        () = harness_gone() => Ok(()),
    }
}

/// A listener on 127.0.0.1 whose address is printed (`listening ADDR`) for the harness.
pub(crate) async fn announced_listener() -> io::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening {}", listener.local_addr()?)?;
    stdout.flush()?;
    Ok(listener)
}

/// Resolves once standard input closes: nothing is ever written to it, so its end means the
/// harness is gone.
pub(crate) async fn harness_gone() {
    let (mut stdin, mut sink) = (tokio::io::stdin(), tokio::io::sink());
    let _ = tokio::io::copy(&mut stdin, &mut sink).await;
}

/// The Tachyon server's routes, on `rooms`.
fn tachyon_routes(rooms: Rooms) -> tachyon::Tachyon<Rooms> {
    tachyon::Tachyon::with_state(rooms)
        .websocket(echo)
        .websocket(echo_deflate)
        .websocket(member)
        .websocket(fire)
        .websocket(publish)
        .websocket(resume)
}

/// The Redis prefix of the cluster scenario's nodes with history: a cluster apart from the
/// nodes without, on the same Redis.
const HISTORY_PREFIX: &str = "tachyon-bench-history";

/// Serves the Tachyon server with its rooms through the Redis at `redis` (a node of the cluster
/// scenario); with `history`, its rooms keep [`HISTORY_DEPTH`] broadcasts, in Redis.
pub(crate) async fn serve_node(redis: &str, history: bool) -> io::Result<()> {
    let rooms = if history {
        Rooms::builder()
            .history(History::messages(HISTORY_DEPTH))
            .redis(RedisConfig::new(redis).prefix(HISTORY_PREFIX))
            .await
    } else {
        Rooms::builder().redis(RedisConfig::new(redis)).await
    }
    .map_err(io::Error::other)?;
    serve_app(tachyon_app(rooms)).await
}

async fn serve_app(app: axum::Router) -> io::Result<()> {
    let listener = announced_listener().await?;
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served,
        () = harness_gone() => Ok(()),
    }
}

// --- The harness's handle on a server process ---------------------------------------------------

/// A server running as a child process; killed when stopped or dropped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `tachyon-bench serve KIND` and waits for its address.
    pub(crate) async fn start(kind: ServerKind) -> io::Result<Self> {
        Self::start_from(&std::env::current_exe()?, kind).await
    }

    /// Starts `PROGRAM serve KIND` (another build of this harness) and waits for its address.
    pub(crate) async fn start_from(
        program: &std::path::Path,
        kind: ServerKind,
    ) -> io::Result<Self> {
        Self::spawn(program, &["serve", kind.name()], kind.name()).await
    }

    /// Starts `tachyon-bench serve node REDIS_URL [history]` and waits for its address.
    pub(crate) async fn start_node(redis: &str, history: bool) -> io::Result<Self> {
        if history {
            Self::start_with(&["serve", "node", redis, "history"], "node").await
        } else {
            Self::start_with(&["serve", "node", redis], "node").await
        }
    }

    async fn start_with(args: &[&str], name: &str) -> io::Result<Self> {
        Self::spawn(&std::env::current_exe()?, args, name).await
    }

    async fn spawn(program: &std::path::Path, args: &[&str], name: &str) -> io::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let line = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).lines().next_line())
            .await
            .map_err(|_| io::Error::other(format!("{} server did not start", name)))??
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{} server printed `{line}`", name)))?;
        Ok(Self { child, addr })
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `ws://ADDR`, for the paths other than the echo.
    pub(crate) fn base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server and waits for it to exit.
    pub(crate) async fn stop(mut self) -> io::Result<()> {
        self.child.kill().await
    }
}
