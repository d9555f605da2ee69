use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
fn blocking(ws: WebSocket) -> tachyon::Result<()> {
    let _ = ws;
    Ok(())
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(blocking);
    let _ = blocking::PATH;
}
