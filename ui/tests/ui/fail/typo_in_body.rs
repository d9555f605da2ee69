use tachyon::{websocket, WebSocket};

#[websocket("/ws", keepalive_interval = None)]
async fn echo(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.acept().await?;
    Ok(())
}

fn main() {
    let _ = tachyon::Tachyon::new().websocket(echo);
}
