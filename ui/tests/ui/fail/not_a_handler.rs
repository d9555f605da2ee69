use tachyon::{Tachyon, WebSocket};

async fn plain(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _ = Tachyon::new().websocket(plain);
}
