//! Resumable rooms across servers through a real Redis: positions that are the same on every
//! node, a member resuming on another node than the one it left (also after that node
//! stopped), the history's bounds in Redis, a Redis that comes back empty (a new epoch: not
//! recovered, never a silent gap), the latest value on join, and members resuming while two
//! nodes broadcast at once.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tachyon::Rooms;
use tachyon::rooms::{History, Remote};

use support::redis_server::RedisServer;
use support::resume::{assert_every_offset_once, join, node, resume, split};
use support::{next_text, send_text, within};

fn broadcast(rooms: &Rooms, room: &str, body: &str) -> Remote {
    rooms
        .to(room)
        .send_with(|position| {
            let position = position.expect("a room with history");
            format!("{position} {body}")
        })
        .remote()
}

/// Waits until `count` members are in `room` over the cluster: a node subscribes to a room's
/// channel when its first member joins, and a broadcast made before that does not reach it
/// live (it is in history).
async fn until_count(rooms: &Rooms, room: &str, count: usize) {
    within(&format!("{count} members in {room}"), async {
        while rooms.cluster_member_count(room).await.ok() != Some(count) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_member_resumes_on_another_node_with_exactly_what_it_missed() {
    let redis = RedisServer::start().await;
    let history = History::messages(100);
    let (a, b) = (node(&redis, history).await, node(&redis, history).await);
    let (mut on_a, _) = join(&a, "lobby", None).await;
    let (mut on_b, said) = join(&b, "lobby", None).await;
    assert_eq!(said, "not NoPosition");
    until_count(&a.rooms, "lobby", 2).await;

    // Positions are Redis's: the same on both nodes, one more per message, whoever sends.
    let mut last = None;
    for n in 1..=6 {
        let sender = if n % 2 == 0 { &a } else { &b };
        assert_eq!(
            broadcast(&sender.rooms, "lobby", &format!("m{n}")),
            Remote::Sent
        );
        let (at_a, body) = split(&next_text(&mut on_a).await);
        let (at_b, body_b) = split(&next_text(&mut on_b).await);
        assert_eq!(
            (at_a, &body),
            (at_b, &body_b),
            "the same bytes on both nodes"
        );
        assert_eq!((at_a.offset(), body), (n, format!("m{n}")));
        last = Some(at_a);
    }
    let last = last.expect("positions");
    assert_eq!(last.epoch(), split(&format!("{last} x")).0.epoch());

    drop(on_a);
    for n in 7..=9 {
        broadcast(&b.rooms, "lobby", &format!("m{n}"));
        assert_eq!(split(&next_text(&mut on_b).await).1, format!("m{n}"));
    }
    // Back on the other node, from where it was.
    let (mut back, first) = join(&b, "lobby", Some(&last.to_string())).await;
    let mut replayed = vec![split(&first).1];
    for _ in 0..2 {
        replayed.push(split(&next_text(&mut back).await).1);
    }
    assert_eq!(replayed, ["m7", "m8", "m9"]);
    assert_eq!(next_text(&mut back).await, "recovered 3");
    send_text(&mut on_b, "live").await;
    let (position, body) = split(&next_text(&mut back).await);
    assert_eq!((position.offset(), body.as_str()), (10, "live"));
}

#[tokio::test]
async fn a_member_resumes_after_its_node_stopped() {
    let redis = RedisServer::start().await;
    let history = History::messages(100);
    let a = node(&redis, history).await;
    let (mut on_a, _) = join(&a, "r", None).await;
    until_count(&a.rooms, "r", 1).await;
    broadcast(&a.rooms, "r", "before");
    let (since, _) = split(&next_text(&mut on_a).await);
    drop(on_a);
    drop(a); // the node is gone, and its process's state with it

    let b = node(&redis, history).await;
    for n in 1..=3 {
        assert_eq!(
            broadcast(&b.rooms, "r", &format!("while away {n}")),
            Remote::Sent
        );
    }
    let (mut back, first) = join(&b, "r", Some(&since.to_string())).await;
    assert_eq!(split(&first).1, "while away 1");
    assert_eq!(split(&next_text(&mut back).await).1, "while away 2");
    assert_eq!(split(&next_text(&mut back).await).1, "while away 3");
    assert_eq!(next_text(&mut back).await, "recovered 3");
}

#[tokio::test]
async fn the_history_in_redis_is_bounded_and_what_fell_out_is_not_recovered() {
    let redis = RedisServer::start().await;
    let a = node(&redis, History::messages(3).bytes(64 * 1024)).await;
    let (mut watcher, _) = join(&a, "count", None).await;
    until_count(&a.rooms, "count", 1).await;
    let mut positions = Vec::new();
    for n in 1..=5 {
        broadcast(&a.rooms, "count", &format!("m{n}"));
        positions.push(split(&next_text(&mut watcher).await).0);
    }
    let mut redis_client = redis.client().await;
    let kept: usize = redis::cmd("XLEN")
        .arg("tachyon:history:count")
        .query_async(&mut redis_client)
        .await
        .expect("XLEN");
    assert_eq!(kept, 3, "trimmed to the newest three");
    let (_, said) = join(&a, "count", Some(&positions[0].to_string())).await;
    assert_eq!(said, "not Expired", "m2 fell out");
    let (_, said) = join(&a, "count", Some(&positions[1].to_string())).await;
    assert_eq!(split(&said).1, "m3", "from m2: m3, m4, m5 are all there");
    let future = format!("{:016x}-{:016x}", positions[4].epoch(), 99);
    let (_, said) = join(&a, "count", Some(&future)).await;
    assert_eq!(said, "not Future");
    let (_, said) = join(&a, "count", Some("garbage")).await;
    assert_eq!(said, "not NoPosition");

    let bytes = node(&redis, History::messages(100).bytes(10)).await;
    let (mut watcher, _) = join(&bytes, "bytes", None).await;
    until_count(&bytes.rooms, "bytes", 1).await;
    broadcast(&bytes.rooms, "bytes", "x");
    let (since, _) = split(&next_text(&mut watcher).await);
    // Each message is its 33-character position, a space and a body: over 10 bytes alone.
    broadcast(&bytes.rooms, "bytes", "y");
    next_text(&mut watcher).await;
    let (_, said) = join(&bytes, "bytes", Some(&since.to_string())).await;
    assert_eq!(
        said, "not Expired",
        "a message over the byte bound is not kept"
    );

    let aged = node(
        &redis,
        History::messages(100).age(Duration::from_millis(300)),
    )
    .await;
    let (mut watcher, _) = join(&aged, "age", None).await;
    until_count(&aged.rooms, "age", 1).await;
    broadcast(&aged.rooms, "age", "old");
    let (since, _) = split(&next_text(&mut watcher).await);
    broadcast(&aged.rooms, "age", "young");
    next_text(&mut watcher).await;
    let (_, said) = join(&aged, "age", Some(&since.to_string())).await;
    assert_eq!(split(&said).1, "young");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, said) = join(&aged, "age", Some(&since.to_string())).await;
    assert!(
        said == "not Expired" || said == "not OtherEpoch",
        "older than the age bound (or the keys expired with it): {said}"
    );
}

#[tokio::test]
async fn a_redis_that_comes_back_empty_starts_a_new_epoch_and_recovers_nothing() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, History::messages(100)).await;
    let (mut watcher, _) = join(&a, "r", None).await;
    until_count(&a.rooms, "r", 1).await;
    broadcast(&a.rooms, "r", "before");
    let (before, _) = split(&next_text(&mut watcher).await);

    redis.restart().await;
    within("the link to come back", async {
        loop {
            if a.rooms.cluster_state() == tachyon::rooms::ClusterState::Connected
                && a.rooms.cluster_member_count("r").await.ok() == Some(1)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    broadcast(&a.rooms, "r", "after");
    let (after, _) = split(&next_text(&mut watcher).await);
    assert_ne!(
        after.epoch(),
        before.epoch(),
        "history was lost: a new epoch"
    );
    assert_eq!(after.offset(), 1);
    let (_, said) = join(&a, "r", Some(&before.to_string())).await;
    assert_eq!(said, "not OtherEpoch", "never a silent gap");
    // The member that was live all along takes the new epoch's messages.
    broadcast(&a.rooms, "r", "again");
    assert_eq!(split(&next_text(&mut watcher).await).1, "again");
}

#[tokio::test]
async fn a_latest_value_room_through_redis_gives_a_new_member_the_newest_message() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        node(&redis, History::latest()).await,
        node(&redis, History::latest()).await,
    );
    for price in ["100", "101", "102"] {
        broadcast(&a.rooms, "ticker", price);
    }
    let (mut late, first) = join(&b, "ticker", None).await;
    assert_eq!(split(&first).1, "102", "the newest only, first");
    assert_eq!(next_text(&mut late).await, "not NoPosition");
    until_count(&a.rooms, "ticker", 1).await;
    broadcast(&a.rooms, "ticker", "103");
    assert_eq!(split(&next_text(&mut late).await).1, "103");
}

/// Two nodes, four tasks on each broadcasting to one room, while twenty members join it on
/// either node from positions already issued: each gets exactly the offsets after its own,
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_resuming_while_two_nodes_broadcast_get_every_offset_once_in_order() {
    const EACH: u64 = 100;
    const MEMBERS: usize = 20;
    let redis = RedisServer::start().await;
    let history = History::messages(10_000);
    let (a, b) = (node(&redis, history).await, node(&redis, history).await);
    let (mut first, _) = join(&a, "hammer", None).await;
    until_count(&a.rooms, "hammer", 1).await;
    broadcast(&a.rooms, "hammer", "start");
    let (start, _) = split(&next_text(&mut first).await);
    let issued = Arc::new(Mutex::new(vec![start]));
    let last = 1 + 8 * EACH;
    // The watcher collects the positions as they are issued.
    let watcher = {
        let issued = Arc::clone(&issued);
        tokio::spawn(async move {
            loop {
                let (position, _) = split(&next_text(&mut first).await);
                issued.lock().expect("issued").push(position);
                if position.offset() == last {
                    return;
                }
            }
        })
    };
    let broadcasters: Vec<_> = [&a, &a, &a, &a, &b, &b, &b, &b]
        .into_iter()
        .enumerate()
        .map(|(k, node)| {
            let rooms = node.rooms.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    assert_eq!(
                        broadcast(&rooms, "hammer", &format!("{k}-{n}")),
                        Remote::Sent
                    );
                    // Spread over the members' joins (some 100 ms).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let addrs = [a.served.addr, b.served.addr];
    let members: Vec<_> = (0..MEMBERS)
        .map(|m| {
            let issued = Arc::clone(&issued);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((m as u64 * 11) % 90)).await;
                let (since, during) = {
                    let issued = issued.lock().expect("issued");
                    let during = issued.len() < last as usize;
                    (issued[(m * 7919) % issued.len()], during)
                };
                let path = format!("/history/hammer?since={since}");
                let (offsets, said) = resume(addrs[m % 2], &path, last).await;
                (since.offset(), offsets, said, during)
            })
        })
        .collect();
    for broadcaster in broadcasters {
        within("a broadcaster", broadcaster)
            .await
            .expect("broadcaster");
    }
    within("the watcher", watcher).await.expect("watcher");
    let mut resumed = Vec::new();
    for member in members {
        resumed.push(within("a member", member).await.expect("member"));
    }
    assert_every_offset_once(resumed, last);
}

#[tokio::test]
async fn send_confirmed_waits_for_the_position_redis_gave() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        node(&redis, History::messages(10)).await,
        node(&redis, History::messages(10)).await,
    );
    let (mut on_b, _) = join(&b, "r", None).await;
    until_count(&a.rooms, "r", 1).await;
    let plain = a
        .rooms
        .to("r")
        .send_with(|pos| format!("{} plain", pos.expect("history")));
    assert_eq!(
        plain.position(),
        None,
        "through Redis, the position comes later"
    );
    let (first, _) = split(&next_text(&mut on_b).await);
    let confirmed = within(
        "the position",
        a.rooms
            .to("r")
            .send_confirmed(|pos| format!("{} confirmed", pos.expect("history"))),
    )
    .await
    .expect("Redis answers");
    assert_eq!(confirmed.remote(), Remote::Sent);
    let position = confirmed
        .position()
        .expect("a position, once Redis gave it");
    let (seen, body) = split(&next_text(&mut on_b).await);
    assert_eq!((seen, body.as_str()), (position, "confirmed"));
    assert_eq!(
        (position.epoch(), position.offset()),
        (first.epoch(), first.offset() + 1)
    );
}
