//! The tour's `/metrics` (Prometheus's text format, through `metrics-exporter-prometheus`),
//! scraped while clients use `/ws`: the gauge of open connections, the message and byte
//! counters moved by exactly what went over the sockets, closes by code and who closed,
//! handshakes accepted and refused; a keepalive timeout. The recorder is the process's: each
//! test counts on routes of its own.

mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{Client, Served, next_text, raw_connect, send_text, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One scrape: each sample's name and labels, and its value.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                let value: f64 = value.parse().expect("a number");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix('}').expect("labels end with `}`");
                        let labels = labels
                            .split(',')
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| {
                                let (key, value) = pair.split_once('=').expect("key=value");
                                (key.to_owned(), value.trim_matches('"').to_owned())
                            })
                            .collect();
                        (name.to_owned(), labels)
                    }
                    None => (series.to_owned(), BTreeMap::new()),
                };
                (name, labels, value)
            })
            .collect();
        Self(samples)
    }

    /// The value of the sample `name` whose labels include `labels`; 0 if there is none (a
    /// counter not incremented yet), and a failure if several match.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|(sample, sample_labels, _)| {
                sample == name
                    && labels.iter().all(|(key, value)| {
                        sample_labels.get(*key).map(String::as_str) == Some(*value)
                    })
            })
            .map(|(_, _, value)| *value)
            .collect();
        assert!(
            matching.len() <= 1,
            "{} samples of {name} match {labels:?}",
            matching.len()
        );
        matching.first().copied().unwrap_or(0.0)
    }
}

/// GET `/metrics` over a plain HTTP/1.1 connection.
async fn scrape(served: &Served) -> Scrape {
    let mut stream = within("connecting", tokio::net::TcpStream::connect(served.addr))
        .await
        .expect("connect");
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    within("sending", stream.write_all(request.as_bytes()))
        .await
        .expect("send");
    let mut response = String::new();
    within("the scrape", stream.read_to_string(&mut response))
        .await
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Scrape::parse(body)
}

/// Scrapes `/metrics` until `done` holds, at most for the tests' usual wait.
async fn scrape_until(served: &Served, done: impl Fn(&Scrape) -> bool) -> Scrape {
    until(|| scrape(served), done).await
}

/// Takes scrapes from `next` until one satisfies `done`, or the tests' usual wait is over, and
/// returns the last: the caller asserts on it, so a state that never comes fails the test. A
/// metric is the one thing outside the server that shows it: what the server does after a
/// client's last frame takes a moment, and a connection adds its counts within a second.
async fn until<F: Future<Output = Scrape>>(
    mut next: impl FnMut() -> F,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let scrape = next().await;
        if done(&scrape) || tokio::time::Instant::now() >= deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `client` sends for `text`: a masked frame (2 + 4 bytes of header under 126 bytes).
fn client_frame(text: &str) -> f64 {
    (2 + 4 + text.len()) as f64
}

/// What the server sends back: `Echo: {text}`, unmasked.
fn server_frame(text: &str) -> f64 {
    (2 + "Echo: ".len() + text.len()) as f64
}

async fn echo(client: &mut Client, text: &str) {
    send_text(client, text).await;
    assert_eq!(next_text(client).await, format!("Echo: {text}"));
}

#[tokio::test]
async fn the_tour_serves_its_metrics_to_prometheus() {
    let served = support::serve_tachyon(tour::app()).await;
    let before = scrape(&served).await;
    let ws = [("route", "/ws")];

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(raw_connect(&served, "/ws").await);
    }
    // 10 echoes over the three connections.
    let texts: Vec<String> = (0..10).map(|n| format!("message {n}")).collect();
    for (n, text) in texts.iter().enumerate() {
        echo(&mut clients[n % 3], text).await;
    }
    // The third client closes with 4001 and gets the server's reply.
    let mut leaving = clients.pop().expect("three clients");
    let reason = "bye";
    within(
        "closing",
        leaving.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: reason.into(),
        }))),
    )
    .await
    .expect("close");
    match within("the close reply", leaving.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    // A refused handshake: `/ws/secure` without the token closes with 4001 before accepting
    // (403).
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws/secure", served.addr)).await;
    assert!(refused.is_err(), "the handshake was refused");

    let closes = [("route", "/ws"), ("code", "4001"), ("closed_by", "client")];
    // On the wire: the messages' frames, then the close (4001 and its reason) and the reply
    // (the code alone).
    let received: f64 = texts.iter().map(|text| client_frame(text)).sum::<f64>()
        + (2 + 4 + 2 + reason.len()) as f64;
    let sent: f64 = texts.iter().map(|text| server_frame(text)).sum::<f64>() + (2 + 2) as f64;
    let expected = [
        ("tachyon_messages_received_total", 10.0),
        ("tachyon_messages_sent_total", 10.0),
        ("tachyon_bytes_received_total", received),
        ("tachyon_bytes_sent_total", sent),
    ];
    // A connection adds its counts to the counters within a second (and when it ends).
    let after = scrape_until(&served, |scrape| {
        scrape.value("tachyon_connections", &ws) == 2.0
            && scrape.value("tachyon_closes_total", &closes) == 1.0
            && expected
                .iter()
                .all(|(name, value)| scrape.value(name, &ws) - before.value(name, &ws) == *value)
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };

    assert_eq!(after.value("tachyon_connections", &ws), 2.0);
    for (name, value) in expected {
        assert_eq!(moved(name, &ws), value, "{name}");
    }
    assert_eq!(moved("tachyon_closes_total", &closes), 1.0);
    let accepted = [("route", "/ws"), ("outcome", "accepted"), ("status", "101")];
    assert_eq!(moved("tachyon_handshakes_total", &accepted), 3.0);
    let refused = [
        ("route", "/ws/secure"),
        ("outcome", "refused"),
        ("status", "403"),
    ];
    assert_eq!(moved("tachyon_handshakes_total", &refused), 1.0);
    // One connection ended: its lifetime is in the histogram (a summary: `_count`).
    assert_eq!(moved("tachyon_connection_duration_seconds_count", &ws), 1.0);
    assert_eq!(moved("tachyon_handshake_duration_seconds_count", &ws), 3.0);
    drop(clients);
}

/// Closes (1011) a client that answers no ping within 200 ms, and drops it 200 ms later if it
/// does not answer the close either.
#[tachyon::websocket(
    "/metrics/keepalive",
    keepalive_interval = Duration::from_millis(100),
    keepalive_timeout = Duration::from_millis(200),
    close_timeout = Duration::from_millis(200)
)]
async fn keepalive(mut ws: tachyon::WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        ws.receive().await?;
    }
}

