//! The two servers under test, and how the harness runs each as a child process of its own binary.
//!
//! Both are echo servers on `/ws` served by `axum::serve` with default settings, so they differ only
//! in the WebSocket layer: axum's `WebSocketUpgrade` or Tachyon's `#[websocket]`. A server runs in
//! its own process so that its memory can be read from `/proc`; it prints `listening ADDR` once
//! bound, and exits when killed or when its standard input closes (so a harness that dies leaves
//! no server behind).

use std::future::IntoFuture;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::ws::{self, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use tachyon::{Message, WebSocket};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server: the baseline or the one under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    /// `axum::extract::ws` used directly.
    Raw,
    /// A `#[tachyon::websocket]` handler.
    Tachyon,
}

impl ServerKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tachyon => "tachyon",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        [Self::Raw, Self::Tachyon]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

// --- The servers, as they run in the child process ---------------------------------------------

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

/// Serves `kind` on 127.0.0.1 (a port the system picks) until standard input closes.
pub(crate) async fn serve(kind: ServerKind) -> io::Result<()> {
    let app = match kind {
        ServerKind::Raw => axum::Router::new().route("/ws", get(raw_upgrade)),
        ServerKind::Tachyon => tachyon::Tachyon::new().websocket(echo).into_router(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    let (mut stdin, mut sink) = (tokio::io::stdin(), tokio::io::sink());
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served,
        // Nothing is ever written to it: end of input means the harness is gone.
        _ = tokio::io::copy(&mut stdin, &mut sink) => Ok(()),
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
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", kind.name()])
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
            .map_err(|_| io::Error::other(format!("{} server did not start", kind.name())))??
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{} server printed `{line}`", kind.name())))?;
        Ok(Self { child, addr })
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server and waits for it to exit.
    pub(crate) async fn stop(mut self) -> io::Result<()> {
        self.child.kill().await
    }
}
