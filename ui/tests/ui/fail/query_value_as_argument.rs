use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
async fn secure(mut ws: WebSocket, token: Option<String>) -> tachyon::Result<()> {
    let _ = token;
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(secure);
    let _ = secure::PATH;
}
