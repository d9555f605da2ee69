//! Rooms across servers through a real Redis: several Tachyon servers in one test, each with
//! its own Redis-backed `Rooms` on its own port, clients on each. Cross-node broadcast exactly
//! once, order, except and send-to across nodes, exact cluster-wide counts, subscriptions only
//! where there are members, a node that dies, and Redis restarted in the middle.
//!
//! The harness starts its own `redis-server` (from the system's packages) on a free port and
//! stops it after; without one on PATH these tests fail saying how to get it.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat_example;
mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour_example;

use std::time::Duration;

use axum::extract::State;
use tachyon::rooms::{ClusterError, ClusterState, Member, RedisConfig, Remote};
use tachyon::{ConnectionId, Rooms, Tachyon, WebSocket, websocket};

use support::redis_server::RedisServer;
use support::{
    Client, Served, next_json, next_text, raw_connect, send_json, send_text, serve, within,
};

/// Heartbeat and round-trip timeout of the test nodes: a dead node drops out after
/// `config().expiry()` (1.2 s).
const HEARTBEAT: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(500);

fn config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::new(redis.url())
        .heartbeat(HEARTBEAT)
        .timeout(TIMEOUT)
}

/// A chat member: says `joined ID`, then broadcasts each text to its room; `except TEXT`
/// leaves itself out, `leave` leaves the room.
#[websocket("/chat/{room}")]
async fn chat(mut ws: WebSocket, room: String, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join(&room, &ws)?;
    let id = ws.sender()?.id();
    ws.send_text(format!("joined {id}")).await?;
    loop {
        let text = ws.receive_text().await?;
        if let Some(rest) = text.strip_prefix("except ") {
            rooms.to(&room).except(id).send(rest.to_owned());
        } else if &*text == "leave" {
            rooms.leave(&room, id);
            ws.send_text("left").await?;
        } else {
            rooms.to(&room).send(text);
        }
    }
}

async fn redis_rooms(redis: &RedisServer) -> Rooms {
    within(
        "the rooms to reach Redis",
        Rooms::builder().redis(config(redis)),
    )
    .await
    .expect("Redis-backed rooms")
}

/// One Tachyon server with its Redis-backed rooms.
struct Node {
    rooms: Rooms,
    served: Served,
}

async fn node(redis: &RedisServer) -> Node {
    let rooms = redis_rooms(redis).await;
    let served = serve(Tachyon::with_state(rooms.clone()).websocket(chat)).await;
    Node { rooms, served }
}

/// A client in `room` on `node`, and its connection id.
async fn member(node: &Node, room: &str) -> (Client, ConnectionId) {
    let mut client = raw_connect(&node.served, &format!("/chat/{room}")).await;
    let greeting = next_text(&mut client).await;
    let id = greeting
        .strip_prefix("joined ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected greeting {greeting}"));
    (client, id)
}

