//! Every example of the WebSockets chapter, served by one Tachyon app.
//!
//! Run it with `cargo run --example tour` (add `-- --addr 127.0.0.1:9000` for another address),
//! then open <http://127.0.0.1:8000/>: the page connects to `/ws`, sends `Hello!` and shows what
//! comes back. Any WebSocket client can try the other routes. Ctrl-C shuts it down gracefully:
//! every client gets a 1001 close frame.
//!
//! Two instances share their rooms through Redis (`/chat/{room}` then spans both):
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run --example tour -- --addr 127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! cargo run --example tour -- --addr 127.0.0.1:8001 --redis redis://127.0.0.1:6379
//! ```
//!
//! | Route | What it does |
//! |-------|--------------|
//! | `/ws` | echoes `Echo: {text}`, compressed with permessage-deflate where the client offers it |
//! | `/ws/{room_id}` | welcomes, then echoes `[{room_id}] {text}` |
//! | `/ws/json` | answers `{"received": msg, "processed": true, "echo": msg.message}` |
//! | `/ws/bytes` | answers the bytes reversed |
//! | `/ws/auth?token=` | accepts, says whether a token came, closes with 1000 |
//! | `/ws/secure?token=` | `secret-token` only: `Authenticated!`; otherwise `close(4001)` before accept (403) |
//! | `/ws/disconnect` | answers `Got: {text}` and logs the client leaving |
//! | `/ws/close/{code}` | accepts, then closes with `code` |
//! | `/chat/{room}` | broadcasts `[{room}] {text}` to everyone in the room |
//! | `/api/v1/notifications` | a router with a prefix: sends `{"type": "connected"}`, closes |
//! | `/metrics` | Tachyon's metrics (the `metrics` feature), in Prometheus's text format |

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use tachyon::rooms::RedisConfig;
use tachyon::settings::Deflate;
use tachyon::{Rooms, Tachyon, WebSocket, WebSocketRouter, websocket};

/// The basic echo, with permessage-deflate on: browsers offer it, so the page's
/// `ws.extensions` says `permessage-deflate` (messages under 256 bytes still go out plain).
#[websocket("/ws", deflate = Deflate::new())]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let data = ws.receive_text().await?;
        ws.send_text(format!("Echo: {data}")).await?;
    }
}

/// Path parameters: the room comes from the URL.
#[websocket("/ws/{room_id}")]
async fn room(mut ws: WebSocket, room_id: String) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("Welcome to room: {room_id}")).await?;
    loop {
        let message = ws.receive_text().await?;
        ws.send_text(format!("[{room_id}] {message}")).await?;
    }
}

/// JSON in, JSON out. Invalid JSON is answered, not fatal.
#[websocket("/ws/json")]
async fn json_ws(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let data: Value = match ws.receive_json().await {
            Ok(data) => data,
            Err(tachyon::Error::InvalidJson(error)) => {
                ws.send_json(&json!({"error": format!("invalid JSON: {error}")}))
                    .await?;
                continue;
            }
            Err(other) => return Err(other),
        };
        let echo = data.get("message").cloned().unwrap_or_else(|| json!(""));
        ws.send_json(&json!({"received": data, "processed": true, "echo": echo}))
            .await?;
    }
}

/// Binary messages: answered reversed.
#[websocket("/ws/bytes")]
async fn bytes_ws(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let data = ws.receive_bytes().await?;
        let reversed: Vec<u8> = data.iter().rev().copied().collect();
        ws.send_bytes(reversed).await?;
    }
}

/// Query parameters, read after accepting.
#[websocket("/ws/auth?<token>")]
async fn authenticated_ws(mut ws: WebSocket, token: Option<String>) -> tachyon::Result<()> {
    ws.accept().await?;
    if token.is_none_or(|token| token.is_empty()) {
        ws.send_json(&json!({"error": "No token"})).await?;
        return ws.close(1000, "").await;
    }
    ws.send_json(&json!({"authenticated": true})).await
}

/// Authentication before accepting: a bad token never gets a connection.
#[websocket("/ws/secure?<token>")]
async fn secure_ws(mut ws: WebSocket, token: Option<String>) -> tachyon::Result<()> {
    // Or from the headers, before accepting: ws.headers().get("authorization")
    if !validate_token(token.as_deref()) {
        return ws.close(4001, "").await; // custom code: unauthorized (answered with HTTP 403)
    }
    ws.accept().await?;
    ws.send_text("Authenticated!").await
}

fn validate_token(token: Option<&str>) -> bool {
    token == Some("secret-token")
}

/// Handling the client leaving.
#[websocket("/ws/disconnect")]
async fn handle_disconnect(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive_text().await {
            Ok(data) => ws.send_text(format!("Got: {data}")).await?,
            Err(tachyon::Error::Disconnected(gone)) => {
                tracing::info!(code = gone.code, "Client disconnected");
                // Cleanup...
                return Ok(());
            }
            Err(other) => return Err(other),
        }
    }
}

/// Close codes: `/ws/close/4001` closes with 4001. A code that may not be sent (`/ws/close/1006`)
/// is an error, which Tachyon turns into a 1011 close.
#[websocket("/ws/close/{code}")]
async fn close_with_code(mut ws: WebSocket, code: u16) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.close(code, "").await
}

