use tachyon::{websocket, WebSocket};

#[websocket("ws")]
async fn relative(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(relative);
    let _ = relative::PATH;
}
