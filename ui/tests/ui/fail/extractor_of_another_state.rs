use axum::extract::State;
use tachyon::{websocket, WebSocket};

#[derive(Clone)]
struct AppState;

#[derive(Clone)]
struct Database;

#[websocket("/ws")]
async fn both(
    mut ws: WebSocket,
    State(_app): State<AppState>,
    State(_db): State<Database>,
) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = both::PATH;
}
