use axum::extract::State;
use tachyon::{websocket, Tachyon, WebSocket};

#[derive(Clone)]
struct Database;

#[derive(Clone)]
struct Other;

#[websocket("/ws")]
async fn needs_database(mut ws: WebSocket, State(_db): State<Database>) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = Tachyon::with_state(Other).websocket(needs_database);
}
