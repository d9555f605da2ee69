//! Every route of the tour example (`cargo run --example tour`), driven over real sockets: the
//! Rust counterparts of the chapter's examples and of its TestClient tests.

mod support;
#[path = "../examples/tour.rs"]
#[allow(dead_code)]
mod tour;

use axum::http::StatusCode;
use axum_test::WsMessage;
use serde_json::json;
use support::{
    connect, expect_close, expect_json, expect_text, handshake, next_message, server, within,
};

#[tokio::test]
async fn echo() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws").await;
    within("sending", ws.send_text("Hello")).await;
    expect_text(&mut ws, "Echo: Hello").await;
    within("sending", ws.send_text("Hello!")).await;
    expect_text(&mut ws, "Echo: Hello!").await;
}

#[tokio::test]
async fn room_welcomes_then_echoes_with_the_room() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/room123").await;
    expect_text(&mut ws, "Welcome to room: room123").await;
    within("sending", ws.send_text("hi")).await;
    expect_text(&mut ws, "[room123] hi").await;
}

#[tokio::test]
async fn room_ids_are_percent_decoded() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/the%20lobby").await;
    expect_text(&mut ws, "Welcome to room: the lobby").await;
}

#[tokio::test]
async fn json_is_processed_and_echoed() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/json").await;
    within("sending", ws.send_json(&json!({"message": "Hello"}))).await;
    expect_json(
        &mut ws,
        json!({"received": {"message": "Hello"}, "processed": true, "echo": "Hello"}),
    )
    .await;
    within("sending", ws.send_json(&json!({"other": 1}))).await;
    expect_json(
        &mut ws,
        json!({"received": {"other": 1}, "processed": true, "echo": ""}),
    )
    .await;
}

#[tokio::test]
async fn invalid_json_is_answered_and_the_connection_stays_open() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/json").await;
    within("sending", ws.send_text("{not json")).await;
    match next_message(&mut ws).await {
        WsMessage::Text(text) => assert!(text.contains("invalid JSON"), "{text}"),
        other => panic!("expected the error answer, got {other:?}"),
    }
    within("sending", ws.send_json(&json!({"message": "still here"}))).await;
    expect_json(
        &mut ws,
        json!({"received": {"message": "still here"}, "processed": true, "echo": "still here"}),
    )
    .await;
}

#[tokio::test]
async fn static_segments_beat_parameters() {
    // `/ws/json` and `/ws/bytes` are their own routes, not rooms called "json" and "bytes".
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/json").await;
    within("sending", ws.send_json(&json!({"message": "x"}))).await;
    expect_json(
        &mut ws,
        json!({"received": {"message": "x"}, "processed": true, "echo": "x"}),
    )
    .await;
}

#[tokio::test]
async fn bytes_are_reversed() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/bytes").await;
    within(
        "sending",
        ws.send_message(WsMessage::Binary(vec![1u8, 2, 3, 255].into())),
    )
    .await;
    match next_message(&mut ws).await {
        WsMessage::Binary(bytes) => assert_eq!(&bytes[..], [255, 3, 2, 1]),
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[tokio::test]
async fn text_sent_to_the_bytes_route_fails_the_handler_with_1011() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/bytes").await;
    within("sending", ws.send_text("not bytes")).await;
    // Why goes to the log; the client gets a generic reason.
    assert_eq!(expect_close(&mut ws, 1011).await, "internal error");
}

#[tokio::test]
async fn auth_with_a_token() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/auth?token=abc123").await;
    expect_json(&mut ws, json!({"authenticated": true})).await;
    expect_close(&mut ws, 1000).await;
}

#[tokio::test]
async fn auth_without_a_token() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/auth").await;
    expect_json(&mut ws, json!({"error": "No token"})).await;
    expect_close(&mut ws, 1000).await;
}

#[tokio::test]
async fn secure_accepts_the_right_token() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/secure?token=secret-token").await;
    expect_text(&mut ws, "Authenticated!").await;
    expect_close(&mut ws, 1000).await;
}

#[tokio::test]
async fn secure_rejects_other_tokens_before_accepting() {
    let server = server(tour::app());
    for path in ["/ws/secure", "/ws/secure?token=wrong"] {
        let response = handshake(&server, path).await;
        response.assert_status(StatusCode::FORBIDDEN);
        response.assert_text_contains("4001");
    }
}

#[tokio::test]
async fn disconnect_route_answers_until_the_client_leaves() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/disconnect").await;
    within("sending", ws.send_text("one")).await;
    expect_text(&mut ws, "Got: one").await;
    within("sending", ws.send_text("two")).await;
    expect_text(&mut ws, "Got: two").await;
    support::within("the close handshake", ws.close()).await;
    // The server keeps serving.
    let mut again = connect(&server, "/ws/disconnect").await;
    within("sending", again.send_text("three")).await;
    expect_text(&mut again, "Got: three").await;
}

#[tokio::test]
async fn close_route_closes_with_the_requested_code() {
    let server = server(tour::app());
    for code in [1000u16, 1001, 1008, 3000, 4001, 4999] {
        let mut ws = connect(&server, &format!("/ws/close/{code}")).await;
        expect_close(&mut ws, code).await;
    }
}

#[tokio::test]
async fn close_route_turns_an_unsendable_code_into_1011() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/ws/close/1006").await;
    assert_eq!(expect_close(&mut ws, 1011).await, "internal error");
}

