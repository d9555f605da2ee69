//! Broadcasts written straight into idle members' sockets (connections served by
//! `Tachyon::serve` over HTTP/1.1): the order each member sees is the order sends were issued,
//! whichever way each message went (straight, queued, or written in part then finished by the
//! connection), and frames never interleave.

mod support;

use axum::extract::State;
use futures_util::{SinkExt, StreamExt};
use tachyon::rooms::SlowMember;
use tachyon::{ConnectionId, Rooms, Settings, Tachyon, WebSocket, websocket};
use tokio_tungstenite::tungstenite::Message as WireMessage;

use support::{raw_connect, within};

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
async fn joined(client: &mut support::Client) -> ConnectionId {
    match within("the join", client.next()).await {
        Some(Ok(WireMessage::Text(text))) => text
            .as_str()
            .strip_prefix("joined ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected `joined ID`, got {text}")),
        other => panic!("expected `joined ID`, got {other:?}"),
    }
}

async fn next_text(client: &mut support::Client) -> String {
    match within("a message", client.next()).await {
        Some(Ok(WireMessage::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_and_direct_sends_arrive_in_the_order_issued() {
    let rooms = Rooms::new();
    let served = support::serve_tachyon(Tachyon::with_state(rooms.clone()).websocket(member)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_gets_every_frame_whole_once_it_reads_again() {
    let rooms = Rooms::builder().slow_member(SlowMember::Drop).build();
    let app = Tachyon::with_state(rooms.clone())
        .settings(Settings::new().keepalive_interval(None))
        .websocket(member);
    let served = support::serve_tachyon(app).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_socket_and_queue_are_full_is_closed_and_the_broadcast_goes_on() {
    let rooms = Rooms::new();
    let app = Tachyon::with_state(rooms.clone())
        .settings(Settings::new().keepalive_interval(None))
        .websocket(stuck);
    let served = support::serve_tachyon(app).await;
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
