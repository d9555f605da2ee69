//! The chat example (`cargo run --example chat`): its protocol over real sockets, members that
//! come back with `since` and get exactly what they missed (in process, and from one instance
//! to another through a real Redis after the first got SIGTERM), and its page in real headless
//! Chromium with two people in one room (`tests/browser.rs` has the page reconnecting).
//!
//! The browser test needs Chromium and chromedriver (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them), the Redis one `redis-server`. Without them they
//! fail and say so: they are never skipped.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;
mod support;

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use support::chat_page::{join, message, notice, say};
use support::example::Example;
use support::redis_server::RedisServer;
use support::webdriver::{browser, start_chromedriver, wait_for};
use support::{Client, next_json, raw_connect, send_json, serve, within};

/// Sends a join as `name`, from `since` if given.
async fn send_join(client: &mut Client, name: &str, since: Option<&Value>) {
    let mut join = json!({"type": "join", "name": name});
    if let Some(since) = since {
        join["since"] = since.clone();
    }
    send_json(client, join).await;
}

/// Says `text` in the room.
async fn send_message(client: &mut Client, text: &str) {
    send_json(client, json!({"type": "message", "text": text})).await;
}

/// The next `message` or `resumed`, past presence (`joined`, `left`, `members`): that is live
/// only, and comes whenever someone (this client too) joins or leaves, here or elsewhere.
async fn next_chat(client: &mut Client) -> Value {
    loop {
        let value = next_json(client).await;
        if !matches!(value["type"].as_str(), Some("joined" | "left" | "members")) {
            return value;
        }
    }
}

/// Reads until `expected` comes.
async fn until(client: &mut Client, expected: &Value) {
    within(&expected.to_string(), async {
        while next_json(client).await != *expected {}
    })
    .await;
}

/// The next chat message, which must be `name` saying `text`, with a position.
async fn expect_message(client: &mut Client, name: &str, text: &str) -> Value {
    let got = next_chat(client).await;
    assert_eq!(
        (&got["type"], &got["name"], &got["text"]),
        (&json!("message"), &json!(name), &json!(text)),
        "{got}"
    );
    let pos = got["pos"]
        .as_str()
        .unwrap_or_else(|| panic!("no pos in {got}"));
    assert!(!pos.is_empty(), "{got}");
    got
}

/// What a member resuming with `since` gets up to `resumed`: the messages replayed, then
/// `resumed` itself.
async fn replay(client: &mut Client) -> (Vec<Value>, Value) {
    let mut replayed = Vec::new();
    within("the replay and `resumed`", async {
        loop {
            let got = next_chat(client).await;
            if got["type"] == "resumed" {
                return (replayed, got);
            }
            replayed.push(got);
        }
    })
    .await
}

/// The message without its position, to compare with what it said.
fn without_pos(mut message: Value) -> Value {
    let pos = message
        .as_object_mut()
        .and_then(|fields| fields.remove("pos"));
    assert!(
        pos.as_ref().and_then(Value::as_str).is_some(),
        "a message carries its pos as a string: {message}"
    );
    message
}

