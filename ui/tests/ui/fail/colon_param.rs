use tachyon::{websocket, WebSocket};

#[websocket("/ws/:id")]
async fn old_syntax(mut ws: WebSocket, id: u64) -> tachyon::Result<()> {
    let _ = id;
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(old_syntax);
    let _ = old_syntax::PATH;
}
