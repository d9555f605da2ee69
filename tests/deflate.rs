//! permessage-deflate (RFC 7692) through real sockets: what the server answers each offer, at
//! each settings level; compressed messages both ways, whole and fragmented; the threshold;
//! inflating bounded by the message limit; a broadcast to members with and without
//! compression; and compression over HTTP/2.

mod support;

use axum::extract::State;
use axum::http::{StatusCode, header};
use tachyon::settings::Deflate;
use tachyon::{Message, Rooms, Settings, Tachyon, WebSocket, WebSocketRouter, websocket};
use tokio::sync::mpsc;

use support::raw::{BINARY, CLOSE, PING, PONG, RawClient, TEXT, compress, compress_in_pieces};
use support::within;

/// What Chrome offers on every connection.
const CHROME: &str = "permessage-deflate; client_max_window_bits";
/// What the server answers it (and Firefox's and Safari's bare offer).
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

type Report = mpsc::UnboundedSender<String>;

/// Echoes every message; reports how the connection ended.
#[websocket("/echo", deflate = Deflate::new())]
async fn echo(mut ws: WebSocket, State(report): State<Report>) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive().await {
            Ok(Message::Text(text)) => ws.send_text(text).await?,
            Ok(Message::Binary(bytes)) => ws.send_bytes(bytes).await?,
            Err(error) => {
                if let Some(gone) = error.as_disconnect() {
                    let _ = report.send(format!("{:?} {}", gone.kind, gone.code));
                }
                return Ok(());
            }
        }
    }
}

/// The same echo with no deflate setting of its own.
#[websocket("/plain")]
async fn plain(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let text = ws.receive_text().await?;
        ws.send_text(text).await?;
    }
}

/// Turns off what a wider level turned on.
#[websocket("/off", deflate = None)]
async fn off(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    let text = ws.receive_text().await?;
    ws.send_text(text).await?;
    Ok(())
}

async fn serve_echo() -> (support::Served, mpsc::UnboundedReceiver<String>) {
    let (report, reports) = mpsc::unbounded_channel();
    let app = Tachyon::with_state(report).websocket(echo).websocket(plain);
    (support::serve(app).await, reports)
}