/// Waits until `rooms` counts `expected` members in `room` over the cluster.
async fn until_count<M>(rooms: &Rooms<M>, room: &str, expected: usize)
where
    M: Clone + Send + Sync + 'static,
{
    within(
        &format!("{expected} members in {room} cluster-wide"),
        async {
            loop {
                if rooms.cluster_member_count(room).await.ok() == Some(expected) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}

/// Waits until the cluster-wide members of `room` are `done` (membership crosses nodes when
/// their links write it: there is nothing to wait on but Redis's answer).
async fn until_members<M>(
    rooms: &Rooms<M>,
    room: &str,
    what: &str,
    done: impl Fn(&[Member<M>]) -> bool,
) where
    M: Clone + Send + Sync + 'static,
{
    within(what, async {
        loop {
            if rooms
                .cluster_members(room)
                .await
                .is_ok_and(|members| done(&members))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn until_state(rooms: &Rooms, state: ClusterState) {
    within(&format!("the rooms to be {state:?}"), async {
        while rooms.cluster_state() != state {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// How many nodes listen to `room`'s channel (Redis's own count).
async fn listeners(redis: &RedisServer, room: &str) -> i64 {
    let mut connection = redis.client().await;
    let (_, count): (String, i64) = within(
        "PUBSUB NUMSUB",
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("tachyon:room:{room}"))
            .query_async(&mut connection),
    )
    .await
    .expect("PUBSUB NUMSUB");
    count
}

#[tokio::test]
async fn unreachable_redis_is_an_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://:secret@127.0.0.1:{port}");
    let error = within(
        "the connection attempt",
        Rooms::builder().redis(RedisConfig::new(&url)),
    )
    .await
    .expect_err("nothing listens there");
    assert!(matches!(error, ClusterError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(message.contains("redis-server"), "{message}");

    let error = within(
        "parsing the URL",
        Rooms::builder().redis(RedisConfig::new("http://nowhere")),
    )
    .await
    .expect_err("not a Redis URL");
    assert!(
        matches!(error, ClusterError::InvalidUrl { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("http://nowhere"), "{error}");
}

#[tokio::test]
async fn a_broadcast_reaches_every_member_on_every_node_exactly_once() {
    let redis = RedisServer::start().await;
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let (mut a1, _) = member(&a, "lobby").await;
    let (mut a2, _) = member(&a, "lobby").await;
    let (mut b1, _) = member(&b, "lobby").await;
    let (mut c1, _) = member(&c, "lobby").await;
    let (mut elsewhere, _) = member(&c, "other").await;
    for node in [&a, &b, &c] {
        until_count(&node.rooms, "lobby", 4).await;
        until_count(&node.rooms, "other", 1).await;
    }
    // Each node listens once to a room it has members in, and not to the others.
    assert_eq!(listeners(&redis, "lobby").await, 3);
    assert_eq!(listeners(&redis, "other").await, 1);

    send_text(&mut b1, "hello from b").await;
    send_text(&mut b1, "end").await;
    for client in [&mut a1, &mut a2, &mut b1, &mut c1] {
        // The next two messages: the broadcast once, then the marker (no second copy between).
        assert_eq!(next_text(client).await, "hello from b");
        assert_eq!(next_text(client).await, "end");
    }
    // The member of another room got nothing: its first message is its own room's.
    send_text(&mut elsewhere, "only here").await;
    assert_eq!(next_text(&mut elsewhere).await, "only here");

    // A broadcast made through the API reports the other nodes as reached.
    let delivery = a.rooms.to("lobby").send("from the api");
    assert_eq!((delivery.reached(), delivery.remote()), (2, Remote::Sent));
    assert!(delivery.is_complete());
    for client in [&mut a1, &mut a2, &mut b1, &mut c1] {
        assert_eq!(next_text(client).await, "from the api");
    }
}

#[tokio::test]
async fn order_except_and_send_to_work_across_nodes() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut sender, sender_id) = member(&a, "lobby").await;
    let (mut remote, remote_id) = member(&b, "lobby").await;
    until_count(&a.rooms, "lobby", 2).await;
    until_count(&b.rooms, "lobby", 2).await;

    // One publisher's messages arrive in the order sent.
    for n in 0..200 {
        send_text(&mut sender, &format!("m{n}")).await;
    }
    for n in 0..200 {
        assert_eq!(next_text(&mut remote).await, format!("m{n}"));
        assert_eq!(next_text(&mut sender).await, format!("m{n}"));
    }

    // All but one: the publisher (on node a) is left out, the member on node b is not.
    send_text(&mut sender, "except not for me").await;
    assert_eq!(next_text(&mut remote).await, "not for me");
    send_text(&mut remote, "except from b").await;
    assert_eq!(next_text(&mut sender).await, "from b");
    send_text(&mut remote, "marker").await;
    assert_eq!(next_text(&mut remote).await, "marker"); // b got neither "from b" nor "not for me" twice
    assert_eq!(next_text(&mut sender).await, "marker");

    // One connection, wherever it is.
    let delivery = a.rooms.send_to(remote_id, "direct to b");
    assert_eq!((delivery.reached(), delivery.remote()), (0, Remote::Sent));
    assert_eq!(next_text(&mut remote).await, "direct to b");
    let delivery = b.rooms.send_to(sender_id, "direct to a");
    assert_eq!(delivery.remote(), Remote::Sent);
    assert_eq!(next_text(&mut sender).await, "direct to a");
    // A local one is reached without Redis.
    let delivery = a.rooms.send_to(sender_id, "local");
    assert_eq!(
        (delivery.reached(), delivery.remote()),
        (1, Remote::InProcess)
    );
    assert_eq!(next_text(&mut sender).await, "local");
}

#[tokio::test]
async fn membership_is_counted_over_every_node_and_follows_leaves() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut a1, a1_id) = member(&a, "lobby").await;
    // A node's own join is in its next answer: questions queue behind membership changes.
    let count = within("a count", a.rooms.cluster_member_count("lobby")).await;
    assert_eq!(count.expect("a count"), 1);
    let (a2, a2_id) = member(&a, "lobby").await;
    let (mut b1, b1_id) = member(&b, "lobby").await;
    until_count(&b.rooms, "lobby", 3).await;
    let mut members: Vec<_> = within("the members", b.rooms.cluster_members("lobby"))
        .await
        .expect("members")
        .iter()
        .map(|member| member.id())
        .collect();
    members.sort();
    let mut expected = vec![a1_id, a2_id, b1_id];
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(
        b.rooms.member_count("lobby"),
        1,
        "the local count stays local"
    );
    assert!(a1_id.is_local() && b1_id.is_local(), "one test process");

    // A connection that ends leaves everywhere; one that leaves the room too.
    drop(a2);
    until_count(&b.rooms, "lobby", 2).await;
    send_text(&mut a1, "leave").await;
    assert_eq!(next_text(&mut a1).await, "left");
    until_count(&b.rooms, "lobby", 1).await;
    until_count(&a.rooms, "lobby", 1).await;
    // Node a has no member left in the room: it no longer listens to it.
    assert_eq!(listeners(&redis, "lobby").await, 1);
    send_text(&mut b1, "alone").await;
    assert_eq!(next_text(&mut b1).await, "alone");
}

#[test]
fn the_members_of_a_node_that_dies_disappear_once_its_heartbeat_expires() {
    // Node c runs in a runtime of its own, so that dropping the runtime kills it as a crash
    // would: its tasks stop, nothing leaves the cluster cleanly.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let redis = RedisServer::start().await;
        let a = node(&redis).await;
        let (_a1, _) = member(&a, "lobby").await;

        let url = redis.url();
        let (ready, addr) = tokio::sync::oneshot::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("node c's runtime");
            runtime.block_on(async {
                let rooms = Rooms::builder()
                    .redis(RedisConfig::new(url).heartbeat(HEARTBEAT).timeout(TIMEOUT))
                    .await
                    .expect("node c's rooms");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let _ = ready.send(listener.local_addr().expect("address"));
                let app: axum::Router = Tachyon::with_state(rooms).websocket(chat).into();
                tokio::spawn(async move { axum::serve(listener, app).await });
            });
            // Wait (bounded) for the test to say die, then drop the runtime with everything.
            let _ = killed.recv_timeout(support::WAIT * 3);
            drop(runtime);
        });
        let addr = within("node c to start", addr)
            .await
            .expect("node c's address");
        let url = format!("ws://{addr}/chat/lobby");
        let mut c_clients = Vec::new();
        for _ in 0..2 {
            let (mut client, _) = within("connecting to c", tokio_tungstenite::connect_async(&url))
                .await
                .expect("handshake");
            next_text(&mut client).await;
            c_clients.push(client);
        }
        until_count(&a.rooms, "lobby", 3).await;

        kill.send(()).expect("node c is running");
        within("node c to stop", async {
            while !thread.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // Nothing removed c's members: they go when c's heartbeat expires (1.2 s here).
        until_count(&a.rooms, "lobby", 1).await;
        drop(c_clients);
    });
}

#[tokio::test]
async fn redis_restarted_in_the_middle_loses_only_what_was_sent_meanwhile() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut a1, _) = member(&a, "lobby").await;
    let (mut b1, _) = member(&b, "lobby").await;
    until_count(&a.rooms, "lobby", 2).await;

    redis.stop().await;
    until_state(&a.rooms, ClusterState::Reconnecting).await;
    until_state(&b.rooms, ClusterState::Reconnecting).await;
    assert!(matches!(
        a.rooms.cluster_member_count("lobby").await,
        Err(ClusterError::Unavailable { .. })
    ));
    // Local delivery goes on; the other node is reported as not reached.
    let delivery = a.rooms.to("lobby").send("during the outage");
    assert_eq!(
        (delivery.reached(), delivery.remote()),
        (1, Remote::NotDelivered)
    );
    assert!(!delivery.is_complete());
    assert_eq!(next_text(&mut a1).await, "during the outage");

    // Redis comes back empty: the nodes reconnect, resubscribe and write their members again.
    redis.restart().await;
    until_state(&a.rooms, ClusterState::Connected).await;
    until_state(&b.rooms, ClusterState::Connected).await;
    until_count(&a.rooms, "lobby", 2).await;
    until_count(&b.rooms, "lobby", 2).await;
    assert_eq!(listeners(&redis, "lobby").await, 2);

    send_text(&mut a1, "after the restart").await;
    assert_eq!(next_text(&mut a1).await, "after the restart");
    // b1's first message since the outage: it missed "during the outage", as reported.
    assert_eq!(next_text(&mut b1).await, "after the restart");
}

// --- The examples, two instances each ------------------------------------------------------------

#[tokio::test]
async fn two_chat_instances_share_rooms_and_the_member_list() {
    use serde_json::json;
    let redis = RedisServer::start().await;
    let instance = || async {
        let state = within(
            "the chat's state",
            chat_example::Chat::with_redis(&redis.url()),
        )
        .await
        .expect("the chat reaches Redis");
        serve(chat_example::app_with(state)).await
    };
    let (a, b) = (instance().await, instance().await);

    let mut alice = raw_connect(&a, "/chat/garden").await;
    send_json(&mut alice, json!({"type": "join", "name": "alice"})).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "joined", "name": "alice"})
    );
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "members", "members": ["alice"]})
    );

    let mut bob = raw_connect(&b, "/chat/garden").await;
    send_json(&mut bob, json!({"type": "join", "name": "bob"})).await;
    assert_eq!(
        next_json(&mut bob).await,
        json!({"type": "joined", "name": "bob"})
    );
    // Bob's instance lists everyone in the room, on both instances.
    assert_eq!(
        next_json(&mut bob).await,
        json!({"type": "members", "members": ["alice", "bob"]})
    );
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "joined", "name": "bob"})
    );
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "members", "members": ["alice", "bob"]})
    );

    send_json(&mut alice, json!({"type": "message", "text": "hi bob"})).await;
    for client in [&mut alice, &mut bob] {
        let mut message = next_json(client).await;
        // Its place in the room's history, for a member that comes back (tests/chat.rs).
        let pos = message
            .as_object_mut()
            .and_then(|fields| fields.remove("pos"));
        assert!(pos.is_some_and(|pos| pos.is_string()), "{message}");
        assert_eq!(
            message,
            json!({"type": "message", "name": "alice", "text": "hi bob"})
        );
    }
    drop(bob);
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "left", "name": "bob"})
    );
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "members", "members": ["alice"]})
    );
}

