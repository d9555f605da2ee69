//! Hostile clients: malformed handshakes sent as raw HTTP/1.1, which are refused before the
//! handler runs, and a handler that panics for some connections under load, which costs only
//! those connections.

mod support;

use std::sync::Arc;

use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use support::{Served, serve, within};
use tachyon::{Message, Tachyon, WebSocket, websocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WireMessage;

/// Reports the `case` it was opened for as soon as it starts, before deciding the handshake.
#[websocket("/hostile?<case>")]
async fn watched(
    mut ws: WebSocket,
    case: String,
    Extension(started): Extension<UnboundedSender<String>>,
) -> tachyon::Result<()> {
    let _ = started.send(case);
    ws.accept().await
}

/// The headers of a valid handshake; each test removes or changes one of them.
const HANDSHAKE: [(&str, &str); 4] = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The valid handshake's headers.
fn valid_headers() -> Vec<(String, String)> {
    HANDSHAKE
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// The valid handshake's headers with `name` set to `value`, or left out for `None`.
fn headers_with(name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut headers = valid_headers();
    headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        headers.push((name.to_owned(), value.to_owned()));
    }
    headers
}

/// Sends one request for `/hostile?case={case}` over a new TCP connection and returns the
/// status code of the response (the connection is dropped after the response head).
async fn status_of(served: &Served, method: &str, case: &str, headers: &[(String, String)]) -> u16 {
    let mut request = format!(
        "{method} /hostile?case={case} HTTP/1.1\r\nHost: {}\r\n",
        served.addr
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    within(&format!("the response to the `{case}` request"), async {
        let mut stream = TcpStream::connect(served.addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read the response head"));
        }
        let head = String::from_utf8_lossy(&head);
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        status.unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head}"))
    })
    .await
}

/// Serves the watched route, sends the request for `case`, and returns its status; then proves
/// whether the handler ran for it: a valid handshake follows, and the handler's first report
/// must be that one's. (The handler decides the handshake, so it reports before any response.)
async fn answer_and_whether_handled(
    method: &str,
    case: &str,
    headers: &[(String, String)],
) -> (u16, bool) {
    let (started, mut reports) = support::reports();
    let app: axum::Router = Tachyon::new().websocket(watched).into();
    let served = serve(app.layer(Extension(started))).await;
    let status = status_of(&served, method, case, headers).await;
    let valid = status_of(&served, "GET", "valid", &valid_headers()).await;
    assert_eq!(valid, 101, "the valid handshake after `{case}`");
    let first = reports.next().await;
    let handled = if first == case {
        assert_eq!(reports.next().await, "valid");
        true
    } else {
        assert_eq!(first, "valid", "an unexpected report");
        false
    };
    (status, handled)
}

/// Asserts that the request is refused with `expected` and that the handler never ran.
async fn assert_refused(method: &str, case: &str, headers: &[(String, String)], expected: u16) {
    let (status, handled) = answer_and_whether_handled(method, case, headers).await;
    assert_eq!(status, expected, "the status of the `{case}` request");
    assert!(!handled, "the handler ran for the `{case}` request");
}

#[tokio::test]
async fn the_valid_handshake_of_these_tests_reaches_the_handler() {
    let (status, handled) = answer_and_whether_handled("GET", "baseline", &valid_headers()).await;
    assert_eq!(status, 101);
    assert!(handled);
}

#[tokio::test]
async fn a_missing_key_is_refused() {
    let headers = headers_with("Sec-WebSocket-Key", None);
    assert_refused("GET", "missing-key", &headers, 400).await;
}

/// RFC 6455 §4.2.1: the key must be the base64 of 16 bytes, and a server answers 400 otherwise.
/// (axum 0.8's upgrade only checks that the header is there; Tachyon checks the key itself.)
#[tokio::test]
async fn an_invalid_key_is_refused() {
    for (case, key) in [
        ("not-base64", "this is not base64!"),
        ("three-bytes", "AAAA"),
        ("empty", ""),
        ("seventeen-bytes", "AAAAAAAAAAAAAAAAAAAAAAA="),
    ] {
        let headers = headers_with("Sec-WebSocket-Key", Some(key));
        assert_refused("GET", case, &headers, 400).await;
    }
}

#[tokio::test]
async fn version_8_is_refused() {
    let headers = headers_with("Sec-WebSocket-Version", Some("8"));
    assert_refused("GET", "version-8", &headers, 400).await;
}

#[tokio::test]
async fn a_missing_version_is_refused() {
    let headers = headers_with("Sec-WebSocket-Version", None);
    assert_refused("GET", "missing-version", &headers, 400).await;
}

#[tokio::test]
async fn post_is_refused() {
    let headers = valid_headers();
    assert_refused("POST", "post", &headers, 405).await;
}

#[tokio::test]
async fn a_missing_upgrade_header_is_refused_with_426() {
    let headers = headers_with("Upgrade", None);
    assert_refused("GET", "missing-upgrade", &headers, 426).await;
}

#[tokio::test]
async fn an_upgrade_to_h2c_is_refused() {
    let headers = headers_with("Upgrade", Some("h2c"));
    assert_refused("GET", "h2c", &headers, 400).await;
}

#[tokio::test]
async fn a_connection_header_without_upgrade_is_refused() {
    let headers = headers_with("Connection", Some("keep-alive"));
    assert_refused("GET", "connection-keep-alive", &headers, 400).await;
}

/// How many clients connect at once, how many of them make the handler panic (every tenth),
/// and how many round trips each of the others makes.
const CLIENTS: u32 = 100;
const PANIC_EVERY: u32 = 10;
const ROUND_TRIPS: u32 = 20;

/// Echoes with the message's kind, except for every tenth client, whose handler panics right
/// after accepting.
#[websocket("/flaky?<client>")]
async fn flaky(mut ws: WebSocket, client: u32) -> tachyon::Result<()> {
    ws.accept().await?;
    if client.is_multiple_of(PANIC_EVERY) {
        panic!("client {client}: this handler panics on purpose");
    }
    loop {
        match ws.receive().await? {
            Message::Text(text) => ws.send_text(text).await?,
            Message::Binary(bytes) => ws.send_bytes(bytes).await?,
        }
    }
}

/// One client of the load test: a panicking one expects close 1011, the others echo.
async fn flaky_client(served: Arc<Served>, client: u32) {
    let url = format!("ws://{}/flaky?client={client}", served.addr);
    let (mut ws, response) = within(
        &format!("client {client} connecting"),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap_or_else(|error| panic!("client {client}: handshake: {error}"));
    assert_eq!(response.status(), 101, "client {client}");
    if client.is_multiple_of(PANIC_EVERY) {
        match within(&format!("client {client}'s close frame"), ws.next()).await {
            Some(Ok(WireMessage::Close(Some(frame)))) => {
                assert_eq!(support::wire_code(frame.code), 1011, "client {client}");
            }
            other => panic!("client {client}: expected close 1011, got {other:?}"),
        }
        return;
    }
    for round in 0..ROUND_TRIPS {
        let sent = if round % 2 == 0 {
            WireMessage::text(format!("client {client} round {round}"))
        } else {
            WireMessage::binary(format!("{client}:{round}").into_bytes())
        };
        within(
            &format!("client {client} sending round {round}"),
            ws.send(sent.clone()),
        )
        .await
        .unwrap_or_else(|error| panic!("client {client} round {round}: send: {error}"));
        match within(
            &format!("client {client}'s echo of round {round}"),
            ws.next(),
        )
        .await
        {
            Some(Ok(echo)) => assert_eq!(echo, sent, "client {client} round {round}"),
            other => panic!("client {client} round {round}: expected the echo, got {other:?}"),
        }
    }
    within(&format!("client {client} closing"), ws.close(None))
        .await
        .unwrap_or_else(|error| panic!("client {client}: close: {error}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_under_load_costs_only_its_own_connections() {
    let served = Arc::new(serve(Tachyon::new().websocket(flaky)).await);
    let mut clients = JoinSet::new();
    for client in 1..=CLIENTS {
        clients.spawn(flaky_client(Arc::clone(&served), client));
    }
    let mut finished = 0;
    while let Some(result) = within("the clients", clients.join_next()).await {
        if let Err(error) = result {
            std::panic::resume_unwind(error.into_panic());
        }
        finished += 1;
    }
    assert_eq!(finished, CLIENTS);
    // The server still takes new connections, and serves them.
    flaky_client(Arc::clone(&served), CLIENTS + 1).await;
}
