use tachyon::{websocket, WebSocket};

#[websocket("/ws/{room_id}")]
async fn room(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(room);
    let _ = room::PATH;
}
