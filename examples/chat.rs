//! A chat app on `Rooms`: pick a name and a room, talk, and see who is there. A page that loses
//! its connection reconnects by itself and gets what it missed.
//!
//! Run it with `cargo run --example chat` (add `-- --addr 127.0.0.1:9000` for another address),
//! then open <http://127.0.0.1:8000/> in two browser windows. The member list and the join and
//! leave notices update live; a member leaves its room however its connection ends (closed tab,
//! lost network, keepalive timeout), and the others are told.
//!
//! Every room keeps a history of its last 1000 messages, for 10 minutes, and at most 1 MiB of
//! them (`History::messages(1000).age(..)`, the default byte bound): a page that was away for
//! less than that (a laptop lid, a tunnel, a server restarted behind a load balancer) gets every
//! message it missed, once, in order; one away for longer is told that some may be missing.
//! Presence (`joined`, `left`, `members`) is never replayed: it only matters live.
//!
//! Several instances share their rooms through Redis: people on different instances talk in one
//! room, the member list counts everyone (each member's name is its member data, which the rooms
//! keep with its membership, in Redis too), and the history is shared, so a page whose instance
//! stopped resumes on another one. The page reconnects to the origin it was loaded from: put the
//! instances behind one address (a load balancer) for that.
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run --example chat -- --addr 127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! cargo run --example chat -- --addr 127.0.0.1:8001 --redis redis://127.0.0.1:6379
//! ```
//!
//! The protocol is JSON over `/chat/{room}`. The client sends a `join` first, then `message`s:
//!
//! - `{"type": "join", "name": "...", "since": "<pos>"}`: `since` is optional; give it the `pos`
//!   of the last message shown when reconnecting.
//! - `{"type": "message", "text": "..."}`.
//!
//! The server sends:
//!
//! - `{"type": "message", "pos": "<pos>", "name": "...", "text": "..."}`: `pos` is the message's
//!   place in the room's history, a string the client keeps as it is (opaque) and gives back
//!   as `since`.
//! - after a `join` with `since` only: first every `message` sent after `since` (with its own
//!   `pos`), then `{"type": "resumed", "recovered": true, "missed": N}`; or, when the history no
//!   longer holds them all (too old, too many, a `since` the server never sent), only
//!   `{"type": "resumed", "recovered": false}`: nothing is replayed, and the client should say
//!   that messages may be missing. `resumed` follows the last replayed `message`; the `joined`
//!   notice of this join, and a message someone sends during it, may come before `resumed`. No
//!   `message` comes twice.
//! - `{"type": "members", "members": [...]}` (the room's names), `{"type": "joined", "name":
//!   "..."}` and `{"type": "left", "name": "..."}` notices, live only.
//! - `{"type": "error", "error": "..."}` for a message it could not read; a first message that
//!   is not a valid `join` is answered with a 1008 close instead.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use axum::extract::{FromRef, State};
use axum::response::Html;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tachyon::rooms::{History, Member, Position, Recovery, RedisConfig, RoomsBuilder};
use tachyon::{CloseCode, Rooms, Tachyon, WebSocket, websocket};

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    /// `since`: the `pos` of the last message the client showed; any text at all, since a
    /// client sent it.
    Join {
        name: String,
        since: Option<String>,
    },
    Message {
        text: String,
    },
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Members {
        members: Vec<String>,
    },
    Joined {
        name: &'a str,
    },
    Left {
        name: &'a str,
    },
    Message {
        #[serde(skip_serializing_if = "Option::is_none")]
        pos: Option<Position>,
        name: &'a str,
        text: &'a str,
    },
    Resumed {
        recovered: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<usize>,
    },
    Error {
        error: &'a str,
    },
}

impl ServerMessage<'_> {
    /// How a resuming join went (the reason it did not is the server's business).
    fn resumed(recovery: Recovery) -> Self {
        match recovery {
            Recovery::Recovered { missed } => Self::Resumed {
                recovered: true,
                missed: Some(missed),
            },
            _ => Self::Resumed {
                recovered: false,
                missed: None,
            },
        }
    }
}

/// The app's state: the rooms, whose members carry their name, and with Redis, the queue of
/// member lists to announce.
#[derive(Clone)]
pub(crate) struct Chat {
    rooms: Rooms<String>,
}

impl FromRef<Chat> for Rooms<String> {
    fn from_ref(chat: &Chat) -> Self {
        chat.rooms.clone()
    }
}

