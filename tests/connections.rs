//! The connection runtime over real sockets: the sender handle, the bounded outbound queue,
//! settings per app, router and handler, keepalive and the idle timeout, graceful shutdown,
//! typed endings, and cancel-safety.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tachyon::shutdown::Shutdown;
use tachyon::{Error, Message, Settings, Tachyon, WebSocket, WebSocketRouter, websocket};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WireMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WireCloseFrame;

use support::{Client, WAIT, raw_connect, reports, serve, within};

type Reporter = mpsc::UnboundedSender<String>;

fn report(reports: &Reporter, what: impl Into<String>) {
    let _ = reports.send(what.into());
}

/// The next frame from the server, whatever it is.
async fn next_frame(client: &mut Client) -> WireMessage {
    within("a frame from the server", client.next())
        .await
        .expect("the connection ended")
        .expect("a frame")
}

/// The next data message, skipping pings.
async fn next_text(client: &mut Client) -> String {
    loop {
        match next_frame(client).await {
            WireMessage::Text(text) => return text.as_str().to_owned(),
            WireMessage::Ping(_) | WireMessage::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the close frame (skipping pings) and returns its code and reason.
async fn close_of(client: &mut Client) -> (u16, String) {
    loop {
        match next_frame(client).await {
            WireMessage::Close(Some(frame)) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned());
            }
            WireMessage::Ping(_) | WireMessage::Pong(_) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send_text(client: &mut Client, text: &str) {
    within("sending", client.send(WireMessage::text(text)))
        .await
        .expect("send");
}

/// Reports how the connection ended, as `Kind code`, once `receive` says so.
async fn report_ending(ws: &mut WebSocket, reports: &Reporter) -> tachyon::Result<()> {
    loop {
        match ws.receive().await {
            Ok(Message::Text(text)) => ws.send_text(format!("{}", text.len())).await?,
            Ok(Message::Binary(bytes)) => ws.send_text(format!("{}", bytes.len())).await?,
            Err(Error::Disconnected(gone)) => {
                report(reports, format!("{:?} {}", gone.kind, gone.code));
                return Ok(());
            }
            Err(other) => return Err(other),
        }
    }
}

// --- The sender ----------------------------------------------------------------------------------

#[websocket("/order")]
async fn order(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    for i in 0..1000 {
        if i % 3 == 0 {
            ws.send_text(i.to_string()).await?;
        } else {
            sender.send_text(i.to_string()).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn sends_through_the_handle_and_the_socket_arrive_in_the_order_issued() {
    let served = serve(Tachyon::new().websocket(order)).await;
    let mut client = raw_connect(&served, "/order").await;
    for i in 0..1000 {
        assert_eq!(next_text(&mut client).await, i.to_string());
    }
    assert_eq!(close_of(&mut client).await.0, 1000);
}

#[websocket("/sleepy")]
async fn sleepy(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    tokio::spawn(async move {
        for i in 0..3 {
            let _ = sender.send_text(format!("tick {i}")).await;
        }
    });
    // Busy elsewhere, never in `receive`: the ticks and the pong must still go out.
    tokio::time::sleep(WAIT * 2).await;
    Ok(())
}

#[tokio::test]
async fn messages_and_pongs_leave_while_the_handler_is_busy_elsewhere() {
    let served = serve(Tachyon::new().websocket(sleepy)).await;
    let mut client = raw_connect(&served, "/sleepy").await;
    for i in 0..3 {
        assert_eq!(next_text(&mut client).await, format!("tick {i}"));
    }
    within(
        "ping",
        client.send(WireMessage::Ping("are you there".into())),
    )
    .await
    .expect("ping");
    match next_frame(&mut client).await {
        WireMessage::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
}

#[websocket("/full", queue_messages = 4)]
async fn full(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    // The connection is driven only while this handler waits: five in a row overflow four places.
    let results: Vec<_> = (0..5)
        .map(|i| sender.try_send_text(format!("m{i}")))
        .collect();
    let fifth = match &results[4] {
        Err(error) if error.is_full() => error.clone().into_message(),
        other => panic!("the fifth try_send should find the queue full: {other:?}"),
    };
    assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fifth, Message::from("m4"));
    report(&reports, "full, got the message back");
    // Once the handler waits, the queue drains and there is room again.
    tokio::task::yield_now().await;
    sender.try_send_text("m4 again")?;
    sender.close(4000, "bye")?;
    match sender.try_send_text("late") {
        Err(error) => {
            let gone = error.disconnect().expect("closed, not full");
            report(&reports, format!("closed {:?} {}", gone.kind, gone.code));
        }
        Ok(()) => panic!("a send after close must fail"),
    }
    assert!(sender.is_closed());
    Ok(())
}

#[tokio::test]
async fn try_send_hands_the_message_back_when_the_queue_is_full_or_closed() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(full)).await;
    let mut client = raw_connect(&served, "/full").await;
    assert_eq!(reports.next().await, "full, got the message back");
    assert_eq!(reports.next().await, "closed ClosedByServer 4000");
    for expected in ["m0", "m1", "m2", "m3", "m4 again"] {
        assert_eq!(next_text(&mut client).await, expected);
    }
    assert_eq!(close_of(&mut client).await, (4000, "bye".to_owned()));
}

// --- Settings ------------------------------------------------------------------------------------

#[websocket("/limits/app")]
async fn app_limit(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[websocket("/limits/router")]
async fn router_limit(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[websocket("/limits/handler", max_message_size = 3000)]
async fn handler_limit(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[websocket("/limits/default")]
async fn default_limit(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[websocket("/limits/raised", max_message_size = 2 * 1024 * 1024)]
async fn raised_limit(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

/// Sends `len` bytes of text and returns the server's answer: the length it received, or the
/// close code it sent.
async fn send_sized(client: &mut Client, len: usize) -> String {
    send_text(client, &"x".repeat(len)).await;
    match next_frame(client).await {
        WireMessage::Text(text) => text.as_str().to_owned(),
        WireMessage::Close(Some(frame)) => format!("close {}", u16::from(frame.code)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_most_specific_settings_win() {
    let (reporter, mut reports) = reports();
    let app = Tachyon::with_state(reporter)
        .settings(Settings::new().max_message_size(1000))
        .websocket(app_limit)
        .websocket(handler_limit)
        .include_router(
            WebSocketRouter::with_prefix("/")
                .settings(Settings::new().max_message_size(2000))
                .websocket(router_limit),
        );
    let served = serve(app).await;

    let mut client = raw_connect(&served, "/limits/app").await;
    assert_eq!(send_sized(&mut client, 900).await, "900");
    assert_eq!(send_sized(&mut client, 1500).await, "close 1009");
    assert_eq!(reports.next().await, "MessageTooBig 1009");

    let mut client = raw_connect(&served, "/limits/router").await;
    assert_eq!(send_sized(&mut client, 1500).await, "1500");
    assert_eq!(send_sized(&mut client, 2500).await, "close 1009");
    assert_eq!(reports.next().await, "MessageTooBig 1009");

    let mut client = raw_connect(&served, "/limits/handler").await;
    assert_eq!(send_sized(&mut client, 2500).await, "2500");
    assert_eq!(send_sized(&mut client, 3500).await, "close 1009");
    assert_eq!(reports.next().await, "MessageTooBig 1009");
}

#[tokio::test]
async fn one_mebibyte_is_the_default_message_limit_and_a_route_can_raise_it() {
    let (reporter, mut reports) = reports();
    let app = Tachyon::with_state(reporter)
        .websocket(default_limit)
        .websocket(raised_limit);
    let served = serve(app).await;
    let limit = 1024 * 1024;

    let mut client = raw_connect(&served, "/limits/default").await;
    assert_eq!(send_sized(&mut client, limit).await, limit.to_string());
    assert_eq!(send_sized(&mut client, limit + 1).await, "close 1009");
    assert_eq!(reports.next().await, "MessageTooBig 1009");

    let mut client = raw_connect(&served, "/limits/raised").await;
    assert_eq!(
        send_sized(&mut client, limit + 1).await,
        (limit + 1).to_string()
    );
}

#[tokio::test]
async fn plain_axum_routes_take_settings_as_a_layer() {
    let (reporter, mut reports) = reports();
    let app: axum::Router = axum::Router::new()
        .route(app_limit::PATH, app_limit::route())
        .layer(Settings::new().max_message_size(10))
        .with_state(reporter);
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/limits/app").await;
    assert_eq!(send_sized(&mut client, 10).await, "10");
    assert_eq!(send_sized(&mut client, 11).await, "close 1009");
    assert_eq!(reports.next().await, "MessageTooBig 1009");
}

// --- Keepalive and the idle timeout --------------------------------------------------------------

#[websocket(
    "/keepalive",
    keepalive_interval = Duration::from_millis(100),
    keepalive_timeout = Duration::from_millis(200)
)]
async fn keepalive(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[tokio::test]
async fn keepalive_closes_a_client_that_ignores_pings() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(keepalive)).await;
    // A client that reads nothing answers no ping.
    let mut client = raw_connect(&served, "/keepalive").await;
    assert_eq!(reports.next().await, "KeepaliveTimeout 1011");
    let (code, reason) = close_of(&mut client).await;
    assert_eq!(code, 1011);
    assert!(reason.contains("keepalive timeout"), "{reason}");
}

#[tokio::test]
async fn keepalive_keeps_a_client_that_answers() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(keepalive)).await;
    let mut client = raw_connect(&served, "/keepalive").await;
    // Reading answers the pings (tungstenite does): over a second, several come and go.
    let mut pings = 0;
    let listening = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(listening);
    loop {
        tokio::select! {
            () = &mut listening => break,
            frame = client.next() => match frame {
                Some(Ok(WireMessage::Ping(_))) => pings += 1,
                other => panic!("expected only pings, got {other:?}"),
            },
        }
    }
    assert!(
        pings >= 3,
        "only {pings} pings in a second at a 100 ms interval"
    );
    assert_eq!(send_sized(&mut client, 5).await, "5");
    within("closing", client.close(None)).await.expect("close");
    assert_eq!(reports.next().await, "ClientClosed 1005");
}

#[websocket(
    "/idle",
    idle_timeout = Duration::from_millis(300),
    keepalive_interval = Duration::from_millis(50)
)]
async fn idle(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    report_ending(&mut ws, &reports).await
}

#[tokio::test]
async fn the_idle_timeout_closes_a_client_that_only_answers_pings() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(idle)).await;
    let mut client = raw_connect(&served, "/idle").await;
    assert_eq!(send_sized(&mut client, 3).await, "3");
    // Pings are answered while reading, but no data message comes: 1001.
    let (code, reason) = close_of(&mut client).await;
    assert_eq!(code, 1001);
    assert!(reason.contains("idle timeout"), "{reason}");
    assert_eq!(reports.next().await, "IdleTimeout 1001");
}

// --- Graceful shutdown ---------------------------------------------------------------------------

#[websocket("/burst")]
async fn burst(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive_text().await {
            Ok(text) if text == "burst" => {
                for i in 0..20 {
                    ws.send_text(format!("{i}")).await?;
                }
                report(&reports, "queued");
            }
            Ok(_) => {}
            Err(Error::Disconnected(gone)) => {
                report(&reports, format!("{:?} {}", gone.kind, gone.code));
                return Ok(());
            }
            Err(other) => return Err(other),
        }
    }
}

/// Serves `app` on 127.0.0.1 until `stop` fires; the task ends when `serve_listener` returns.
async fn serve_until(
    app: Tachyon<Reporter>,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_listener(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

async fn connect_to(addr: std::net::SocketAddr, path: &str) -> Client {
    let (client, _) = within(
        "connecting",
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .expect("handshake");
    client
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_then_closes_every_connection_with_1001() {
    let (reporter, mut reports) = reports();
    let app = Tachyon::with_state(reporter)
        .websocket(burst)
        .shutdown_timeout(Duration::from_secs(5));
    let shutdown = app.shutdown_handle();
    let (addr, stop, server) = serve_until(app).await;

    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut client = connect_to(addr, "/burst").await;
        send_text(&mut client, "burst").await;
        clients.push(client);
    }
    for _ in 0..100 {
        assert_eq!(reports.next().await, "queued");
    }
    assert_eq!(shutdown.connections(), 100);
    stop.send(()).expect("the server is running");

    for client in &mut clients {
        for i in 0..20 {
            assert_eq!(next_text(client).await, i.to_string());
        }
        let (code, reason) = close_of(client).await;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
        // Polling once more sends the close reply and sees the end.
        assert!(within("the end", client.next()).await.is_none());
    }
    for _ in 0..100 {
        assert_eq!(reports.next().await, "ServerShutdown 1001");
    }
    within("the server to return", server)
        .await
        .expect("join")
        .expect("serve");
    assert_eq!(shutdown.connections(), 0);
}

#[websocket("/stubborn")]
async fn stubborn(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    // Ignores the shutdown: never receives, never returns.
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_drops_handlers_still_running_at_the_deadline() {
    let (reporter, _reports) = reports();
    let app = Tachyon::with_state(reporter)
        .websocket(stubborn)
        .shutdown_timeout(Duration::from_millis(300));
    let shutdown = app.shutdown_handle();
    let (addr, stop, server) = serve_until(app).await;
    let mut client = connect_to(addr, "/stubborn").await;
    stop.send(()).expect("the server is running");
    assert_eq!(close_of(&mut client).await.0, 1001);
    within("the server to return", server)
        .await
        .expect("join")
        .expect("serve");
    assert_eq!(shutdown.connections(), 0);
}

#[tokio::test]
async fn handshakes_during_shutdown_get_503_also_in_plain_axum() {
    let (reporter, _reports) = reports();
    let shutdown = Shutdown::new();
    let app: axum::Router = axum::Router::new()
        .route(burst::PATH, burst::route())
        .layer(axum::Extension(shutdown.clone()))
        .with_state(reporter);
    let server = support::server(app);
    support::connect(&server, "/burst").await;
    shutdown.start();
    support::handshake(&server, "/burst")
        .await
        .assert_status(axum::http::StatusCode::SERVICE_UNAVAILABLE);
}

// --- Typed endings -------------------------------------------------------------------------------

#[websocket("/endings")]
async fn endings(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    report_ending_with_close(&mut ws, &sender, &reports).await
}

async fn report_ending_with_close(
    ws: &mut WebSocket,
    sender: &tachyon::Sender,
    reports: &Reporter,
) -> tachyon::Result<()> {
    loop {
        match ws.receive_text().await {
            Ok(text) if text == "close me" => sender.close(4321, "as you wish")?,
            Ok(text) => ws.send_text(text).await?,
            Err(Error::Disconnected(gone)) => {
                report(
                    reports,
                    format!("{:?} {} {}", gone.kind, gone.code, gone.reason),
                );
                return Ok(());
            }
            Err(other) => return Err(other),
        }
    }
}

#[tokio::test]
async fn a_disconnect_says_why_as_a_type() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(endings)).await;

    let mut client = raw_connect(&served, "/endings").await;
    let frame = WireCloseFrame {
        code: 4002.into(),
        reason: "leaving".into(),
    };
    within("closing", client.close(Some(frame)))
        .await
        .expect("close");
    assert_eq!(reports.next().await, "ClientClosed 4002 leaving");

    let client = raw_connect(&served, "/endings").await;
    drop(client);
    let report = reports.next().await;
    assert!(report.starts_with("ConnectionLost 1006"), "{report}");

    let mut client = raw_connect(&served, "/endings").await;
    send_text(&mut client, "close me").await;
    assert_eq!(
        close_of(&mut client).await,
        (4321, "as you wish".to_owned())
    );
    assert_eq!(reports.next().await, "ClosedByServer 4321 as you wish");
}

#[websocket("/closed")]
async fn closed(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    let watcher = {
        let reports = reports.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let gone = sender.closed().await;
            report(
                &reports,
                format!("watcher saw {:?} {}", gone.kind, gone.code),
            );
        })
    };
    report(&reports, format!("id {}", sender.id()));
    let _ = ws.receive().await;
    let _ = watcher.await;
    Ok(())
}

#[tokio::test]
async fn closed_resolves_when_the_connection_ends_and_ids_are_unique() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(closed)).await;
    let mut first = raw_connect(&served, "/closed").await;
    let first_id = reports.next().await;
    let second = raw_connect(&served, "/closed").await;
    let second_id = reports.next().await;
    assert!(first_id.starts_with("id conn-"), "{first_id}");
    assert_ne!(first_id, second_id);
    within("closing", first.close(None)).await.expect("close");
    assert_eq!(reports.next().await, "watcher saw ClientClosed 1005");
    drop(second);
}

#[websocket("/closes-unread", close_timeout = Duration::from_secs(60))]
async fn closes_unread(
    mut ws: WebSocket,
    State((reports, go)): State<(Reporter, Arc<Notify>)>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    ws.send_text("send me something").await?;
    // Waits until the test knows the client's message was read ahead, then closes without
    // taking it.
    let _ = reports.send("waiting".to_owned());
    go.notified().await;
    sender.close(4000, "done here")?;
    // The handler keeps its socket (and the unread message) while the close completes.
    tokio::time::sleep(WAIT * 2).await;
    drop(ws);
    Ok(())
}

#[tokio::test]
async fn a_close_completes_even_with_a_message_the_handler_never_read() {
    let (reporter, mut reports) = reports();
    let go = Arc::new(Notify::new());
    let app = Tachyon::with_state((reporter, Arc::clone(&go))).websocket(closes_unread);
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/closes-unread").await;
    assert_eq!(next_text(&mut client).await, "send me something");
    assert_eq!(reports.next().await, "waiting");
    // A ping, then the message, in one write: the server reads them together, so once its pong
    // is back, the message behind the ping is in the handler's inbox (read ahead, not taken).
    within(
        "queueing the ping",
        client.feed(WireMessage::Ping("seen?".into())),
    )
    .await
    .expect("feed");
    within(
        "queueing the message",
        client.feed(WireMessage::text("unread")),
    )
    .await
    .expect("feed");
    within("sending both", client.flush()).await.expect("flush");
    match within("the pong", client.next()).await {
        Some(Ok(WireMessage::Pong(payload))) => assert_eq!(&payload[..], b"seen?"),
        other => panic!("expected the pong, got {other:?}"),
    }
    go.notify_one();
    assert_eq!(close_of(&mut client).await, (4000, "done here".to_owned()));
    // Polling sends the close reply; the server then ends the connection at once, not after
    // its 60 s close timeout (`within` would fail first).
    assert!(
        within("the end of the connection", client.next())
            .await
            .is_none()
    );
}

// --- Cancel-safety -------------------------------------------------------------------------------

#[websocket("/cancel")]
async fn cancel(mut ws: WebSocket) -> tachyon::Result<()> {
    // An `accept` dropped after its first poll leaves the handshake accepted; `accept` resumes.
    let dropped = ws.accept().now_or_never();
    assert!(dropped.is_none(), "the upgrade cannot complete in one poll");
    ws.accept().await?;
    ws.send_text("ready").await?;
    // Receives dropped by `select!` lose nothing: each is polled (and finds nothing, since the
    // client sends only once told), then dropped when `yield_now` wins on its second poll.
    for _ in 0..20 {
        tokio::select! {
            biased;
            text = ws.receive_text() => panic!("a message before the client was told: {text:?}"),
            () = tokio::task::yield_now() => {}
        }
    }
    ws.send_text("20 receives dropped").await?;
    let text = ws.receive_text().await?;
    ws.send_text(format!("got {text}")).await?;
    // A close future dropped before it ran closes nothing.
    drop(ws.close(4001, ""));
    ws.send_text("still open").await?;
    ws.close(4001, "").await
}

#[tokio::test]
async fn dropped_accept_receive_and_close_futures_leave_the_socket_usable() {
    let served = serve(Tachyon::new().websocket(cancel)).await;
    let mut client = raw_connect(&served, "/cancel").await;
    assert_eq!(next_text(&mut client).await, "ready");
    assert_eq!(next_text(&mut client).await, "20 receives dropped");
    send_text(&mut client, "one").await;
    assert_eq!(next_text(&mut client).await, "got one");
    assert_eq!(next_text(&mut client).await, "still open");
    assert_eq!(close_of(&mut client).await.0, 4001);
}
