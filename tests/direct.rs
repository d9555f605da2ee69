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
    // The client reads nothing while 400 messages of 64 KiB (25 MiB) go out: the socket's
    // buffers fill, a broadcast is written in part, and the rest waits in the queue.
    let messages: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "{i:05} {}",
                char::from(b'a' + (i % 26) as u8)
                    .to_string()
                    .repeat(64 * 1024)
            )
        })
        .collect();
    for message in &messages {
        let delivery = rooms.to("all").send(message.clone());
        assert_eq!(delivery.reached(), 1, "the queue has room for all of them");
    }
    for (i, message) in messages.iter().enumerate() {
        assert!(
            next_text(&mut client).await == *message,
            "message {i} came back different"
        );
    }
    within("closing", client.send(WireMessage::Close(None)))
        .await
        .expect("close");
}
