//! The handshake belongs to the handler: accept, deny, close before accept, and every way a
//! handler can end before deciding.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::{Extension, Json};
use serde_json::json;
use support::{connect, expect_close, expect_json, expect_text, handshake, serve, server, within};
use tachyon::handshake::Accept;
use tachyon::{Error, Settings, Tachyon, WebSocket, websocket};
use tokio::sync::mpsc::UnboundedSender;

#[websocket("/info/{name}")]
async fn info(mut ws: WebSocket, name: String) -> tachyon::Result<()> {
    // Everything about the request is readable before deciding.
    let header = ws
        .headers()
        .get("x-custom")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = ws.query_params().get("token").map(str::to_owned);
    let tags: Vec<String> = ws
        .query_params()
        .get_all("tag")
        .map(str::to_owned)
        .collect();
    let param = ws.path_params().get("name").map(str::to_owned);
    let url = ws.url().to_string();
    ws.accept().await?;
    ws.send_json(&json!({
        "name": name, "header": header, "token": token, "tags": tags, "param": param, "url": url,
    }))
    .await
}

#[tokio::test]
async fn request_details_are_readable_before_accepting() {
    let server = server(Tachyon::new().websocket(info));
    let response = support::within(
        "the handshake",
        server
            .get_websocket("/info/ada%20l?token=abc&tag=a&tag=b")
            .add_header("x-custom", "yes"),
    )
    .await;
    response.assert_status(StatusCode::SWITCHING_PROTOCOLS);
    let mut ws = within("the upgrade", response.into_websocket()).await;
    expect_json(
        &mut ws,
        json!({
            "name": "ada l", "header": "yes", "token": "abc", "tags": ["a", "b"],
            "param": "ada l", "url": "/info/ada%20l?token=abc&tag=a&tag=b",
        }),
    )
    .await;
}

#[websocket("/early")]
async fn early(mut ws: WebSocket) -> tachyon::Result<()> {
    // Using the connection before accepting is an error, not a panic.
    let send = ws
        .send_text("too soon")
        .await
        .expect_err("send before accept");
    let receive = ws.receive_text().await.expect_err("receive before accept");
    let both_not_accepted =
        matches!(send, Error::NotAccepted { .. }) && matches!(receive, Error::NotAccepted { .. });
    ws.deny(
        StatusCode::CONFLICT,
        format!("{both_not_accepted}|{send}|{receive}"),
    )
}

#[tokio::test]
async fn receive_and_send_before_accept_are_errors() {
    let server = server(Tachyon::new().websocket(early));
    let response = handshake(&server, "/early").await;
    response.assert_status(StatusCode::CONFLICT);
    let body = response.text();
    assert!(body.starts_with("true|"), "{body}");
    assert!(
        body.contains("cannot send a text message before the handshake is accepted: call `ws.accept().await?` first"),
        "{body}"
    );
    assert!(
        body.contains("cannot receive a message before the handshake"),
        "{body}"
    );
}

#[websocket("/deny")]
async fn deny_json(
    mut ws: WebSocket,
    Extension(report): Extension<UnboundedSender<String>>,
) -> tachyon::Result<()> {
    ws.deny(
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "missing credentials"})),
    )?;
    // The handshake is decided: the handler goes on, but cannot accept or send any more.
    let accept = ws.accept().await.expect_err("accept after deny");
    let send = ws.send_text("x").await.expect_err("send after deny");
    let _ = report.send(format!("{accept}|{send}"));
    Ok(())
}

#[tokio::test]
async fn deny_answers_with_any_response() {
    let (report, mut reports) = support::reports();
    let app: axum::Router = Tachyon::new().websocket(deny_json).into();
    let server = server(app.layer(Extension(report)));
    let response = handshake(&server, "/deny").await;
    response.assert_status(StatusCode::UNAUTHORIZED);
    response.assert_json(&json!({"error": "missing credentials"}));
    assert_eq!(response.content_type(), "application/json");
    assert_eq!(
        reports.next().await,
        "cannot accept the handshake: this handler already rejected the handshake|cannot send a \
         text message: this handler already rejected the handshake"
    );
}

#[websocket("/close-first")]
async fn close_first(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.close(4003, "go away").await
}

#[tokio::test]
async fn close_before_accept_is_403() {
    let server = server(Tachyon::new().websocket(close_first));
    let response = handshake(&server, "/close-first").await;
    response.assert_status(StatusCode::FORBIDDEN);
    response.assert_text("WebSocket connection rejected by the server (close code 4003: go away)");
}

