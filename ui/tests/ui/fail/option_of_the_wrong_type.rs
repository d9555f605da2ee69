use tachyon::{websocket, WebSocket};

#[websocket("/upload", max_message_size = "16 MiB")]
async fn upload(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(upload);
    let _ = upload::PATH;
}
