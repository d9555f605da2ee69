//! Rooms and broadcast over real sockets: who gets what, leaving however a connection ends,
//! slow members under each policy, a room of 1,000, concurrent use, presence, encode-once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{FromRef, State};
use futures_util::{SinkExt, StreamExt};
use tachyon::rooms::{Remote, SlowMember};
use tachyon::{ConnectionId, Rooms, Tachyon, WebSocket, websocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WireMessage;

use support::{Client, Served, next_text, raw_connect, reports, serve, within};

type Reporter = mpsc::UnboundedSender<String>;

#[derive(Clone)]
struct App {
    rooms: Rooms,
    reports: Reporter,
}

impl FromRef<App> for Rooms {
    fn from_ref(app: &App) -> Self {
        app.rooms.clone()
    }
}

impl FromRef<App> for Reporter {
    fn from_ref(app: &App) -> Self {
        app.reports.clone()
    }
}

/// A member of `room`: says its id, then broadcasts what it receives, or obeys it.
async fn member_loop(mut ws: WebSocket, room: String, rooms: Rooms) -> Result<(), String> {
    ws.accept().await.map_err(|error| error.to_string())?;
    rooms.join(&room, &ws).map_err(|error| error.to_string())?;
    let id = ws.sender().map_err(|error| error.to_string())?.id();
    ws.send_text(format!("joined {}", id.as_u64()))
        .await
        .map_err(|error| error.to_string())?;
    loop {
        let text = ws.receive_text().await.map_err(|error| error.to_string())?;
        match &*text {
            "error" => return Err("failing on purpose".to_owned()),
            "panic" => panic!("panicking on purpose"),
            "leave" => {
                rooms.leave(&room, id);
            }
            other => {
                rooms.to(&room).except(id).send(other.to_owned());
            }
        }
    }
}

#[websocket("/member/{room}")]
async fn member(ws: WebSocket, room: String, State(rooms): State<Rooms>) -> Result<(), String> {
    member_loop(ws, room, rooms).await
}

#[websocket("/slow/{room}", queue_messages = 64)]
async fn slow(ws: WebSocket, room: String, State(rooms): State<Rooms>) -> Result<(), String> {
    member_loop(ws, room, rooms).await
}

#[websocket("/reader/{room}", queue_messages = 200_000, queue_bytes = 64 * 1024 * 1024)]
async fn reader(ws: WebSocket, room: String, State(rooms): State<Rooms>) -> Result<(), String> {
    member_loop(ws, room, rooms).await
}

/// Rooms whose presence hooks report `joined ROOM ID` and `left ROOM ID`.
fn reporting_rooms(reports: &Reporter, policy: SlowMember) -> Rooms {
    let (joins, leaves) = (reports.clone(), reports.clone());
    Rooms::builder()
        .slow_member(policy)
        .on_join(move |_, room, member| {
            let _ = joins.send(format!("joined {room} {}", member.id().as_u64()));
        })
        .on_leave(move |_, room, member| {
            let _ = leaves.send(format!("left {room} {}", member.id().as_u64()));
        })
        .build()
}

async fn app(policy: SlowMember) -> (Served, Rooms, support::Reports) {
    let (reporter, reports) = reports();
    let rooms = reporting_rooms(&reporter, policy);
    let state = App {
        rooms: rooms.clone(),
        reports: reporter,
    };
    let served = serve(
        Tachyon::with_state(state)
            .websocket(member)
            .websocket(slow)
            .websocket(reader),
    )
    .await;
    (served, rooms, reports)
}

/// Joins `path` and returns the client and its connection id, once the join was reported.
async fn join(
    served: &Served,
    path: &str,
    reports: &mut support::Reports,
) -> (Client, ConnectionIdNumber) {
    let mut client = raw_connect(served, path).await;
    let greeting = next_text(&mut client).await;
    let id: u64 = greeting
        .strip_prefix("joined ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected greeting {greeting}"));
    let report = reports.next().await;
    assert!(
        report.starts_with("joined ") && report.ends_with(&format!(" {id}")),
        "{report}"
    );
    (client, id)
}

