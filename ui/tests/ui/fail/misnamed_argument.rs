// The argument stands for `{room}` under another name: one error, on the argument, and none
// on the path for `{room}` having no argument.
#[tachyon::websocket("/chat/{room}")]
async fn chat(mut ws: tachyon::WebSocket, room_name: String) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(chat);
    let _ = chat::PATH;
}
