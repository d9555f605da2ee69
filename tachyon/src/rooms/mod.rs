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
#[cfg(feature = "redis")]
mod redis;
mod registry;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use serde::Serialize;

use crate::close::CloseCode;
use crate::connection::ConnectionId;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::sender::Sender;
use crate::socket::WebSocket;

use registry::Registry;

use cluster::Backend;
pub use cluster::{ClusterError, ClusterState, Remote};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use = "a broadcast's delivery says who did not get the message"]
pub struct Delivery {
    /// Members whose queue took the message.
    pub reached: usize,
    /// Members whose queue was full and who were skipped ([`SlowMember::Drop`]).
    pub dropped: usize,
    /// Members closed because their queue was full ([`SlowMember::Close`]), or found closing.
    pub closed: usize,
    /// What happened beyond this server: [`Remote::InProcess`] unless the rooms have a
    /// backend. The counts above are this server's members only.
    pub remote: Remote,
}

impl Delivery {
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
}

/// A presence hook: called with the rooms, the room's name and the connection.
type Hook = Arc<dyn Fn(&Rooms, &str, ConnectionId) + Send + Sync>;

/// Named groups of connections ("rooms") and broadcast to them; cheap to clone, usable as axum
/// state.
///
/// ```no_run
/// use axum::extract::State;
/// use tachyon::{websocket, Rooms, Tachyon, WebSocket};
///
/// #[websocket("/chat/{room}")]
/// async fn chat(mut ws: WebSocket, room: String, State(rooms): State<Rooms>) -> tachyon::Result<()> {
///     ws.accept().await?;
///     rooms.join(&room, &ws)?; // leaves by itself when the connection ends
///     loop {
///         let text = ws.receive_text().await?;
///         let _ = rooms.broadcast(&room, format!("[{room}] {text}"));
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// Tachyon::with_state(Rooms::new()).websocket(chat).serve("127.0.0.1:8000").await
/// # }
/// ```
///
/// With state of your own, keep a `Rooms` in it and implement `FromRef` (or derive it with
/// axum's `macros` feature) so handlers can take `State<Rooms>`.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<Registry>,
    policy: SlowMember,
    on_join: Option<Hook>,
    on_leave: Option<Hook>,
    backend: Option<Box<dyn Backend>>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new()
    }
}

