//! Both sides of the resumable-rooms tests (`tests/history.rs`, `tests/history_redis.rs`): the
//! handler, which sends each broadcast as `"{position} {body}"` and, after the replay,
//! `recovered {missed}` or `not {reason}`; a member coming back; and, for the tests through Redis
//! (`tests/history_redis.rs`, `tests/metrics_redis.rs`), a server of the cluster serving it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use tachyon::rooms::{History, Position, Recovery, RedisConfig};
use tachyon::{Rooms, Tachyon, WebSocket, websocket};

use super::redis_server::RedisServer;
use super::{Client, Served, next_text, raw_connect, serve, within};

/// Joins `room` from `since` (if it parses), says `recovered {missed}` or `not {reason:?}`,
/// then broadcasts what it receives, prefixed with the broadcast's position; `rejoin SINCE`
/// joins again and says what that did.
#[websocket("/history/{room}?<since>")]
pub async fn resumer(
    mut ws: WebSocket,
    room: String,
    since: Option<String>,
    State(rooms): State<Rooms>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    let since = since.and_then(|text| text.parse::<Position>().ok());
    let recovery = rooms.join_since(&room, &ws, since).await?;
    ws.send_text(said(recovery)).await?;
    loop {
        let text = ws.receive_text().await?;
        if let Some(since) = text.strip_prefix("rejoin ") {
            let recovery = rooms.join_since(&room, &ws, since.parse().ok()).await?;
            ws.send_text(said(recovery)).await?;
            continue;
        }
        rooms
            .to(&room)
            .send_with(|position| format!("{} {text}", text_of(position)));
    }
}

fn said(recovery: Recovery) -> String {
    match recovery {
        Recovery::Recovered { missed } => format!("recovered {missed}"),
        Recovery::NotRecovered(reason) => format!("not {reason:?}"),
        other => format!("{other:?}"),
    }
}

/// A position as the handler writes it: `none` in a room without history.
pub fn text_of(position: Option<Position>) -> String {
    position.map_or_else(|| "none".to_owned(), |position| position.to_string())
}

/// A message as the test handlers broadcast it: its position, then its body.
pub fn split(message: &str) -> (Position, String) {
    let (position, body) = message.split_once(' ').expect("position, then body");
    (position.parse().expect("a position"), body.to_owned())
}

/// What a member resuming at `path` on `addr` got: the offsets of the messages, in the order
/// they came, up to `last`, and what the handler said of its recovery.
pub async fn resume(addr: SocketAddr, path: &str, last: u64) -> (Vec<u64>, Option<String>) {
    let url = format!("ws://{addr}{path}");
    let (mut client, _) = within("connecting", tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake");
    let (mut offsets, mut said) = (Vec::new(), None);
    // The handler's answer comes after the replay; live messages broadcast meanwhile may come
    // before it.
    while offsets.last() != Some(&last) || said.is_none() {
        let text = next_text(&mut client).await;
        match text.split_once(' ') {
            Some(("recovered" | "not", _)) => said = Some(text),
            _ => offsets.push(split(&text).0.offset()),
        }
    }
    (offsets, said)
}

/// Checks that each member, resumed from `since` (`during`: while the room was busy), got
/// exactly the offsets after it up to `last`, once each and in order, and recovered; and that
/// enough of them joined while the room was busy for that to mean something.
pub fn assert_every_offset_once(members: Vec<(u64, Vec<u64>, Option<String>, bool)>, last: u64) {
    let count = members.len();
    let mut joined_during = 0;
    for (since, offsets, said, during) in members {
        joined_during += usize::from(during);
        let expected: Vec<u64> = (since + 1..=last).collect();
        assert_eq!(
            offsets, expected,
            "from {since}: gap, duplicate or disorder"
        );
        assert!(
            said.as_deref()
                .is_some_and(|said| said.starts_with("recovered")),
            "from {since}: {said:?}"
        );
    }
    assert!(
        joined_during >= count / 2,
        "only {joined_during} of {count} members joined while the room was busy: the test proves little"
    );
}

/// Rooms through the Redis at `redis`, with a quick heartbeat and timeout.
pub fn config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::new(redis.url())
        .heartbeat(Duration::from_millis(200))
        .timeout(Duration::from_millis(500))
}

/// One server of a cluster: its rooms, and `resumer` served at `/history/{room}`.
pub struct Node {
    pub rooms: Rooms,
    pub served: Served,
}

/// A node whose rooms go through `redis` and keep `history`.
pub async fn node(redis: &RedisServer, history: History) -> Node {
    let rooms = within(
        "the rooms to reach Redis",
        Rooms::builder().history(history).redis(config(redis)),
    )
    .await
    .expect("Redis-backed rooms");
    let served = serve(Tachyon::with_state(rooms.clone()).websocket(resumer)).await;
    Node { rooms, served }
}

/// A member joining `room` on `node` (from position `since`, if given), and what it was told
/// first.
pub async fn join(node: &Node, room: &str, since: Option<&str>) -> (Client, String) {
    let path = match since {
        Some(since) => format!("/history/{room}?since={since}"),
        None => format!("/history/{room}"),
    };
    let mut client = raw_connect(&node.served, &path).await;
    let said = next_text(&mut client).await;
    (client, said)
}
