//! [`Rooms`]: named groups of connections, and broadcasts to them that never wait on a member.
//!
//! A broadcast encodes its message once and hands every member the same bytes through the
//! member's bounded outbound queue, without awaiting anyone and without holding a lock across an
//! `.await`. A member whose queue is full meets the [`SlowMember`] policy, and every broadcast
//! returns a [`Delivery`] that counts what happened. Members leave by themselves when their
//! connection ends, however it ends.
//!
//! The rooms live in this process unless they are built with a backend: with the `redis`
//! feature, `RoomsBuilder::redis` spreads them over every server linked to the same Redis.

mod cluster;
mod history;
#[cfg(all(test, feature = "metrics"))]
mod metrics_tests;
#[cfg(feature = "redis")]
mod redis;
mod registry;

use std::collections::HashMap;
use std::fmt;
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::close::CloseCode;
use crate::connection::{ConnectionId, Prepared, random_u64};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::metrics;
use crate::sender::Sender;
use crate::socket::WebSocket;

use registry::{Cursor, Hold, Registry};

use cluster::Backend;
#[cfg(feature = "redis")]
use cluster::Local;
pub use cluster::{ClusterError, ClusterState, Remote};
use history::Log;
pub use history::{History, NotRecovered, Position, PositionError, Recovery};
#[cfg(feature = "redis")]
pub use redis::RedisConfig;

/// What a broadcast does with a member whose outbound queue is full: its client reads more
/// slowly than the room talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowMember {
    /// Close that member with 1013 (Try Again Later) and take it out of its rooms: the room
    /// stays fast, and the client knows it missed messages. The default.
    #[default]
    Close,
    /// Skip this message for that member only; it stays in the room.
    Drop,
}

/// What a broadcast did, member by member. Nothing is lost silently: a member that did not get
/// the message is counted as dropped or closed.
///
/// A broadcast never waits, so most callers can ignore it; read it where a lost message matters
/// (`if !delivery.is_complete() { ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    reached: usize,
    dropped: usize,
    closed: usize,
    remote: Remote,
    position: Option<Position>,
}

impl Delivery {
    /// Members on this server whose queue took the message.
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// Members on this server whose queue was full and who were skipped ([`SlowMember::Drop`]).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Members on this server closed because their queue was full ([`SlowMember::Close`]), or
    /// found closing.
    pub fn closed(&self) -> usize {
        self.closed
    }

    /// What happened beyond this server: [`Remote::InProcess`] unless the rooms have a
    /// backend. The other counts are this server's members only.
    pub fn remote(&self) -> Remote {
        self.remote
    }

    /// Where the message sits in the room's [`History`]: `None` if the room keeps none, and
    /// through Redis, where Redis gives the position after the broadcast returned (the message
    /// carries it; [`Broadcast::send_confirmed`] waits for it).
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// Whether every member on this server got the message, and the other servers were
    /// handed it (if there are others).
    pub fn is_complete(&self) -> bool {
        self.dropped == 0 && self.closed == 0 && self.remote != Remote::NotDelivered
    }

    fn add(&mut self, other: Self) {
        self.reached += other.reached;
        self.dropped += other.dropped;
        self.closed += other.closed;
    }

    /// Records the fan-out this delivery counts: `slow`, the members closed for a full queue
    /// (the others counted closed were closing already, which no policy did).
    fn done(&self, broadcast: metrics::Broadcast, slow: &[Sender]) {
        broadcast.done(self.reached, self.dropped, slow.len());
    }
}

/// A member of a room: its connection, and the data it joined with (`()` unless the rooms were
/// built with [`Rooms::with_member_data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<M = ()> {
    id: ConnectionId,
    data: M,
}

impl<M> Member<M> {
    /// The member's connection.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The data it joined with: its name, its user id, whatever the app gave
    /// [`Rooms::join`].
    pub fn data(&self) -> &M {
        &self.data
    }

    /// The data, by value.
    pub fn into_data(self) -> M {
        self.data
    }
}

/// What [`Rooms::join`] takes: a connection (`&ws` or `&sender`) for rooms without member data,
/// or a connection and its data (`(&ws, data)`) for rooms built with
/// [`Rooms::with_member_data`]. Sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot join rooms whose members carry `{M}`",
    label = "give the member's data with the connection: `(&ws, data)`",
    note = "rooms built with `Rooms::with_member_data::<{M}>()` take `rooms.join(room, (&ws, data))`; rooms without member data (`Rooms::new()`) take `rooms.join(room, &ws)`; a `Sender` works in place of `&ws`"
)]
pub trait IntoMember<M>: sealed::Sealed {
    #[doc(hidden)]
    fn into_member(self) -> Result<(Sender, M)>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &crate::socket::WebSocket {}
    impl Sealed for &crate::sender::Sender {}
    impl<M> Sealed for (&crate::socket::WebSocket, M) {}
    impl<M> Sealed for (&crate::sender::Sender, M) {}
}

impl IntoMember<()> for &WebSocket {
    fn into_member(self) -> Result<(Sender, ())> {
        Ok((self.sender()?, ()))
    }
}

impl IntoMember<()> for &Sender {
    fn into_member(self) -> Result<(Sender, ())> {
        Ok((self.clone(), ()))
    }
}

impl<M> IntoMember<M> for (&WebSocket, M) {
    fn into_member(self) -> Result<(Sender, M)> {
        Ok((self.0.sender()?, self.1))
    }
}

impl<M> IntoMember<M> for (&Sender, M) {
    fn into_member(self) -> Result<(Sender, M)> {
        Ok((self.0.clone(), self.1))
    }
}

/// Reads a member's data, as another server encoded it, back.
type Decode<M> = fn(&[u8]) -> Option<M>;

/// A presence hook: called with the rooms, the room's name and the member.
type Hook<M> = Arc<dyn Fn(&Rooms<M>, &str, &Member<M>) + Send + Sync>;

/// Which rooms keep a history, and which.
type HistoryFor = Arc<dyn Fn(&str) -> Option<History> + Send + Sync>;

