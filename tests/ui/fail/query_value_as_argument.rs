use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
async fn secure(mut ws: WebSocket, token: Option<String>) -> tachyon::Result<()> {
    let _ = token;
    ws.accept().await
}

fn main() {}
