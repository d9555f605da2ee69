//! The generated code only names the crate it is told to, so a renamed `tachyon` works.
extern crate tachyon as realtime;

use realtime::WebSocket;

#[realtime::websocket("/ws/<id>", crate = "realtime")]
async fn renamed(mut ws: WebSocket, id: u32) -> realtime::Result<()> {
    ws.accept().await?;
    ws.send_text(id.to_string()).await
}

fn main() {
    let app = realtime::Tachyon::new().websocket(renamed);
    assert_eq!(app.routes().collect::<Vec<_>>(), ["/ws/{id}"]);
    assert_eq!(renamed::PATH, "/ws/{id}");
}