#[tokio::test]
async fn the_tours_chat_spans_two_instances() {
    let redis = RedisServer::start().await;
    let instance = || async {
        let state = within(
            "the tour's state",
            tour_example::Tour::with_redis(&redis.url()),
        )
        .await
        .expect("the tour reaches Redis");
        serve(tour_example::app_with(state)).await
    };
    let (a, b) = (instance().await, instance().await);
    let mut on_a = raw_connect(&a, "/chat/lobby").await;
    let mut on_b = raw_connect(&b, "/chat/lobby").await;
    // The tour's chat says nothing on join: wait until both nodes have written their member.
    let rooms = redis_rooms(&redis).await;
    until_count(&rooms, "lobby", 2).await;
    send_text(&mut on_b, "hello").await;
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(next_text(client).await, "[lobby] hello");
    }
}

// --- Faults and limits -----------------------------------------------------------------------------

/// A command connection of the test's own.
async fn query<T: redis::FromRedisValue>(redis: &RedisServer, command: &redis::Cmd) -> T {
    let mut connection = redis.client().await;
    within("a command", command.query_async(&mut connection))
        .await
        .expect("the command")
}

#[tokio::test]
async fn a_member_set_lost_while_its_node_lives_is_written_again() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (_a1, _) = member(&a, "lobby").await;
    let (_b1, _) = member(&b, "lobby").await;
    until_count(&a.rooms, "lobby", 2).await;
    // As an eviction would: node a's set goes, node a stays listed.
    let keys: Vec<String> = query(&redis, redis::cmd("KEYS").arg("tachyon:members:*")).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let _: i64 = query(&redis, redis::cmd("DEL").arg(&keys[0])).await;
    // The next heartbeat of its node sees the set missing and writes it whole again.
    until_count(&b.rooms, "lobby", 2).await;
}

