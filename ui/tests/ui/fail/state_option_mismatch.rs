use axum::extract::State;
use tachyon::{websocket, WebSocket};

#[derive(Clone)]
struct AppState;

#[derive(Clone)]
struct Database;

#[websocket("/ws", state = AppState)]
async fn needs_database(mut ws: WebSocket, State(_db): State<Database>) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = needs_database::PATH;
}
