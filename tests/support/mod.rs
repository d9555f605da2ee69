//! Helpers shared by the integration tests: servers on real sockets, and waits that always end.
#![allow(dead_code, unreachable_pub)]

pub mod chat_page;
pub mod example;
pub mod raw;
pub mod redis_server;
pub mod resume;
pub mod webdriver;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum_test::{TestResponse, TestServer, TestWebSocket, WsMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WireCloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: IntoFuture>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future.into_future()).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// An axum-test server over real HTTP on 127.0.0.1.
pub fn server(app: impl Into<axum::Router>) -> TestServer {
    TestServer::builder().http_transport().build(app.into())
}

/// Sends a WebSocket handshake to `path` and returns the HTTP response.
pub async fn handshake(server: &TestServer, path: &str) -> TestResponse {
    within(
        &format!("the handshake response of {path}"),
        server.get_websocket(path),
    )
    .await
}

/// Connects to `path`, asserting `101 Switching Protocols`.
pub async fn connect(server: &TestServer, path: &str) -> TestWebSocket {
    let response = handshake(server, path).await;
    response.assert_status(axum::http::StatusCode::SWITCHING_PROTOCOLS);
    within("the upgrade", response.into_websocket()).await
}

/// The next message from the server.
pub async fn next_message(ws: &mut TestWebSocket) -> WsMessage {
    within("a message from the server", ws.receive_message()).await
}

/// Asserts that the next message is the text `expected`.
pub async fn expect_text(ws: &mut TestWebSocket, expected: &str) {
    match next_message(ws).await {
        WsMessage::Text(text) => assert_eq!(text.as_str(), expected),
        other => panic!("expected the text {expected:?}, got {other:?}"),
    }
}

/// Asserts that the next message is JSON equal to `expected`.
pub async fn expect_json(ws: &mut TestWebSocket, expected: serde_json::Value) {
    match next_message(ws).await {
        WsMessage::Text(text) => {
            let value: serde_json::Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|error| panic!("not JSON ({error}): {text}"));
            assert_eq!(value, expected);
        }
        other => panic!("expected JSON {expected}, got {other:?}"),
    }
}

/// Asserts that the next message is a close frame with `code`; returns its reason.
pub async fn expect_close(ws: &mut TestWebSocket, code: u16) -> String {
    match next_message(ws).await {
        WsMessage::Close(Some(frame)) => {
            assert_eq!(
                u16::from(frame.code),
                code,
                "close code (reason: {:?})",
                frame.reason
            );
            frame.reason.as_str().to_owned()
        }
        other => panic!("expected a close frame with code {code}, got {other:?}"),
    }
}

/// A server on a real socket, for clients that need more control than axum-test gives. The
/// server task is aborted when this is dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on 127.0.0.1 with an OS-chosen port, and its address.
async fn bind_loopback() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = within(
        "binding 127.0.0.1:0",
        tokio::net::TcpListener::bind("127.0.0.1:0"),
    )
    .await
    .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// Serves `app` on 127.0.0.1 with an OS-chosen port.
pub async fn serve(app: impl Into<axum::Router>) -> Served {
    let (listener, addr) = bind_loopback().await;
    let app: axum::Router = app.into();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server");
    });
    Served { addr, task }
}

