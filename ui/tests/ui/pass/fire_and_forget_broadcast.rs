//! A broadcast that nobody reads the delivery of compiles without a warning: `Delivery` is not
//! `#[must_use]` (a broadcast never waits, so ignoring it is the common case).
#![deny(warnings)]

use axum::extract::State;
use tachyon::{websocket, Rooms, Tachyon, WebSocket};

#[websocket("/chat/{room}")]
async fn chat(mut ws: WebSocket, room: String, State(rooms): State<Rooms>) -> tachyon::Result<()> {
    ws.accept().await?;
    rooms.join(&room, &ws)?;
    loop {
        let text = ws.receive_text().await?;
        rooms.to(&room).except(ws.id()).send(text);
        rooms.to(&room).send("seen");
    }
}

fn main() {
    let _app = Tachyon::with_state(Rooms::new()).websocket(chat);
}