/// A join, done ([`Rooms::enter`]), or waiting for the backend to give what the member missed.
enum Entered {
    Done(Recovery),
    CatchUp {
        room: Arc<str>,
        sender: Sender,
        cursor: Arc<Mutex<Cursor>>,
        since: Option<Position>,
        history: History,
    },
}

/// How often, at most, the rooms forget histories that are spent (every message aged out) in
/// rooms without members here.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Named groups of connections ("rooms") and broadcast to them; cheap to clone, usable as axum
/// state.
///
/// ```no_run
/// use axum::extract::State;
/// use tachyon::{Rooms, Tachyon, WebSocket, websocket};
///
/// #[websocket("/chat/{room}")]
/// async fn chat(mut ws: WebSocket, room: String, State(rooms): State<Rooms>) -> tachyon::Result<()> {
///     ws.accept().await?;
///     rooms.join(&room, &ws)?; // leaves by itself when the connection ends
///     loop {
///         let text = ws.receive_text().await?;
///         rooms.to(&room).send(format!("[{room}] {text}"));
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// Tachyon::with_state(Rooms::new()).websocket(chat).serve("127.0.0.1:8000").await
/// # }
/// ```
///
/// Members can carry data of the app's (a name, a user id): build the rooms with
/// [`with_member_data`](Self::with_member_data), join with `(&ws, data)`, and the presence
/// hooks and [`members`](Self::members) see it. `M` is `()` otherwise.
///
/// With state of your own, keep a `Rooms` in it and implement `FromRef` (or derive it with
/// axum's `macros` feature) so handlers can take `State<Rooms>`.
pub struct Rooms<M = ()> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Rooms<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<M> {
    registry: RwLock<Registry<M>>,
    policy: SlowMember,
    on_join: Option<Hook<M>>,
    on_leave: Option<Hook<M>>,
    backend: Option<Box<dyn Backend>>,
    /// Reads the data of another server's member back (the backend's encoding; in-process
    /// rooms never call it).
    decode: Decode<M>,
    /// The history policy of each room, if any room keeps one.
    history: Option<HistoryFor>,
    /// The histories of the rooms that keep one, in this process.
    logs: Mutex<Logs>,
}

/// The rooms' histories. A room's log outlives its members (they are the ones who come back);
/// it is forgotten once every message in it has aged out and no member is left.
struct Logs {
    rooms: HashMap<Arc<str>, Arc<Mutex<Log>>>,
    next_sweep: Instant,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    /// Rooms with the default policy ([`SlowMember::Close`]), no presence hooks and no member
    /// data.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Rooms with a policy or presence hooks.
    pub fn builder() -> RoomsBuilder {
        RoomsBuilder::new()
    }

    /// Rooms whose members carry a `M` of the app's, given on [`join`](Rooms::join) and read
    /// by the presence hooks and member listings:
    ///
    /// ```
    /// use tachyon::Rooms;
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct User { name: String }
    ///
    /// let rooms: Rooms<User> = Rooms::with_member_data::<User>()
    ///     .on_join(|rooms, room, member| {
    ///         rooms.to(room).send(format!("{} joined", member.data().name));
    ///     })
    ///     .build();
    /// ```
    ///
    /// A member joined to several rooms may carry different data in each. Across servers (the
    /// `redis` feature), `M` must be `Serialize + DeserializeOwned`: it is written as JSON with
    /// the membership, in the same command, so a join costs no extra round trip.
    pub fn with_member_data<M: Clone + Send + Sync + 'static>() -> RoomsBuilder<M> {
        RoomsBuilder::new()
    }
}