/// A JSON document of `items` objects, as a dashboard or a chat sends.
fn json(items: usize) -> String {
    let items: Vec<String> = (0..items)
        .map(|i| {
            format!(
                r#"{{"id":{i},"user":"user-{}","status":"online","score":{},"tags":["a","b"]}}"#,
                i % 17,
                i * 31 % 1000
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn browsers_offers_are_answered_only_where_deflate_is_on() {
    let (served, _reports) = serve_echo().await;
    for offer in [
        CHROME,
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits=15",
    ] {
        let client = RawClient::connect(served.addr, "/echo", Some(offer)).await;
        assert_eq!(client.extensions.as_deref(), Some(AGREED), "{offer}");
    }
    let client = RawClient::connect(
        served.addr,
        "/echo",
        Some("permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        client.extensions,
        Some(format!("{AGREED}; server_max_window_bits=10"))
    );
    // Without the setting, or without an offer (or with one malformed), nothing is agreed.
    let client = RawClient::connect(served.addr, "/plain", Some(CHROME)).await;
    assert_eq!(client.extensions, None);
    let client = RawClient::connect(served.addr, "/echo", None).await;
    assert_eq!(client.extensions, None);
    let client = RawClient::connect(
        served.addr,
        "/echo",
        Some("permessage-deflate; server_max_window_bits=7"),
    )
    .await;
    assert_eq!(client.extensions, None);
}

#[tokio::test]
async fn deflate_set_on_the_app_and_router_applies_below_unless_turned_off() {
    let router = WebSocketRouter::with_prefix("/room")
        .settings(Settings::new().deflate(Deflate::new()))
        .websocket(plain)
        .websocket(off);
    let served = support::serve(Tachyon::new().include_router(router)).await;
    let client = RawClient::connect(served.addr, "/room/plain", Some(CHROME)).await;
    assert_eq!(client.extensions.as_deref(), Some(AGREED));
    let client = RawClient::connect(served.addr, "/room/off", Some(CHROME)).await;
    assert_eq!(client.extensions, None);

    let app = Tachyon::new()
        .settings(Settings::new().deflate(Deflate::new()))
        .websocket(plain);
    let served = support::serve(app).await;
    let client = RawClient::connect(served.addr, "/plain", Some(CHROME)).await;
    assert_eq!(client.extensions.as_deref(), Some(AGREED));
}

#[tokio::test]
async fn compressed_messages_echo_compressed_and_small_ones_plain() {
    let (served, _reports) = serve_echo().await;
    let mut client = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    let document = json(200);

    // Whole.
    client.send_compressed(TEXT, document.as_bytes()).await;
    let (opcode, frame, payload) = client.next_message().await;
    assert_eq!(opcode, TEXT);
    assert!(frame.compressed, "a large message comes back compressed");
    assert!(
        frame.payload.len() * 4 < document.len(),
        "{} bytes on the wire for {}",
        frame.payload.len(),
        document.len()
    );
    assert_eq!(payload, document.as_bytes());

    // Fragmented, with a ping between the fragments; and binary.
    let compressed = compress(document.as_bytes());
    let (first, rest) = compressed.split_at(compressed.len() / 2);
    client.send_frame(false, true, TEXT, first).await;
    client.send_frame(true, false, PING, b"between").await;
    client.send_frame(true, false, 0x0, rest).await;
    let pong = client.next_frame().await.expect("the pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"between"[..])
    );
    assert_eq!(client.next_message().await.2, document.as_bytes());
    client.send_compressed(BINARY, &[7; 5000]).await;
    let (opcode, frame, payload) = client.next_message().await;
    assert_eq!(
        (opcode, frame.compressed, payload),
        (BINARY, true, vec![7; 5000])
    );
    // 128 KiB that do not compress (what Autobahn's 12.5.* send), in frames of 32 KiB: still
    // compressed (deflate's stored blocks), and whole.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..128 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let compressed = compress(&noise);
    let pieces: Vec<&[u8]> = compressed.chunks(32 * 1024).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let (first, last) = (i == 0, i + 1 == pieces.len());
        let opcode = if first { BINARY } else { 0x0 };
        client.send_frame(last, first, opcode, piece).await;
    }
    let (opcode, frame, payload) = client.next_message().await;
    assert_eq!((opcode, frame.compressed), (BINARY, true));
    assert!(payload == noise, "128 KiB of noise came back different");

    // Below the threshold (256 bytes), plain; a client may send plain messages too.
    client.send_compressed(TEXT, b"hi").await;
    let (_, frame, payload) = client.next_message().await;
    assert_eq!((frame.compressed, payload.as_slice()), (false, &b"hi"[..]));
    client.send_frame(true, false, TEXT, b"plain").await;
    let (_, frame, payload) = client.next_message().await;
    assert_eq!(
        (frame.compressed, payload.as_slice()),
        (false, &b"plain"[..])
    );
}

/// Peak resident memory of this test process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn a_compressed_bomb_closes_1009_without_being_inflated_whole() {
    let (served, mut reports) = serve_echo().await;
    let mut client = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    // 10 MiB of zeros, compressed 64 KiB at a time: about 10 KiB on the wire.
    let zeros = [0u8; 64 * 1024];
    let bomb = compress_in_pieces(std::iter::repeat_n(&zeros[..], 160));
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let before = peak_rss_kib();
    client.send_frame(true, true, BINARY, &bomb).await;
    client.expect_close(1009).await;
    assert_eq!(
        within("the handler's report", reports.recv())
            .await
            .as_deref(),
        Some("MessageTooBig 1009")
    );
    // The limit is 1 MiB: inflating stopped there, far from the 10 MiB it would take.
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 6 * 1024, "peak memory grew by {grown} KiB");
}

#[tokio::test]
async fn compression_the_server_did_not_agree_to_is_a_protocol_error() {
    let (served, mut reports) = serve_echo().await;
    // No offer: the compressed bit is not allowed.
    let mut client = RawClient::connect(served.addr, "/echo", None).await;
    client
        .send_frame(true, true, TEXT, &compress(b"hello"))
        .await;
    client.expect_close(1002).await;
    assert_eq!(
        within("the report", reports.recv()).await.as_deref(),
        Some("ProtocolViolation 1002")
    );
    // Agreed, but on a control frame.
    let mut client = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    client.send_frame(true, true, PING, b"").await;
    client.expect_close(1002).await;
    // Agreed, but data that does not inflate: 1007.
    let mut client = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    client.send_frame(true, true, TEXT, &[0xFF; 32]).await;
    client.expect_close(1007).await;
}

#[tokio::test]
async fn text_that_turns_invalid_inside_a_frame_fails_before_the_frame_ends() {
    let (served, mut reports) = serve_echo().await;
    let mut client = RawClient::connect(served.addr, "/echo", None).await;
    // The header says 100,000 bytes; only the first 20 come, and they are not UTF-8.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&100_000u64.to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    let mut start = header;
    start.extend_from_slice(b"valid, then ");
    start.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
    client.send_raw(&start).await;
    client.expect_close(1007).await;
    assert_eq!(
        within("the report", reports.recv()).await.as_deref(),
        Some("ProtocolViolation 1007")
    );
}

/// Joins the room "feed" and stays until the client leaves.
#[websocket("/feed")]
async fn member(mut ws: WebSocket, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join("feed", &ws)?;
    ws.send_text("joined").await?;
    while ws.receive().await.is_ok() {}
    Ok(())
}

#[tokio::test]
async fn a_broadcast_reaches_members_compressed_or_plain_as_each_agreed() {
    let rooms = Rooms::new();
    let app = Tachyon::with_state(rooms.clone())
        .settings(Settings::new().deflate(Deflate::new()))
        .websocket(member);
    let served = support::serve(app).await;
    let mut members = Vec::new();
    for offer in [Some(CHROME), Some("permessage-deflate"), None] {
        let mut client = RawClient::connect(served.addr, "/feed", offer).await;
        let (_, _, joined) = client.next_message().await;
        assert_eq!(joined, b"joined");
        members.push(client);
    }
    let document = json(100);
    let delivery = rooms.to("feed").send(document.clone());
    assert_eq!(delivery.reached(), 3);
    let mut wire = Vec::new();
    for client in &mut members {
        let (_, frame, payload) = client.next_message().await;
        assert_eq!(payload, document.as_bytes());
        wire.push(frame);
    }
    assert!(wire[0].compressed && wire[1].compressed && !wire[2].compressed);
    // Compressed once: both members got the same bytes.
    assert_eq!(wire[0].payload, wire[1].payload);
}

#[tokio::test]
async fn deflate_works_over_http2() {
    let (served, _reports) = serve_echo().await;
    let (mut response, driver) = support::http2_handshake(served.addr, "/echo", Some(CHROME)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let agreed = response
        .headers()
        .get(header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    assert_eq!(agreed.as_deref(), Some(AGREED));
    let upgraded = within("the upgrade", hyper::upgrade::on(&mut response))
        .await
        .expect("upgraded");
    let mut client = RawClient::over(hyper_util::rt::TokioIo::new(upgraded), agreed);
    let document = json(50);
    client.send_compressed(TEXT, document.as_bytes()).await;
    let (_, frame, payload) = client.next_message().await;
    assert!(frame.compressed);
    assert_eq!(payload, document.as_bytes());
    client
        .send_frame(true, false, CLOSE, &1000u16.to_be_bytes())
        .await;
    client.expect_close(1000).await;
    driver.abort();
}

#[tokio::test]
async fn connections_sharing_a_thread_inflate_and_compress_each_their_own() {
    // Nothing is kept per connection between messages: messages of two connections, one after
    // the other on the same compressor and inflaters, each come back whole.
    let (served, _reports) = serve_echo().await;
    let mut first = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    let mut second = RawClient::connect(served.addr, "/echo", Some(CHROME)).await;
    let one = json(30);
    let two = json(40);
    for _ in 0..3 {
        first.send_compressed(TEXT, one.as_bytes()).await;
        second.send_compressed(TEXT, two.as_bytes()).await;
        assert_eq!(first.next_message().await.2, one.as_bytes());
        assert_eq!(second.next_message().await.2, two.as_bytes());
    }
}