#[tokio::test]
async fn close_route_rejects_a_code_that_is_not_a_number() {
    let server = server(tour::app());
    let response = handshake(&server, "/ws/close/abc").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("`code`");
    let response = handshake(&server, "/ws/close/70000").await;
    response.assert_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn chat_broadcasts_to_every_member_of_the_room_only() {
    let server = server(tour::app());
    // A member is subscribed once its own first message comes back to it.
    let mut alice = connect(&server, "/chat/rust").await;
    within("sending", alice.send_text("alice here")).await;
    expect_text(&mut alice, "[rust] alice here").await;
    let mut bob = connect(&server, "/chat/rust").await;
    within("sending", bob.send_text("bob here")).await;
    expect_text(&mut bob, "[rust] bob here").await;
    expect_text(&mut alice, "[rust] bob here").await;
    let mut carol = connect(&server, "/chat/python").await;

    within("sending", alice.send_text("hello")).await;
    expect_text(&mut alice, "[rust] hello").await;
    expect_text(&mut bob, "[rust] hello").await;

    within("sending", carol.send_text("elsewhere")).await;
    expect_text(&mut carol, "[python] elsewhere").await;
    // Alice sees her own next message, not Carol's.
    within("sending", alice.send_text("again")).await;
    expect_text(&mut alice, "[rust] again").await;
}

#[tokio::test]
async fn notifications_under_the_router_prefix() {
    let server = server(tour::app());
    let mut ws = connect(&server, "/api/v1/notifications").await;
    expect_json(&mut ws, json!({"type": "connected"})).await;
    expect_close(&mut ws, 1000).await;
    handshake(&server, "/notifications")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_runs_the_chapter_client() {
    let server = server(tour::app());
    let page = support::within("the page", server.get("/")).await;
    page.assert_status_ok();
    let html = page.text();
    assert!(
        html.contains("new WebSocket(`ws://${location.host}/ws`)"),
        "{html}"
    );
    assert!(html.contains(r#"ws.send("Hello!")"#), "{html}");
}

#[tokio::test]
async fn the_app_lists_its_routes() {
    let app = tour::app();
    let routes: Vec<&str> = app.routes().collect();
    assert_eq!(
        routes,
        [
            "/ws",
            "/ws/{room_id}",
            "/ws/json",
            "/ws/bytes",
            "/ws/auth",
            "/ws/secure",
            "/ws/disconnect",
            "/ws/close/{code}",
            "/chat/{room}",
            "/api/v1/notifications",
        ]
    );
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = server(tour::app());
    handshake(&server, "/nope")
        .await
        .assert_status(StatusCode::NOT_FOUND);
    handshake(&server, "/ws/a/b")
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

/// The burst from the rooms issue: one member sends 20,000 messages of 1 KiB; a member that
/// reads as fast as they come gets every one, in order; a member that never reads is not
/// forgotten: what was queued for it arrives in order, then (if its queue overflowed) a 1013.
#[tokio::test]
async fn a_chat_burst_reaches_every_reading_member_and_a_stalled_one_is_told() {
    use futures_util::{SinkExt, Stream, StreamExt};
    use tokio_tungstenite::tungstenite::{Error, Message};

    const BURST: usize = 20_000;
    fn expected(i: usize) -> String {
        format!("[burst] {i:05} {}", "x".repeat(1018))
    }
    /// Reads the burst until `BURST` messages or a close; returns the count and the close code.
    async fn read_burst<S>(mut client: S) -> (usize, Option<u16>)
    where
        S: Stream<Item = Result<Message, Error>> + Unpin,
    {
        let mut got = 0;
        while got < BURST {
            match within("the burst", client.next()).await {
                Some(Ok(Message::Text(text))) if text.as_str() == "[burst] hi" => {}
                Some(Ok(Message::Text(text))) => {
                    assert_eq!(text.as_str(), expected(got), "message {got}");
                    got += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    return (got, frame.map(|frame| u16::from(frame.code)));
                }
                Some(Ok(_)) => {}
                other => panic!("after {got} messages: {other:?}"),
            }
        }
        (got, None)
    }

    let served = support::serve(tour::app()).await;
    let mut sender = support::raw_connect(&served, "/chat/burst").await;
    let mut reader = support::raw_connect(&served, "/chat/burst").await;
    let mut stalled = support::raw_connect(&served, "/chat/burst").await;
    // Each member is in the room once its own first message comes back to it.
    for client in [&mut sender, &mut reader, &mut stalled] {
        within("joining", client.send(Message::text("hi")))
            .await
            .expect("send");
        loop {
            match within("the greeting", client.next()).await {
                Some(Ok(Message::Text(text))) if text.as_str() == "[burst] hi" => break,
                Some(Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let (mut sink, echoes) = sender.split();
    let echoes = tokio::spawn(read_burst(echoes));
    let reading = tokio::spawn(read_burst(reader));
    for i in 0..BURST {
        let text = format!("{i:05} {}", "x".repeat(1018));
        within("sending", sink.feed(Message::text(text)))
            .await
            .expect("feed");
    }
    within("flushing", sink.flush()).await.expect("flush");
    assert_eq!(
        within("the reader", reading).await.expect("join"),
        (BURST, None)
    );
    assert_eq!(
        within("the echoes", echoes).await.expect("join"),
        (BURST, None)
    );
    // The stalled member gets an unbroken prefix of the burst; if that is not all of it, it
    // was closed with 1013 and knows it missed the rest.
    match read_burst(stalled).await {
        (BURST, None) => {}
        (got, code) => assert_eq!(code, Some(1013), "after {got} messages"),
    }
}
