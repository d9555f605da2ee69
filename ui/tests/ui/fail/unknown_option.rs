use tachyon::{websocket, WebSocket};

#[websocket("/upload", max_mesage_size = 16_777_216)]
async fn upload(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(upload);
    let _ = upload::PATH;
}
