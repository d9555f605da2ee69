//! Registering handlers: prefixes, nested routers, duplicates, and WebSocket routes living beside
//! an axum app's HTTP routes and tower layers.

mod support;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use support::{connect, expect_text, handshake, server};
use tachyon::{Tachyon, WebSocket, WebSocketRouter, websocket};

#[websocket("/notifications")]
async fn notifications(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text("notifications").await
}

#[websocket("/")]
async fn root(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text("root").await
}

#[websocket("/ws/{room}")]
async fn room(mut ws: WebSocket, room: String) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("room {room}")).await
}

#[websocket("/ws/lobby")]
async fn lobby(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text("the lobby").await
}

#[tokio::test]
async fn prefixes_are_joined_with_one_slash_and_routers_nest() {
    let v1 = WebSocketRouter::with_prefix("v1/")
        .websocket(notifications)
        .websocket(root);
    let api = WebSocketRouter::with_prefix("/api/").include_router(v1);
    let app = Tachyon::new().include_router(api);
    assert_eq!(
        app.routes().collect::<Vec<_>>(),
        ["/api/v1/notifications", "/api/v1"]
    );
    let server = server(app);
    let mut ws = connect(&server, "/api/v1/notifications").await;
    expect_text(&mut ws, "notifications").await;
    let mut ws = connect(&server, "/api/v1").await;
    expect_text(&mut ws, "root").await;
}

#[tokio::test]
async fn an_empty_prefix_merges() {
    let app = Tachyon::new()
        .include_router(WebSocketRouter::new().websocket(notifications))
        .include_router(WebSocketRouter::with_prefix("").websocket(room));
    assert_eq!(
        app.routes().collect::<Vec<_>>(),
        ["/notifications", "/ws/{room}"]
    );
    let server = server(app);
    let mut ws = connect(&server, "/ws/x").await;
    expect_text(&mut ws, "room x").await;
}

#[tokio::test]
async fn static_segments_beat_parameters_whatever_the_order() {
    for app in [
        Tachyon::new().websocket(room).websocket(lobby),
        Tachyon::new().websocket(lobby).websocket(room),
    ] {
        let server = server(app);
        let mut ws = connect(&server, "/ws/lobby").await;
        expect_text(&mut ws, "the lobby").await;
        let mut ws = connect(&server, "/ws/kitchen").await;
        expect_text(&mut ws, "room kitchen").await;
    }
}

#[test]
#[should_panic(expected = "tachyon: the WebSocket route `/notifications` is registered twice")]
fn registering_a_path_twice_on_the_app_panics_naming_it() {
    let _ = Tachyon::new()
        .websocket(notifications)
        .websocket(notifications);
}

#[test]
#[should_panic(expected = "the WebSocket route `/api/notifications` is registered twice")]
fn including_a_path_twice_panics_naming_it() {
    let _ = Tachyon::new()
        .include_router(WebSocketRouter::with_prefix("/api").websocket(notifications))
        .include_router(WebSocketRouter::with_prefix("api/").websocket(notifications));
}

#[test]
#[should_panic(expected = "the WebSocket route `/notifications` is registered twice")]
fn registering_a_path_twice_on_a_router_panics_naming_it() {
    let _: WebSocketRouter = WebSocketRouter::new()
        .websocket(notifications)
        .websocket(notifications);
}

async fn health() -> &'static str {
    "ok"
}

async fn stamp(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-stamped", HeaderValue::from_static("yes"));
    response
}

#[tokio::test]
async fn http_routes_and_tower_layers_keep_working_beside_websocket_routes() {
    // HTTP routes merged into the app, and a layer over everything.
    let app: axum::Router = Tachyon::new()
        .websocket(notifications)
        .merge(axum::Router::new().route("/health", get(health)))
        .into();
    let app = app.layer(axum::middleware::map_response(stamp));
    let server = server(app);

    let response = support::within("GET /health", server.get("/health")).await;
    response.assert_status_ok();
    response.assert_text("ok");
    response.assert_header("x-stamped", "yes");

    let response = handshake(&server, "/notifications").await;
    response.assert_status(StatusCode::SWITCHING_PROTOCOLS);
    response.assert_header("x-stamped", "yes");
    let mut ws = support::within("the upgrade", response.into_websocket()).await;
    expect_text(&mut ws, "notifications").await;
}

#[websocket("/where")]
async fn where_am_i(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await?;
    let url = ws.url().to_string();
    ws.send_text(url).await
}

#[tokio::test]
async fn a_tachyon_app_nests_in_an_axum_router() {
    let tachyon: axum::Router = Tachyon::new().websocket(room).websocket(where_am_i).into();
    let app = axum::Router::new()
        .route("/", get(health))
        .nest("/chat", tachyon);
    let server = server(app);
    let mut ws = connect(&server, "/chat/ws/garden").await;
    expect_text(&mut ws, "room garden").await;
    // The handler sees the URL the client asked for, prefix included, and so does a 426.
    let mut ws = connect(&server, "/chat/where?x=1").await;
    expect_text(&mut ws, "/chat/where?x=1").await;
    let response = support::within("GET /chat/where", server.get("/chat/where")).await;
    response.assert_text_contains("`/chat/where` is a WebSocket endpoint");
    let response = support::within("GET /", server.get("/")).await;
    response.assert_text("ok");
}