/// The chat: every message goes to everyone in the room, the sender included. `Rooms` is the
/// connection manager; a member leaves by itself when its connection ends.
#[websocket("/chat/{room}")]
async fn chat(mut ws: WebSocket, room: String, State(tour): State<Tour>) -> tachyon::Result<()> {
    ws.accept().await?;
    tour.rooms.join(&room, &ws)?;
    loop {
        let data = ws.receive_text().await?;
        tour.rooms.to(&room).send(format!("[{room}] {data}"));
    }
}

/// A handler registered on a router with a prefix.
#[websocket("/notifications")]
async fn notifications(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_json(&json!({"type": "connected"})).await
}

/// The tour's shared state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tour {
    rooms: Rooms,
}

impl Tour {
    /// The tour's state, its rooms shared with every instance linked to the Redis at `url`.
    pub(crate) async fn with_redis(url: &str) -> Result<Self, tachyon::rooms::ClusterError> {
        let rooms = Rooms::builder().redis(RedisConfig::new(url)).await?;
        Ok(Self { rooms })
    }
}

/// The page at `/`: the chapter's JavaScript client.
async fn index() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tachyon WebSockets</title></head>
<body>
<h1>Tachyon WebSockets</h1>
<ul id="messages"></ul>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`);
const long = "Hello again! ".repeat(100);
ws.onmessage = (event) => {
    console.log("Received:", event.data);
    const item = document.createElement("li");
    // The long echo is over the compression threshold: it arrives compressed.
    item.textContent = event.data.length > 200
        ? `Long echo: ${event.data === `Echo: ${long}` ? "intact" : "damaged"}, ${event.data.length} characters`
        : event.data;
    document.getElementById("messages").appendChild(item);
    if (event.data === "Echo: Hello!") ws.send(long);
};
ws.onopen = () => {
    // What the server agreed to: "permessage-deflate; server_no_context_takeover; ..."
    const item = document.createElement("li");
    item.id = "extensions";
    item.textContent = `Extensions: ${ws.extensions}`;
    document.getElementById("messages").appendChild(item);
    ws.send("Hello!");
};
// Output: "Echo: Hello!"
</script>
</body>
</html>
"#,
    )
}

/// The whole app: WebSocket routes, a router with a prefix, and an HTTP page.
pub(crate) fn app() -> Tachyon<Tour> {
    app_with(Tour::default())
}

/// The app with the given state (rooms through Redis, for one).
pub(crate) fn app_with(tour: Tour) -> Tachyon<Tour> {
    // Before any connection opens: each looks its metrics up once, from the recorder there is.
    prometheus();
    let api = WebSocketRouter::with_prefix("/api/v1").websocket(notifications);
    Tachyon::with_state(tour)
        .websocket(echo)
        .websocket(room)
        .websocket(json_ws)
        .websocket(bytes_ws)
        .websocket(authenticated_ws)
        .websocket(secure_ws)
        .websocket(handle_disconnect)
        .websocket(close_with_code)
        .websocket(chat)
        .include_router(api)
        .merge(
            axum::Router::new()
                .route("/", get(index))
                .route("/metrics", get(metrics)),
        )
}

/// The Prometheus recorder every metric of the process goes to, installed on first use (a
/// process has one). Tachyon records through the `metrics` facade; this is the exporter.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        handle
    })
}

/// `/metrics`: what Prometheus scrapes.
async fn metrics() -> String {
    let prometheus = prometheus();
    // Histograms are kept in buckets that a scrape drains.
    prometheus.run_upkeep();
    prometheus.render()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tachyon=debug".into()),
        )
        .init();
    let Args { addr, redis } = args()?;
    let (app, shared) = match redis {
        Some(url) => {
            let tour = Tour::with_redis(&url).await?;
            let rooms = tour.rooms.clone();
            (app_with(tour), Some(rooms))
        }
        None => (app(), None),
    };
    tracing::info!(
        "serving on http://{addr}/ with WebSocket routes {:?}",
        app.routes().collect::<Vec<_>>()
    );
    app.serve(addr).await?; // until Ctrl-C, then a graceful shutdown
    if let Some(rooms) = shared {
        // This instance's members leave the other instances' counts at once.
        rooms.leave_cluster().await?;
    }
    Ok(())
}

/// The command line: `--addr HOST:PORT` (default `127.0.0.1:8000`) and `--redis URL`.
struct Args {
    addr: SocketAddr,
    redis: Option<String>,
}

fn args() -> Result<Args, String> {
    const USAGE: &str = "usage: tour [--addr HOST:PORT] [--redis redis://HOST:PORT]";
    let mut args = std::env::args().skip(1);
    let (mut addr, mut redis) = ("127.0.0.1:8000".to_owned(), None);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value; {USAGE}"))
        };
        match name.as_str() {
            "--addr" => addr = value()?,
            "--redis" => redis = Some(value()?),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    let addr = addr
        .parse()
        .map_err(|error| format!("--addr `{addr}` is not HOST:PORT ({error})"))?;
    Ok(Args { addr, redis })
}