impl<M: Clone + Send + Sync + 'static> Rooms<M> {
    fn read(&self) -> RwLockReadGuard<'_, Registry<M>> {
        self.inner.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry<M>> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // --- Membership ----------------------------------------------------------------------------

    /// Puts a connection in `room` (created if need be): `&ws` (or a [`Sender`]), or
    /// `(&ws, data)` for rooms [with member data](Self::with_member_data). It leaves every room
    /// when the connection ends. Joining a room twice is joining it once (the data given last
    /// is kept; the join hook runs once).
    ///
    /// # Errors
    /// The state errors of [`WebSocket::sender`] (before `accept`, after a close).
    ///
    /// In a room with [`History::latest`], the member first gets the room's newest message.
    pub fn join(&self, room: &str, member: impl IntoMember<M>) -> Result<()> {
        let (sender, data) = member.into_member()?;
        let entered = self.enter(room, &sender, data, None);
        if let Entered::CatchUp { cursor, .. } = &entered {
            // The latest value of a room whose history is in the backend: read in a task.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let rooms = self.clone();
                    runtime.spawn(async move { rooms.catch_up_remote(entered).await });
                }
                Err(_) => lock(cursor).release(),
            }
        }
        Ok(())
    }

    /// Puts a connection back in `room` where it left off: every message broadcast to the room
    /// after `since` that the room's [`History`] still holds is queued for it first, in order,
    /// then the live ones follow, with no gap and none twice (also while other tasks broadcast
    /// to the room). `since` is a [`Position`] the server sent the client earlier (its text,
    /// parsed: pass `None` when the client sent none, or text that does not parse).
    ///
    /// The [`Recovery`] says whether that worked. When it did not (no position, a room without
    /// history, a position older than what is kept, from another epoch or another room, or one
    /// never issued), nothing is replayed and the connection joins live: resync the client.
    /// The replay is queued past the connection's queue bounds (the history bounds it).
    ///
    /// ```no_run
    /// use tachyon::rooms::{Position, Recovery};
    /// # async fn f(rooms: tachyon::Rooms, ws: tachyon::WebSocket, since: Option<String>) -> tachyon::Result<()> {
    /// let since = since.and_then(|text| text.parse::<Position>().ok());
    /// match rooms.join_since("lobby", &ws, since).await? {
    ///     Recovery::Recovered { missed } => tracing::debug!(missed, "caught up"),
    ///     _ => { /* send the client the current state */ }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub async fn join_since(
        &self,
        room: &str,
        member: impl IntoMember<M>,
        since: Option<Position>,
    ) -> Result<Recovery> {
        let (sender, data) = member.into_member()?;
        let entered = self.enter(room, &sender, data, since);
        let recovery = self.catch_up_remote(entered).await;
        if since.is_some() {
            metrics::resumed(recovery.is_recovered());
        }
        Ok(recovery)
    }

    /// Joins `sender` to `room`, replaying from `since` (or the latest value) if the room keeps
    /// history, under the room's log lock: a broadcast to the room holds it from taking its
    /// position to offering the message to every member, so the replay and the live messages
    /// meet with no gap and no overlap.
    ///
    /// Through a backend, the history is read from it afterwards: the member is seated with a
    /// cursor that holds live messages back until then ([`Entered::CatchUp`]).
    fn enter(&self, room: &str, sender: &Sender, data: M, since: Option<Position>) -> Entered {
        let hook_data = self.inner.on_join.as_ref().map(|_| data.clone());
        let (log, now) = self.inner.log(room).unzip();
        let mut log = log.as_deref().map(lock);
        let remote = self.inner.remote_history(room);
        let cursor = remote
            .filter(|history| since.is_some() || history.sends_latest())
            .map(|_| Arc::new(Mutex::new(Cursor::holding())));
        let (mut recovery, replay) = match log.as_deref_mut().zip(now) {
            Some((log, now)) => catch_up(log, since, now),
            None if since.is_some() && remote.is_none() => {
                (Recovery::NotRecovered(NotRecovered::NoHistory), vec![])
            }
            None => (Recovery::NotRecovered(NotRecovered::NoPosition), vec![]),
        };
        let joined = self.write().join(room, sender, data, cursor.clone());
        if joined.new_in_room {
            sender.shared().queue_replay(replay);
        } else if log.is_some() || remote.is_some() {
            // It has been getting the room's messages all along.
            recovery = Recovery::NotRecovered(NotRecovered::AlreadyJoined);
        }
        drop(log);
        // Also on a second join: the other servers then read the data given last.
        if let Some(backend) = &self.inner.backend {
            backend.membership_changed(&joined.room, sender.id());
        }
        if joined.new_member {
            // Registered outside the lock: if the connection already ended, the hook runs now.
            let rooms = Arc::downgrade(&self.inner);
            sender
                .shared()
                .on_end(Box::new(move |id| leave_all_of(&rooms, id)));
        }
        if let (true, Some(hook), Some(data)) = (joined.new_in_room, &self.inner.on_join, hook_data)
        {
            hook(
                self,
                room,
                &Member {
                    id: sender.id(),
                    data,
                },
            );
        }
        match (cursor, remote) {
            (Some(cursor), Some(history)) if joined.new_in_room => Entered::CatchUp {
                room: joined.room,
                sender: sender.clone(),
                cursor,
                since,
                history,
            },
            _ => Entered::Done(recovery),
        }
    }

    /// Reads what a member seated by [`enter`](Self::enter) missed from the backend, queues it,
    /// then lets the live messages held back meanwhile through (those past the replay only).
    async fn catch_up_remote(&self, entered: Entered) -> Recovery {
        let (room, sender, cursor, since, history) = match entered {
            Entered::Done(recovery) => return recovery,
            Entered::CatchUp {
                room,
                sender,
                cursor,
                since,
                history,
            } => (room, sender, cursor, since, history),
        };
        let read = match &self.inner.backend {
            Some(backend) => backend.read(&room, since, &history).await,
            None => Err(ClusterError::Unavailable { url: String::new() }),
        };
        let (recovery, replay) = match read {
            Ok(read) => match read.outcome {
                Ok(()) => (
                    Recovery::Recovered {
                        missed: read.messages.len(),
                    },
                    read.messages,
                ),
                // Without a position, "no history" is no reason: none was asked for.
                Err(_) if since.is_none() => (
                    Recovery::NotRecovered(NotRecovered::NoPosition),
                    read.messages,
                ),
                Err(reason) => (Recovery::NotRecovered(reason), read.messages),
            },
            Err(error) => {
                tracing::debug!(room = &*room, %error, "could not read the room's history");
                (
                    Recovery::NotRecovered(NotRecovered::Unavailable),
                    Vec::new(),
                )
            }
        };
        // The messages held back while it caught up: no broadcast of their own.
        let mut release = FanOut::release(self.inner.policy);
        {
            let mut cursor = lock(&cursor);
            cursor.last = replay
                .last()
                .map(|(position, _)| *position)
                .or(match recovery {
                    Recovery::Recovered { .. } => since,
                    _ => None,
                });
            sender
                .shared()
                .queue_replay(replay.into_iter().map(|(_, message)| message));
            for (position, message) in cursor.waiting.take().unwrap_or_default() {
                if cursor.admits(position) {
                    release.offer(&sender, &Arc::new(Prepared::new(message)));
                }
            }
        }
        release.finish();
        recovery
    }

    /// Takes a connection out of `room`. Returns whether it was in it.
    pub fn leave(&self, room: &str, id: ConnectionId) -> bool {
        let Some(data) = self.write().leave(room, id) else {
            return false;
        };
        if let Some(backend) = &self.inner.backend {
            backend.membership_changed(&Arc::from(room), id);
        }
        if let Some(hook) = &self.inner.on_leave {
            hook(self, room, &Member { id, data });
        }
        true
    }

    /// Takes a connection out of every room; returns the rooms it left.
    pub fn leave_all(&self, id: ConnectionId) -> Vec<String> {
        let left = self.write().forget(id);
        if let Some(backend) = &self.inner.backend {
            for (room, _) in &left {
                backend.membership_changed(room, id);
            }
        }
        let names = left.iter().map(|(room, _)| room.to_string()).collect();
        if let Some(hook) = &self.inner.on_leave {
            for (room, data) in left {
                hook(self, &room, &Member { id, data });
            }
        }
        names
    }

    /// The members of `room` on this server, with their data
    /// ([`cluster_members`](Self::cluster_members) asks every server).
    pub fn members(&self, room: &str) -> Vec<Member<M>> {
        self.read()
            .room(room)
            .map(|members| {
                members
                    .iter()
                    .map(|(id, seat)| Member {
                        id: *id,
                        data: seat.data.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many connections are in `room` on this server
    /// ([`cluster_member_count`](Self::cluster_member_count) asks every server).
    pub fn member_count(&self, room: &str) -> usize {
        self.read().room(room).map_or(0, |members| members.len())
    }

    /// The members of `room` on every server linked to the backend, with their data; without a
    /// backend, the same as [`members`](Self::members). This server's own joins and leaves made
    /// before the call are in the answer; the members of a server that stopped without leaving
    /// disappear once its heartbeat expires (`RedisConfig::expiry`, with the `redis` feature).
    /// A member whose data this version cannot read (written by a server whose `M` differs)
    /// is left out, and the log says so.
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] while the backend is reconnecting, or after
    /// [`leave_cluster`](Self::leave_cluster); [`ClusterError::Command`] if it failed to answer
    /// in time.
    pub async fn cluster_members(&self, room: &str) -> Result<Vec<Member<M>>, ClusterError> {
        let Some(backend) = &self.inner.backend else {
            return Ok(self.members(room));
        };
        let decode = self.inner.decode;
        let listed = backend.members(room).await?;
        let mut members = Vec::with_capacity(listed.len());
        let mut unreadable = 0usize;
        for (id, data) in listed {
            match decode(&data) {
                Some(data) => members.push(Member { id, data }),
                None => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                room,
                unreadable,
                "left out members whose data this server cannot read (another server's member data type differs)"
            );
        }
        Ok(members)
    }

    /// How many connections are in `room` on every server; see
    /// [`cluster_members`](Self::cluster_members).
    ///
    /// # Errors
    /// As [`cluster_members`](Self::cluster_members).
    pub async fn cluster_member_count(&self, room: &str) -> Result<usize, ClusterError> {
        match &self.inner.backend {
            Some(backend) => backend.member_count(room).await,
            None => Ok(self.member_count(room)),
        }
    }

    /// Takes this server out of the cluster: sends the broadcasts still queued, removes this
    /// server's members from the cluster-wide counts and its heartbeat, and unlinks. The rooms
    /// go on in this process (broadcasts then report [`Remote::NotDelivered`]). Call it once the
    /// server stopped serving (after graceful shutdown), so that the other servers stop
    /// counting its members at once rather than when its heartbeat expires. Without a backend,
    /// does nothing.
    ///
    /// ```no_run
    /// # async fn run(rooms: tachyon::Rooms, app: tachyon::Tachyon<tachyon::Rooms>) -> Result<(), Box<dyn std::error::Error>> {
    /// app.serve("127.0.0.1:8000").await?; // until Ctrl-C, then graceful shutdown
    /// rooms.leave_cluster().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] if the backend was unreachable: the members then stop
    /// counting when the heartbeat expires.
    pub async fn leave_cluster(&self) -> Result<(), ClusterError> {
        match &self.inner.backend {
            Some(backend) => backend.leave().await,
            None => Ok(()),
        }
    }

    /// Whether the rooms reach the other servers right now (for a readiness probe, say).
    pub fn cluster_state(&self) -> ClusterState {
        self.inner
            .backend
            .as_ref()
            .map_or(ClusterState::InProcess, |backend| backend.state())
    }

    /// The rooms a connection is in (on this server).
    pub fn rooms_of(&self, id: ConnectionId) -> Vec<String> {
        self.read()
            .rooms_of(id)
            .iter()
            .map(|room| room.to_string())
            .collect()
    }

    /// The sender of a connection that is in a room, to reach it by its id.
    pub fn sender(&self, id: ConnectionId) -> Option<Sender> {
        self.read().sender(id).cloned()
    }

    /// The names of the rooms that have members (an empty room is freed).
    pub fn room_names(&self) -> Vec<String> {
        self.read()
            .rooms()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    // --- Broadcast -----------------------------------------------------------------------------

    /// A broadcast to `room`: `rooms.to("lobby").send(text)`, refined with
    /// [`except`](Broadcast::except) and [`policy`](Broadcast::policy) before sending. A `String`
    /// or `&str` is sent as text, `Bytes` or `Vec<u8>` as binary,
    /// [`send_json`](Broadcast::send_json) serializes once. Never waits on a member; the
    /// [`Delivery`] it returns says who got it, and needs no reading.
    pub fn to<'a>(&'a self, room: &'a str) -> Broadcast<'a, M> {
        Broadcast {
            rooms: self,
            room,
            except: None,
            policy: self.inner.policy,
            transient: false,
        }
    }

    /// Sends `message` to one connection, if it is in a room, under the rooms' policy. With a
    /// backend, a connection held by another server is reached through it (the delivery then
    /// says [`Remote::Sent`], and counts nothing here).
    pub fn send_to(&self, id: ConnectionId, message: impl Into<Message>) -> Delivery {
        let message = message.into();
        let policy = self.inner.policy;
        match (
            self.inner.deliver_to(id, policy, &message),
            &self.inner.backend,
        ) {
            (Some(delivery), _) => delivery,
            (None, Some(backend)) => Delivery {
                remote: backend.send_to(id, policy, &message),
                ..Delivery::default()
            },
            (None, None) => Delivery::default(),
        }
    }

    /// Closes every member of `room` on this server with `code` and `reason`, after what is
    /// queued for it; returns how many.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`]: nothing was closed.
    pub fn close_room<C>(&self, room: &str, code: C, reason: &str) -> Result<usize>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        let code = code.try_into()?;
        let members: Vec<Sender> = self
            .read()
            .room(room)
            .map(|members| members.values().map(|seat| seat.sender.clone()).collect())
            .unwrap_or_default();
        Ok(close_each(&members, code, reason))
    }

    /// Closes every member of every room on this server with `code` and `reason`; returns how
    /// many.
    ///
    /// # Errors
    /// [`Error::InvalidCloseCode`]: nothing was closed.
    pub fn close_all<C>(&self, code: C, reason: &str) -> Result<usize>
    where
        C: TryInto<CloseCode>,
        Error: From<C::Error>,
    {
        let code = code.try_into()?;
        let mut members: Vec<Sender> = Vec::new();
        for (_, room) in self.read().rooms() {
            members.extend(room.values().map(|seat| seat.sender.clone()));
        }
        members.sort_by_key(Sender::id);
        members.dedup_by_key(|sender| sender.id());
        Ok(close_each(&members, code, reason))
    }
}

impl<M> Inner<M> {
    fn read(&self) -> RwLockReadGuard<'_, Registry<M>> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log of `room`, made if the room's policy asks for history, and the time it was
    /// looked up at (the one reading of the clock a broadcast makes); `None` if the room keeps
    /// none. Now and then, forgets the spent logs of rooms without members.
    fn log(&self, room: &str) -> Option<(Arc<Mutex<Log>>, Instant)> {
        if self.backend.is_some() {
            return None; // the backend keeps the history
        }
        let policy = self.history.as_ref()?;
        let now = Instant::now();
        let mut logs = lock(&self.logs);
        if now >= logs.next_sweep {
            logs.next_sweep = now + SWEEP_EVERY;
            let registry = self.read();
            // A log in use right now is not spent: skip it rather than wait for it.
            logs.rooms.retain(|name, log| {
                registry.room(name).is_some()
                    || log.try_lock().map_or(true, |mut log| !log.is_spent(now))
            });
            if logs.rooms.capacity() > 64 && logs.rooms.len() < logs.rooms.capacity() / 4 {
                logs.rooms.shrink_to_fit();
            }
        }
        if let Some(log) = logs.rooms.get(room) {
            return Some((Arc::clone(log), now));
        }
        let history = policy(room)?;
        let log = Arc::new(Mutex::new(Log::new(history, random_u64())));
        logs.rooms.insert(Arc::from(room), Arc::clone(&log));
        Some((log, now))
    }

    /// Offers `message` to a member of this server's rooms; `None` if it is not one.
    fn deliver_to(
        &self,
        id: ConnectionId,
        policy: SlowMember,
        message: &Message,
    ) -> Option<Delivery> {
        let mut fan_out = FanOut::broadcast(policy);
        let sender = self.read().sender(id).cloned()?;
        fan_out.offer(&sender, &Arc::new(Prepared::new(message.clone())));
        Some(fan_out.finish())
    }

    /// The history of `room`, if the backend keeps it.
    fn remote_history(&self, room: &str) -> Option<History> {
        self.backend.as_ref()?;
        self.history.as_ref().and_then(|policy| policy(room))
    }

    /// Offers a broadcast recorded at `position` by the backend to this server's members of
    /// `room`, but `except`: a member catching up holds it back, or lets it through only if it
    /// is past what it was given.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn deliver_recorded(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        position: Position,
        message: &Message,
    ) {
        let mut fan_out = FanOut::broadcast(policy);
        // Framed (and compressed) once, by the first member's driver that sends it.
        let prepared = Arc::new(Prepared::new(message.clone()));
        {
            let registry = self.read();
            let members = registry.room(room).into_iter().flatten();
            for (id, seat) in members {
                if Some(*id) == except {
                    continue;
                }
                let Some(cursor) = &seat.cursor else {
                    fan_out.offer(&seat.sender, &prepared);
                    continue;
                };
                let mut cursor = lock(cursor);
                match cursor.hold(position, message) {
                    Hold::Held => {}
                    Hold::Full => fan_out.too_slow(&seat.sender),
                    Hold::Live => {
                        if cursor.admits(position) {
                            fan_out.offer(&seat.sender, &prepared);
                        }
                    }
                }
            }
        }
        fan_out.finish();
    }

    /// Offers `message` to this server's members of `room`, but `except`.
    fn deliver(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) -> Delivery {
        let mut fan_out = FanOut::broadcast(policy);
        // Framed (and compressed) once, by the first member's driver that sends it.
        let prepared = Arc::new(Prepared::new(message.clone()));
        {
            let registry = self.read();
            for (id, seat) in registry.room(room).into_iter().flatten() {
                if Some(*id) != except {
                    fan_out.offer(&seat.sender, &prepared);
                }
            }
        }
        fan_out.finish()
    }
}

/// The rooms as a backend sees them: member data is encoded as JSON for the other servers.
#[cfg(feature = "redis")]
impl<M> Local for Inner<M>
where
    M: Serialize + Clone + Send + Sync + 'static,
{
    fn member(&self, room: &str, id: ConnectionId) -> (bool, Option<Vec<u8>>) {
        let registry = self.read();
        let Some(members) = registry.room(room) else {
            return (false, None);
        };
        (true, members.get(&id).map(|seat| encode_data(&seat.data)))
    }

    fn snapshot(&self) -> Vec<(Arc<str>, Vec<cluster::EncodedMember>)> {
        self.read()
            .rooms()
            .map(|(room, members)| {
                let members = members
                    .iter()
                    .map(|(id, seat)| (*id, encode_data(&seat.data)))
                    .collect();
                (Arc::clone(room), members)
            })
            .collect()
    }

    fn deliver(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) {
        Inner::deliver(self, room, except, policy, message);
    }

    fn deliver_recorded(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        position: Position,
        message: &Message,
    ) {
        Inner::deliver_recorded(self, room, except, policy, position, message);
    }

    fn deliver_to(&self, id: ConnectionId, policy: SlowMember, message: &Message) {
        Inner::deliver_to(self, id, policy, message);
    }
}

/// A member's data as the other servers read it back ([`Rooms::cluster_members`]).
#[cfg(feature = "redis")]
fn encode_data<M: Serialize>(data: &M) -> Vec<u8> {
    serde_json::to_vec(data).unwrap_or_else(|error| {
        tracing::warn!(%error, "member data could not be written as JSON; other servers see `null`");
        b"null".to_vec()
    })
}

/// What a joining member of a room with history gets first: the messages after `since` if the
/// log still holds them all; otherwise nothing, or the newest message in a latest-value room.
fn catch_up(log: &mut Log, since: Option<Position>, now: Instant) -> (Recovery, Vec<Message>) {
    let missed = since
        .ok_or(NotRecovered::NoPosition)
        .and_then(|since| Ok(log.since(since, now)?.cloned().collect::<Vec<_>>()));
    match missed {
        Ok(missed) => (
            Recovery::Recovered {
                missed: missed.len(),
            },
            missed,
        ),
        Err(reason) => {
            let latest = if log.policy().sends_latest() {
                log.latest(now).cloned().into_iter().collect()
            } else {
                Vec::new()
            };
            (Recovery::NotRecovered(reason), latest)
        }
    }
}

/// Locks a mutex of the rooms'; nothing panics while holding one, so a poisoned one is whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn close_each(members: &[Sender], code: CloseCode, reason: &str) -> usize {
    // Outside the lock: each close takes its connection out of the rooms.
    members
        .iter()
        .filter(|sender| sender.close(code, reason).is_ok())
        .count()
}

/// The end hook of a member: its connection ended, so it leaves every room.
fn leave_all_of<M: Clone + Send + Sync + 'static>(rooms: &Weak<Inner<M>>, id: ConnectionId) {
    if let Some(inner) = rooms.upgrade() {
        Rooms { inner }.leave_all(id);
    }
}

