use tachyon::{websocket, WebSocket};

#[websocket("/upload", max_mesage_size = 16_777_216)]
async fn upload(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = upload::PATH;
}
