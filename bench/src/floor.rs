//! The floor of the fan-out scenario: the cheapest correct broadcast, to measure the others
//! against (issue #16).
//!
//! Plain tokio on a `TcpListener`, no HTTP server and no WebSocket library: a minimal upgrade
//! ([`wire::accept`]), then `/room` answers the same `joined` text as the other servers and
//! keeps the member's writing half in a list (its reading half is read and thrown away, so
//! nothing backs up), and `/fire` takes the same requests as the others (a text with a count,
//! answered with `done` once the broadcasts are written). A broadcast of COUNT messages writes
//! the server-to-client text frame of [`FANOUT_MESSAGE`] (its header and payload, built once
//! at start; COUNT copies of it side by side for a burst) to each member's socket in a plain
//! loop, one `write_all` each. It does not answer a member's close frame (the harness drops its
//! members) and has no slow-member policy: a member whose socket is full makes the loop wait.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Mutex;

use crate::server::FANOUT_MESSAGE;
use crate::wire::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The most broadcasts one request makes (what a peer asks for is bounded).
const MAX_COUNT: usize = 10_000;

/// The members' writing halves, each with the id it leaves by.
type Room = Arc<Mutex<Vec<(u64, OwnedWriteHalf)>>>;

/// Serves the floor on 127.0.0.1 (a port the system picks) until standard input closes.
pub(crate) async fn serve() -> io::Result<()> {
    let listener = crate::server::announced_listener().await?;
    let mut message = Vec::new();
    wire::encode(
        &mut message,
        OP_TEXT,
        false,
        FANOUT_MESSAGE.as_bytes(),
        None,
    );
    let message: Arc<[u8]> = message.into();
    let room = Room::default();
    let ids = AtomicU64::new(0);
    let accepting = async {
        loop {
            let (stream, _) = listener.accept().await?;
            let (room, message) = (Arc::clone(&room), Arc::clone(&message));
            let id = ids.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                // A connection that fails is the peer's business.
                let _ = connection(stream, id, room, message).await;
            });
        }
    };
    tokio::select! {
        accepted = accepting => accepted,
        () = crate::server::harness_gone() => Ok(()),
    }
}

async fn connection(stream: TcpStream, id: u64, room: Room, message: Arc<[u8]>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (path, stream, leftover) = wire::accept(stream, &["/room", "/fire"]).await?;
    let (mut read, mut write) = stream.into_split();
    if path == "/fire" {
        return fire(
            wire::Reader::new(read, leftover, 1024),
            write,
            &room,
            &message,
        )
        .await;
    }
    let mut joined = Vec::new();
    wire::encode(&mut joined, OP_TEXT, false, b"joined", None);
    write.write_all(&joined).await?;
    room.lock().await.push((id, write));
    let mut discarded = [0; 512];
    while let Ok(1..) = read.read(&mut discarded).await {}
    room.lock().await.retain(|&(other, _)| other != id);
    Ok(())
}

/// Each text frame asks for that many broadcasts; each is answered with `done` once they are
/// written. A close frame is answered with one.
async fn fire(
    mut requests: wire::Reader<tokio::net::tcp::OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    room: &Room,
    message: &[u8],
) -> io::Result<()> {
    let mut answer = Vec::new();
    while let Some((header, payload)) = requests.frame().await? {
        answer.clear();
        match header.opcode {
            OP_TEXT => {
                let count = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(0_usize)
                    .min(MAX_COUNT);
                let messages = message.repeat(count);
                for (_, member) in room.lock().await.iter_mut() {
                    // A member that is gone leaves the room by itself.
                    let _ = member.write_all(&messages).await;
                }
                wire::encode(&mut answer, OP_TEXT, false, b"done", None);
            }
            OP_PING => wire::encode(&mut answer, OP_PONG, false, payload, None),
            OP_CLOSE => {
                wire::encode(&mut answer, OP_CLOSE, false, payload, None);
                write.write_all(&answer).await?;
                return write.shutdown().await;
            }
            _ => continue,
        }
        write.write_all(&answer).await?;
    }
    Ok(())
}