#[tokio::test]
async fn members_see_each_other_join_talk_and_leave() {
    let served = serve(chat::app()).await;
    let mut alice = raw_connect(&served, "/chat/garden").await;
    send_json(&mut alice, json!({"type": "join", "name": "alice"})).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "joined", "name": "alice"})
    );
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "members", "members": ["alice"]})
    );

    let mut bob = raw_connect(&served, "/chat/garden").await;
    send_json(&mut bob, json!({"type": "join", "name": "  bob "})).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "joined", "name": "bob"})
        );
        assert_eq!(
            next_json(client).await,
            json!({"type": "members", "members": ["alice", "bob"]})
        );
    }

    send_json(&mut bob, json!({"type": "message", "text": "hi alice"})).await;
    let (to_alice, to_bob) = (next_json(&mut alice).await, next_json(&mut bob).await);
    assert_eq!(to_alice, to_bob, "one message, one position");
    assert_eq!(
        without_pos(to_alice),
        json!({"type": "message", "name": "bob", "text": "hi alice"})
    );
    send_json(&mut bob, json!({"oops": true})).await;
    assert_eq!(next_json(&mut bob).await["type"], "error");

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
async fn a_client_must_join_with_a_name_first() {
    let served = serve(chat::app()).await;
    let mut nameless = raw_connect(&served, "/chat/garden").await;
    send_json(&mut nameless, json!({"type": "join", "name": "   "})).await;
    match within("the close", nameless.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}

// --- Coming back -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_member_that_comes_back_gets_what_it_missed_once_then_resumed_then_live_ones() {
    let served = serve(chat::app()).await;
    let mut alice = raw_connect(&served, "/chat/garden").await;
    send_join(&mut alice, "alice", None).await;
    let mut bob = raw_connect(&served, "/chat/garden").await;
    send_join(&mut bob, "bob", None).await;
    let mut read = Vec::new();
    for n in 1..=3 {
        let text = format!("m{n}");
        send_message(&mut bob, &text).await;
        expect_message(&mut bob, "bob", &text).await;
        read.push(expect_message(&mut alice, "bob", &text).await);
    }
    drop(alice);
    until(&mut bob, &json!({"type": "left", "name": "alice"})).await;

    let mut missed = Vec::new();
    for n in 4..=8 {
        send_message(&mut bob, &format!("m{n}")).await;
        missed.push(expect_message(&mut bob, "bob", &format!("m{n}")).await);
    }
    let mut alice = raw_connect(&served, "/chat/garden").await;
    send_join(&mut alice, "alice", Some(&read[2]["pos"])).await;
    let (replayed, resumed) = replay(&mut alice).await;
    assert_eq!(
        replayed, missed,
        "exactly the missed ones, in order, with their pos"
    );
    assert_eq!(
        resumed,
        json!({"type": "resumed", "recovered": true, "missed": 5})
    );
    send_message(&mut bob, "live").await;
    let live = expect_message(&mut alice, "bob", "live").await;
    assert!(
        !read
            .iter()
            .chain(&missed)
            .any(|old| old["pos"] == live["pos"]),
        "a new message, a new pos"
    );

    // Up to date: nothing to replay.
    drop(alice);
    let mut alice = raw_connect(&served, "/chat/garden").await;
    send_join(&mut alice, "alice", Some(&live["pos"])).await;
    assert_eq!(
        replay(&mut alice).await,
        (
            vec![],
            json!({"type": "resumed", "recovered": true, "missed": 0})
        )
    );
}

#[tokio::test]
async fn a_since_the_server_never_sent_is_not_recovered_and_the_member_stays() {
    let served = serve(chat::app()).await;
    let mut bob = raw_connect(&served, "/chat/garden").await;
    send_join(&mut bob, "bob", None).await;
    send_message(&mut bob, "before").await;
    let before = expect_message(&mut bob, "bob", "before").await;
    // Text that is no position at all, another epoch's position, and one the room never reached
    // (the test knows the text of a position: `{epoch}-{offset}`, 16 hex digits each).
    let (epoch, offset) = before["pos"]
        .as_str()
        .and_then(|pos| pos.split_once('-'))
        .expect("a pos");
    let offset = u64::from_str_radix(offset, 16).expect("hex");
    let ahead = format!("{epoch}-{:016x}", offset + 1_000_000);
    for since in [
        json!("garbage"),
        json!(""),
        json!("00000000000000ff-0000000000000001"),
        json!(ahead),
    ] {
        let mut alice = raw_connect(&served, "/chat/garden").await;
        send_join(&mut alice, "alice", Some(&since)).await;
        assert_eq!(
            next_chat(&mut alice).await,
            json!({"type": "resumed", "recovered": false}),
            "since {since}: nothing replayed"
        );
        // Still open, and in the room.
        send_message(&mut bob, "after").await;
        expect_message(&mut alice, "bob", "after").await;
        send_message(&mut alice, "still here").await;
        expect_message(&mut alice, "alice", "still here").await;
        drop(alice);
    }
}