/// Offers `message` to one member; a full queue meets `policy` (a member to close is collected,
/// to be closed once no lock is held).
/// One fan-out of a message to this server's members: what it delivered, the members to close
/// as too slow (closed once no lock is held, by [`finish`](Self::finish)), and what it records.
struct FanOut {
    policy: SlowMember,
    delivery: Delivery,
    slow: Vec<Sender>,
    /// What went straight into members' sockets, counted when this is dropped.
    direct: metrics::Direct,
    /// `None` for messages released to one member after its catch-up, which are no broadcast.
    broadcast: Option<metrics::Broadcast>,
}

impl FanOut {
    /// A broadcast (or a message to one member), recorded as one when it finishes.
    fn broadcast(policy: SlowMember) -> Self {
        Self::new(policy, Some(metrics::Broadcast::start()))
    }

    /// Messages held back for a member that caught up, now let through.
    fn release(policy: SlowMember) -> Self {
        Self::new(policy, None)
    }

    fn new(policy: SlowMember, broadcast: Option<metrics::Broadcast>) -> Self {
        Self {
            policy,
            delivery: Delivery::default(),
            slow: Vec::new(),
            direct: metrics::Direct::new(),
            broadcast,
        }
    }

    /// Offers `message` to one member; a full queue meets the policy.
    fn offer(&mut self, sender: &Sender, message: &Arc<Prepared>) {
        match sender.shared().try_send_prepared(message, &mut self.direct) {
            Ok(()) => self.delivery.reached += 1,
            Err(error) if error.is_full() => match self.policy {
                SlowMember::Drop => self.delivery.dropped += 1,
                SlowMember::Close => self.too_slow(sender),
            },
            // Closing already: it is on its way out of the room.
            Err(_) => self.delivery.closed += 1,
        }
    }