#[tokio::test]
async fn the_queue_is_bounded_and_joins_do_not_wait_behind_it() {
    let redis = RedisServer::start().await;
    let rooms = within(
        "the rooms",
        Rooms::builder().redis(config(&redis).queue(4, 1024 * 1024)),
    )
    .await
    .expect("rooms");
    let served = serve(Tachyon::with_state(rooms.clone()).websocket(chat)).await;
    let flood = Node {
        rooms: rooms.clone(),
        served,
    };
    // Broadcasts made faster than the link publishes them: some find the queue full and are
    // reported, none waits.
    let deliveries: Vec<Remote> = (0..2_000)
        .map(|n| rooms.to("elsewhere").send(format!("m{n}")).remote())
        .collect();
    assert!(deliveries.contains(&Remote::Sent), "some were queued");
    assert!(
        deliveries.contains(&Remote::NotDelivered),
        "a queue of 4 cannot take 2,000 at once"
    );
    // The byte bound too: one message over it is refused however empty the queue.
    within("the queue to drain", async {
        while rooms.to("elsewhere").send("probe").remote() != Remote::Sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let big = rooms.to("elsewhere").send(vec![0_u8; 2 * 1024 * 1024]);
    assert_eq!(big.remote(), Remote::NotDelivered);

    // A join is not queued behind broadcasts: the next answer includes it.
    for n in 0..200 {
        rooms.to("elsewhere").send(format!("again {n}"));
    }
    let (_member, _) = member(&flood, "lobby").await;
    let count = within("a count", rooms.cluster_member_count("lobby")).await;
    assert_eq!(count.expect("a count"), 1);
}

#[tokio::test]
async fn binary_messages_and_send_to_by_process_cross_nodes() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut on_b, _) = member(&b, "lobby").await;
    until_count(&a.rooms, "lobby", 1).await;
    let delivery = a.rooms.to("lobby").send(vec![0_u8, 1, 2, 255]);
    assert_eq!(delivery.remote(), Remote::Sent);
    match within("a message", futures_util::StreamExt::next(&mut on_b))
        .await
        .expect("open")
        .expect("a frame")
    {
        tokio_tungstenite::tungstenite::Message::Binary(bytes) => {
            assert_eq!(&bytes[..], &[0, 1, 2, 255]);
        }
        other => panic!("expected binary, got {other:?}"),
    }

    // A message for a connection of another process goes to that process's channel.
    let client = redis::Client::open(redis.url()).expect("URL");
    let mut listener = within("a subscriber", client.get_async_pubsub())
        .await
        .expect("subscriber");
    let channel = "tachyon:process:00000000000000ab";
    within("subscribing", listener.subscribe(channel))
        .await
        .expect("subscribe");
    let elsewhere: ConnectionId = "conn-00000000000000ab-5".parse().expect("an id");
    assert!(!elsewhere.is_local());
    let delivery = a.rooms.send_to(elsewhere, "for process ab");
    assert_eq!((delivery.reached(), delivery.remote()), (0, Remote::Sent));
    let message = within(
        "the message on that process's channel",
        futures_util::StreamExt::next(&mut listener.on_message()),
    )
    .await
    .expect("a message");
    assert_eq!(message.get_channel_name(), channel);
    assert!(message.get_payload_bytes().ends_with(b"for process ab"));
}

