//! A chat app on `Rooms`: pick a name and a room, talk, and see who is there.
//!
//! Run it with `cargo run --example chat` (add `-- --addr 127.0.0.1:9000` for another address),
//! then open <http://127.0.0.1:8000/> in two browser windows. The member list and the join and
//! leave notices update live; a member leaves its room however its connection ends (closed tab,
//! lost network, keepalive timeout), and the others are told.
//!
//! Several instances share their rooms through Redis: people on different instances talk in one
//! room, and the member list counts everyone (names are kept in the Redis hash `chat:names`).
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run --example chat -- --addr 127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! cargo run --example chat -- --addr 127.0.0.1:8001 --redis redis://127.0.0.1:6379
//! ```
//!
//! The protocol is JSON. The client sends `{"type": "join", "name": "..."}` first, then
//! `{"type": "message", "text": "..."}`. The server sends `members` (the room's names), `joined`
//! and `left` notices, `message`s, and `error`s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use axum::extract::{FromRef, State};
use axum::response::Html;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tachyon::{
    CloseCode, ConnectionId, RedisConfig, Rooms, RoomsBuilder, Tachyon, WebSocket, websocket,
};

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
#[derive(Clone)]
pub(crate) struct Chat {
    rooms: Rooms,
    names: Names,
}

impl FromRef<Chat> for Rooms {
    fn from_ref(chat: &Chat) -> Self {
        chat.rooms.clone()
    }
}

/// Names by connection: of this instance's members, and with Redis, of everyone's.
#[derive(Clone, Default)]
struct Names {
    local: Arc<Mutex<HashMap<ConnectionId, String>>>,
    /// With Redis: the joins and leaves to write to the hash `chat:names` (connection id →
    /// name) that instances share, and to announce, in order, by [`announce`].
    shared: Option<mpsc::Sender<Change>>,
}

/// A join (`joined` holds the name) or a leave, for [`announce`].
struct Change {
    rooms: Rooms,
    room: String,
    id: ConnectionId,
    joined: Option<String>,
}

const SHARED_NAMES: &str = "chat:names";

impl Names {
    fn get(&self, id: ConnectionId) -> Option<String> {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: ConnectionId, name: String) {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, name);
    }

    fn remove(&self, id: ConnectionId) -> Option<String> {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    /// The sorted names of `room`'s members on this instance.
    fn of(&self, rooms: &Rooms, room: &str) -> Vec<String> {
        let mut names: Vec<String> = rooms
            .members(room)
            .into_iter()
            .filter_map(|id| self.get(id))
            .collect();
        names.sort();
        names
    }

    /// Tells `room` its member list, after `id` joined (`Some(name)`) or left (`None`). Through
    /// Redis the list spans every instance: [`announce`] builds it (it awaits Redis).
    fn announce_members(
        &self,
        rooms: &Rooms,
        room: &str,
        id: ConnectionId,
        joined: Option<String>,
    ) {
        let Some(changes) = &self.shared else {
            let members = self.of(rooms, room);
            let _ = rooms.broadcast_json(room, &ServerMessage::Members { members });
            return;
        };
        let change = Change {
            rooms: rooms.clone(),
            room: room.to_owned(),
            id,
            joined,
        };
        if changes.try_send(change).is_err() {
            tracing::warn!(
                room,
                "member list not updated: too many joins and leaves at once"
            );
        }
    }
}

/// Writes each join and leave to the shared names, then broadcasts the room's member list over
/// every instance, one change after the other (so an older list never follows a newer one).
/// A crashed instance leaves its names behind in the hash; they are never shown, since the list
/// comes from the cluster's membership.
async fn announce(mut changes: mpsc::Receiver<Change>, mut redis: redis::aio::ConnectionManager) {
    while let Some(change) = changes.recv().await {
        if let Err(error) = announce_one(&mut redis, change).await {
            tracing::warn!(%error, "member list not updated");
        }
    }
}

