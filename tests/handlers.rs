//! What a handler can take and return: path parameters by name and type, axum extractors,
//! shared state through `Tachyon` or a plain `axum::Router`, and the function staying callable.

mod support;

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use support::{connect, expect_close, expect_json, expect_text, handshake, server, within};
use tachyon::handler::HandlerFuture;
use tachyon::{Tachyon, WebSocket, websocket};

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

#[derive(Deserialize)]
struct Filters {
    lang: String,
    limit: Option<u32>,
}

#[websocket("/rooms/{room}/seats/{seat}")]
async fn seat(
    mut ws: WebSocket,
    State(state): State<AppState>,
    seat: u8,
    Query(filters): Query<Filters>,
    headers: HeaderMap,
    room: String,
) -> tachyon::Result<()> {
    ws.accept().await?;
    let agent = headers
        .get("x-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    ws.send_json(&json!({
        "greeting": state.greeting, "room": room, "seat": seat,
        "lang": filters.lang, "limit": filters.limit, "agent": agent,
    }))
    .await
}

#[tokio::test]
async fn path_parameters_and_extractors_reach_the_arguments() {
    let server = server(Tachyon::with_state(AppState { greeting: "hola" }).websocket(seat));
    let response = support::within(
        "the handshake",
        server
            .get_websocket("/rooms/lobby/seats/7?lang=es&limit=3")
            .add_header("x-agent", "test"),
    )
    .await;
    response.assert_status(StatusCode::SWITCHING_PROTOCOLS);
    let mut ws = support::within("the upgrade", response.into_websocket()).await;
    expect_json(
        &mut ws,
        json!({"greeting": "hola", "room": "lobby", "seat": 7, "lang": "es", "limit": 3, "agent": "test"}),
    )
    .await;
}

#[tokio::test]
async fn a_failing_extractor_answers_before_the_handshake() {
    let server = server(Tachyon::with_state(AppState { greeting: "hi" }).websocket(seat));
    // `lang` is required by `Query<Filters>`.
    let response = handshake(&server, "/rooms/lobby/seats/7").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("lang");
    // `seat: u8` does not hold 300.
    let response = handshake(&server, "/rooms/lobby/seats/300?lang=en").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("`seat`");
}

#[tokio::test]
async fn handlers_with_state_work_on_a_plain_axum_router() {
    let app = axum::Router::new()
        .route(seat::PATH, seat::route())
        .with_state(AppState { greeting: "hello" });
    let server = server(app);
    let mut ws = connect(&server, "/rooms/a/seats/1?lang=en").await;
    expect_json(
        &mut ws,
        json!({"greeting": "hello", "room": "a", "seat": 1, "lang": "en", "limit": null, "agent": "-"}),
    )
    .await;
}

/// Python's `<name>` syntax, a catch-all, and an extension.
#[websocket("/files/<owner>/{*path}")]
async fn files(
    mut ws: WebSocket,
    owner: String,
    path: String,
    Extension(prefix): Extension<&'static str>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("{prefix}{owner}:{path}")).await
}

#[tokio::test]
async fn angle_brackets_catch_alls_and_extensions() {
    assert_eq!(files::PATH, "/files/{owner}/{*path}");
    let app: axum::Router = Tachyon::new().websocket(files).into();
    let server = server(app.layer(Extension("file of ")));
    let mut ws = connect(&server, "/files/ada/notes/2024/today.txt").await;
    expect_text(&mut ws, "file of ada:notes/2024/today.txt").await;
}

#[websocket("/echo")]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    loop {
        let text = ws.receive_text().await?;
        ws.send_text(format!("Echo: {text}")).await?;
    }
}

/// Calls another handler: the annotated functions stay functions.
#[websocket("/alias/{times}")]
async fn alias(ws: WebSocket, times: u32) -> tachyon::Result<()> {
    if times == 0 {
        return Ok(()); // never accepted: 403
    }
    echo(ws).await
}

#[tokio::test]
async fn the_annotated_function_stays_callable() {
    // Same arguments, and a future of the same result.
    let _: fn(WebSocket) -> HandlerFuture<echo, tachyon::Result<()>> = echo;
    let _: fn(WebSocket, u32) -> HandlerFuture<alias, tachyon::Result<()>> = alias;
    let server = server(Tachyon::new().websocket(alias));
    let mut ws = connect(&server, "/alias/1").await;
    within("sending", ws.send_text("through alias")).await;
    expect_text(&mut ws, "Echo: through alias").await;
    handshake(&server, "/alias/0")
        .await
        .assert_status(StatusCode::FORBIDDEN);
}

/// A parameter named like a keyword binds to a raw identifier.
#[websocket("/kinds/{type}")]
async fn kinds(mut ws: WebSocket, r#type: String) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("kind {type}", type = r#type)).await
}

#[tokio::test]
async fn raw_identifiers_match_keyword_parameters() {
    let server = server(Tachyon::new().websocket(kinds));
    let mut ws = connect(&server, "/kinds/fruit").await;
    expect_text(&mut ws, "kind fruit").await;
}

#[tokio::test]
async fn handler_names_never_clash_with_variables() {
    // `echo`, `seat` and `files` are handlers in this module. Were the generated type a unit
    // struct (in the value namespace too), these lets would be patterns against it and fail to
    // compile.
    let echo = "a variable";
    let seat: u8 = 3;
    let files = [echo];
    assert_eq!((echo, seat, files.len()), ("a variable", 3, 1));
}