#[tokio::test]
async fn a_keepalive_timeout_is_counted_with_its_close() {
    // The same recorder as the tour's (a process has one).
    let prometheus = tour::prometheus();
    let served = support::serve_tachyon(tachyon::Tachyon::new().websocket(keepalive)).await;
    let route = [("route", "/metrics/keepalive")];
    let closes = [
        ("route", "/metrics/keepalive"),
        ("code", "1011"),
        ("closed_by", "server"),
    ];
    // A client that reads nothing answers no ping.
    let client = raw_connect(&served, "/metrics/keepalive").await;
    let scrape = until(
        || std::future::ready(Scrape::parse(&prometheus.render())),
        |scrape| scrape.value("tachyon_closes_total", &closes) == 1.0,
    )
    .await;
    assert_eq!(
        scrape.value("tachyon_keepalive_timeouts_total", &route),
        1.0
    );
    assert_eq!(scrape.value("tachyon_closes_total", &closes), 1.0);
    assert_eq!(scrape.value("tachyon_connections", &route), 0.0);
    drop(client);
}

#[tokio::test]
async fn broadcasts_are_counted_as_sent_to_each_member() {
    let served = support::serve_tachyon(tour::app()).await;
    let chat = [("route", "/chat/{room}")];
    let before = scrape(&served).await;
    // `a` is in the room once its own message comes back; then `b` joins the same way, and
    // both get its message. Under `Tachyon::serve` a broadcast to an idle member is written
    // straight into its socket: those count too.
    let mut a = raw_connect(&served, "/chat/metrics").await;
    send_text(&mut a, "a").await;
    assert_eq!(next_text(&mut a).await, "[metrics] a");
    let mut b = raw_connect(&served, "/chat/metrics").await;
    send_text(&mut b, "b").await;
    assert_eq!(next_text(&mut b).await, "[metrics] b");
    assert_eq!(next_text(&mut a).await, "[metrics] b");
    let frame = (2 + "[metrics] a".len()) as f64;
    let expected = [
        ("tachyon_messages_received_total", 2.0),
        ("tachyon_messages_sent_total", 3.0),
        ("tachyon_bytes_received_total", 2.0 * client_frame("a")),
        ("tachyon_bytes_sent_total", 3.0 * frame),
    ];
    let after = scrape_until(&served, |scrape| {
        expected
            .iter()
            .all(|(name, value)| scrape.value(name, &chat) - before.value(name, &chat) == *value)
    })
    .await;
    for (name, value) in expected {
        assert_eq!(
            after.value(name, &chat) - before.value(name, &chat),
            value,
            "{name}"
        );
    }
}
