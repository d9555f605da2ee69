//! The outbound queue's bound, measured on this process's memory: a test binary of its own, so
//! that no other test allocates while it measures.

mod support;

use std::time::Duration;

use axum::extract::State;
use tachyon::{Tachyon, WebSocket, websocket};
use tokio::sync::mpsc;

use support::{raw_connect, reports, serve};

type Reporter = mpsc::UnboundedSender<String>;

fn report(reports: &Reporter, what: impl Into<String>) {
    let _ = reports.send(what.into());
}

#[websocket("/flood", queue_messages = 16, queue_bytes = 16_384)]
async fn flood(mut ws: WebSocket, State(reports): State<Reporter>) -> tachyon::Result<()> {
    ws.accept().await?;
    let sender = ws.sender()?;
    let before = rss_kib();
    let (mut queued, mut refused) = (0u32, 0u32);
    for _ in 0..100_000 {
        // A fresh kilobyte each time: an unbounded queue would hold 100 MB of them.
        match sender.try_send_bytes(vec![7u8; 1024]) {
            Ok(()) => queued += 1,
            Err(error) if error.is_full() => {
                refused += 1;
                // Give the connection a chance to write, as a real producer would.
                tokio::task::yield_now().await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    // Copies of the payload would cost 100,000 KiB if the queue grew without bound.
    let grown = rss_kib().saturating_sub(before);
    // A waiting send stays waiting: the queue is full for as long as the client does not read.
    let blocked = tokio::time::timeout(Duration::from_millis(300), sender.send_text("more"))
        .await
        .is_err();
    report(
        &reports,
        format!(
            "refused some: {}, grew under 40 MiB: {}, send waits: {blocked}",
            refused > 0,
            grown < 40 * 1024
        ),
    );
    report(
        &reports,
        format!("queued {queued} refused {refused} grown {grown} KiB"),
    );
    Ok(())
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_costs_no_more_than_its_queue_bound() {
    let (reporter, mut reports) = reports();
    let served = serve(Tachyon::with_state(reporter).websocket(flood)).await;
    // Connected, then never read from until the server is done.
    let _client = raw_connect(&served, "/flood").await;
    let verdict = reports.next().await;
    let numbers = reports.next().await;
    assert_eq!(
        verdict, "refused some: true, grew under 40 MiB: true, send waits: true",
        "{numbers}"
    );
}
