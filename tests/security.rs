//! Safe by default against hostile clients: the `Origin` check, clients that never finish their
//! request head, connection limits, and WebSockets over HTTP/2.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use tachyon::settings::Origins;
use tachyon::{Settings, Tachyon, WebSocket, WebSocketRouter, websocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use support::within;

type Reporter = mpsc::UnboundedSender<String>;

#[websocket("/ws")]
async fn echo(
    mut ws: WebSocket,
    axum::extract::State(reports): axum::extract::State<Reporter>,
) -> tachyon::Result<()> {
    let _ = reports.send("started".to_owned());
    ws.accept().await?;
    loop {
        let text = ws.receive_text().await?;
        ws.send_text(text).await?;
    }
}

#[websocket("/public", origins = Origins::Any)]
async fn public(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

#[websocket("/partners", allowed_origins = ["https://app.partner.com", "*.friends.org"])]
async fn partners(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

/// The handshake status for `path` with these `Origin` and `Host` headers, and the body.
async fn handshake_with(
    served: &support::Served,
    path: &str,
    origin: Option<&str>,
    host: &str,
) -> (u16, String) {
    within("a handshake", async {
        let mut stream = TcpStream::connect(served.addr).await.expect("connect");
        let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = vec![0; 4096];
        let read = stream.read(&mut response).await.expect("read");
        let response = String::from_utf8_lossy(&response[..read]).into_owned();
        let status = response
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

async fn origin_app() -> (support::Served, support::Reports) {
    let (reporter, reports) = support::reports();
    let app = Tachyon::with_state(reporter)
        .websocket(echo)
        .websocket(public)
        .websocket(partners);
    (support::serve(app).await, reports)
}

#[tokio::test]
async fn a_page_of_another_site_gets_403_before_the_handler_runs() {
    let (served, mut reports) = origin_app().await;
    let (status, body) = handshake_with(
        &served,
        "/ws",
        Some("https://evil.example"),
        "chat.example.com",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Cross-origin WebSocket request refused"),
        "{body}"
    );
    assert!(body.contains("https://evil.example"), "{body}");
    // The handler never started: the next report is from the next, allowed connection.
    let (status, _) = handshake_with(&served, "/ws", None, "chat.example.com").await;
    assert_eq!(status, 101);
    assert_eq!(reports.next().await, "started");
}

#[tokio::test]
async fn the_same_host_passes_whatever_the_scheme_and_another_port_does_not() {
    let (served, _reports) = origin_app().await;
    let check = |origin: &'static str, host: &'static str| {
        let served = &served;
        async move { handshake_with(served, "/ws", Some(origin), host).await.0 }
    };
    assert_eq!(
        check("http://chat.example.com", "chat.example.com").await,
        101
    );
    assert_eq!(
        check("https://Chat.Example.com", "chat.example.com").await,
        101
    );
    assert_eq!(check("http://localhost:8000", "localhost:8000").await, 101);
    assert_eq!(check("http://localhost:9000", "localhost:8000").await, 403);
    assert_eq!(check("null", "chat.example.com").await, 403);
}

#[tokio::test]
async fn requests_without_origin_pass_and_allowed_origins_are_listed_per_route() {
    let (served, _reports) = origin_app().await;
    let host = "api.example.com";
    assert_eq!(handshake_with(&served, "/ws", None, host).await.0, 101);
    assert_eq!(
        handshake_with(&served, "/public", Some("https://anyone.net"), host)
            .await
            .0,
        101
    );
    let partners = |origin: &'static str| {
        let served = &served;
        async move {
            handshake_with(served, "/partners", Some(origin), host)
                .await
                .0
        }
    };
    assert_eq!(partners("https://app.partner.com").await, 101);
    assert_eq!(partners("https://www.partner.com").await, 403);
    assert_eq!(partners("https://a.friends.org").await, 101);
    assert_eq!(partners("https://friends.org").await, 403);
}

#[tokio::test]
async fn allowed_origins_can_be_set_for_the_app_and_a_router() {
    let (reporter, _reports) = support::reports();
    let app = Tachyon::with_state(reporter)
        .settings(Settings::new().allowed_origins(["https://app.example.com"]))
        .websocket(echo)
        .include_router(
            WebSocketRouter::with_prefix("/open")
                .settings(Settings::new().allow_any_origin())
                .websocket(public),
        );
    let served = support::serve(app).await;
    let host = "api.example.com";
    assert_eq!(
        handshake_with(&served, "/ws", Some("https://app.example.com"), host)
            .await
            .0,
        101
    );
    assert_eq!(
        handshake_with(&served, "/ws", Some("https://other.example.com"), host)
            .await
            .0,
        403
    );
    assert_eq!(
        handshake_with(
            &served,
            "/open/public",
            Some("https://other.example.com"),
            host
        )
        .await
        .0,
        101
    );
}

// --- Slow and half-open clients ----------------------------------------------------------------

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_disconnected() {
    let (reporter, _reports) = support::reports();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Tachyon::with_state(reporter)
        .websocket(echo)
        .handshake_timeout(Duration::from_millis(300));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_listener(listener, async {
        let _ = stopped.await;
    }));

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websock")
        .await
        .expect("half a head");
    // The server hangs up (perhaps with a 408 first) instead of waiting forever: `within`
    // fails the test if it does not.
    let mut rest = Vec::new();
    let _ = within("the server to hang up", stream.read_to_end(&mut rest)).await;
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    let _ = stop.send(());
    within("the server to stop", server)
        .await
        .expect("join")
        .expect("serve");
}

// --- Connection limits ---------------------------------------------------------------------------

#[websocket("/limited", max_connections = 2)]
async fn limited(
    mut ws: WebSocket,
    axum::extract::State(reports): axum::extract::State<Reporter>,
) -> tachyon::Result<()> {
    let _ = reports.send("started".to_owned());
    ws.accept().await?;
    loop {
        ws.receive().await?;
    }
}

#[tokio::test]
async fn beyond_a_routes_connection_limit_the_handshake_gets_503() {
    let (reporter, mut reports) = support::reports();
    let served = support::serve(Tachyon::with_state(reporter).websocket(limited)).await;
    let first = support::raw_connect(&served, "/limited").await;
    let second = support::raw_connect(&served, "/limited").await;
    assert_eq!(reports.next().await, "started");
    assert_eq!(reports.next().await, "started");
    let (status, body) = handshake_with(&served, "/limited", None, "localhost").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connection limit"), "{body}");
    // A handler reports before its handshake is answered: none ran for the refused one.
    assert_eq!(reports.pending(), None);
    // However a connection ends, its place comes back.
    drop(first);
    let mut second = second;
    within("closing", second.close(None)).await.expect("close");
    within("the places to come back", async {
        loop {
            if handshake_with(&served, "/limited", None, "localhost")
                .await
                .0
                == 101
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_app_limit_holds_across_its_routes() {
    let (reporter, _reports) = support::reports();
    let app = Tachyon::with_state(reporter)
        .settings(Settings::new().max_connections(1))
        .websocket(echo)
        .websocket(limited);
    let served = support::serve(app).await;
    let _held = support::raw_connect(&served, "/ws").await;
    assert_eq!(
        handshake_with(&served, "/limited", None, "localhost")
            .await
            .0,
        503
    );
    assert_eq!(
        handshake_with(&served, "/ws", None, "localhost").await.0,
        503
    );
}

// --- HTTP/2 ----------------------------------------------------------------------------------------

#[tokio::test]
async fn websockets_work_over_http2() {
    use hyper_util::rt::TokioIo;

    let (reporter, _reports) = support::reports();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Tachyon::with_state(reporter)
            .websocket(echo)
            .serve_listener(listener, async {
                let _ = stopped.await;
            }),
    );

    let (mut response, driver) = support::http2_handshake(addr, "/ws", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = within("the upgrade", hyper::upgrade::on(&mut response))
        .await
        .expect("upgraded");
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    within("sending", socket.send(Message::text("over h2")))
        .await
        .expect("send");
    match within("the echo", socket.next()).await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "over h2"),
        other => panic!("expected the echo, got {other:?}"),
    }
    drop(socket);
    driver.abort();
    let _ = stop.send(());
    within("the server to stop", server)
        .await
        .expect("join")
        .expect("serve");
}