/// Returning `()`.
#[websocket("/unit")]
async fn unit(mut ws: WebSocket) {
    if ws.accept().await.is_ok() {
        let _ = ws.send_text("unit").await;
    }
}

/// Returning a `Result` with another error type.
#[websocket("/io")]
async fn io_error(mut ws: WebSocket) -> Result<(), std::io::Error> {
    ws.accept().await.map_err(std::io::Error::other)?;
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no such file",
    ))
}

#[tokio::test]
async fn handlers_return_unit_or_any_displayable_error() {
    let server = server(Tachyon::new().websocket(unit).websocket(io_error));
    let mut ws = connect(&server, "/unit").await;
    expect_text(&mut ws, "unit").await;
    expect_close(&mut ws, 1000).await;
    let mut ws = connect(&server, "/io").await;
    // The error's text goes to the log, not to the client.
    assert_eq!(expect_close(&mut ws, 1011).await, "internal error");
}

#[derive(Clone, Default)]
struct Counter(std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>>);

#[websocket("/count/{name}")]
async fn count(
    mut ws: WebSocket,
    name: String,
    State(counter): State<Counter>,
) -> tachyon::Result<()> {
    let visits = {
        let mut counts = counter
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let visits = counts.entry(name.clone()).or_default();
        *visits += 1;
        *visits
    };
    ws.accept().await?;
    ws.send_text(format!("{name}: {visits}")).await
}

#[tokio::test]
async fn state_is_shared_between_connections() {
    let server = server(Tachyon::with_state(Counter::default()).websocket(count));
    for expected in ["ada: 1", "ada: 2"] {
        let mut ws = connect(&server, "/count/ada").await;
        expect_text(&mut ws, expected).await;
    }
    let mut ws = connect(&server, "/count/bob").await;
    expect_text(&mut ws, "bob: 1").await;
}

// --- Query parameters declared in the route ------------------------------------------------------

#[websocket("/auth?<token>&<page>")]
async fn auth(mut ws: WebSocket, token: Option<String>, page: u32) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("{token:?} {page}")).await
}

#[websocket("/braces/{room}?{limit}")]
async fn braces(mut ws: WebSocket, room: String, limit: Option<u8>) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("{room} {limit:?}")).await
}

#[tokio::test]
async fn query_values_declared_in_the_route_are_arguments() {
    let server = server(Tachyon::new().websocket(auth).websocket(braces));
    assert_eq!(
        auth::PATH,
        "/auth",
        "the query part is not part of the route"
    );
    assert_eq!(braces::PATH, "/braces/{room}");

    let mut ws = connect(&server, "/auth?page=2").await;
    expect_text(&mut ws, "None 2").await;
    let mut ws = connect(&server, "/auth?token=a%20b&page=3&other=x").await;
    expect_text(&mut ws, r#"Some("a b") 3"#).await;
    let mut ws = connect(&server, "/braces/lobby?limit=5").await;
    expect_text(&mut ws, "lobby Some(5)").await;
    let mut ws = connect(&server, "/braces/lobby").await;
    expect_text(&mut ws, "lobby None").await;
}

#[tokio::test]
async fn a_missing_or_malformed_query_value_is_400_and_the_handler_never_runs() {
    let server = server(Tachyon::new().websocket(auth).websocket(braces));
    let response = handshake(&server, "/auth?token=t").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("Missing query parameter `page`");
    let response = handshake(&server, "/auth?page=two").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("Invalid query parameter `page`: `two` is not a valid `u32`");
    let response = handshake(&server, "/braces/lobby?limit=300").await;
    response.assert_status(StatusCode::BAD_REQUEST);
    response.assert_text_contains("Invalid query parameter `limit`: `300` is not a valid `u8`");
}

// --- axum's Path<T> ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Seat {
    room: String,
    seat: u32,
}

#[websocket("/single/{id}")]
async fn single(
    mut ws: WebSocket,
    axum::extract::Path(id): axum::extract::Path<u32>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("single {id}")).await
}

#[websocket("/tuple/{room}/{seat}")]
async fn tuple(
    mut ws: WebSocket,
    axum::extract::Path((room, seat)): axum::extract::Path<(String, u32)>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("tuple {room} {seat}")).await
}

#[websocket("/struct/{room}/{seat}")]
async fn structured(
    mut ws: WebSocket,
    axum::extract::Path(at): axum::extract::Path<Seat>,
) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("struct {} {}", at.room, at.seat))
        .await
}

#[tokio::test]
async fn axums_path_extractor_takes_the_path_parameters() {
    let server = server(
        Tachyon::new()
            .websocket(single)
            .websocket(tuple)
            .websocket(structured),
    );
    let mut ws = connect(&server, "/single/7").await;
    expect_text(&mut ws, "single 7").await;
    let mut ws = connect(&server, "/tuple/lobby/3").await;
    expect_text(&mut ws, "tuple lobby 3").await;
    let mut ws = connect(&server, "/struct/hall/12").await;
    expect_text(&mut ws, "struct hall 12").await;
    // axum's own rejection answers a value that does not parse.
    handshake(&server, "/single/seven")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
}
