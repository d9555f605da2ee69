use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
fn blocking(ws: WebSocket) -> tachyon::Result<()> {
    let _ = ws;
    Ok(())
}

fn main() {}
