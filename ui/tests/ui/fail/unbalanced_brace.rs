use tachyon::{websocket, WebSocket};

#[websocket("/ws/{id")]
async fn unbalanced(mut ws: WebSocket, id: u64) -> tachyon::Result<()> {
    let _ = id;
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(unbalanced);
    let _ = unbalanced::PATH;
}