#[tokio::test]
async fn a_node_that_leaves_the_cluster_stops_counting_at_once() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (_a1, _) = member(&a, "lobby").await;
    let (_a2, _) = member(&a, "lobby").await;
    let (_b1, _) = member(&b, "lobby").await;
    until_count(&b.rooms, "lobby", 3).await;

    within("leaving", a.rooms.leave_cluster())
        .await
        .expect("a clean leave");
    assert_eq!(a.rooms.cluster_state(), ClusterState::Left);
    // No waiting for a heartbeat to expire: the next answer no longer counts node a.
    let count = within("a count", b.rooms.cluster_member_count("lobby")).await;
    assert_eq!(count.expect("a count"), 1);
    let nodes: i64 = query(&redis, redis::cmd("ZCARD").arg("tachyon:nodes")).await;
    assert_eq!(nodes, 1);
    // Node a's rooms go on locally.
    let delivery = a.rooms.to("lobby").send("local only");
    assert_eq!(
        (delivery.reached(), delivery.remote()),
        (2, Remote::NotDelivered)
    );
    within("leaving again", a.rooms.leave_cluster())
        .await
        .expect("leaving twice is leaving once");
}

#[tokio::test]
async fn a_dropped_link_with_redis_keeping_its_data_rewrites_what_changed_meanwhile() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (a1, _) = member(&a, "lobby").await;
    let (mut a2, _) = member(&a, "lobby").await;
    let (mut b1, _) = member(&b, "lobby").await;
    until_count(&b.rooms, "lobby", 3).await;

    // Cut every node's connection; Redis keeps the member sets and the heartbeats.
    let _: redis::Value = query(
        &redis,
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes"),
    )
    .await;
    drop(a1); // leaves while node a may be cut off
    // Once back, node a has written its membership again: the member that left is gone.
    until_state(&a.rooms, ClusterState::Connected).await;
    until_count(&b.rooms, "lobby", 2).await;
    until_count(&a.rooms, "lobby", 2).await;
    send_text(&mut a2, "after").await;
    assert_eq!(next_text(&mut b1).await, "after");
    assert_eq!(next_text(&mut a2).await, "after");
}

