//! Messages after the handshake: typed receive and send, pings, disconnects, and the close
//! frame each way a handler can end.

mod support;

use std::collections::BTreeMap;

use axum::Extension;
use axum_test::WsMessage;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{
    Reports, connect, expect_close, expect_json, expect_text, next_message, raw_connect, serve,
    server, within,
};
use tachyon::error::MessageKind;
use tachyon::{CloseCode, Error, Message, Tachyon, WebSocket, websocket};
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::Message as WireMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WireCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Reports every received message's kind and content, until the client leaves.
#[websocket("/kinds")]
async fn kinds(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let answer = match ws.receive().await? {
            Message::Text(text) => format!("text:{text}"),
            Message::Binary(bytes) => format!("binary:{bytes:?}"),
        };
        ws.send_text(answer).await?;
    }
}

#[tokio::test]
async fn receive_takes_text_and_binary() {
    let server = server(Tachyon::new().websocket(kinds));
    let mut ws = connect(&server, "/kinds").await;
    within("sending", ws.send_text("héllo")).await;
    expect_text(&mut ws, "text:héllo").await;
    within(
        "sending",
        ws.send_message(WsMessage::Binary(vec![0u8, 159].into())),
    )
    .await;
    expect_text(&mut ws, "binary:b\"\\0\\x9f\"").await;
}

/// Asks for the kind the client names in the path, and reports the error it gets.
#[websocket("/strict/{kind}")]
async fn strict(mut ws: WebSocket, kind: String) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let result = if kind == "text" {
            ws.receive_text().await.map(|text| format!("ok:{text}"))
        } else {
            ws.receive_bytes()
                .await
                .map(|bytes| format!("ok:{}", bytes.len()))
        };
        let answer = match result {
            Ok(answer) => answer,
            Err(Error::UnexpectedMessage { expected, received }) => {
                format!("unexpected:{expected}:{received}")
            }
            Err(other) => return Err(other),
        };
        ws.send_text(answer).await?;
    }
}

#[tokio::test]
async fn a_frame_of_the_wrong_kind_is_a_typed_error_and_the_connection_stays_open() {
    let server = server(Tachyon::new().websocket(strict));
    let mut ws = connect(&server, "/strict/text").await;
    within(
        "sending",
        ws.send_message(WsMessage::Binary(vec![1u8].into())),
    )
    .await;
    expect_text(&mut ws, "unexpected:text:binary").await;
    within("sending", ws.send_text("fine")).await;
    expect_text(&mut ws, "ok:fine").await;

    let mut ws = connect(&server, "/strict/bytes").await;
    within("sending", ws.send_text("not bytes")).await;
    expect_text(&mut ws, "unexpected:binary:text").await;
    within(
        "sending",
        ws.send_message(WsMessage::Binary(vec![1u8, 2].into())),
    )
    .await;
    expect_text(&mut ws, "ok:2").await;
}

#[test]
fn message_kinds_read_as_words() {
    assert_eq!(MessageKind::Text.to_string(), "text");
    assert_eq!(
        Error::UnexpectedMessage {
            expected: MessageKind::Binary,
            received: MessageKind::Text
        }
        .to_string(),
        "expected a binary message but the client sent a text message (use `ws.receive()` to \
         accept both)"
    );
}

#[derive(Debug, Deserialize, Serialize)]
struct Move {
    x: i32,
    y: i32,
}

#[websocket("/moves")]
async fn moves(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive_json::<Move>().await {
            Ok(Move { x, y }) => ws.send_json(&Move { x: x + 1, y: y + 1 }).await?,
            Err(Error::InvalidJson(error)) => {
                ws.send_json(&json!({"error": error.to_string()})).await?;
            }
            Err(other) => return Err(other),
        }
    }
}

#[tokio::test]
async fn json_is_typed_and_invalid_json_is_answered() {
    let server = server(Tachyon::new().websocket(moves));
    let mut ws = connect(&server, "/moves").await;
    within("sending", ws.send_json(&json!({"x": 1, "y": 2}))).await;
    expect_json(&mut ws, json!({"x": 2, "y": 3})).await;
    // JSON in a binary frame is read too.
    within(
        "sending",
        ws.send_message(WsMessage::Binary(br#"{"x": 10, "y": 20}"#.to_vec().into())),
    )
    .await;
    expect_json(&mut ws, json!({"x": 11, "y": 21})).await;
    // Valid JSON of the wrong shape, then not JSON at all: both answered, connection open.
    within("sending", ws.send_json(&json!({"x": "one"}))).await;
    match next_message(&mut ws).await {
        WsMessage::Text(text) => assert!(text.contains("invalid type"), "{text}"),
        other => panic!("{other:?}"),
    }
    within("sending", ws.send_text("{")).await;
    match next_message(&mut ws).await {
        WsMessage::Text(text) => assert!(text.contains("EOF"), "{text}"),
        other => panic!("{other:?}"),
    }
    within("sending", ws.send_json(&json!({"x": 0, "y": 0}))).await;
    expect_json(&mut ws, json!({"x": 1, "y": 1})).await;
}

#[websocket("/unserializable")]
async fn unserializable(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    // JSON object keys must be strings.
    let map: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1], 1)]);
    match ws.send_json(&map).await {
        Err(Error::Serialize(_)) => ws.send_text("nothing sent").await,
        other => ws.send_text(format!("unexpected: {other:?}")).await,
    }
}