#[websocket("/silent")]
async fn silent(_ws: WebSocket) {}

#[tokio::test]
async fn returning_without_accepting_is_403() {
    let server = server(Tachyon::new().websocket(silent));
    handshake(&server, "/silent")
        .await
        .assert_status(StatusCode::FORBIDDEN);
}

#[websocket("/fails-early")]
async fn fails_early(_ws: WebSocket) -> Result<(), String> {
    Err("database unavailable".to_owned())
}

#[websocket("/panics-early")]
async fn panics_early(_ws: WebSocket) -> tachyon::Result<()> {
    panic!("handler bug before accept");
}

#[tokio::test]
async fn an_error_or_a_panic_before_accepting_is_500_and_the_server_keeps_serving() {
    let server = server(
        Tachyon::new()
            .websocket(fails_early)
            .websocket(panics_early)
            .websocket(info),
    );
    let response = handshake(&server, "/fails-early").await;
    response.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    // A debug build says why (this suite runs in one); a release build only says that it
    // failed, and the error goes to the log.
    let body = response.text();
    assert!(body.contains("failed before accepting"), "{body}");
    assert_eq!(
        body.contains("database unavailable"),
        cfg!(debug_assertions),
        "{body}"
    );
    let response = handshake(&server, "/panics-early").await;
    response.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.text().contains("handler bug before accept"),
        cfg!(debug_assertions)
    );
    let mut ws = connect(&server, "/info/still-up").await;
    support::next_message(&mut ws).await;
}

#[tokio::test]
async fn expose_errors_decides_what_the_500_says_in_any_build() {
    for (expose, shown) in [(false, false), (true, true)] {
        let app = Tachyon::new()
            .settings(Settings::new().expose_errors(expose))
            .websocket(fails_early);
        let response = handshake(&server(app), "/fails-early").await;
        response.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.text();
        assert_eq!(body.contains("database unavailable"), shown, "{body}");
        assert!(body.contains("failed before accepting"), "{body}");
    }
}

#[websocket("/whoami")]
async fn whoami(mut ws: WebSocket) -> tachyon::Result<()> {
    let before = ws.id();
    ws.accept().await?;
    let sender = ws.sender()?;
    ws.send_text(format!("{before} {} {}", ws.id(), sender.id()))
        .await
}