    /// A member to close as too slow.
    fn too_slow(&mut self, sender: &Sender) {
        self.delivery.closed += 1;
        self.slow.push(sender.clone());
    }

    /// Records the broadcast, closes the members that were too slow, and says what it did.
    fn finish(self) -> Delivery {
        if let Some(broadcast) = self.broadcast {
            self.delivery.done(broadcast, &self.slow);
        }
        close_slow(self.slow);
        self.delivery
    }
}

fn close_slow(slow: Vec<Sender>) {
    for sender in slow {
        let _ = sender.close(
            CloseCode::TRY_AGAIN_LATER,
            "too slow: the outbound queue is full",
        );
    }
}

/// A broadcast to one room, from [`Rooms::to`]: choose who is left out and the slow-member
/// policy, then send.
#[must_use = "a broadcast does nothing until sent"]
pub struct Broadcast<'a, M = ()> {
    rooms: &'a Rooms<M>,
    room: &'a str,
    except: Option<ConnectionId>,
    policy: SlowMember,
    transient: bool,
}

impl<M: Clone + Send + Sync + 'static> Broadcast<'_, M> {
    /// Leaves one connection out (typically the one that sent the message).
    pub fn except(mut self, id: ConnectionId) -> Self {
        self.except = Some(id);
        self
    }

