//! A chat app on `Rooms`: pick a name and a room, talk, and see who is there.
//!
//! Run it with `cargo run --example chat` (add `-- --addr 127.0.0.1:9000` for another address),
//! then open <http://127.0.0.1:8000/> in two browser windows. The member list and the join and
//! leave notices update live; a member leaves its room however its connection ends (closed tab,
//! lost network, keepalive timeout), and the others are told.
//!
//! The protocol is JSON. The client sends `{"type": "join", "name": "..."}` first, then
//! `{"type": "message", "text": "..."}`. The server sends `members` (the room's names), `joined`
//! and `left` notices, `message`s, and `error`s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRef, State};
use axum::response::Html;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tachyon::{CloseCode, ConnectionId, Rooms, Tachyon, WebSocket, websocket};

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Join { name: String },
    Message { text: String },
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Members { members: Vec<String> },
    Joined { name: &'a str },
    Left { name: &'a str },
    Message { name: &'a str, text: &'a str },
    Error { error: &'a str },
}

/// The app's state: the rooms, and each member's name.
#[derive(Clone, Debug)]
pub(crate) struct Chat {
    rooms: Rooms,
    names: Names,
}

impl FromRef<Chat> for Rooms {
    fn from_ref(chat: &Chat) -> Self {
        chat.rooms.clone()
    }
}

/// Names by connection.
#[derive(Clone, Debug, Default)]
struct Names(Arc<Mutex<HashMap<ConnectionId, String>>>);

impl Names {
    fn get(&self, id: ConnectionId) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: ConnectionId, name: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name);
    }

    fn remove(&self, id: ConnectionId) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    /// The sorted names of `room`'s members.
    fn of(&self, rooms: &Rooms, room: &str) -> Vec<String> {
        let mut names: Vec<String> = rooms
            .members(room)
            .into_iter()
            .filter_map(|id| self.get(id))
            .collect();
        names.sort();
        names
    }
}

impl Chat {
    /// Rooms whose presence hooks announce every join and leave, with the new member list.
    pub(crate) fn new() -> Self {
        let names = Names::default();
        let (on_join, on_leave) = (names.clone(), names.clone());
        let rooms = Rooms::builder()
            .on_join(move |rooms, room, id| {
                let name = on_join.get(id).unwrap_or_default();
                let _ = rooms.broadcast_json(room, &ServerMessage::Joined { name: &name });
                let members = on_join.of(rooms, room);
                let _ = rooms.broadcast_json(room, &ServerMessage::Members { members });
            })
            .on_leave(move |rooms, room, id| {
                let name = on_leave.remove(id).unwrap_or_default();
                let _ = rooms.broadcast_json(room, &ServerMessage::Left { name: &name });
                let members = on_leave.of(rooms, room);
                let _ = rooms.broadcast_json(room, &ServerMessage::Members { members });
            })
            .build();
        Self { rooms, names }
    }
}

const MAX_NAME: usize = 32;

/// One member of one room.
#[websocket("/chat/{room}", max_message_size = 16 * 1024)]
async fn chat(mut ws: WebSocket, room: String, State(chat): State<Chat>) -> tachyon::Result<()> {
    ws.accept().await?;
    let name = match ws.receive_json::<ClientMessage>().await {
        Ok(ClientMessage::Join { name })
            if !name.trim().is_empty() && name.trim().chars().count() <= MAX_NAME =>
        {
            name.trim().to_owned()
        }
        Ok(_) | Err(tachyon::Error::InvalidJson(_)) => {
            let reason =
                "send {\"type\":\"join\",\"name\":...} first, with a name of 1 to 32 characters";
            return ws.close_with(CloseCode::POLICY_VIOLATION, reason).await;
        }
        Err(other) => return Err(other),
    };
    chat.names.insert(ws.sender()?.id(), name.clone());
    chat.rooms.join(&room, &ws)?;
    loop {
        match ws.receive_json::<ClientMessage>().await {
            Ok(ClientMessage::Message { text }) if !text.trim().is_empty() => {
                let message = ServerMessage::Message {
                    name: &name,
                    text: &text,
                };
                let _ = chat.rooms.broadcast_json(&room, &message);
            }
            Ok(ClientMessage::Message { .. }) => {}
            Ok(ClientMessage::Join { .. }) => {
                let error = "already joined: open another page to join as someone else";
                ws.send_json(&ServerMessage::Error { error }).await?;
            }
            Err(tachyon::Error::InvalidJson(_)) => {
                let error = "not a chat message: send {\"type\":\"message\",\"text\":...}";
                ws.send_json(&ServerMessage::Error { error }).await?;
            }
            Err(other) => return Err(other),
        }
    }
}

/// The chat page.
async fn index() -> Html<&'static str> {
    Html(include_str!("chat.html"))
}

/// The whole app.
pub(crate) fn app() -> Tachyon<Chat> {
    Tachyon::with_state(Chat::new())
        .websocket(chat)
        .merge(axum::Router::new().route("/", get(index)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tachyon=debug".into()),
        )
        .init();
    let addr = address_from_args()?;
    tracing::info!("chat on http://{addr}/");
    app().serve(addr).await?;
    Ok(())
}

/// `--addr HOST:PORT`, default `127.0.0.1:8000`.
fn address_from_args() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:8000".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or("--addr needs a value, like 127.0.0.1:8000")?;
            }
            other => match other.strip_prefix("--addr=") {
                Some(value) => addr = value.to_owned(),
                None => {
                    return Err(format!(
                        "unknown argument `{other}`; usage: chat [--addr HOST:PORT]"
                    ));
                }
            },
        }
    }
    addr.parse()
        .map_err(|error| format!("--addr `{addr}` is not HOST:PORT ({error})"))
}
