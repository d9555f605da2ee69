use tachyon::{websocket, WebSocket};

#[websocket("/ws/{room_id}")]
async fn room(mut ws: WebSocket, room_id: String, room: String) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("{room_id} {room}")).await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(room);
    let _ = room::PATH;
}