async fn announce_one(
    redis: &mut redis::aio::ConnectionManager,
    Change {
        rooms,
        room,
        id,
        joined,
    }: Change,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut write = redis::cmd(if joined.is_some() { "HSET" } else { "HDEL" });
    write.arg(SHARED_NAMES).arg(id.to_string());
    if let Some(name) = joined {
        write.arg(name);
    }
    write.query_async::<()>(redis).await?;
    let ids = rooms.cluster_members(&room).await?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut lookup = redis::cmd("HMGET");
    lookup.arg(SHARED_NAMES);
    for id in &ids {
        lookup.arg(id.to_string());
    }
    let names: Vec<Option<String>> = lookup.query_async(redis).await?;
    let mut members: Vec<String> = names.into_iter().flatten().collect();
    members.sort();
    let _ = rooms.broadcast_json(&room, &ServerMessage::Members { members })?;
    Ok(())
}

impl Chat {
    /// Rooms in this process whose presence hooks announce every join and leave, with the new
    /// member list.
    pub(crate) fn new() -> Self {
        let names = Names::default();
        let rooms = Self::announcing(&names).build();
        Self { rooms, names }
    }

    /// The same, with rooms (and names) shared through the Redis at `url`.
    pub(crate) async fn with_redis(url: &str) -> Result<Self, Box<dyn std::error::Error>> {
        // A connection manager reconnects by itself, as the rooms' link does.
        let redis = redis::Client::open(url)?.get_connection_manager().await?;
        let (changes, queued) = mpsc::channel(1024);
        tokio::spawn(announce(queued, redis));
        let names = Names {
            shared: Some(changes),
            ..Names::default()
        };
        let rooms = Self::announcing(&names)
            .redis(RedisConfig::new(url))
            .await?;
        Ok(Self { rooms, names })
    }

    fn announcing(names: &Names) -> RoomsBuilder {
        let (on_join, on_leave) = (names.clone(), names.clone());
        Rooms::builder()
            .on_join(move |rooms, room, id| {
                let name = on_join.get(id).unwrap_or_default();
                let _ = rooms.broadcast_json(room, &ServerMessage::Joined { name: &name });
                on_join.announce_members(rooms, room, id, Some(name));
            })
            .on_leave(move |rooms, room, id| {
                let name = on_leave.remove(id).unwrap_or_default();
                let _ = rooms.broadcast_json(room, &ServerMessage::Left { name: &name });
                on_leave.announce_members(rooms, room, id, None);
            })
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

/// The whole app, its rooms in this process.
pub(crate) fn app() -> Tachyon<Chat> {
    app_with(Chat::new())
}

/// The whole app with the given state.
pub(crate) fn app_with(state: Chat) -> Tachyon<Chat> {
    Tachyon::with_state(state)
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
    let Args { addr, redis } = args()?;
    let (app, shared) = match redis {
        Some(url) => {
            let state = Chat::with_redis(&url).await?;
            let rooms = state.rooms.clone();
            (app_with(state), Some(rooms))
        }
        None => (app(), None),
    };
    tracing::info!("chat on http://{addr}/");
    app.serve(addr).await?; // until Ctrl-C, then a graceful shutdown
    if let Some(rooms) = shared {
        // This instance's members leave the other instances' lists at once.
        rooms.leave_cluster().await?;
    }
    Ok(())
}

/// The command line: `--addr HOST:PORT` (default `127.0.0.1:8000`) and `--redis URL`.
struct Args {
    addr: SocketAddr,
    redis: Option<String>,
}

fn args() -> Result<Args, String> {
    const USAGE: &str = "usage: chat [--addr HOST:PORT] [--redis redis://HOST:PORT]";
    let mut args = std::env::args().skip(1);
    let (mut addr, mut redis) = ("127.0.0.1:8000".to_owned(), None);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value; {USAGE}"))
        };
        match name.as_str() {
            "--addr" => addr = value()?,
            "--redis" => redis = Some(value()?),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    let addr = addr
        .parse()
        .map_err(|error| format!("--addr `{addr}` is not HOST:PORT ({error})"))?;
    Ok(Args { addr, redis })
}
