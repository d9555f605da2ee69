//! The tour's page in a real browser: headless Chromium loads `/`, its JavaScript (the chapter's
//! client) connects to `/ws`, sends `Hello!` and writes the echo into the page.
//!
//! A second page checks what a browser sees of a refused handshake, with and without
//! `browser_readable_rejections`; it waits for the close codes through chromedriver, since a
//! dump at a guessed moment can come before the closes (it did, about once in seven runs).
//!
//! The chat example's page reconnects by itself after the server drops its connection, and
//! shows every message exactly once.
//!
//! Needs Chromium and chromedriver (`apt-get install chromium chromium-driver`; `.ci/run`
//! installs them). Without them these tests fail and say so: they are never skipped.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;
mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour;

use std::panic::AssertUnwindSafe;
use std::process::Stdio;

use axum::extract::FromRef;
use futures_util::FutureExt;
use serde_json::json;
use tachyon::{CloseCode, Rooms};
use tokio::process::Command;

use support::chat_page::{join, message, notice, say, shown_messages, shown_notices};
use support::webdriver::{browser, start_chromedriver, wait_for};
use support::{Client, next_json, send_json, within};

/// The browser binary: `$CHROMIUM`, or `chromium` on the `PATH`.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// Loads `url` in headless Chromium and returns the page's DOM once its scripts ran.
async fn dump_dom(url: &str, attempt: u32) -> String {
    let profile = std::env::temp_dir().join(format!(
        "tachyon-browser-test-{}-{attempt}",
        std::process::id()
    ));
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // On a timeout the child is dropped, which kills the browser; its helper processes exit
        // with it.
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!(
            "cannot start `{}` ({error}): this test needs Chromium; install it with \
             `apt-get install chromium` (.ci/run does) or point $CHROMIUM at it",
            chromium()
        ),
    };
    let output = tokio::time::timeout(support::WAIT, child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&profile);
    match output {
        Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Ok(Err(error)) => panic!("chromium failed: {error}"),
        Err(_) => String::new(), // timed out: the caller tries again
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_page_shows_the_echo_in_a_browser() {
    let served = support::serve(tour::app()).await;
    let url = format!("http://{}/", served.addr);
    let mut dom = String::new();
    // The page's WebSocket races the browser's virtual clock; a slow machine may need a retry.
    for attempt in 1..=3 {
        dom = dump_dom(&url, attempt).await;
        if dom.contains("<li>Echo: Hello!</li>") {
            return;
        }
    }
    panic!("the page never showed `Echo: Hello!`; its last DOM was:\n{dom}");
}

// --- Rejections a browser can read ----------------------------------------------------------------

/// Refuses every connection with 4001 before accepting: `403` by default.
#[tachyon::websocket("/refused")]
async fn refused(mut ws: tachyon::WebSocket) -> tachyon::Result<()> {
    ws.close(4001, "no token").await
}

/// The same, with rejections a browser can read.
#[tachyon::websocket("/readable", browser_readable_rejections = true)]
async fn readable(mut ws: tachyon::WebSocket) -> tachyon::Result<()> {
    ws.close(4001, "no token").await
}

/// A page that opens `/refused` and `/readable` and writes the close code each one's `onclose`
/// saw into the page.
async fn rejections_page() -> axum::response::Html<&'static str> {
    axum::response::Html(
        r#"<!doctype html><html><body><ul id="codes"></ul><script>
for (const path of ["/refused", "/readable"]) {
  const ws = new WebSocket(`ws://${location.host}${path}`);
  ws.onclose = (event) => {
    const item = document.createElement("li");
    item.textContent = `${path} ${event.code} ${event.reason}`;
    document.getElementById("codes").appendChild(item);
  };
}
</script></body></html>"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_1006_for_a_403_and_the_code_with_readable_rejections() {
    let app = tachyon::Tachyon::new()
        .websocket(refused)
        .websocket(readable)
        .merge(axum::Router::new().route("/", axum::routing::get(rejections_page)));
    let served = support::serve(app).await;
    let url = format!("http://{}/", served.addr);
    let (chromedriver, webdriver) = support::webdriver::start_chromedriver().await;
    let page = support::webdriver::browser(&webdriver).await;
    let seen = std::panic::AssertUnwindSafe(async {
        page.goto(&url).await.expect("the page");
        // A page never learns the status of a refused handshake: only 1006.
        support::webdriver::wait_for(
            &page,
            "1006 for the refused handshake",
            "//li[normalize-space(text())='/refused 1006']",
        )
        .await;
        // With readable rejections the handshake completes and the close carries the code.
        support::webdriver::wait_for(
            &page,
            "4001 for the readable rejection",
            "//li[text()='/readable 4001 no token']",
        )
        .await;
    })
    .catch_unwind()
    .await;
    let _ = page.close().await;
    drop(chromedriver);
    if let Err(panic) = seen {
        std::panic::resume_unwind(panic);
    }
}

// --- The chat page reconnects ---------------------------------------------------------------------

/// A chat member over tokio-tungstenite, `name`, once the room lists it (through Redis, its
/// instance then gets the room's broadcasts from the others).
async fn member(mut client: Client, name: &str) -> Client {
    send_json(&mut client, json!({"type": "join", "name": name})).await;
    within(&format!("{name} in the member list"), async {
        loop {
            let got = next_json(&mut client).await;
            let listed = got["members"].as_array();
            if listed.is_some_and(|names| names.contains(&json!(name))) {
                return;
            }
        }
    })
    .await;
    client
}

/// Reads until `client` gets `name`'s message `text`.
async fn until_message(client: &mut Client, name: &str, text: &str) {
    within(&format!("{name}'s message {text:?}"), async {
        loop {
            let got = next_json(client).await;
            if got["type"] == "message" && got["name"] == name && got["text"] == text {
                return;
            }
        }
    })
    .await;
}

/// Says `text` as `name`, and waits for the room to send it back: then it is in the history.
async fn say_from(client: &mut Client, name: &str, text: &str) {
    send_json(client, json!({"type": "message", "text": text})).await;
    until_message(client, name, text).await;
}

/// Runs `test` with a headless Chromium page, then closes the page and chromedriver whatever
/// happened.
async fn with_page<F: Future<Output = ()>>(test: impl FnOnce(fantoccini::Client) -> F) {
    let (chromedriver, webdriver) = start_chromedriver().await;
    let page = browser(&webdriver).await;
    let outcome = AssertUnwindSafe(test(page.clone())).catch_unwind().await;
    let _ = page.close().await;
    drop(chromedriver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The notices of a page that missed nothing.
fn no_gap_notice(notices: &[String]) -> bool {
    !notices.iter().any(|text| text.contains("missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_reconnects_by_itself_and_shows_what_it_missed_once() {
    let state = chat::Chat::new();
    let rooms = Rooms::<String>::from_ref(&state);
    let served = support::serve(chat::app_with(state)).await;
    let url = format!("http://{}/", served.addr);
    let mut bob = member(support::raw_connect(&served, "/chat/garden").await, "bob").await;
    with_page(|page| async move {
        join(&page, &url, "alice", "garden").await;
        say_from(&mut bob, "bob", "before").await;
        say(&page, "mine").await;
        wait_for(&page, "alice's message", &message("alice", "mine")).await;

        // The server drops the page's connection (as a restart would; the history stays).
        let alice = rooms
            .members("garden")
            .into_iter()
            .find(|member| member.data() == "alice")
            .expect("alice is in the room");
        rooms
            .sender(alice.id())
            .expect("alice's connection")
            .close(CloseCode::SERVICE_RESTART, "restarting")
            .expect("closing");
        // The page waits 250 ms before it tries again: these are sent while it is away.
        for n in 1..=3 {
            say_from(&mut bob, "bob", &format!("away {n}")).await;
        }
        wait_for(
            &page,
            "the lost connection",
            &notice("Connection lost (1012: restarting); reconnecting…"),
        )
        .await;
        wait_for(&page, "the last missed message", &message("bob", "away 3")).await;
        say_from(&mut bob, "bob", "live").await;
        wait_for(&page, "the live message", &message("bob", "live")).await;

        assert_eq!(
            shown_messages(&page).await,
            [
                "bob: before",
                "alice: mine",
                "bob: away 1",
                "bob: away 2",
                "bob: away 3",
                "bob: live"
            ],
            "every message once, in order"
        );
        let notices = shown_notices(&page).await;
        assert!(no_gap_notice(&notices), "{notices:?}");
    })
    .await;
}
