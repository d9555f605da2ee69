//! Headless Chromium driven through chromedriver (fantoccini), with waits that always end: for
//! tests that must wait for a page to reach a state rather than dump it at a guessed moment.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

use super::within;

/// The chromedriver binary: `$CHROMEDRIVER`, or `chromedriver` on the `PATH`.
fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned())
}

/// The browser binary chromedriver starts: `$CHROMIUM`, or Debian's.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// Starts chromedriver on a free loopback port; it is killed when the child is dropped.
pub async fn start_chromedriver() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start `{}` ({error}): this test needs chromedriver; install it with \
                 `apt-get install chromium-driver` (.ci/run does) or point $CHROMEDRIVER at it",
                chromedriver()
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    // Ready once it accepts connections.
    within("chromedriver to listen", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    (child, url)
}

/// A headless Chromium session.
pub async fn browser(webdriver: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    within(
        "a browser session",
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(webdriver),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot start a Chromium session through chromedriver: {error}"))
}

/// Waits until the page has an element matching the XPath `xpath`.
pub async fn wait_for(client: &Client, what: &str, xpath: &str) {
    if let Err(error) = client
        .wait()
        .at_most(super::WAIT)
        .for_element(Locator::XPath(xpath))
        .await
    {
        let page = client.source().await.unwrap_or_default();
        panic!("the page never showed {what} ({error}); it was:\n{page}");
    }
}