#[tokio::test]
async fn a_nodes_heartbeat_lasts_what_the_config_says() {
    let redis = RedisServer::start().await;
    let a = node(&redis).await;
    let (_a1, _) = member(&a, "lobby").await;
    until_count(&a.rooms, "lobby", 1).await;
    // The expiry is state in Redis, checked against Redis's clock: no wall-clock timing here.
    let scores: Vec<(String, f64)> = query(
        &redis,
        redis::cmd("ZRANGE")
            .arg("tachyon:nodes")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    )
    .await;
    let (seconds, micros): (u64, u64) = query(&redis, &redis::cmd("TIME")).await;
    let now = (seconds * 1000 + micros / 1000) as f64;
    let expiry = config(&redis).expiry().as_millis() as f64;
    assert_eq!(scores.len(), 1);
    let left = scores[0].1 - now;
    assert!(left > 0.0 && left <= expiry, "{left} ms left of {expiry}");
    let ttl: i64 = query(
        &redis,
        redis::cmd("PTTL").arg(
            query::<Vec<String>>(&redis, redis::cmd("KEYS").arg("tachyon:members:*"))
                .await
                .first()
                .expect("node a's set"),
        ),
    )
    .await;
    assert!(ttl > 0 && ttl as f64 <= expiry, "{ttl} ms");
}

#[tokio::test]
async fn member_data_is_listed_over_every_node() {
    let redis = RedisServer::start().await;
    let mut served = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let rooms = within(
            "the rooms to reach Redis",
            Rooms::with_member_data::<String>().redis(config(&redis)),
        )
        .await
        .expect("Redis-backed rooms");
        served.push(serve(Tachyon::with_state(rooms.clone()).websocket(support::named)).await);
        nodes.push(rooms);
    }
    let mut clients = Vec::new();
    for (name, node) in [("alice", 0), ("bob", 1), ("carol", 1)] {
        let mut client = raw_connect(&served[node], "/named/lobby").await;
        send_text(&mut client, name).await;
        assert_eq!(next_text(&mut client).await, "joined");
        clients.push(client);
    }
    // Another node's joins reach Redis when its link writes them: wait for them, then every
    // node lists every name.
    until_count(&nodes[0], "lobby", 3).await;
    for rooms in &nodes {
        let mut names: Vec<String> = within("the members", rooms.cluster_members("lobby"))
            .await
            .expect("members")
            .into_iter()
            .map(|member| member.into_data())
            .collect();
        names.sort();
        assert_eq!(names, ["alice", "bob", "carol"]);
    }
    // The data is written with the membership itself: one hash per node and room, id → JSON.
    let mut connection = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tachyon:members:*:lobby")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let mut written = Vec::new();
    for key in keys {
        let hash: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("HGETALL");
        written.extend(hash.into_iter().map(|(_, data)| data));
    }
    written.sort();
    assert_eq!(written, ["\"alice\"", "\"bob\"", "\"carol\""]);

    // Joining again with other data reaches the other nodes too.
    send_text(&mut clients[2], "rename caroline").await;
    assert_eq!(next_text(&mut clients[2]).await, "renamed");
    until_members(
        &nodes[0],
        "lobby",
        "the new name on the other node",
        |members| members.len() == 3 && members.iter().any(|member| member.data() == "caroline"),
    )
    .await;

    // A member that leaves leaves the listing of every node.
    drop(clients.remove(1));
    until_members(&nodes[0], "lobby", "bob to leave everywhere", |members| {
        members.len() == 2 && members.iter().all(|member| member.data() != "bob")
    })
    .await;
}

