use tachyon::{websocket, WebSocket};

#[websocket("/ws/{name}")]
async fn borrowed(mut ws: WebSocket, name: &str) -> tachyon::Result<()> {
    let _ = name;
    ws.accept().await
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = borrowed;
}