/// Tells `room` its member list. In one process the rooms know every name; through Redis the
/// list spans every instance, and asking for it awaits Redis, so [`announce`] builds it in a
/// task of its own, in order.
fn announce_members(rooms: &Rooms<String>, room: &str, changes: Option<&mpsc::Sender<String>>) {
    let Some(changes) = changes else {
        let members = names(rooms.members(room));
        let _ = rooms
            .to(room)
            .transient()
            .send_json(&ServerMessage::Members { members });
        return;
    };
    if changes.try_send(room.to_owned()).is_err() {
        tracing::warn!(
            room,
            "member list not updated: too many joins and leaves at once"
        );
    }
}

/// The sorted names of `members`.
fn names(members: Vec<Member<String>>) -> Vec<String> {
    let mut names: Vec<String> = members.into_iter().map(Member::into_data).collect();
    names.sort();
    names
}

/// Broadcasts the member list of each room that changed, over every instance, one change after
/// the other (so an older list never follows a newer one). Each member's name is kept with its
/// membership in Redis, so one question answers with every name.
async fn announce(rooms: Rooms<String>, mut changes: mpsc::Receiver<String>) {
    while let Some(room) = changes.recv().await {
        match rooms.cluster_members(&room).await {
            Ok(members) if !members.is_empty() => {
                let members = names(members);
                let _ = rooms
                    .to(&room)
                    .transient()
                    .send_json(&ServerMessage::Members { members });
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, room, "member list not updated"),
        }
    }
}

impl Chat {
    /// Rooms in this process whose presence hooks announce every join and leave, with the new
    /// member list.
    pub(crate) fn new() -> Self {
        let rooms = Self::announcing(None).build();
        Self { rooms }
    }

    /// The same, with rooms (and names) shared through the Redis at `url`.
    pub(crate) async fn with_redis(url: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let (changes, queued) = mpsc::channel(1024);
        let rooms = Self::announcing(Some(changes))
            .redis(RedisConfig::new(url))
            .await?;
        tokio::spawn(announce(rooms.clone(), queued));
        Ok(Self { rooms })
    }

    fn announcing(changes: Option<mpsc::Sender<String>>) -> RoomsBuilder<String> {
        let on_leave_changes = changes.clone();
        Rooms::with_member_data::<String>()
            // What a page that comes back can still get: see the header.
            .history(History::messages(1000).age(Duration::from_secs(10 * 60)))
            .on_join(move |rooms, room, member| {
                let name = member.data();
                let joined = ServerMessage::Joined { name };
                let _ = rooms.to(room).transient().send_json(&joined);
                announce_members(rooms, room, changes.as_ref());
            })
            .on_leave(move |rooms, room, member| {
                let name = member.data();
                let left = ServerMessage::Left { name };
                let _ = rooms.to(room).transient().send_json(&left);
                announce_members(rooms, room, on_leave_changes.as_ref());
            })
    }
}

const MAX_NAME: usize = 32;

/// One member of one room.
#[websocket("/chat/{room}", max_message_size = 16 * 1024)]
async fn chat(mut ws: WebSocket, room: String, State(chat): State<Chat>) -> tachyon::Result<()> {
    ws.accept().await?;
    let (name, since) = match ws.receive_json::<ClientMessage>().await {
        Ok(ClientMessage::Join { name, since })
            if !name.trim().is_empty() && name.trim().chars().count() <= MAX_NAME =>
        {
            (name.trim().to_owned(), since)
        }
        Ok(_) | Err(tachyon::Error::InvalidJson(_)) => {
            let reason =
                "send {\"type\":\"join\",\"name\":...} first, with a name of 1 to 32 characters";
            return ws.close(CloseCode::POLICY_VIOLATION, reason).await;
        }
        Err(other) => return Err(other),
    };
    match since {
        // Text that is no position of ours is a position the history cannot resume from.
        Some(since) => {
            let since = since.parse::<Position>().ok();
            let recovery = chat
                .rooms
                .join_since(&room, (&ws, name.clone()), since)
                .await?;
            // Queued after the replay: the client knows it has caught up.
            ws.send_json(&ServerMessage::resumed(recovery)).await?;
        }
        None => chat.rooms.join(&room, (&ws, name.clone()))?,
    }
    loop {
        match ws.receive_json::<ClientMessage>().await {
            Ok(ClientMessage::Message { text }) if !text.trim().is_empty() => {
                // Built once, with its place in the history, for every member and the history.
                chat.rooms
                    .to(&room)
                    .send_json_with(|pos| ServerMessage::Message {
                        pos,
                        name: &name,
                        text: &text,
                    })?;
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
