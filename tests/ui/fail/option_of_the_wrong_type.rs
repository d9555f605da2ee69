use tachyon::{websocket, WebSocket};

#[websocket("/upload", max_message_size = "16 MiB")]
async fn upload(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = upload::PATH;
}