type ConnectionIdNumber = u64;

async fn send(client: &mut Client, text: &str) {
    within("sending", client.send(WireMessage::text(text)))
        .await
        .expect("send");
}

fn ids(rooms: &Rooms, room: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = rooms
        .members(room)
        .into_iter()
        .map(|member| member.id().as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_broadcast_reaches_exactly_the_rooms_members_once_and_in_order() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    let mut a1 = join(&served, "/member/a", &mut reports).await;
    let mut a2 = join(&served, "/member/a", &mut reports).await;
    let mut b1 = join(&served, "/member/b", &mut reports).await;
    let mut expected = vec![a1.1, a2.1];
    expected.sort_unstable();
    assert_eq!(ids(&rooms, "a"), expected);
    assert_eq!(rooms.member_count("b"), 1);

    for i in 0..100 {
        let delivery = rooms.to("a").send(format!("m{i}"));
        assert_eq!(
            (
                delivery.reached(),
                delivery.dropped(),
                delivery.closed(),
                delivery.remote()
            ),
            (2, 0, 0, Remote::InProcess)
        );
        assert!(delivery.is_complete());
    }
    rooms.to("b").send("only b");
    for client in [&mut a1.0, &mut a2.0] {
        for i in 0..100 {
            assert_eq!(next_text(client).await, format!("m{i}"));
        }
    }
    // b's first message is its own: none of a's reached it.
    assert_eq!(next_text(&mut b1.0).await, "only b");

    // A member's message goes to the others, not back to it.
    send(&mut a1.0, "hello from a1").await;
    assert_eq!(next_text(&mut a2.0).await, "hello from a1");
    rooms.to("a").send("after");
    assert_eq!(next_text(&mut a1.0).await, "after");
}

#[tokio::test]
async fn members_leave_however_their_connection_ends() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    for ending in ["close", "drop", "error", "panic", "leave"] {
        let (mut client, id) = join(&served, "/member/lobby", &mut reports).await;
        assert_eq!(rooms.rooms_of(tachyon_id(&rooms, id)), ["lobby"]);
        match ending {
            "close" => within("closing", client.close(None)).await.expect("close"),
            "drop" => drop(client),
            other => send(&mut client, other).await,
        }
        assert_eq!(reports.next().await, format!("left lobby {id}"), "{ending}");
        assert_eq!(rooms.member_count("lobby"), 0, "{ending}");
    }
    // Empty rooms are freed.
    assert!(rooms.room_names().is_empty());
}

/// The `ConnectionId` of a member, by its number.
fn tachyon_id(rooms: &Rooms, number: u64) -> ConnectionId {
    rooms
        .room_names()
        .iter()
        .flat_map(|room| rooms.members(room))
        .map(|member| member.id())
        .find(|id| id.as_u64() == number)
        .unwrap_or_else(|| panic!("connection {number} is in no room"))
}

/// What many broadcasts did, added up.
#[derive(Debug, Default)]
struct Total {
    reached: usize,
    dropped: usize,
    closed: usize,
}

async fn slow_member_scenario(policy: SlowMember) -> (Total, Vec<u64>, u64, Rooms) {
    let (served, rooms, mut reports) = app(policy).await;
    let mut readers = vec![
        join(&served, "/reader/busy", &mut reports).await,
        join(&served, "/reader/busy", &mut reports).await,
    ];
    // Joined, then never reads again.
    let (_stalled, stalled_id) = join(&served, "/slow/busy", &mut reports).await;

    let mut total = Total::default();
    for i in 0..100_000 {
        let delivery = rooms.to("busy").send(format!("{i}"));
        total.reached += delivery.reached();
        total.dropped += delivery.dropped();
        total.closed += delivery.closed();
    }
    // The readers get everything, in order, whatever the stalled member does.
    for (client, _) in &mut readers {
        for i in 0..100_000 {
            assert_eq!(next_text(client).await, i.to_string());
        }
    }
    (total, ids(&rooms, "busy"), stalled_id, rooms)
}

