//! The tour's page in a real browser: headless Chromium loads `/`, its JavaScript (the chapter's
//! client) connects to `/ws`, sends `Hello!` and writes the echo into the page.
//!
//! A second page checks what a browser sees of a refused handshake, with and without
//! `browser_readable_rejections`; it waits for the close codes through chromedriver, since a
//! dump at a guessed moment can come before the closes (it did, about once in seven runs).
//!
//! The chat example's page reconnects by itself: after the server drops its connection, and
//! after its instance stops and a load balancer sends it to another instance (sharing rooms and
//! history through Redis); either way it shows every message exactly once.
//!
//! Needs Chromium and chromedriver (`apt-get install chromium chromium-driver`; `.ci/run`
//! installs them), and `redis-server` for the failover. Without them these tests fail and say
//! so: they are never skipped.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;
mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::Stdio;

use axum::extract::FromRef;
use futures_util::FutureExt;
use serde_json::json;
use tachyon::{CloseCode, Rooms};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinSet;

use support::chat_page::{
    join, message, notice, notice_starting, say, shown_messages, shown_notices,
};
use support::example::Example;
use support::redis_server::RedisServer;
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
        if dom.contains("<li>Echo: Hello!</li>") && dom.contains("<li>Long echo:") {
            // The tour's `/ws` turns compression on, and Chromium offers it: the long echo came
            // compressed, and Chromium inflated it whole.
            assert!(
                dom.contains("<li>Long echo: intact, 1306 characters</li>"),
                "the long echo did not arrive intact:\n{dom}"
            );
            assert!(
                dom.contains(
                    "Extensions: permessage-deflate; server_no_context_takeover; \
                     client_no_context_takeover</li>"
                ),
                "the page's `ws.extensions` does not say permessage-deflate:\n{dom}"
            );
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

/// A load balancer in front of the chat instances, which is how the page reaches another
/// instance once its own is gone: it keeps connecting to the origin it was loaded from. Each
/// TCP connection goes to the instance the balancer points at then; pointing at none refuses
/// them (as a balancer with no healthy instance would).
struct Balancer {
    addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (target, pointed) = watch::channel(Some(target));
        let task = tokio::spawn(async move {
            // Aborting the balancer drops the set, which ends every connection it carries.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(to) = *pointed.borrow() else {
                    continue; // dropped: refused
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, target, task }
    }

    fn point_at(&self, target: Option<SocketAddr>) {
        self.target.send_replace(target);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_resumes_on_another_instance_and_shows_every_message_once() {
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let mut a = Example::start("chat", &["--redis", &redis_url]).await;
    let b = Example::start("chat", &["--redis", &redis_url]).await;
    let balancer = Balancer::start(a.addr).await;
    let url = format!("http://{}/", balancer.addr);
    let mut bob = member(b.connect("/chat/garden").await, "bob").await;
    with_page(|page| async move {
        join(&page, &url, "alice", "garden").await;
        for n in 1..=3 {
            say_from(&mut bob, "bob", &format!("b{n}")).await;
        }
        wait_for(&page, "bob's messages", &message("bob", "b3")).await;
        // The last message the page shows before A stops has its place from A.
        say(&page, "from a").await;
        wait_for(&page, "alice's message", &message("alice", "from a")).await;
        until_message(&mut bob, "alice", "from a").await;

        // A stops as its operator stops it; the balancer has no instance for a while.
        balancer.point_at(None);
        a.terminate().await;
        wait_for(
            &page,
            "the lost connection",
            &notice_starting("Connection lost (1001"),
        )
        .await;
        assert!(a.exit().await.success(), "A exits cleanly after SIGTERM");
        for n in 1..=5 {
            say_from(&mut bob, "bob", &format!("missed {n}")).await;
        }
        // Now B takes the traffic: the page's next try resumes there from A's position.
        balancer.point_at(Some(b.addr));
        let missing = notice("Reconnected: some messages may be missing");
        let back = format!("{} | {missing}", message("bob", "missed 5"));
        wait_for(&page, "the page back, on B", &back).await;
        let notices = shown_notices(&page).await;
        assert!(
            no_gap_notice(&notices),
            "B resumes from A's position (the history is shared through Redis): {notices:?}"
        );
        say_from(&mut bob, "bob", "live").await;
        wait_for(&page, "the live message", &message("bob", "live")).await;
        assert_eq!(
            shown_messages(&page).await,
            [
                "bob: b1",
                "bob: b2",
                "bob: b3",
                "alice: from a",
                "bob: missed 1",
                "bob: missed 2",
                "bob: missed 3",
                "bob: missed 4",
                "bob: missed 5",
                "bob: live"
            ],
            "every message once, in order"
        );
    })
    .await;
}
