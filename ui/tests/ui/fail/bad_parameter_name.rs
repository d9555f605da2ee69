use tachyon::{websocket, WebSocket};

#[websocket("/rooms/{room-id}/chat")]
async fn chat(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(chat);
    let _ = chat::PATH;
}