#[tokio::test]
async fn a_member_that_stops_reading_is_closed_and_counted_without_slowing_the_room() {
    let (total, members, stalled, _rooms) = slow_member_scenario(SlowMember::Close).await;
    assert_eq!(total.closed, 1, "{total:?}");
    assert_eq!(total.dropped, 0, "{total:?}");
    // Both readers got all 100,000; the stalled member got what fitted before it was closed.
    let stalled_got = total.reached - 200_000;
    assert!(stalled_got < 100_000, "{total:?}");
    assert!(
        !members.contains(&stalled),
        "the closed member left the room"
    );
    assert_eq!(members.len(), 2);
}

#[tokio::test]
async fn with_the_drop_policy_a_slow_member_misses_messages_but_stays() {
    let (total, members, stalled, _rooms) = slow_member_scenario(SlowMember::Drop).await;
    assert_eq!(total.closed, 0, "{total:?}");
    assert!(total.dropped > 0, "{total:?}");
    assert_eq!(total.reached + total.dropped, 300_000, "{total:?}");
    assert!(members.contains(&stalled));
}

#[websocket("/stalled-close/{room}", queue_messages = 8)]
async fn stalled_close(
    mut ws: WebSocket,
    room: String,
    State(app): State<App>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    app.rooms.join(&room, &ws)?;
    let _ = app.reports.send("joined".to_owned());
    // Never receives until the connection ends, then reports how.
    let sender = ws.sender()?;
    let gone = sender.closed().await;
    let _ = app
        .reports
        .send(format!("{:?} {} {}", gone.kind, gone.code, gone.reason));
    Ok(())
}

#[tokio::test]
async fn a_closed_slow_member_is_told_1013() {
    let (reporter, mut reports) = reports();
    let rooms = Rooms::new();
    let state = App {
        rooms: rooms.clone(),
        reports: reporter,
    };
    let served = serve(Tachyon::with_state(state).websocket(stalled_close)).await;
    let mut client = raw_connect(&served, "/stalled-close/r").await;
    assert_eq!(reports.next().await, "joined");
    let mut closed = 0;
    for _ in 0..10_000 {
        closed += rooms.to("r").send(vec![0u8; 1024]).closed();
    }
    assert_eq!(closed, 1);
    assert_eq!(
        reports.next().await,
        "ClosedByServer 1013 too slow: the outbound queue is full"
    );
    // Reading now, the client finds what was queued, then the 1013.
    let code = loop {
        match within("the close", client.next()).await {
            Some(Ok(WireMessage::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected the close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1013);
}

#[tokio::test]
async fn a_room_of_a_thousand_members() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(join(&served, "/member/big", &mut reports).await.0);
    }
    assert_eq!(rooms.member_count("big"), 1000);
    let delivery = rooms.to("big").send("to all");
    assert_eq!(delivery.reached(), 1000);
    for client in &mut clients {
        assert_eq!(next_text(client).await, "to all");
    }
    drop(clients);
    for _ in 0..1000 {
        assert!(reports.next().await.starts_with("left big "));
    }
    assert_eq!(rooms.member_count("big"), 0);
    assert!(rooms.room_names().is_empty());
}

#[tokio::test]
async fn concurrent_joins_leaves_and_broadcasts_end_with_exact_counts() {
    let (served, rooms, mut reports) = app(SlowMember::Drop).await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(join(&served, "/reader/home", &mut reports).await);
    }
    let senders: Vec<ConnectionId> = rooms
        .members("home")
        .iter()
        .map(|member| member.id())
        .collect();
    assert_eq!(senders.len(), 40);
    let room_names: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();

    let mut tasks = tokio::task::JoinSet::new();
    // Each task owns one connection's memberships: 200 rounds of joining all eight rooms and
    // leaving the odd ones, ending in the even ones.
    for id in senders.iter().copied() {
        let (rooms, names) = (rooms.clone(), room_names.clone());
        tasks.spawn(async move {
            let sender_rooms = rooms.rooms_of(id);
            assert_eq!(sender_rooms, ["home"]);
            for round in 0..200 {
                for (i, name) in names.iter().enumerate() {
                    // Join through the home room's member list: the same connection.
                    let _ = rooms.send_to(id, format!("round {round}"));
                    rooms_join_by_id(&rooms, name, id);
                    if i % 2 == 1 {
                        rooms.leave(name, id);
                    }
                }
                tokio::task::yield_now().await;
            }
        });
    }
    // Meanwhile, broadcasts to every room.
    for _ in 0..4 {
        let (rooms, names) = (rooms.clone(), room_names.clone());
        tasks.spawn(async move {
            for _ in 0..200 {
                for name in &names {
                    rooms.to(name).send("noise");
                }
                tokio::task::yield_now().await;
            }
        });
    }
    within("every task, with no deadlock", async {
        while let Some(result) = tasks.join_next().await {
            result.expect("task");
        }
    })
    .await;
    for (i, name) in room_names.iter().enumerate() {
        let expected = if i % 2 == 0 { 40 } else { 0 };
        assert_eq!(rooms.member_count(name), expected, "{name}");
    }
    let mut names = rooms.room_names();
    names.sort();
    assert_eq!(names, ["home", "r0", "r2", "r4", "r6"]);
    drop(clients);
}