    /// The slow-member policy for this broadcast only.
    pub fn policy(mut self, policy: SlowMember) -> Self {
        self.policy = policy;
        self
    }

    /// Keeps this message out of the room's [`History`]: it gets no position, and a member
    /// that resumes does not get it again. For what only matters live: presence ("x joined"),
    /// typing indicators. No effect in a room without history.
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// The backend and the room's history, if the backend keeps it and this broadcast goes in.
    fn recorded_remotely(&self) -> Option<(&dyn Backend, History)> {
        if self.transient {
            return None;
        }
        let inner = &self.rooms.inner;
        let history = inner.remote_history(self.room)?;
        Some((inner.backend.as_deref()?, history))
    }

    /// The room's log, unless this broadcast stays out of it.
    fn log(&self) -> Option<(Arc<Mutex<Log>>, Instant)> {
        if self.transient {
            return None;
        }
        self.rooms.inner.log(self.room)
    }

    /// Sends `message` (a `String` or `&str` is text; `Bytes` or `Vec<u8>` is binary) to every
    /// member; never waits. With a backend, the message is encoded once for the other servers,
    /// and each of them hands it to its own members once. In a room with [`History`], the
    /// message is recorded, and the delivery says its [`position`](Delivery::position).
    pub fn send(self, message: impl Into<Message>) -> Delivery {
        self.send_with(|_| message)
    }

