//! Resumable rooms over real sockets: positions in broadcasts, recovery on join with no gap
//! and no duplicate (also under eight concurrent broadcasters), what cannot be recovered and
//! why, the latest value on join, and each of the history's bounds.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tachyon::rooms::History;
use tachyon::{Rooms, Tachyon};

use support::resume::{assert_every_offset_once, resume, resumer, split, text_of};
use support::{Client, Served, next_text, raw_connect, send_text, serve, within};

/// The text of the position at `offset` in `epoch`.
fn at(epoch: u64, offset: u64) -> String {
    format!("{epoch:016x}-{offset:016x}")
}

async fn app(rooms: Rooms) -> Served {
    serve(Tachyon::with_state(rooms).websocket(resumer)).await
}

async fn join(served: &Served, room: &str, since: Option<&str>) -> (Client, String) {
    let path = match since {
        Some(since) => format!("/history/{room}?since={since}"),
        None => format!("/history/{room}"),
    };
    let mut client = raw_connect(served, &path).await;
    let said = next_text(&mut client).await;
    (client, said)
}

#[tokio::test]
async fn a_member_that_comes_back_gets_what_it_missed_once_then_the_live_ones() {
    let rooms = Rooms::builder().history(History::messages(100)).build();
    let served = app(rooms.clone()).await;
    let (mut member, said) = join(&served, "lobby", None).await;
    assert_eq!(said, "not NoPosition");
    let mut seen = Vec::new();
    for n in 1..=5 {
        let delivery = rooms
            .to("lobby")
            .send_with(|position| format!("{} m{n}", text_of(position)));
        let position = delivery
            .position()
            .expect("a room with history gives positions");
        assert_eq!(position.offset(), n);
        let (got, body) = split(&next_text(&mut member).await);
        assert_eq!((got, body), (position, format!("m{n}")));
        seen.push(position);
    }
    drop(member);
    within("the member leaving", async {
        while rooms.member_count("lobby") > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for n in 6..=8 {
        rooms
            .to("lobby")
            .send_with(|position| format!("{} m{n}", text_of(position)));
    }
    let since = seen[4].to_string();
    let (mut member, said) = join(&served, "lobby", Some(&since)).await;
    // The replay was queued before the handler's answer.
    let mut replayed = vec![split(&said).1];
    for _ in 0..2 {
        replayed.push(split(&next_text(&mut member).await).1);
    }
    assert_eq!(replayed, ["m6", "m7", "m8"]);
    assert_eq!(next_text(&mut member).await, "recovered 3");
    rooms
        .to("lobby")
        .send_with(|position| format!("{} live", text_of(position)));
    let (position, body) = split(&next_text(&mut member).await);
    assert_eq!((position.offset(), body.as_str()), (9, "live"));
}

#[tokio::test]
async fn send_with_builds_the_message_once_and_every_member_and_the_history_get_those_bytes() {
    let rooms = Rooms::builder().history(History::messages(10)).build();
    let served = app(rooms.clone()).await;
    let (mut first, _) = join(&served, "r", None).await;
    let (mut second, _) = join(&served, "r", None).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let delivery = rooms.to("r").send_with({
        let calls = Arc::clone(&calls);
        move |position| {
            calls.lock().expect("calls").push(position);
            format!("{} hello", text_of(position))
        }
    });
    assert_eq!(delivery.reached(), 2);
    let position = delivery.position().expect("a position");
    assert_eq!(
        *calls.lock().expect("calls"),
        [Some(position)],
        "called once"
    );
    let sent = next_text(&mut first).await;
    assert_eq!(next_text(&mut second).await, sent);
    assert_eq!(
        split(&sent).0,
        position,
        "the message carries its own position"
    );
    let since = at(position.epoch(), position.offset() - 1);
    let (_, replay) = join(&served, "r", Some(&since)).await;
    assert_eq!(replay, sent, "the replay sends the bytes that were sent");
}

#[tokio::test]
async fn positions_the_room_never_issued_recover_nothing_and_say_why() {
    let rooms = Rooms::builder()
        .history_for(|room| (room != "plain").then(|| History::messages(3)))
        .build();
    let served = app(rooms.clone()).await;
    let mut last = None;
    for n in 1..=5 {
        last = rooms.to("a").send(format!("m{n}")).position();
    }
    let last = last.expect("positions");
    let other = rooms.to("b").send("b1").position().expect("positions");
    assert_ne!(other.epoch(), last.epoch(), "each room has its own epoch");
    // Each case below broadcasts once more to its room: far enough ahead stays in the future.
    let future = at(last.epoch(), last.offset() + 1000);
    let expired = at(last.epoch(), 1);
    let (last_text, other_text) = (last.to_string(), other.to_string());
    let cases = [
        (last_text.as_str(), "a", "recovered 0"),
        (expired.as_str(), "a", "not Expired"),
        (other_text.as_str(), "a", "not OtherEpoch"),
        (future.as_str(), "a", "not Future"),
        ("garbage", "a", "not NoPosition"),
        (last_text.as_str(), "plain", "not NoHistory"),
    ];
    for (since, room, expected) in cases {
        let (mut client, said) = join(&served, room, Some(since)).await;
        assert_eq!(said, expected, "since {since} in {room}");
        // Joined live, with nothing replayed: the next message is the next broadcast.
        let delivery = rooms.to(room).send("next");
        let got = next_text(&mut client).await;
        assert_eq!(got, "next", "since {since} in {room}");
        assert!(delivery.reached() >= 1);
    }
}

#[tokio::test]
async fn a_latest_value_room_gives_each_new_member_the_newest_message_first() {
    let rooms = Rooms::builder()
        .history_for(|room| room.starts_with("ticker").then(History::latest))
        .build();
    let served = app(rooms.clone()).await;
    let (mut empty, said) = join(&served, "ticker-empty", None).await;
    assert_eq!(said, "not NoPosition", "nothing to send yet");
    rooms.to("ticker-empty").send("first");
    assert_eq!(next_text(&mut empty).await, "first");

    for price in ["100", "101", "102"] {
        rooms.to("ticker-a").send(price);
    }
    let (mut late, latest) = join(&served, "ticker-a", None).await;
    assert_eq!(latest, "102", "the newest only, before anything else");
    assert_eq!(next_text(&mut late).await, "not NoPosition");
    rooms.to("ticker-a").send("103");
    assert_eq!(next_text(&mut late).await, "103");

    // Up to date: nothing again.
    let position = rooms
        .to("ticker-a")
        .send("104")
        .position()
        .expect("a position");
    assert_eq!(next_text(&mut late).await, "104");
    let (_, said) = join(&served, "ticker-a", Some(&position.to_string())).await;
    assert_eq!(said, "recovered 0");
}

#[tokio::test]
async fn history_is_bounded_by_messages_bytes_and_age() {
    let rooms = Rooms::builder()
        .history_for(|room| match room {
            "count" => Some(History::messages(3)),
            "bytes" => Some(History::messages(100).bytes(10)),
            "age" => Some(History::messages(100).age(Duration::from_millis(200))),
            _ => None,
        })
        .build();
    let served = app(rooms.clone()).await;
    let start = |room: &str| rooms.to(room).send("x").position().expect("a position");

    let since = start("count");
    for n in 1..=3 {
        rooms.to("count").send(format!("c{n}"));
    }
    let (_, said) = join(&served, "count", Some(&since.to_string())).await;
    assert_eq!(said, "c1", "three kept: exactly what came after");
    rooms.to("count").send("c4");
    let (_, said) = join(&served, "count", Some(&since.to_string())).await;
    assert_eq!(said, "not Expired", "c1 fell out of three");

    let since = start("bytes");
    for text in ["aaaa", "bbbb"] {
        rooms.to("bytes").send(text);
    }
    let (mut client, said) = join(&served, "bytes", Some(&since.to_string())).await;
    assert_eq!(said, "aaaa", "8 bytes fit in 10");
    assert_eq!(next_text(&mut client).await, "bbbb");
    rooms.to("bytes").send("cccc");
    let (_, said) = join(&served, "bytes", Some(&since.to_string())).await;
    assert_eq!(said, "not Expired", "12 bytes do not");

    let since = start("age");
    rooms.to("age").send("young");
    let (_, said) = join(&served, "age", Some(&since.to_string())).await;
    assert_eq!(said, "young");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, said) = join(&served, "age", Some(&since.to_string())).await;
    assert_eq!(said, "not Expired", "older than the age bound");
}

/// Eight tasks broadcast to one room while fifty members join it from random positions
/// already issued: each member must get exactly the offsets after its position, each once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_resuming_while_eight_tasks_broadcast_get_every_offset_once_in_order() {
    const BROADCASTERS: u64 = 8;
    const EACH: u64 = 250;
    const MEMBERS: usize = 50;
    const LAST: u64 = BROADCASTERS * EACH;
    let rooms = Rooms::builder().history(History::messages(10_000)).build();
    let served = app(rooms.clone()).await;
    let issued = Arc::new(Mutex::new(vec![
        rooms.to("hammer").send("start").position(),
    ]));
    // The room starts at offset 1 ("start"); the broadcasters send offsets 2 ..= LAST + 1.
    let last = LAST + 1;
    let broadcasters: Vec<_> = (0..BROADCASTERS)
        .map(|b| {
            let (rooms, issued) = (rooms.clone(), Arc::clone(&issued));
            tokio::spawn(async move {
                for n in 0..EACH {
                    let delivery = rooms
                        .to("hammer")
                        .send_with(|position| format!("{} b{b}-{n}", text_of(position)));
                    issued.lock().expect("issued").push(delivery.position());
                    // Spread over the members' joins (some 250 ms).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let members: Vec<_> = (0..MEMBERS)
        .map(|m| {
            let issued = Arc::clone(&issued);
            let addr = served.addr;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((m as u64 * 7) % 120)).await;
                let (since, during) = {
                    let issued = issued.lock().expect("issued");
                    let during = issued.len() < (LAST + 1) as usize;
                    (
                        issued[(m * 7919) % issued.len()].expect("a position"),
                        during,
                    )
                };
                let path = format!("/history/hammer?since={since}");
                let (offsets, said) = resume(addr, &path, last).await;
                (since.offset(), offsets, said, during)
            })
        })
        .collect();
    for broadcaster in broadcasters {
        within("a broadcaster", broadcaster)
            .await
            .expect("broadcaster");
    }
    let mut resumed = Vec::new();
    for member in members {
        resumed.push(within("a member", member).await.expect("member"));
    }
    assert_every_offset_once(resumed, last);
}

#[tokio::test]
async fn a_room_without_history_gives_no_position_and_a_second_join_replays_nothing() {
    let rooms = Rooms::builder()
        .history_for(|room| (room == "kept").then(|| History::messages(10)))
        .build();
    let served = app(rooms.clone()).await;
    let (mut client, said) = join(&served, "plain", None).await;
    assert_eq!(said, "not NoPosition");
    send_text(&mut client, "hi").await;
    assert_eq!(next_text(&mut client).await, "none hi");
    assert_eq!(rooms.to("plain").send("x").position(), None);

    let (mut member, _) = join(&served, "kept", None).await;
    let first = rooms.to("kept").send("one").position().expect("a position");
    assert_eq!(next_text(&mut member).await, "one");
    let transient = rooms.to("kept").transient().send("typing...");
    assert_eq!(
        transient.position(),
        None,
        "a transient message stays out of history"
    );
    assert_eq!(next_text(&mut member).await, "typing...");
    let (mut back, said) = join(&served, "kept", Some(&at(first.epoch(), 0))).await;
    assert_eq!(said, "one", "the replay has the recorded message only");
    assert_eq!(next_text(&mut back).await, "recovered 1");
    let since = at(first.epoch(), 0);
    send_text(&mut member, &format!("rejoin {since}")).await;
    assert_eq!(
        next_text(&mut member).await,
        "not AlreadyJoined",
        "it got \"one\" live: replaying it would send it twice"
    );
}

/// A client resuming over and over costs each time at most the history's size, and leaves
/// nothing behind: every resume is answered the same, and the room ends empty.
#[tokio::test]
async fn resuming_in_a_tight_loop_is_answered_each_time_and_leaves_nothing_behind() {
    let rooms = Rooms::builder().history(History::messages(5)).build();
    let served = app(rooms.clone()).await;
    let mut last = None;
    for n in 1..=8 {
        last = rooms.to("loop").send(format!("m{n}")).position();
    }
    let last = last.expect("positions");
    let kept = at(last.epoch(), last.offset() - 2);
    let expired = at(last.epoch(), 1);
    for round in 0..100 {
        let (mut client, first) = join(&served, "loop", Some(&kept)).await;
        assert_eq!(first, "m7", "round {round}");
        assert_eq!(next_text(&mut client).await, "m8");
        assert_eq!(next_text(&mut client).await, "recovered 2");
        let (_, said) = join(&served, "loop", Some(&expired)).await;
        assert_eq!(said, "not Expired", "round {round}");
    }
    within("every client to leave", async {
        while rooms.member_count("loop") > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(
        rooms
            .to("loop")
            .send("after")
            .position()
            .map(|p| p.offset()),
        Some(9)
    );
}

/// A server that restarts has lost its in-process history: its rooms start a new epoch, and a
/// client coming back with a position from before is told so.
#[tokio::test]
async fn after_a_restart_a_position_from_before_is_another_epochs() {
    let before = Rooms::builder().history(History::messages(10)).build();
    let position = before.to("r").send("old").position().expect("a position");
    drop(before);
    let after = Rooms::builder().history(History::messages(10)).build();
    after.to("r").send("new");
    let served = app(after.clone()).await;
    let (_, said) = join(&served, "r", Some(&position.to_string())).await;
    assert_eq!(said, "not OtherEpoch");
}

/// A value that cannot be JSON: serializing it fails.
struct Unwritable;

impl serde::Serialize for Unwritable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot be written"))
    }
}

#[tokio::test]
async fn send_json_with_that_fails_to_serialize_sends_and_records_nothing() {
    let rooms = Rooms::builder().history(History::messages(10)).build();
    let served = app(rooms.clone()).await;
    let (mut member, _) = join(&served, "r", None).await;
    let first = rooms.to("r").send("one").position().expect("a position");
    assert_eq!(next_text(&mut member).await, "one");
    let failed = rooms.to("r").send_json_with(|_| Unwritable);
    assert!(
        matches!(failed, Err(tachyon::Error::Serialize(_))),
        "{failed:?}"
    );
    let next = rooms
        .to("r")
        .send_json_with(|pos| serde_json::json!({ "pos": pos }))
        .expect("serializes")
        .position()
        .expect("a position");
    assert_eq!(
        next.offset(),
        first.offset() + 1,
        "the failure took no position"
    );
    let sent: serde_json::Value =
        serde_json::from_str(&next_text(&mut member).await).expect("JSON");
    assert_eq!(sent["pos"], next.to_string(), "nothing came between");
}

#[tokio::test]
async fn send_confirmed_in_process_returns_at_once_with_the_position() {
    let rooms = Rooms::builder().history(History::messages(10)).build();
    let first = rooms.to("r").send("one").position().expect("a position");
    let confirmed = within("send_confirmed", rooms.to("r").send_confirmed(|_| "two"))
        .await
        .expect("nothing to wait for in process");
    assert_eq!(
        confirmed.position().map(|p| p.offset()),
        Some(first.offset() + 1)
    );
    let without = within(
        "send_confirmed",
        Rooms::new().to("r").send_confirmed(|_| "x"),
    )
    .await
    .expect("no history");
    assert_eq!(without.position(), None);
}