/// Joins `room` with the connection `id` (already a member elsewhere), through a sender found
/// by sending to it: what an app does when it keeps ids, not sockets.
fn rooms_join_by_id(rooms: &Rooms, room: &str, id: ConnectionId) {
    let sender = rooms.sender(id).expect("a member");
    rooms.join(room, &sender).expect("a sender joins");
}

#[tokio::test]
async fn close_room_and_close_all() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    let mut x = join(&served, "/member/x", &mut reports).await.0;
    let mut y = join(&served, "/member/y", &mut reports).await.0;
    assert_eq!(rooms.close_room("x", 4100, "room closed").expect("code"), 1);
    let close_code = |message: Option<Result<WireMessage, _>>| match message {
        Some(Ok(WireMessage::Close(Some(frame)))) => u16::from(frame.code),
        other => panic!("expected a close, got {other:?}"),
    };
    assert_eq!(close_code(within("x's close", x.next()).await), 4100);
    assert_eq!(rooms.close_all(4200, "bye").expect("code"), 1);
    assert_eq!(close_code(within("y's close", y.next()).await), 4200);
    assert!(rooms.close_all(1005, "").is_err(), "1005 cannot be sent");
}

/// Serializes as a string, counting how often it was serialized.
struct Counted(Arc<AtomicUsize>);

impl serde::Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        serializer.serialize_str("counted")
    }
}

#[tokio::test]
async fn json_is_encoded_once_per_broadcast() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(join(&served, "/member/json", &mut reports).await.0);
    }
    let count = Arc::new(AtomicUsize::new(0));
    let delivery = rooms
        .to("json")
        .send_json(&Counted(Arc::clone(&count)))
        .expect("serializable");
    assert_eq!(delivery.reached(), 3);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    for client in &mut clients {
        assert_eq!(next_text(client).await, "\"counted\"");
    }
}

#[tokio::test]
async fn presence_hooks_see_joins_and_leaves_in_order() {
    let (served, rooms, mut reports) = app(SlowMember::Close).await;
    let (mut first, first_id) = join(&served, "/member/p", &mut reports).await;
    let (second, second_id) = join(&served, "/member/p", &mut reports).await;
    send(&mut first, "leave").await;
    assert_eq!(reports.next().await, format!("left p {first_id}"));
    drop(second);
    assert_eq!(reports.next().await, format!("left p {second_id}"));
    assert_eq!(rooms.member_count("p"), 0);
}

