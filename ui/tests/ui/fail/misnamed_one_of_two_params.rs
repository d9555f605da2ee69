// Of two parameters, one has its argument and the other a misnamed one: one error, on the
// misnamed argument.
use tachyon::{websocket, WebSocket};

#[websocket("/rooms/{room}/seats/<seat>")]
async fn seat(mut ws: WebSocket, room: String, seat_no: u32) -> tachyon::Result<()> {
    ws.accept().await?;
    ws.send_text(format!("{room} {seat_no}")).await
}

fn main() {
    let _ = tachyon::Tachyon::new().websocket(seat);
    let _ = seat::PATH;
}
