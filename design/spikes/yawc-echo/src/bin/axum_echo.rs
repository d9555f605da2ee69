//! Raw axum 0.8 echo server (axum's own `WebSocketUpgrade`, axum's defaults), the baseline:
//! the same endpoint as the workspace bench's raw server. `--addr HOST:PORT` (port 0 picks a
//! free one); prints `listening ADDR` once bound.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;

async fn upgrade(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

/// Sends every data message back as it came; axum answers pings and replies to a close itself.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs HOST:PORT")?,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let app = axum::Router::new()
        .route("/", get(upgrade))
        .route("/ws", get(upgrade));
    let listener = tokio::net::TcpListener::bind(addr.parse::<std::net::SocketAddr>()?).await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