#[tokio::test]
async fn a_waiting_broadcast_waits_for_a_slow_member_and_loses_nothing() {
    let (reporter, mut reports) = reports();
    let rooms = Rooms::new();
    let state = App {
        rooms: rooms.clone(),
        reports: reporter,
    };
    let served = serve(Tachyon::with_state(state).websocket(stalled_close)).await;
    let mut client = raw_connect(&served, "/stalled-close/w").await;
    assert_eq!(reports.next().await, "joined");

    // 400 × 64 KiB: more than the member's queue (8) and both kernel buffers can hold.
    const MESSAGES: usize = 400;
    let broadcaster = {
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let mut reached = 0;
            for i in 0..MESSAGES {
                let mut message = vec![0u8; 64 * 1024];
                message[..8].copy_from_slice(&(i as u64).to_be_bytes());
                reached += rooms.to("w").send_waiting(message).await.reached();
            }
            reached
        })
    };
    // The member reads nothing yet: the broadcaster cannot be done.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !broadcaster.is_finished(),
        "the broadcast should wait for room"
    );
    // Now it reads: every message arrives, in order, and the broadcaster finishes.
    for i in 0..MESSAGES {
        match within("a message", client.next()).await {
            Some(Ok(WireMessage::Binary(bytes))) => {
                assert_eq!(bytes[..8], (i as u64).to_be_bytes(), "message {i}");
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    assert_eq!(
        within("the broadcaster", broadcaster).await.expect("join"),
        MESSAGES
    );
    assert_eq!(
        rooms.member_count("w"),
        1,
        "waiting never closes the member"
    );
}

#[tokio::test]
async fn members_carry_their_data_to_the_hooks_and_the_listings() {
    let (reports, mut reported) = support::reports();
    let (joins, leaves) = (reports.clone(), reports.clone());
    let rooms = Rooms::with_member_data::<String>()
        .on_join(move |rooms, room, member| {
            // The hook sees the data, and the member is listed already.
            let listed = rooms
                .members(room)
                .iter()
                .any(|listed| listed.id() == member.id() && listed.data() == member.data());
            let _ = joins.send(format!("joined {room} {} {listed}", member.data()));
        })
        .on_leave(move |_, room, member| {
            let _ = leaves.send(format!("left {room} {}", member.data()));
        })
        .build();
    let served = serve(Tachyon::with_state(rooms.clone()).websocket(support::named)).await;

    let mut alice = raw_connect(&served, "/named/lobby").await;
    send(&mut alice, "alice").await;
    assert_eq!(next_text(&mut alice).await, "joined");
    assert_eq!(reported.next().await, "joined lobby alice true");
    let mut bob = raw_connect(&served, "/named/lobby").await;
    send(&mut bob, "bob").await;
    assert_eq!(next_text(&mut bob).await, "joined");
    assert_eq!(reported.next().await, "joined lobby bob true");

    let mut names: Vec<String> = rooms
        .members("lobby")
        .into_iter()
        .map(|member| member.into_data())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);

    // Joining again keeps the newest data, and is not a second join.
    send(&mut bob, "rename robert").await;
    assert_eq!(next_text(&mut bob).await, "renamed");
    let bob_data: Vec<String> = rooms
        .members("lobby")
        .into_iter()
        .map(|member| member.into_data())
        .filter(|name| name != "alice")
        .collect();
    assert_eq!(bob_data, ["robert"]);

    // The leave hook gets the data the member had, however its connection ends.
    drop(bob);
    assert_eq!(reported.next().await, "left lobby robert");
    alice.close(None).await.expect("the client closes");
    assert_eq!(reported.next().await, "left lobby alice");
    assert!(rooms.members("lobby").is_empty());
}
