use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
async fn counts(mut ws: WebSocket) -> u32 {
    let _ = ws.accept().await;
    1
}

fn main() {}