#[tokio::test]
async fn a_value_that_does_not_serialize_is_an_error_and_nothing_is_sent() {
    let server = server(Tachyon::new().websocket(unserializable));
    let mut ws = connect(&server, "/unserializable").await;
    expect_text(&mut ws, "nothing sent").await;
}

#[websocket("/bytes")]
async fn bytes(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_bytes(b"binary data".to_vec()).await?;
    ws.send_bytes(tachyon::Bytes::from_static(&[0, 1, 2]))
        .await?;
    ws.send_text("Hello").await?;
    ws.send_json(&json!({"message": "Hello"})).await
}

#[tokio::test]
async fn every_send_kind_arrives_as_sent() {
    let server = server(Tachyon::new().websocket(bytes));
    let mut ws = connect(&server, "/bytes").await;
    assert_eq!(
        within("bytes", ws.receive_bytes()).await,
        &b"binary data"[..]
    );
    assert_eq!(within("bytes", ws.receive_bytes()).await, &[0u8, 1, 2][..]);
    expect_text(&mut ws, "Hello").await;
    expect_json(&mut ws, json!({"message": "Hello"})).await;
    expect_close(&mut ws, 1000).await;
}

/// Echo that reports how it ended: what the last receive and a send after it returned.
#[websocket("/watched")]
async fn watched(
    mut ws: WebSocket,
    Extension(report): Extension<UnboundedSender<String>>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        match ws.receive_text().await {
            Ok(text) => ws.send_text(text).await?,
            Err(Error::Disconnected(gone)) => {
                let send = ws.send_text("anyone?").await;
                let again = ws.receive().await;
                let same = matches!(&send, Err(Error::Disconnected(d)) if *d == gone)
                    && matches!(&again, Err(Error::Disconnected(d)) if *d == gone);
                let _ = report.send(format!("{}|{}|{same}", gone.code, gone.reason));
                return Err(gone.into());
            }
            Err(other) => return Err(other),
        }
    }
}

fn watched_app() -> (axum::Router, Reports) {
    let (report, reports) = support::reports();
    let app: axum::Router = Tachyon::new().websocket(watched).into();
    (app.layer(Extension(report)), reports)
}