// --- Across instances -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_instance_stops_resumes_on_another_with_exactly_what_it_missed() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let mut a = Example::start("chat", &["--redis", &redis_url]).await;
    let b = Example::start("chat", &["--redis", &redis_url]).await;
    // Each instance lists its member once it has subscribed to the room (the list is read
    // from Redis after the membership, which is written after the subscription).
    let mut alice = a.connect("/chat/garden").await;
    send_join(&mut alice, "alice", None).await;
    until(
        &mut alice,
        &json!({"type": "members", "members": ["alice"]}),
    )
    .await;
    let mut bob = b.connect("/chat/garden").await;
    send_join(&mut bob, "bob", None).await;
    until(&mut alice, &json!({"type": "joined", "name": "bob"})).await;
    until(
        &mut bob,
        &json!({"type": "members", "members": ["alice", "bob"]}),
    )
    .await;

    // 20 messages from both instances, the last from A; each read by both before the next.
    let mut last = Value::Null;
    for n in 1..=20 {
        let (from, name) = if n % 2 == 0 {
            (&mut alice, "alice")
        } else {
            (&mut bob, "bob")
        };
        let text = format!("m{n}");
        send_message(from, &text).await;
        last = expect_message(&mut alice, name, &text).await;
        assert_eq!(
            expect_message(&mut bob, name, &text).await,
            last,
            "the same bytes on both instances"
        );
    }

    // A stops gracefully: alice is told it is going away.
    a.terminate().await;
    let close = within("alice's close frame", async {
        loop {
            match alice.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    assert_ne!(value["type"], "message", "nothing more was said: {value}");
                }
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.map(|frame| u16::from(frame.code)), Some(1001));
    assert!(a.exit().await.success(), "A exits cleanly after SIGTERM");

    let mut missed = Vec::new();
    for n in 21..=50 {
        let text = format!("m{n}");
        send_message(&mut bob, &text).await;
        missed.push(expect_message(&mut bob, "bob", &text).await);
    }
    let mut alice = b.connect("/chat/garden").await;
    send_join(&mut alice, "alice", Some(&last["pos"])).await;
    let (replayed, resumed) = replay(&mut alice).await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "recovered": true, "missed": 30}),
        "B resumes from the pos A gave (m20's): the history is shared through Redis"
    );
    assert_eq!(
        replayed, missed,
        "exactly the missed ones, in order, with their pos"
    );
    for n in 51..=53 {
        let text = format!("m{n}");
        send_message(&mut bob, &text).await;
        expect_message(&mut alice, "bob", &text).await;
    }
}

// --- In a browser --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_the_page() {
    let served = serve(chat::app()).await;
    let url = format!("http://{}/", served.addr);
    let (chromedriver, webdriver) = start_chromedriver().await;
    let alice = browser(&webdriver).await;
    let bob = browser(&webdriver).await;

    let conversation = AssertUnwindSafe(async {
        join(&alice, &url, "alice", "garden").await;
        join(&bob, &url, "bob", "garden").await;
        wait_for(&alice, "bob joining", &notice("bob joined")).await;
        wait_for(
            &alice,
            "bob as a member",
            "//ul[@id='members']/li[text()='bob']",
        )
        .await;
        wait_for(
            &bob,
            "alice as a member",
            "//ul[@id='members']/li[text()='alice']",
        )
        .await;

        say(&alice, "hello bob").await;
        wait_for(&bob, "alice's message", &message("alice", "hello bob")).await;
        say(&bob, "hi alice").await;
        wait_for(&alice, "bob's message", &message("bob", "hi alice")).await;
        wait_for(&bob, "his own message", &message("bob", "hi alice")).await;
    })
    .catch_unwind()
    .await;

    // Closing bob's browser ends his connection: alice sees him leave.
    let left = match &conversation {
        Ok(()) => {
            let _ = bob.close().await;
            AssertUnwindSafe(wait_for(&alice, "bob leaving", &notice("bob left")))
                .catch_unwind()
                .await
        }
        Err(_) => {
            let _ = bob.close().await;
            Ok(())
        }
    };
    let _ = alice.close().await;
    drop(chromedriver);
    if let Err(panic) = conversation.and(left) {
        std::panic::resume_unwind(panic);
    }
}
