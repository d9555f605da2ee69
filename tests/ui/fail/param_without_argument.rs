use tachyon::{websocket, WebSocket};

#[websocket("/ws/{room_id}")]
async fn room(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {}
