//! The benchmark client: connect, echo one message, close, each step with a deadline, and any
//! surprise (a wrong echo, an early close) an error that stops the run.

use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client connection.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest one step (a handshake, a send, a reply) may take before the run fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Control frames (pings, say) skipped while waiting for an echo, at most.
const MAX_SKIPPED: usize = 16;

async fn step<T, E: std::fmt::Display>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> io::Result<T> {
    match timeout(STEP_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(io::Error::other(format!("{what}: {error}"))),
        Err(_) => Err(io::Error::other(format!(
            "{what}: no answer in {STEP_TIMEOUT:?}"
        ))),
    }
}

/// Opens a connection (with `TCP_NODELAY`, so the client's own writes are never held back).
pub(crate) async fn connect(url: &str) -> io::Result<Socket> {
    let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (socket, _response) = step("connect", connecting).await?;
    Ok(socket)
}

/// Opens a connection with a 4 KiB read buffer, for scenarios that open thousands.
pub(crate) async fn connect_small(url: &str) -> io::Result<Socket> {
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (socket, _response) = step("connect", connecting).await?;
    Ok(socket)
}

/// Sends `message` and waits for the same message to come back.
pub(crate) async fn echo(socket: &mut Socket, message: &Message) -> io::Result<()> {
    step("send", socket.send(message.clone())).await?;
    for _ in 0..MAX_SKIPPED {
        let received = step("echo", async { socket.next().await.transpose() }).await?;
        match received {
            Some(Message::Ping(_) | Message::Pong(_)) => {}
            Some(reply) if reply == *message => return Ok(()),
            Some(other) => return Err(io::Error::other(format!("wrong echo: {other:?}"))),
            None => return Err(io::Error::other("the server closed instead of echoing")),
        }
    }
    Err(io::Error::other("no echo among the frames received"))
}

/// Sends a close frame and waits for the server's, then for the end of the stream.
pub(crate) async fn close(mut socket: Socket) -> io::Result<()> {
    step("close", socket.close(None)).await?;
    for _ in 0..MAX_SKIPPED {
        match timeout(STEP_TIMEOUT, socket.next()).await {
            Ok(None | Some(Err(tungstenite::Error::ConnectionClosed))) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => return Err(io::Error::other(format!("close: {error}"))),
            Err(_) => break,
        }
    }
    Err(io::Error::other(
        "the server did not finish the close handshake",
    ))
}
