use tachyon::{websocket, WebSocket};

#[websocket("/rooms/{room-id}/chat")]
async fn chat(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {}