#[tokio::test]
async fn a_client_close_is_a_typed_disconnect_from_every_receive_and_send() {
    let (app, mut reports) = watched_app();
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/watched").await;
    within("sending", client.send(WireMessage::text("ping")))
        .await
        .expect("send");
    let close = WireCloseFrame {
        code: 1001.into(),
        reason: "tab closed".into(),
    };
    within("closing", client.close(Some(close)))
        .await
        .expect("close");
    assert_eq!(reports.next().await, "1001|tab closed|true");
    // The server answered the close handshake.
    loop {
        match within("the close reply", client.next()).await {
            Some(Ok(WireMessage::Close(Some(frame)))) => {
                assert_eq!(support::wire_code(frame.code), 1001);
                break;
            }
            Some(Ok(WireMessage::Text(_))) => {}
            other => panic!("expected the close reply, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_is_a_typed_disconnect_with_1006() {
    let (app, mut reports) = watched_app();
    let served = serve(app).await;
    let client = raw_connect(&served, "/watched").await;
    drop(client); // no close frame: the TCP connection just ends
    let report = reports.next().await;
    assert!(report.starts_with("1006|"), "{report}");
    assert!(report.ends_with("|true"), "{report}");
}

#[tokio::test]
async fn a_close_without_a_code_is_1005() {
    let (app, mut reports) = watched_app();
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/watched").await;
    within("closing", client.close(None)).await.expect("close");
    assert_eq!(reports.next().await, "1005||true");
}

/// Sends `frame` raw and returns the close frame the server answers with.
async fn close_after(frame: Frame) -> (u16, String) {
    let (app, mut reports) = watched_app();
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/watched").await;
    within("sending", client.send(WireMessage::Frame(frame)))
        .await
        .expect("send");
    let answer = loop {
        match within("the close frame", client.next()).await {
            Some(Ok(WireMessage::Close(Some(close)))) => {
                break (
                    support::wire_code(close.code),
                    close.reason.as_str().to_owned(),
                );
            }
            Some(Ok(WireMessage::Text(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    // The handler saw the same code.
    let report = reports.next().await;
    assert!(report.starts_with(&format!("{}|", answer.0)), "{report}");
    answer
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let frame = Frame::message(vec![b'h', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    let (code, reason) = close_after(frame).await;
    assert_eq!(code, 1007);
    assert!(reason.contains("UTF-8"), "{reason}");
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002() {
    // A continuation frame with no message to continue.
    let frame = Frame::message(b"orphan".to_vec(), OpCode::Data(Data::Continue), true);
    let (code, _) = close_after(frame).await;
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn pings_are_answered_automatically() {
    let (app, _reports) = watched_app();
    let served = serve(app).await;
    let mut client = raw_connect(&served, "/watched").await;
    within(
        "ping",
        client.send(WireMessage::Ping(b"are you there".to_vec().into())),
    )
    .await
    .expect("ping");
    match within("the pong", client.next()).await {
        Some(Ok(WireMessage::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // The handler did not see the ping: the echo still works.
    within("sending", client.send(WireMessage::text("after ping")))
        .await
        .expect("send");
    match within("the echo", client.next()).await {
        Some(Ok(WireMessage::Text(text))) => assert_eq!(text.as_str(), "after ping"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[websocket("/fails/{length}")]
async fn fails(mut ws: WebSocket, length: usize) -> Result<(), String> {
    ws.accept().await.map_err(|error| error.to_string())?;
    Err("é".repeat(length))
}

#[websocket("/fails-openly/{length}", expose_errors = true)]
async fn fails_openly(mut ws: WebSocket, length: usize) -> Result<(), String> {
    ws.accept().await.map_err(|error| error.to_string())?;
    Err("é".repeat(length))
}

#[tokio::test]
async fn an_error_after_accept_closes_with_1011_and_a_generic_reason() {
    let server = server(Tachyon::new().websocket(fails));
    let mut ws = connect(&server, "/fails/3").await;
    assert_eq!(expect_close(&mut ws, 1011).await, "internal error");
}

#[tokio::test]
async fn with_expose_errors_the_error_text_is_the_reason() {
    let server = server(Tachyon::new().websocket(fails_openly));
    let mut ws = connect(&server, "/fails-openly/3").await;
    assert_eq!(expect_close(&mut ws, 1011).await, "ééé");
    // A long error is cut to the 123 bytes a close frame holds, on a character boundary.
    let mut ws = connect(&server, "/fails-openly/200").await;
    let reason = expect_close(&mut ws, 1011).await;
    assert_eq!(reason, "é".repeat(61));
    assert_eq!(reason.len(), 122);
}

#[websocket("/panics")]
async fn panics(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text("about to fail").await?;
    panic!("handler bug after accept");
}

#[tokio::test]
async fn a_panic_after_accept_closes_with_1011_and_the_server_keeps_serving() {
    let server = server(Tachyon::new().websocket(panics).websocket(kinds));
    let mut ws = connect(&server, "/panics").await;
    expect_text(&mut ws, "about to fail").await;
    expect_close(&mut ws, 1011).await;
    let mut ws = connect(&server, "/kinds").await;
    within("sending", ws.send_text("still serving")).await;
    expect_text(&mut ws, "text:still serving").await;
}

#[websocket("/codes")]
async fn codes(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        match ws.close(code, "").await {
            Err(Error::InvalidCloseCode(invalid)) if invalid.0 == code => {}
            other => return ws.send_text(format!("{code}: {other:?}")).await,
        }
    }
    // Nothing was sent: the connection is still open.
    ws.send_text("still open").await?;
    ws.close(CloseCode::POLICY_VIOLATION, "no spam").await
}

#[tokio::test]
async fn unsendable_close_codes_are_refused_before_anything_is_sent() {
    let server = server(Tachyon::new().websocket(codes));
    let mut ws = connect(&server, "/codes").await;
    expect_text(&mut ws, "still open").await;
    assert_eq!(expect_close(&mut ws, 1008).await, "no spam");
}

#[websocket("/detached")]
async fn detached(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    // The connection outlives the handler: a task keeps it, answers once, then lets it go.
    tokio::spawn(async move {
        if let Ok(text) = ws.receive_text().await {
            let _ = ws.send_text(format!("from the task: {text}")).await;
        }
    });
    Ok(())
}

#[tokio::test]
async fn a_connection_moved_out_of_its_handler_closes_when_dropped() {
    let server = server(Tachyon::new().websocket(detached));
    let mut ws = connect(&server, "/detached").await;
    within("sending", ws.send_text("hi")).await;
    expect_text(&mut ws, "from the task: hi").await;
    expect_close(&mut ws, 1000).await;
}
