use tachyon::{websocket, WebSocket};

#[websocket("/ws/{room_id}")]
async fn room(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = room;
}
