//! Broadcasts written straight into idle members' connections over HTTP/1.1, served by
//! `Tachyon::serve` (into the TCP socket) and by `axum::serve` (into the upgraded connection,
//! under its lock): a broadcast reaches an idle member without its task running; the order each
//! member sees is the order sends were issued, whichever way each message went (straight,
//! queued, or written in part then finished by the connection), and frames never interleave.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use futures_util::Stream;
use futures_util::{SinkExt, StreamExt};
use tachyon::rooms::SlowMember;
use tachyon::{ConnectionId, Rooms, Settings, Tachyon, WebSocket, websocket};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WireMessage};

use support::{Served, raw_connect, within};

/// The two servers whose connections broadcasters write into.
#[derive(Debug, Clone, Copy)]
enum Server {
    Tachyon,
    Axum,
}

async fn serve<S: Clone + Send + Sync + 'static>(server: Server, app: Tachyon<S>) -> Served {
    match server {
        Server::Tachyon => support::serve_tachyon(app).await,
        Server::Axum => support::serve(app).await,
    }
}

/// Runs a case once per server, on two worker threads unless told `current_thread`.
macro_rules! on_both_servers {
    ($case:ident: $tachyon:ident, $axum:ident) => {
        on_both_servers!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] $case: $tachyon, $axum);
    };
    (current_thread $case:ident: $tachyon:ident, $axum:ident) => {
        on_both_servers!(#[tokio::test] $case: $tachyon, $axum);
    };
    (#[$test:meta] $case:ident: $tachyon:ident, $axum:ident) => {
        #[$test]
        async fn $tachyon() {
            $case(Server::Tachyon).await;
        }

        #[$test]
        async fn $axum() {
            $case(Server::Axum).await;
        }
    };
}

/// Joins "all", says so, then reads until the client leaves.
#[websocket("/member", queue_bytes = 64 * 1024 * 1024, queue_messages = 100_000)]
async fn member(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("all", &ws)?;
    ws.send_text(format!("joined {}", ws.id())).await?;
    while ws.receive().await.is_ok() {}
    Ok(())
}

/// Waits for the member to be in the room; returns its id.
async fn joined(
    client: &mut (impl Stream<Item = Result<WireMessage, WsError>> + Unpin),
) -> ConnectionId {
    match within("the join", client.next()).await {
        Some(Ok(WireMessage::Text(text))) => text
            .as_str()
            .strip_prefix("joined ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected `joined ID`, got {text}")),
        other => panic!("expected `joined ID`, got {other:?}"),
    }
}

