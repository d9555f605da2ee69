use tachyon::{websocket, WebSocket};

#[websocket("/ws/:id")]
async fn old_syntax(mut ws: WebSocket, id: u64) -> tachyon::Result<()> {
    let _ = id;
    ws.accept().await
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = old_syntax;
}
