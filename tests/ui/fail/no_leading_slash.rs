use tachyon::{websocket, WebSocket};

#[websocket("ws")]
async fn relative(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {}
