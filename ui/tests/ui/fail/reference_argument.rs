use tachyon::{websocket, WebSocket};

#[websocket("/ws/{name}")]
async fn borrowed(mut ws: WebSocket, name: &str) -> tachyon::Result<()> {
    let _ = name;
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(borrowed);
    let _ = borrowed::PATH;
}
