use axum::extract::State;
use tachyon::{websocket, Rooms, WebSocket};

#[derive(Clone)]
struct User {
    name: String,
}

#[websocket("/chat/{room}")]
async fn chat(mut ws: WebSocket, room: String, State(rooms): State<Rooms<User>>) -> tachyon::Result<()> {
    ws.accept().await?;
    // Rooms whose members carry a `User` need it on join: `(&ws, user)`.
    rooms.join(&room, &ws)?;
    Ok(())
}

fn main() {
    let _ = User { name: String::new() }.name;
}
