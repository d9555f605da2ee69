//! An echo server for the Autobahn|Testsuite conformance cases, written with Tachyon's public API.
//!
//! Every message comes back as it came: text as text, binary as binary. The message and frame
//! limits are raised to 64 MiB because the suite's 9.* cases send messages of up to 16 MiB.
//! permessage-deflate is on (the 12.* and 13.* cases offer it), with no size threshold, so that
//! every message a client compresses is answered compressed; `--no-deflate` turns it off, and
//! `--context-takeover` keeps the compression context between messages where the client allows.
//! `scripts/autobahn` builds it, runs the fuzzing-client cases against it (both ways) and stops
//! it; by hand: `cargo run --release -p tachyon-bench --example autobahn_echo -- --addr
//! 127.0.0.1:9001` (it is built by the benchmark package, with the harness). Ctrl-C or SIGTERM
//! shuts it down gracefully.

use std::net::SocketAddr;

use tachyon::settings::Deflate;
use tachyon::{Message, Settings, Tachyon, WebSocket, websocket};

/// Echoes each message with its kind until the client closes.
#[websocket(
    "/",
    max_message_size = 64 * 1024 * 1024,
    max_frame_size = 64 * 1024 * 1024
)]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive().await? {
            Message::Text(text) => ws.send_text(text).await?,
            Message::Binary(bytes) => ws.send_bytes(bytes).await?,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (addr, deflate, takeover) = args()?;
    tracing::warn!(
        "autobahn echo server on ws://{addr}/ (permessage-deflate: {deflate}, context \
         takeover: {takeover})"
    );
    let deflate = deflate.then(|| Deflate::new().threshold(0).context_takeover(takeover));
    Tachyon::new()
        .settings(Settings::new().deflate(deflate))
        .websocket(echo)
        .serve(addr)
        .await?;
    Ok(())
}

/// `--addr HOST:PORT`, default `127.0.0.1:9001` (where Autobahn's fuzzing client looks),
/// whether permessage-deflate is on (`--no-deflate` turns it off), and whether it keeps its
/// context (`--context-takeover`).
fn args() -> Result<(SocketAddr, bool, bool), String> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut deflate = true;
    let mut takeover = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or("--addr needs a value, like 127.0.0.1:9001")?;
            }
            "--no-deflate" => deflate = false,
            "--context-takeover" => takeover = true,
            other => match other.strip_prefix("--addr=") {
                Some(value) => addr = value.to_owned(),
                None => {
                    return Err(format!(
                        "unknown argument `{other}`; usage: autobahn_echo [--addr HOST:PORT] [--no-deflate] [--context-takeover]"
                    ));
                }
            },
        }
    }
    let addr = addr
        .parse()
        .map_err(|error| format!("--addr `{addr}` is not HOST:PORT ({error})"))?;
    Ok((addr, deflate, takeover))
}