async fn next_text(
    client: &mut (impl Stream<Item = Result<WireMessage, WsError>> + Unpin),
) -> String {
    match within("a message", client.next()).await {
        Some(Ok(WireMessage::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

on_both_servers!(in_order: in_the_order_issued_under_tachyon_serve, in_the_order_issued_under_axum_serve);

/// Broadcasts and direct sends arrive in the order issued.
async fn in_order(server: Server) {
    let rooms = Rooms::new();
    let served = serve(server, Tachyon::with_state(rooms.clone()).websocket(member)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = raw_connect(&served, "/member").await;
        let id = joined(&mut client).await;
        clients.push((id, client, Vec::new()));
    }
    // Broadcasts (straight into idle sockets, or queued behind what is on its way) mixed with
    // sends to the first member through its queue.
    let first = rooms.sender(clients[0].0).expect("a member");
    for i in 0..2000 {
        let text = format!("broadcast {i}");
        assert_eq!(rooms.to("all").send(text.clone()).reached(), 3);
        for (_, _, expected) in &mut clients {
            expected.push(text.clone());
        }
        if i % 7 == 0 {
            let direct = format!("direct {i}");
            first
                .try_send_text(direct.clone())
                .expect("room in the queue");
            clients[0].2.push(direct);
        }
    }
    for (_, mut client, expected) in clients {
        let mut got = Vec::with_capacity(expected.len());
        while got.len() < expected.len() {
            got.push(next_text(&mut client).await);
        }
        assert!(got == expected, "a member saw another order");
        let _ = client.close(None).await;
    }
}

on_both_servers!(
    whole_frames: frames_stay_whole_under_tachyon_serve,
    frames_stay_whole_under_axum_serve
);

/// A member that stops reading gets every frame whole once it reads again.
async fn whole_frames(server: Server) {
    let rooms = Rooms::builder().slow_member(SlowMember::Drop).build();
    let app = Tachyon::with_state(rooms.clone())
        .settings(Settings::new().keepalive_interval(None))
        .websocket(member);
    let served = serve(server, app).await;
    let mut client = raw_connect(&served, "/member").await;
    joined(&mut client).await;
    // The client reads nothing while 100 messages of 64 KiB go out: the socket's buffers fill,
    // a broadcast is written in part, and the rest waits in the queue. Then it reads while 400
    // more go out, so that broadcasts keep arriving while the connection has a frame half
    // written: none may be written into the socket then.
    let messages: Vec<String> = (0..500)
        .map(|i| {
            let fill = char::from(b'a' + (i % 26) as u8).to_string();
            format!("{i:05} {}", fill.repeat(64 * 1024 + i * 7))
        })
        .collect();
    for message in &messages[..100] {
        let delivery = rooms.to("all").send(message.clone());
        assert_eq!(delivery.reached(), 1, "the queue has room for all of them");
    }
    let broadcaster = tokio::spawn({
        let rooms = rooms.clone();
        let later = messages[100..].to_vec();
        async move {
            for message in later {
                assert_eq!(rooms.to("all").send(message).reached(), 1);
                tokio::task::yield_now().await;
            }
        }
    });
    for (i, message) in messages.iter().enumerate() {
        assert!(
            next_text(&mut client).await == *message,
            "message {i} came back different"
        );
    }
    within("the broadcaster", broadcaster)
        .await
        .expect("broadcasts");
    within("closing", client.send(WireMessage::Close(None)))
        .await
        .expect("close");
}

/// Joins "all" with a small queue, says so, then never reads.
#[websocket("/stuck", queue_messages = 8)]
async fn stuck(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("all", &ws)?;
    ws.send_text(format!("joined {}", ws.id())).await?;
    ws.sender()?.closed().await;
    Ok(())
}

on_both_servers!(
    full: a_full_member_is_closed_under_tachyon_serve,
    a_full_member_is_closed_under_axum_serve
);

/// A member whose socket and queue are full is closed, and the broadcast goes on.
async fn full(server: Server) {
    let rooms = Rooms::new();
    let app = Tachyon::with_state(rooms.clone())
        .settings(Settings::new().keepalive_interval(None))
        .websocket(stuck);
    let served = serve(server, app).await;
    let mut client = raw_connect(&served, "/stuck").await;
    joined(&mut client).await;
    // The client reads nothing: the socket's buffers fill, then the queue's 8 places; the next
    // broadcast closes it (1013, the default policy) instead of waiting.
    let message = "x".repeat(64 * 1024);
    let mut closed_after = None;
    for i in 0..1000 {
        let delivery = rooms.to("all").send(message.clone());
        if delivery.closed() == 1 {
            closed_after = Some(i);
            break;
        }
        assert_eq!(delivery.reached(), 1);
    }
    let sent = closed_after.expect("the member was closed once its queue was full");
    assert!(
        sent >= 8,
        "closed after {sent} messages, before its queue was full"
    );
    assert_eq!(rooms.to("all").send("after").reached(), 0);
    // What was written before the close still arrives whole, then the close.
    let mut got = 0;
    loop {
        match within("the messages, then the close", client.next()).await {
            Some(Ok(WireMessage::Text(text))) => {
                assert!(
                    text.as_str() == message,
                    "message {got} came back different"
                );
                got += 1;
            }
            Some(Ok(WireMessage::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1013);
                break;
            }
            other => panic!("expected messages then a close, got {other:?}"),
        }
    }
    assert!(got >= 8 && got <= sent, "{got} of {sent} messages arrived");
}

/// The member's handler blocks its task (so its connection's driver cannot run either) until the
/// test lets it go, once the client asks.
#[websocket("/held")]
async fn held(
    mut ws: WebSocket,
    State((rooms, hold)): State<(Rooms, Hold)>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("all", &ws)?;
    ws.send_text(format!("joined {}", ws.id())).await?;
    ws.receive_text().await?;
    tokio::task::block_in_place(|| {
        let (entered, release) = &*hold.lock().expect("the hold");
        entered.send(()).expect("the test waits");
        release.recv_timeout(Duration::from_secs(30))
    })
    .expect("released");
    while ws.receive().await.is_ok() {}
    Ok(())
}

/// The handler's side of the hold: it says it holds, then waits to be released.
type Hold = Arc<Mutex<(mpsc::Sender<()>, mpsc::Receiver<()>)>>;

on_both_servers!(
    without_its_task: reaches_a_held_member_under_tachyon_serve,
    reaches_a_held_member_under_axum_serve
);

/// A broadcast reaches an idle member while the member's task cannot run: the broadcaster wrote
/// it into the connection itself (a queued message would wait for the task).
async fn without_its_task(server: Server) {
    let rooms = Rooms::new();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let hold: Hold = Arc::new(Mutex::new((entered_tx, release_rx)));
    let app = Tachyon::with_state((rooms.clone(), hold)).websocket(held);
    let served = serve(server, app).await;
    let mut client = raw_connect(&served, "/held").await;
    joined(&mut client).await;
    within("asking to hold", client.send(WireMessage::text("hold")))
        .await
        .expect("send");
    within(
        "the handler holding",
        tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10))),
    )
    .await
    .expect("the wait")
    .expect("the handler holds its task");
    assert_eq!(rooms.to("all").send("while held").reached(), 1);
    assert_eq!(next_text(&mut client).await, "while held");
    release.send(()).expect("the handler waits");
    let _ = within("closing", client.close(None)).await;
}

/// A member on an HTTP/2 stream (whose socket is the whole connection's) gets broadcasts
/// through its queue, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_an_http2_stream_gets_every_broadcast_in_order() {
    let rooms = Rooms::new();
    let served = support::serve(Tachyon::with_state(rooms.clone()).websocket(member)).await;
    let (mut response, driver) = support::http2_handshake(served.addr, "/member", None).await;
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let upgraded = within("the upgrade", hyper::upgrade::on(&mut response))
        .await
        .expect("upgraded");
    let mut client = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    joined(&mut client).await;
    for i in 0..200 {
        assert_eq!(rooms.to("all").send(format!("broadcast {i}")).reached(), 1);
    }
    for i in 0..200 {
        assert_eq!(next_text(&mut client).await, format!("broadcast {i}"));
    }
    let _ = within("closing", client.close(None)).await;
    driver.abort();
}

