//! The chat example (`cargo run --example chat`): its protocol over real sockets, and its page
//! in real headless Chromium with two people in one room.
//!
//! The browser test needs Chromium and chromedriver (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them it fails and says so: it is never
//! skipped.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;
mod support;

use std::panic::AssertUnwindSafe;

use fantoccini::{Client, Locator};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use support::webdriver::{browser, start_chromedriver, wait_for};
use support::{next_json, raw_connect, send_json, serve, within};

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
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next_json(client).await,
            json!({"type": "message", "name": "bob", "text": "hi alice"})
        );
    }
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

// --- In a browser --------------------------------------------------------------------------------

async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .expect(id)
        .click()
        .await
        .expect("click");
}

/// One person: opens the page, joins `room` as `name`, and sees themselves in the member list.
async fn join(client: &Client, url: &str, name: &str, room: &str) {
    client.goto(url).await.expect("the page");
    fill(client, "name", name).await;
    fill(client, "room", room).await;
    click(client, "join").await;
    let me = format!("//ul[@id='members']/li[text()='{name} (you)']");
    wait_for(client, &format!("{name} in the member list"), &me).await;
}

async fn say(client: &Client, text: &str) {
    fill(client, "text", text).await;
    click(client, "send").await;
}

/// The XPath of a chat message from `name` saying `text`.
fn message(name: &str, text: &str) -> String {
    format!(
        "//li[contains(@class,'message')][span[@class='who' and text()='{name}']]\
         [div[@class='text' and text()='{text}']]"
    )
}

fn notice(text: &str) -> String {
    format!("//li[@class='notice' and text()='{text}']")
}

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
