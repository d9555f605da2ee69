use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
fn blocking(ws: WebSocket) -> tachyon::Result<()> {
    let _ = ws;
    Ok(())
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = blocking;
}