/// Broadcasts every text message it receives to the room.
#[websocket("/chat")]
async fn chat(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("all", &ws)?;
    ws.send_text(format!("joined {}", ws.id())).await?;
    loop {
        let text = ws.receive_text().await?;
        rooms.to("all").send(text);
    }
}

on_both_servers!(
    current_thread chat_burst: a_chat_burst_reaches_reading_members_under_tachyon_serve,
    a_chat_burst_reaches_reading_members_under_axum_serve
);

/// A client sends 20,000 messages as fast as it can; the handler broadcasts each one to the
/// room, written straight into the members' idle sockets; the sender and another member read
/// as fast as they can, on the server's one thread. Every member gets every message: the
/// handler's loop yields now and then (each message received takes from the task's budget),
/// so the members' clients get to read before their queues overflow (which would close them
/// with 1013).
async fn chat_burst(server: Server) {
    const BURST: usize = 20_000;
    /// The burst's message `i`: 1 KiB.
    fn burst(i: usize) -> String {
        format!("{i:05} {}", "x".repeat(1018))
    }

    let rooms = Rooms::new();
    let served = serve(server, Tachyon::with_state(rooms.clone()).websocket(chat)).await;
    let mut sender = raw_connect(&served, "/chat").await;
    joined(&mut sender).await;
    let mut reader = raw_connect(&served, "/chat").await;
    joined(&mut reader).await;
    let (mut sink, echoes) = sender.split();
    /// Reads the whole burst, in order.
    async fn read_all(mut client: impl Stream<Item = Result<WireMessage, WsError>> + Unpin) {
        for i in 0..BURST {
            assert_eq!(next_text(&mut client).await, burst(i), "message {i}");
        }
    }
    let echoed = tokio::spawn(read_all(echoes));
    let read = tokio::spawn(read_all(reader));
    for i in 0..BURST {
        within("sending", sink.feed(WireMessage::text(burst(i))))
            .await
            .expect("the sender is not closed");
    }
    within("flushing", sink.flush()).await.expect("flush");
    within("the sender's echoes", echoed)
        .await
        .expect("every echo");
    within("the reader", read).await.expect("every message");
}