impl Rooms {
    /// Rooms with the default policy ([`SlowMember::Close`]) and no presence hooks.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Rooms with a policy or presence hooks.
    pub fn builder() -> RoomsBuilder {
        RoomsBuilder {
            policy: SlowMember::default(),
            on_join: None,
            on_leave: None,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // --- Membership ----------------------------------------------------------------------------

    /// Puts the connection of `ws` in `room` (created if need be). It leaves every room when the
    /// connection ends. Joining a room twice is joining it once.
    ///
    /// # Errors
    /// The state errors of [`WebSocket::sender`] (before `accept`, after a close).
    pub fn join(&self, room: &str, ws: &WebSocket) -> Result<()> {
        self.join_sender(room, &ws.sender()?);
        Ok(())
    }

    /// Puts the connection behind `sender` in `room`; see [`join`](Self::join).
    pub fn join_sender(&self, room: &str, sender: &Sender) {
        let joined = self.write().join(room, sender);
        if joined.new_in_room {
            if let Some(backend) = &self.inner.backend {
                backend.membership_changed(&joined.room, sender.id());
            }
        }
        if joined.new_member {
            // Registered outside the lock: if the connection already ended, the hook runs now.
            let rooms = Arc::downgrade(&self.inner);
            sender
                .shared()
                .on_end(Box::new(move |id| leave_all_of(&rooms, id)));
        }
        if joined.new_in_room {
            if let Some(hook) = &self.inner.on_join {
                hook(self, room, sender.id());
            }
        }
    }

    /// Takes a connection out of `room`. Returns whether it was in it.
    pub fn leave(&self, room: &str, id: ConnectionId) -> bool {
        let left = self.write().leave(room, id);
        if left {
            if let Some(backend) = &self.inner.backend {
                backend.membership_changed(&Arc::from(room), id);
            }
            if let Some(hook) = &self.inner.on_leave {
                hook(self, room, id);
            }
        }
        left
    }

    /// Takes a connection out of every room; returns the rooms it left.
    pub fn leave_all(&self, id: ConnectionId) -> Vec<String> {
        let left = self.write().forget(id);
        if let Some(backend) = &self.inner.backend {
            for room in &left {
                backend.membership_changed(room, id);
            }
        }
        if let Some(hook) = &self.inner.on_leave {
            for room in &left {
                hook(self, room, id);
            }
        }
        left.iter().map(|room| room.to_string()).collect()
    }

    /// The connections in `room` on this server ([`cluster_members`](Self::cluster_members)
    /// asks every server).
    pub fn members(&self, room: &str) -> Vec<ConnectionId> {
        self.read()
            .room(room)
            .map(|members| members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many connections are in `room` on this server
    /// ([`cluster_member_count`](Self::cluster_member_count) asks every server).
    pub fn member_count(&self, room: &str) -> usize {
        self.read().room(room).map_or(0, |members| members.len())
    }

    /// The connections in `room` on every server linked to the backend; without a backend,
    /// the same as [`members`](Self::members). This server's own joins and leaves made before
    /// the call are in the answer; the members of a server that stopped without leaving
    /// disappear once its heartbeat expires (`RedisConfig::expiry`, with the `redis` feature).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] while the backend is reconnecting, or after
    /// [`leave_cluster`](Self::leave_cluster); [`ClusterError::Command`] if it failed to answer
    /// in time.
    pub async fn cluster_members(&self, room: &str) -> Result<Vec<ConnectionId>, ClusterError> {
        match &self.inner.backend {
            Some(backend) => backend.members(room).await,
            None => Ok(self.members(room)),
        }
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

    /// A broadcast to `room`, to refine before sending it: `rooms.to("lobby").except(id).send(..)`.
    pub fn to<'a>(&'a self, room: &'a str) -> Broadcast<'a> {
        Broadcast {
            rooms: self,
            room,
            except: None,
            policy: self.inner.policy,
        }
    }

    /// Sends `message` (a `String` or `&str` is text; `Bytes` or `Vec<u8>` is binary) to every
    /// member of `room`.
    pub fn broadcast(&self, room: &str, message: impl Into<Message>) -> Delivery {
        self.to(room).send(message)
    }

    /// Serializes `value` to JSON once and sends it to every member of `room`.
    ///
    /// # Errors
    /// [`Error::Serialize`]: nothing was sent.
    pub fn broadcast_json<T: Serialize + ?Sized>(&self, room: &str, value: &T) -> Result<Delivery> {
        self.to(room).send_json(value)
    }

    /// Sends `message` to every member of `room` but `except` (typically the sender).
    pub fn broadcast_except(
        &self,
        room: &str,
        except: ConnectionId,
        message: impl Into<Message>,
    ) -> Delivery {
        self.to(room).except(except).send(message)
    }

    /// Sends `message` to one connection, if it is in a room, under the rooms' policy. With a
    /// backend, a connection held by another server is reached through it (the delivery then
    /// says [`Remote::Sent`], and counts nothing here).
    pub fn send_to(&self, id: ConnectionId, message: impl Into<Message>) -> Delivery {
        let message = message.into();
        let policy = self.inner.policy;
        match (self.deliver_to(id, policy, &message), &self.inner.backend) {
            (Some(delivery), _) => delivery,
            (None, Some(backend)) => Delivery {
                remote: backend.send_to(id, policy, &message),
                ..Delivery::default()
            },
            (None, None) => Delivery::default(),
        }
    }

    /// Offers `message` to a member of this server's rooms; `None` if it is not one.
    fn deliver_to(
        &self,
        id: ConnectionId,
        policy: SlowMember,
        message: &Message,
    ) -> Option<Delivery> {
        let sender = self.read().sender(id).cloned()?;
        let mut delivery = Delivery::default();
        let mut slow = Vec::new();
        offer(&sender, message, policy, &mut delivery, &mut slow);
        close_slow(slow);
        Some(delivery)
    }

    /// Offers `message` to this server's members of `room`, but `except`.
    fn deliver(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let mut slow = Vec::new();
        {
            let registry = self.read();
            let Some(members) = registry.room(room) else {
                return delivery;
            };
            for (id, sender) in members {
                if Some(*id) != except {
                    offer(sender, message, policy, &mut delivery, &mut slow);
                }
            }
        }
        close_slow(slow);
        delivery
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
            .map(|members| members.values().cloned().collect())
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
            members.extend(room.values().cloned());
        }
        members.sort_by_key(Sender::id);
        members.dedup_by_key(|sender| sender.id());
        Ok(close_each(&members, code, reason))
    }
}

fn close_each(members: &[Sender], code: CloseCode, reason: &str) -> usize {
    // Outside the lock: each close takes its connection out of the rooms.
    members
        .iter()
        .filter(|sender| sender.close(code, reason).is_ok())
        .count()
}

/// The end hook of a member: its connection ended, so it leaves every room.
fn leave_all_of(rooms: &Weak<Inner>, id: ConnectionId) {
    if let Some(inner) = rooms.upgrade() {
        let _ = Rooms { inner }.leave_all(id);
    }
}

/// Offers `message` to one member; a full queue meets `policy` (a member to close is collected,
/// to be closed once no lock is held).
fn offer(
    sender: &Sender,
    message: &Message,
    policy: SlowMember,
    delivery: &mut Delivery,
    slow: &mut Vec<Sender>,
) {
    match sender.try_send(message.clone()) {
        Ok(()) => delivery.reached += 1,
        Err(error) if error.is_full() => match policy {
            SlowMember::Drop => delivery.dropped += 1,
            SlowMember::Close => {
                delivery.closed += 1;
                slow.push(sender.clone());
            }
        },
        // Closing already: it is on its way out of the room.
        Err(_) => delivery.closed += 1,
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
#[derive(Debug)]
#[must_use = "a broadcast does nothing until sent"]
pub struct Broadcast<'a> {
    rooms: &'a Rooms,
    room: &'a str,
    except: Option<ConnectionId>,
    policy: SlowMember,
}

impl Broadcast<'_> {
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

    /// Sends `message` to every member; never waits. With a backend, the message is encoded
    /// once for the other servers, and each of them hands it to its own members once.
    pub fn send(self, message: impl Into<Message>) -> Delivery {
        let message = message.into();
        let mut delivery = self
            .rooms
            .deliver(self.room, self.except, self.policy, &message);
        delivery.remote = self.publish(&message);
        delivery
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
    pub async fn send_waiting(self, message: impl Into<Message>) -> Delivery {
        let message = message.into();
        let remote = self.publish(&message);
        let members: Vec<Sender> = self
            .rooms
            .read()
            .room(self.room)
            .map(|members| {
                members
                    .iter()
                    .filter(|(id, _)| Some(**id) != self.except)
                    .map(|(_, sender)| sender.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut delivery = Delivery::default();
        let mut full = Vec::new();
        for sender in &members {
            match sender.try_send(message.clone()) {
                Ok(()) => delivery.reached += 1,
                Err(error) if error.is_full() => full.push(sender),
                Err(_) => delivery.closed += 1,
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
        delivery.remote = remote;
        delivery
    }
}

/// Builds [`Rooms`] with a slow-member policy and presence hooks.
#[must_use]
pub struct RoomsBuilder {
    policy: SlowMember,
    on_join: Option<Hook>,
    on_leave: Option<Hook>,
}

impl RoomsBuilder {
    /// What broadcasts do with a member whose queue is full; default [`SlowMember::Close`].
    pub fn slow_member(mut self, policy: SlowMember) -> Self {
        self.policy = policy;
        self
    }

    /// Called after a connection joins a room, with the rooms, the room and the connection:
    /// the place to announce "x joined". It runs in the task that joined; keep it quick (a
    /// broadcast is fine, it never waits).
    pub fn on_join(
        mut self,
        hook: impl Fn(&Rooms, &str, ConnectionId) + Send + Sync + 'static,
    ) -> Self {
        self.on_join = Some(Arc::new(hook));
        self
    }

    /// Called after a connection left a room, whether by [`Rooms::leave`] or because its
    /// connection ended (close, loss, keepalive timeout, shutdown, a panic in its handler): the
    /// connection is already out, so a broadcast from here does not reach it.
    pub fn on_leave(
        mut self,
        hook: impl Fn(&Rooms, &str, ConnectionId) + Send + Sync + 'static,
    ) -> Self {
        self.on_leave = Some(Arc::new(hook));
        self
    }

    /// The rooms, in this process.
    pub fn build(self) -> Rooms {
        self.build_with(|_| None)
    }

    /// The rooms, with the backend `make` builds from a weak reference to them (the backend
    /// hands what other servers broadcast to the rooms, and must not keep them alive).
    fn build_with(self, make: impl FnOnce(Weak<Inner>) -> Option<Box<dyn Backend>>) -> Rooms {
        Rooms {
            inner: Arc::new_cyclic(|rooms| Inner {
                registry: RwLock::new(Registry::default()),
                policy: self.policy,
                on_join: self.on_join,
                on_leave: self.on_leave,
                backend: make(rooms.clone()),
            }),
        }
    }
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.read();
        f.debug_struct("Rooms")
            .field("rooms", &registry.rooms().count())
            .field("policy", &self.inner.policy)
            .field("cluster", &self.cluster_state())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RoomsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomsBuilder")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