    /// Sends the message `make` builds from the broadcast's [`Position`] in the room's history
    /// (`None` if the room keeps none), so that the message can carry it to the client (which
    /// gives it back to [`Rooms::join_since`] when it reconnects). `make` is called once: every
    /// member, the history and a replay get the same bytes.
    ///
    /// ```
    /// # let rooms = tachyon::Rooms::new();
    /// rooms.to("lobby").send_with(|position| {
    ///     serde_json::json!({ "type": "message", "pos": position, "text": "hi" }).to_string()
    /// });
    /// ```
    ///
    /// Through Redis, Redis assigns positions: `make` gets a placeholder of the same length,
    /// and Redis puts the real position in its place wherever its text appears in the message
    /// (so the delivery has no [`position`](Delivery::position)). Use it only to write it into
    /// the message, as text; [`send_confirmed`](Self::send_confirmed) waits for the position.
    pub fn send_with<T: Into<Message>>(self, make: impl FnOnce(Option<Position>) -> T) -> Delivery {
        let sent =
            self.try_send_with(|position| Ok::<_, std::convert::Infallible>(make(position).into()));
        match sent {
            Ok(delivery) => delivery,
            Err(never) => match never {},
        }
    }

    fn publish(&self, message: &Message) -> Remote {
        self.rooms
            .inner
            .backend
            .as_ref()
            .map_or(Remote::InProcess, |backend| {
                backend.publish(self.room, self.except, self.policy, message)
            })
    }

    /// [`send_with`](Self::send_with) for a `make` that may fail: the position is taken only
    /// once the message is made, so a failure sends and records nothing.
    fn try_send_with<E>(
        self,
        make: impl FnOnce(Option<Position>) -> std::result::Result<Message, E>,
    ) -> std::result::Result<Delivery, E> {
        Ok(self.dispatch(make, false)?.0)
    }

    /// Sends the message `make` builds, as [`send_with`](Self::send_with) does, and waits until
    /// it has its position: through Redis, until Redis has recorded it (one round trip, as the
    /// delivery of [`send_with`](Self::send_with) has no position there); in process or without history, it
    /// returns at once. A broadcast the backend could not take is no error: the delivery says
    /// [`Remote::NotDelivered`].
    ///
    /// # Errors
    /// Through Redis: [`ClusterError::Unavailable`] if the link was lost before Redis answered
    /// (the message may or may not have been recorded), [`ClusterError::Command`] if Redis
    /// refused it or did not answer in time.
    pub async fn send_confirmed<T: Into<Message>>(
        self,
        make: impl FnOnce(Option<Position>) -> T,
    ) -> std::result::Result<Delivery, ClusterError> {
        let sent = self.dispatch(
            |position| Ok::<_, std::convert::Infallible>(make(position).into()),
            true,
        );
        let (mut delivery, confirmed) = match sent {
            Ok(sent) => sent,
            Err(never) => match never {},
        };
        if let Some(confirmed) = confirmed {
            delivery.position = Some(confirmed.await?);
        }
        Ok(delivery)
    }

    /// Sends the message `make` builds; with `confirm`, through a backend that records it, also
    /// the position to come.
    fn dispatch<E>(
        self,
        make: impl FnOnce(Option<Position>) -> std::result::Result<Message, E>,
        confirm: bool,
    ) -> std::result::Result<(Delivery, Option<cluster::Answer<Position>>), E> {
        let inner = &self.rooms.inner;
        if let Some((backend, history)) = self.recorded_remotely() {
            let Some(placeholder) = backend.placeholder() else {
                let delivery = Delivery {
                    remote: Remote::NotDelivered,
                    ..Delivery::default()
                };
                return Ok((delivery, None));
            };
            let message = make(Some(placeholder))?;
            let (remote, confirmed) = backend.record(
                self.room,
                self.except,
                self.policy,
                &history,
                placeholder,
                &message,
                confirm,
            );
            let delivery = Delivery {
                remote,
                ..Delivery::default()
            };
            return Ok((delivery, confirmed));
        }
        let Some((log, now)) = self.log() else {
            let message = make(None)?;
            let mut delivery = inner.deliver(self.room, self.except, self.policy, &message);
            delivery.remote = self.publish(&message);
            return Ok((delivery, None));
        };
        // Held until every member here was offered the message: see `Rooms::enter`.
        let mut log = lock(&log);
        let position = log.next();
        let message = make(Some(position))?;
        log.push(message.clone(), now);
        let mut delivery = inner.deliver(self.room, self.except, self.policy, &message);
        delivery.remote = self.publish(&message);
        drop(log);
        delivery.position = Some(position);
        Ok((delivery, None))
    }

    /// Serializes the value `make` builds from the broadcast's [`Position`] to JSON, once, and
    /// sends it as [`send_with`](Self::send_with) does.
    ///
    /// ```
    /// # let rooms = tachyon::Rooms::new();
    /// #[derive(serde::Serialize)]
    /// struct Said<'a> { pos: Option<tachyon::rooms::Position>, text: &'a str }
    ///
    /// rooms.to("lobby").send_json_with(|pos| Said { pos, text: "hi" })?;
    /// # Ok::<(), tachyon::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Serialize`]: nothing was sent, and nothing recorded.
    pub fn send_json_with<T: Serialize>(
        self,
        make: impl FnOnce(Option<Position>) -> T,
    ) -> Result<Delivery> {
        self.try_send_with(|position| {
            let json = serde_json::to_string(&make(position)).map_err(Error::Serialize)?;
            Ok(Message::from(json))
        })
    }

    /// Serializes `value` to JSON once and sends it to every member; never waits.
    ///
    /// # Errors
    /// [`Error::Serialize`]: nothing was sent.
    pub fn send_json<T: Serialize + ?Sized>(self, value: &T) -> Result<Delivery> {
        let json = serde_json::to_string(value).map_err(Error::Serialize)?;
        Ok(self.send(json))
    }

