//! The tour's page in a real browser: headless Chromium loads `/`, its JavaScript (the chapter's
//! client) connects to `/ws`, sends `Hello!` and writes the echo into the page.
//!
//! A second page checks what a browser sees of a refused handshake, with and without
//! `browser_readable_rejections`; it waits for the close codes through chromedriver, since a
//! dump at a guessed moment can come before the closes (it did, about once in seven runs).
//!
//! Needs Chromium (`apt-get install chromium`; `.ci/run` installs it). Without it this test fails
//! and says so: it is never skipped.

mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour;

use std::process::Stdio;

use futures_util::FutureExt;

use tokio::process::Command;

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
