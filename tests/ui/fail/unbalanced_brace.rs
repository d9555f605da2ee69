use tachyon::{websocket, WebSocket};

#[websocket("/ws/{id")]
async fn unbalanced(mut ws: WebSocket, id: u64) -> tachyon::Result<()> {
    let _ = id;
    ws.accept().await
}

fn main() {}