async fn text_of(ws: &mut axum_test::TestWebSocket) -> String {
    match support::next_message(ws).await {
        axum_test::WsMessage::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn a_socket_knows_its_id_before_and_after_accepting() {
    let server = server(Tachyon::new().websocket(whoami));
    let mut first = connect(&server, "/whoami").await;
    let mut second = connect(&server, "/whoami").await;
    let first = text_of(&mut first).await;
    let ids: Vec<&str> = first.split(' ').collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "{first}");
    assert!(ids[0].parse::<tachyon::ConnectionId>().is_ok(), "{first}");
    let second = text_of(&mut second).await;
    assert!(
        !second.starts_with(ids[0]),
        "two connections, two ids: {first} / {second}"
    );
}

#[websocket("/protocols")]
async fn protocols(mut ws: WebSocket) -> tachyon::Result<()> {
    let offered: Vec<String> = ws.requested_subprotocols().map(str::to_owned).collect();
    if let Err(error) = ws
        .accept_with(Accept::new().subprotocol("not-offered"))
        .await
    {
        // Still undecided: the handler can try again.
        assert!(
            matches!(error, Error::SubprotocolNotOffered { .. }),
            "{error}"
        );
    }
    ws.accept_with(Accept::new().subprotocol("chat.v2").header(
        HeaderName::from_static("x-tachyon"),
        HeaderValue::from_static("yes"),
    ))
    .await?;
    let chosen = ws.subprotocol().unwrap_or("none").to_owned();
    ws.send_text(format!("{}|{chosen}", offered.join(",")))
        .await?;
    // Accepting twice is refused.
    match ws.accept().await {
        Err(Error::AlreadyAccepted { .. }) => ws.send_text("accepted once").await,
        other => ws.send_text(format!("unexpected: {other:?}")).await,
    }
}

#[tokio::test]
async fn accept_with_selects_a_subprotocol_and_adds_headers() {
    let server = server(Tachyon::new().websocket(protocols));
    let response = within(
        "the handshake",
        server
            .get_websocket("/protocols")
            .add_header("sec-websocket-protocol", "chat.v1, chat.v2"),
    )
    .await;
    response.assert_status(StatusCode::SWITCHING_PROTOCOLS);
    response.assert_header("sec-websocket-protocol", "chat.v2");
    response.assert_header("x-tachyon", "yes");
    let mut ws = within("the upgrade", response.into_websocket()).await;
    expect_text(&mut ws, "chat.v1,chat.v2|chat.v2").await;
    expect_text(&mut ws, "accepted once").await;
}

#[websocket("/counted/{id}")]
async fn counted(
    mut ws: WebSocket,
    id: u64,
    State(runs): State<Arc<AtomicUsize>>,
) -> tachyon::Result<()> {
    runs.fetch_add(1, Ordering::SeqCst);
    ws.accept().await?;
    ws.send_text(id.to_string()).await
}

#[tokio::test]
async fn a_plain_http_request_gets_426_and_the_handler_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let server = server(Tachyon::with_state(runs.clone()).websocket(counted));
    let response = within("the response", server.get("/counted/1")).await;
    response.assert_status(StatusCode::UPGRADE_REQUIRED);
    response.assert_header("upgrade", "websocket");
    response.assert_text_contains("`/counted/1` is a WebSocket endpoint");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Other methods are not WebSocket handshakes at all.
    let response = within("the response", server.post("/counted/1")).await;
    response.assert_status(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bad_path_parameter_is_400_naming_it_and_the_handler_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let server = server(Tachyon::with_state(runs.clone()).websocket(counted));
    let response = handshake(&server, "/counted/abc").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text(
        "Invalid path parameter `id`: `abc` is not a valid `u64` (invalid digit found in string)",
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let mut ws = connect(&server, "/counted/42").await;
    expect_text(&mut ws, "42").await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[websocket("/close-then-return")]
async fn close_then_return(
    mut ws: WebSocket,
    Extension(report): Extension<UnboundedSender<String>>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.close(4000, "done").await?;
    // After closing, closing again and sending are refused, not sent.
    let again = ws.close(1000, "").await;
    let send = ws.send_text("late").await;
    let _ = report.send(format!("{again:?}|{send:?}"));
    Ok(())
}

#[tokio::test]
async fn nothing_is_sent_twice() {
    let (report, mut reports) = support::reports();
    let app: axum::Router = Tachyon::new().websocket(close_then_return).into();
    let served = serve(app.layer(Extension(report))).await;
    // Every frame on the wire, up to the server closing the TCP connection: one close frame,
    // although the handler closed twice and then returned.
    let frames = support::raw_frames(&served, "/close-then-return").await;
    assert_eq!(frames, [(0x8, b"\x0f\xa0done".to_vec())]);
    assert_eq!(
        reports.next().await,
        r#"Err(Closed { operation: "close the WebSocket" })|Err(Closed { operation: "send a text message" })"#
    );
}

#[websocket("/bad-code-first")]
async fn bad_code_first(mut ws: WebSocket) -> tachyon::Result<()> {
    // An unsendable code is an error before accept too, and decides nothing.
    let error = ws.close(1005, "").await.expect_err("1005 cannot be sent");
    ws.deny(StatusCode::IM_A_TEAPOT, error.to_string())
}

#[tokio::test]
async fn an_unsendable_close_code_before_accept_is_an_error_not_a_403() {
    let server = server(Tachyon::new().websocket(bad_code_first));
    let response = handshake(&server, "/bad-code-first").await;
    response.assert_status(StatusCode::IM_A_TEAPOT);
    response.assert_text_contains("1005 cannot be sent as a WebSocket close code");
}

#[derive(serde::Deserialize)]
struct Token {
    token: String,
}

#[websocket("/needs-token")]
async fn needs_token(
    mut ws: WebSocket,
    State(runs): State<Arc<AtomicUsize>>,
    Query(query): Query<Token>,
) -> tachyon::Result<()> {
    runs.fetch_add(1, Ordering::SeqCst);
    ws.accept().await?;
    ws.send_text(query.token).await
}

#[tokio::test]
async fn a_failing_extractor_answers_and_the_handler_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let server = server(Tachyon::with_state(runs.clone()).websocket(needs_token));
    let response = handshake(&server, "/needs-token").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("token");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let mut ws = connect(&server, "/needs-token?token=abc").await;
    expect_text(&mut ws, "abc").await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_that_returns_after_accepting_closes_with_1000() {
    #[websocket("/hello")]
    async fn hello(mut ws: WebSocket) -> tachyon::Result<()> {
        ws.accept().await?;
        ws.send_text("hi").await
    }
    let server = server(Tachyon::new().websocket(hello));
    let mut ws = connect(&server, "/hello").await;
    expect_text(&mut ws, "hi").await;
    expect_close(&mut ws, 1000).await;
}