    /// Sends `message` to every member, waiting for room in the queues that are full instead of
    /// applying the policy (opt-in: a slow member then slows the broadcaster). The members are
    /// copied out first, so no lock is held while waiting. The other servers get the message at
    /// once, under the policy: waiting is for this server's members.
    ///
    /// In a room with [`History`], the message is recorded like any other, but a member that
    /// had to be waited for may get it after later broadcasts: where order matters, use
    /// [`send`](Self::send) and let members that fall behind resume from their position.
    pub async fn send_waiting(self, message: impl Into<Message>) -> Delivery {
        if self.recorded_remotely().is_some() {
            return self.send(message);
        }
        let broadcast = metrics::Broadcast::start();
        let message = message.into();
        let mut delivery = Delivery::default();
        let mut full = Vec::new();
        {
            let (log, now) = self.log().unzip();
            let mut log = log.as_deref().map(lock);
            if let (Some(log), Some(now)) = (log.as_deref_mut(), now) {
                delivery.position = Some(log.next());
                log.push(message.clone(), now);
            }
            delivery.remote = self.publish(&message);
            let members: Vec<Sender> = self
                .rooms
                .read()
                .room(self.room)
                .map(|members| {
                    members
                        .iter()
                        .filter(|(id, _)| Some(**id) != self.except)
                        .map(|(_, seat)| seat.sender.clone())
                        .collect()
                })
                .unwrap_or_default();
            for sender in members {
                match sender.try_send(message.clone()) {
                    Ok(()) => delivery.reached += 1,
                    Err(error) if error.is_full() => full.push(sender),
                    Err(_) => delivery.closed += 1,
                }
            }
        }
        let waits = full.iter().map(|sender| sender.send(message.clone()));
        for result in futures_util::future::join_all(waits).await {
            let outcome = Delivery {
                reached: usize::from(result.is_ok()),
                closed: usize::from(result.is_err()),
                ..Delivery::default()
            };
            delivery.add(outcome);
        }
        // Nobody met the policy: the full queues were waited for.
        delivery.done(broadcast, &[]);
        delivery
    }
}

/// Builds [`Rooms`] with a slow-member policy and presence hooks; from [`Rooms::builder`], or
/// [`Rooms::with_member_data`] for members that carry data.
#[must_use]
pub struct RoomsBuilder<M = ()> {
    policy: SlowMember,
    on_join: Option<Hook<M>>,
    on_leave: Option<Hook<M>>,
    history: Option<HistoryFor>,
}

impl<M: Clone + Send + Sync + 'static> RoomsBuilder<M> {
    fn new() -> Self {
        Self {
            policy: SlowMember::default(),
            on_join: None,
            on_leave: None,
            history: None,
        }
    }

    /// Every room keeps a [`History`] of its broadcasts, so that members that drop can resume
    /// ([`Rooms::join_since`]) and every broadcast has a [`Position`]. Without it (the
    /// default), rooms keep nothing: a member that drops misses what is sent meanwhile.
    ///
    /// ```
    /// use tachyon::Rooms;
    /// use tachyon::rooms::History;
    ///
    /// let rooms = Rooms::builder().history(History::messages(100)).build();
    /// ```
    pub fn history(self, history: History) -> Self {
        self.history_for(move |_| Some(history))
    }

    /// The [`History`] of each room, by its name (`None`: the room keeps none). Asked once
    /// per room, when the room is first used (and again after a spent history was forgotten).
    ///
    /// ```
    /// use tachyon::Rooms;
    /// use tachyon::rooms::History;
    ///
    /// let rooms = Rooms::builder()
    ///     .history_for(|room| match room.split_once(':') {
    ///         Some(("ticker", _)) => Some(History::latest()),
    ///         Some(("chat", _)) => Some(History::messages(100)),
    ///         _ => None,
    ///     })
    ///     .build();
    /// ```
    pub fn history_for(
        mut self,
        policy: impl Fn(&str) -> Option<History> + Send + Sync + 'static,
    ) -> Self {
        self.history = Some(Arc::new(policy));
        self
    }

    /// What broadcasts do with a member whose queue is full; default [`SlowMember::Close`].
    pub fn slow_member(mut self, policy: SlowMember) -> Self {
        self.policy = policy;
        self
    }

    /// Called after a connection joins a room, with the rooms, the room and the new
    /// [`Member`] (its id and data): the place to announce "x joined". It runs in the task
    /// that joined; keep it quick (a broadcast is fine, it never waits).
    pub fn on_join(
        mut self,
        hook: impl Fn(&Rooms<M>, &str, &Member<M>) + Send + Sync + 'static,
    ) -> Self {
        self.on_join = Some(Arc::new(hook));
        self
    }

    /// Called after a connection left a room, whether by [`Rooms::leave`] or because its
    /// connection ended (close, loss, keepalive timeout, shutdown, a panic in its handler),
    /// with the data it had joined with: the connection is already out, so a broadcast from
    /// here does not reach it.
    pub fn on_leave(
        mut self,
        hook: impl Fn(&Rooms<M>, &str, &Member<M>) + Send + Sync + 'static,
    ) -> Self {
        self.on_leave = Some(Arc::new(hook));
        self
    }

    /// The rooms, in this process.
    pub fn build(self) -> Rooms<M> {
        self.build_with(|_| None, |_| None)
    }

    /// The rooms, with the backend `make` builds from a weak reference to them (the backend
    /// hands what other servers broadcast to the rooms, and must not keep them alive), and
    /// `decode` to read back the member data other servers wrote.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn build_with(
        self,
        decode: Decode<M>,
        make: impl FnOnce(Weak<Inner<M>>) -> Option<Box<dyn Backend>>,
    ) -> Rooms<M> {
        Rooms {
            inner: Arc::new_cyclic(|rooms| Inner {
                registry: RwLock::new(Registry::default()),
                policy: self.policy,
                on_join: self.on_join,
                on_leave: self.on_leave,
                backend: make(rooms.clone()),
                decode,
                history: self.history,
                logs: Mutex::new(Logs {
                    rooms: HashMap::new(),
                    next_sweep: Instant::now() + SWEEP_EVERY,
                }),
            }),
        }
    }
}

impl<M> fmt::Debug for Rooms<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rooms = self.inner.read().rooms().count();
        let cluster = self
            .inner
            .backend
            .as_ref()
            .map_or(ClusterState::InProcess, |backend| backend.state());
        f.debug_struct("Rooms")
            .field("rooms", &rooms)
            .field("policy", &self.inner.policy)
            .field("cluster", &cluster)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Debug for Broadcast<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("room", &self.room)
            .field("except", &self.except)
            .field("policy", &self.policy)
            .field("transient", &self.transient)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Debug for RoomsBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomsBuilder")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