/// A member that only listens (its room's broadcasts are skipped when it falls behind).
#[websocket("/listen/{room}")]
async fn listen(
    mut ws: WebSocket,
    room: String,
    State(rooms): State<Rooms>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join(&room, &ws)?;
    ws.send_text("joined").await?;
    loop {
        ws.receive().await?;
    }
}

// Two workers: the flood and the link run side by side, so that each kill finds pipelines on
// their way (as in production), not only a link waiting for its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_budget_survives_redis_failing_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tachyon::rooms::SlowMember;

    let mut redis = RedisServer::start().await;
    // A small budget, as a user sets it: 1,000 broadcasts or 256 KiB waiting to be published.
    let budgeted = || {
        Rooms::builder()
            .slow_member(SlowMember::Drop)
            .redis(config(&redis).queue(1000, 256 * 1024))
    };
    let a = within("node a", budgeted()).await.expect("node a");
    let b = within("node b", budgeted()).await.expect("node b");
    let served = serve(Tachyon::with_state(b.clone()).websocket(listen)).await;
    let mut listener = raw_connect(&served, "/listen/flood").await;
    assert_eq!(next_text(&mut listener).await, "joined");
    until_count(&a, "flood", 1).await;
    // The client reads all along, so that its member keeps up; it reports the text messages.
    let (texts, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut listener).await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let marker = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
                if texts.send(marker).is_err() {
                    return;
                }
            }
        }
    });

    // Broadcasts of 16 KiB as fast as they go, while Redis is killed and restarted ten times:
    // each kill catches pipelines on their way. The flood counts the broadcasts the link took.
    let flooding = Arc::new(AtomicBool::new(true));
    let (handed, mut taken) = tokio::sync::watch::channel(0usize);
    let flood = tokio::spawn({
        let (rooms, flooding) = (a.clone(), Arc::clone(&flooding));
        async move {
            let payload = tachyon::Bytes::from(vec![7u8; 16 * 1024]);
            while flooding.load(Ordering::Relaxed) {
                if rooms.to("flood").send(payload.clone()).remote() == Remote::Sent {
                    handed.send_modify(|count| *count += 1);
                }
                tokio::task::yield_now().await;
            }
        }
    });
    for _ in 0..10 {
        // Kill Redis once the link is publishing again: more than a budget's worth of
        // broadcasts went through since it came back.
        let before = *taken.borrow_and_update();
        within(
            "the flood to go through the link (a publish budget that leaked refuses it)",
            taken.wait_for(|count| *count >= before + 32),
        )
        .await
        .expect("the flood runs");
        redis.stop().await;
        redis.restart().await;
        until_state(&a, ClusterState::Connected).await;
    }
    flooding.store(false, Ordering::Relaxed);
    within("the flood to stop", flood)
        .await
        .expect("the flood task");

    // Linked again, with the listener's node subscribed: every broadcast is handed over, and
    // arrives.
    until_state(&a, ClusterState::Connected).await;
    until_state(&b, ClusterState::Connected).await;
    until_count(&a, "flood", 1).await;
    within("the listener's node to listen", async {
        while listeners(&redis, "flood").await != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // As large as the flood's, so that a budget that leaked refuses them.
    let padding = "x".repeat(16 * 1024);
    for i in 0..20 {
        let delivery = a.to("flood").send(format!("marker {i} {padding}"));
        assert_eq!(
            delivery.remote(),
            Remote::Sent,
            "broadcast {i} after the failures was refused: the publish budget leaked"
        );
        // Once it arrived, the link has published it: with the budget whole, one broadcast at a
        // time always fits.
        let marker = within("the marker to arrive", received.recv())
            .await
            .expect("the listener's connection ended");
        assert_eq!(marker, format!("marker {i}"));
    }
    reader.abort();
}
