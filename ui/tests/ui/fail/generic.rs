use tachyon::{websocket, WebSocket};

#[websocket("/ws")]
async fn generic<T: Default>(mut ws: WebSocket) -> tachyon::Result<()> {
    let _ = T::default();
    ws.accept().await
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = generic::<u8>;
    let _ = generic::PATH;
}