/// A tokio-tungstenite client.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a tokio-tungstenite client to `path` on `served`.
pub async fn raw_connect(served: &Served, path: &str) -> Client {
    let url = format!("ws://{}{path}", served.addr);
    let (client, response) = within("connecting", tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    client
}

/// The next text message from the server to a tokio-tungstenite client, skipping pings.
pub async fn next_text(client: &mut Client) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match within("a message", client.next())
            .await
            .expect("the connection ended")
            .expect("a frame")
        {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends a text message from a tokio-tungstenite client.
pub async fn send_text(client: &mut Client, text: &str) {
    use futures_util::SinkExt;
    within("sending", client.send(text.into()))
        .await
        .expect("send");
}

/// Sends `value` as a JSON text message.
pub async fn send_json(client: &mut Client, value: serde_json::Value) {
    send_text(client, &value.to_string()).await;
}

/// The next text message, parsed as JSON.
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    let text = next_text(client).await;
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// The close code of a tungstenite close frame, as a number.
pub fn wire_code(code: WireCloseCode) -> u16 {
    code.into()
}

/// A channel for handlers to report what they saw, and the test side of it.
pub fn reports() -> (mpsc::UnboundedSender<String>, Reports) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (sender, Reports(receiver))
}

/// What handlers reported.
pub struct Reports(mpsc::UnboundedReceiver<String>);

impl Reports {
    /// A report already made, if any (without waiting).
    pub fn pending(&mut self) -> Option<String> {
        self.0.try_recv().ok()
    }

    /// The next report.
    pub async fn next(&mut self) -> String {
        within("a report from the handler", self.0.recv())
            .await
            .expect("the handler side hung up without reporting")
    }
}

/// Opens `path` with a hand-written handshake over plain TCP and returns every frame the server
/// sends, as (opcode, payload), until it closes the connection. The first close frame is
/// answered with a close reply, as a client must.
pub async fn raw_frames(served: &Served, path: &str) -> Vec<(u8, Vec<u8>)> {
    within("the raw exchange", async {
        let mut stream = TcpStream::connect(served.addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            served.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read the handshake response"));
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut frames = Vec::new();
        let mut replied = false;
        // Server frames are unmasked; these tests only see short ones.
        while let Ok(first) = stream.read_u8().await {
            let length = stream.read_u8().await.expect("frame length") & 0x7f;
            assert!(length < 126, "a test frame should be short");
            let mut payload = vec![0; usize::from(length)];
            stream
                .read_exact(&mut payload)
                .await
                .expect("frame payload");
            let opcode = first & 0x0f;
            if opcode == 0x8 && !replied {
                // A masked close reply echoing the code (mask key 0 leaves the bytes as they are).
                let code = payload.get(..2).unwrap_or_default();
                let mut reply = vec![
                    0x88,
                    0x80 | u8::try_from(code.len()).unwrap_or(0),
                    0,
                    0,
                    0,
                    0,
                ];
                reply.extend_from_slice(code);
                stream
                    .write_all(&reply)
                    .await
                    .expect("send the close reply");
                replied = true;
            }
            frames.push((opcode, payload));
        }
        frames
    })
    .await
}

/// A member of rooms with member data (its name): joins `room` with its first text as its name,
/// then says `joined`; `rename NAME` joins again with another name, then says `renamed`.
#[tachyon::websocket("/named/{room}")]
pub async fn named(
    mut ws: tachyon::WebSocket,
    room: String,
    axum::extract::State(rooms): axum::extract::State<tachyon::Rooms<String>>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    let name = ws.receive_text().await?;
    rooms.join(&room, (&ws, name.to_string()))?;
    ws.send_text("joined").await?;
    loop {
        let text = ws.receive_text().await?;
        if let Some(name) = text.strip_prefix("rename ") {
            rooms.join(&room, (&ws, name.to_owned()))?;
            ws.send_text("renamed").await?;
        }
    }
}

/// An HTTP/2 WebSocket handshake (RFC 8441: an extended `CONNECT`) to `path` on `addr`, with
/// `extensions` offered if given. Returns the response (`upgrade` it for the stream) and the
/// task that drives the HTTP/2 connection (abort it when done).
pub async fn http2_handshake(
    addr: SocketAddr,
    path: &str,
    extensions: Option<&str>,
) -> (
    hyper::Response<hyper::body::Incoming>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let io = TokioIo::new(
        within("connecting", TcpStream::connect(addr))
            .await
            .expect("connect"),
    );
    let (mut send_request, connection) = within(
        "an HTTP/2 connection",
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io),
    )
    .await
    .expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", "13")
        .header(axum::http::header::HOST, "localhost");
    if let Some(extensions) = extensions {
        request = request.header(axum::http::header::SEC_WEBSOCKET_EXTENSIONS, extensions);
    }
    let request = request.body(axum::body::Body::empty()).expect("request");
    let response = within("the response", send_request.send_request(request))
        .await
        .expect("response");
    (response, driver)
}

/// Serves `app` with Tachyon's own server (`Tachyon::serve_listener`) on 127.0.0.1 with an
/// OS-chosen port; stopped when dropped.
pub async fn serve_tachyon<S: Clone + Send + Sync + 'static>(app: tachyon::Tachyon<S>) -> Served {
    let (listener, addr) = bind_loopback().await;
    let task = tokio::spawn(async move {
        app.serve_listener(listener, std::future::pending())
            .await
            .expect("server");
    });
    Served { addr, task }
}
