//! The Redis backend of [`Rooms`]: rooms spread over every server linked to one Redis, through
//! Redis pub/sub (the engine Django Channels, Phoenix.PubSub and socketioxide use for this).
//!
//! Each server ("node") runs one task, the link, that owns the node's connection to Redis (RESP3,
//! so commands and subscriptions share it), and one task that hands what other nodes publish to
//! the local members. A broadcast is delivered to the local members at once and queued, encoded
//! once, for the link, which publishes queued broadcasts in order, in pipelines. A node skips its
//! own broadcasts when they come back, so every member gets a broadcast once. The node listens to
//! the channel of each room that has members here, and to its process's channel (messages for
//! one connection).
//!
//! Membership over the cluster: every node keeps, per room, a Redis hash of its members (id to
//! member data), and a heartbeat in a sorted set of nodes (score: when it expires, by Redis's
//! clock). A node that stops without leaving drops out of every count once its heartbeat
//! expires, and its hashes expire with it. Whatever goes missing (a set evicted, a heartbeat that came too late), the
//! next heartbeat notices and the node writes its membership again.
//!
//! Every buffer is bounded: broadcasts waiting to be published (in messages and in bytes),
//! messages from other nodes waiting to be handed out, and membership changes (one entry per
//! connection and room at most).

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::body::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::connection::{ConnectionId, random_u64, this_process};
use crate::message::Message;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cluster::{Answer, Backend, ClusterError, ClusterState, Local, Remote};
use super::{Rooms, RoomsBuilder, SlowMember};

/// How [`Rooms`] reach Redis: give it to [`RoomsBuilder::redis`].
///
/// ```no_run
/// use std::time::Duration;
/// use tachyon::Rooms;
/// use tachyon::rooms::RedisConfig;
///
/// # async fn run() -> Result<(), tachyon::rooms::ClusterError> {
/// let rooms = Rooms::builder()
///     .redis(RedisConfig::new("redis://127.0.0.1:6379").prefix("chat"))
///     .await?; // fails at once, naming the URL, if Redis cannot be reached
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    url: String,
    prefix: String,
    heartbeat: Duration,
    queue: usize,
    queue_bytes: usize,
    timeout: Duration,
}

/// A node's heartbeat lasts this many intervals (or longer: see [`RedisConfig::expiry`]).
const HEARTBEATS_TO_EXPIRE: u32 = 3;
/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most commands the link takes from its queue at once.
const BATCH: usize = 512;
/// A pipeline is sent once it carries this many bytes of messages.
const PIPELINE_BYTES: usize = 1024 * 1024;
/// Messages from other nodes waiting to be handed to the local members, at most.
const INBOX: usize = 8192;

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("heartbeat", &self.heartbeat)
            .field("queue", &self.queue)
            .field("queue_bytes", &self.queue_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Redis at `url` (`redis://[:password@]host[:port][/db]`; `rediss://` needs a TLS feature
    /// of the `redis` crate). Redis 6 or later (the link speaks RESP3).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tachyon".to_owned(),
            heartbeat: Duration::from_secs(5),
            queue: 4096,
            queue_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(2),
        }
    }

    /// What every key and channel name starts with (default `tachyon`): servers with the same
    /// prefix share rooms; another prefix makes a separate cluster on the same Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often a node tells Redis it is alive (default 5 s; between 10 ms and 1 hour). The
    /// members of a node that stopped without leaving (a crash, a lost network) disappear from
    /// [`Rooms::cluster_members`] once its heartbeat expires: see [`expiry`](Self::expiry).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.clamp(Duration::from_millis(10), Duration::from_secs(3600));
        self
    }

    /// How many broadcasts may wait to be published (default 4,096), and how many bytes they
    /// may hold together (default 64 MiB). A broadcast that finds the queue full reaches this
    /// server's members only and reports [`Remote::NotDelivered`]: memory stays bounded when
    /// Redis is slow.
    pub fn queue(mut self, messages: usize, bytes: usize) -> Self {
        self.queue = messages.max(1);
        self.queue_bytes = bytes.max(1);
        self
    }

    /// How long connecting, and each round trip, may take (default 2 s; between 10 ms and
    /// 60 s); longer counts as a lost link.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(10), Duration::from_secs(60));
        self
    }

    /// How long after its last heartbeat a node's members still count: three heartbeats, or a
    /// heartbeat and two timeouts if that is longer (a heartbeat may wait behind a slow round
    /// trip). 15 s with the defaults.
    pub fn expiry(&self) -> Duration {
        (self.heartbeat * HEARTBEATS_TO_EXPIRE).max(self.heartbeat + self.timeout * 2)
    }
}

impl<M> RoomsBuilder<M>
where
    M: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// The rooms, shared with every server linked to the same Redis (and prefix): a broadcast
    /// reaches the members of every server once, [`Rooms::send_to`] reaches a connection
    /// wherever it is, and [`Rooms::cluster_members`] counts them all. This server subscribes to
    /// a room's channel only while the room has members here.
    ///
    /// Pub/sub is at-most-once: a server cut off from Redis misses what is broadcast meanwhile.
    /// The broadcaster's [`Delivery::remote`](super::Delivery::remote) says
    /// [`Remote::NotDelivered`] once its own link is known to be down (until the loss is
    /// noticed, at worst a heartbeat and a timeout later, broadcasts are reported
    /// [`Remote::Sent`] and may be lost; the log counts them). The link reconnects by itself with
    /// backoff, and resubscribes. When every message must arrive, keep them in a store the
    /// clients can catch up from (a Redis stream, a database) and use the broadcast as the
    /// nudge.
    ///
    /// Member data ([`Rooms::with_member_data`]) is written as JSON beside each member's id,
    /// in the same command as the join.
    ///
    /// Needs a Tokio runtime, and Redis 6 or later, standalone or a primary (not Redis
    /// Cluster). On a clean shutdown, call [`Rooms::leave_cluster`] so that this server's
    /// members leave the counts at once.
    ///
    /// # Errors
    /// [`ClusterError::InvalidUrl`], or [`ClusterError::Connect`] naming the URL when Redis
    /// cannot be reached within the timeout.
    pub async fn redis(self, config: RedisConfig) -> Result<Rooms<M>, ClusterError> {
        let url = redact(&config.url);
        let client = resp3_client(&config.url).map_err(|error| ClusterError::InvalidUrl {
            url: url.clone(),
            source: Box::new(error),
        })?;
        let keys = Arc::new(Keys::new(&config.prefix));
        let state = Arc::new(LinkState {
            url,
            up: AtomicBool::new(false),
            left: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            pending: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            queue_bytes: config.queue_bytes,
            inbound_dropped: AtomicUsize::new(0),
            timeout: config.timeout,
        });
        let (inbox, received) = mpsc::channel(INBOX);
        let connection = Connection::open(&client, &state, &keys, &inbox)
            .await
            .map_err(|source| ClusterError::Connect {
                url: state.url.clone(),
                source,
            })?;
        state.set_up(true);
        let (commands, queued) = mpsc::channel(config.queue);
        let decode: fn(&[u8]) -> Option<M> = |data| serde_json::from_slice(data).ok();
        Ok(self.build_with(decode, |rooms| {
            let rooms: Weak<dyn Local> = rooms;
            tokio::spawn(hand_out(received, rooms.clone(), Arc::clone(&keys)));
            let link = Link {
                client,
                keys: Arc::clone(&keys),
                state: Arc::clone(&state),
                rooms,
                commands: queued,
                inbox,
                heartbeat: config.heartbeat,
                expiry: config.expiry(),
                linked: HashSet::new(),
            };
            tokio::spawn(link.run(connection));
            Some(Box::new(RedisBackend {
                commands,
                state,
                keys,
            }))
        }))
    }
}

/// A client for `url` that speaks RESP3, so that one connection carries commands and
/// subscriptions.
fn resp3_client(url: &str) -> redis::RedisResult<Client> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// Key and channel names, and this node's identity.
#[derive(Debug)]
struct Keys {
    /// This node (one `Rooms`): random, so two nodes in one process differ.
    node: u64,
    /// `{prefix}:room:`, followed by the room's name: a room's channel.
    room_channel: String,
    /// `{prefix}:process:`, followed by a process id: messages for one connection.
    process_channel: String,
    /// `{prefix}:members:`, followed by `{node}:{room}`: a node's members of a room.
    members: String,
    /// `{prefix}:nodes`: the live nodes, scored by when their heartbeat expires.
    nodes: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            node: random_u64(),
            room_channel: format!("{prefix}:room:"),
            process_channel: format!("{prefix}:process:"),
            members: format!("{prefix}:members:"),
            nodes: format!("{prefix}:nodes"),
        }
    }

    fn node_name(&self) -> String {
        format!("{:016x}", self.node)
    }

    fn room(&self, room: &str) -> String {
        format!("{}{room}", self.room_channel)
    }

    fn process(&self, process: u64) -> String {
        format!("{}{process:016x}", self.process_channel)
    }

    fn members_of(&self, room: &str) -> String {
        format!("{}{:016x}:{room}", self.members, self.node)
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// The link's connection to Redis, and the flag its push handler raises when it closes.
struct Connection {
    commands: MultiplexedConnection,
    lost: Arc<Lost>,
}

#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    notify: Notify,
}

impl Connection {
    /// Connects, and subscribes to this process's channel. What other nodes publish goes to
    /// `inbox` (bounded: when it is full, a message is dropped and counted).
    async fn open(
        client: &Client,
        state: &Arc<LinkState>,
        keys: &Keys,
        inbox: &mpsc::Sender<PushInfo>,
    ) -> Result<Self, BoxError> {
        let lost = Arc::new(Lost::default());
        let push = {
            let (lost, inbox, state) = (Arc::clone(&lost), inbox.clone(), Arc::clone(state));
            move |info: PushInfo| -> Result<(), ()> {
                match info.kind {
                    PushKind::Message => {
                        let full = inbox.try_send(info).is_err();
                        state
                            .inbound_dropped
                            .fetch_add(usize::from(full), Ordering::Relaxed);
                    }
                    PushKind::Disconnection => {
                        lost.flag.store(true, Ordering::Release);
                        lost.notify.notify_one();
                    }
                    _ => {}
                }
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(state.timeout))
            .set_response_timeout(Some(state.timeout))
            .set_push_sender(push);
        let mut commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        within(
            state.timeout,
            commands.subscribe(keys.process(this_process())),
        )
        .await?;
        Ok(Self { commands, lost })
    }

    async fn lost(&self) {
        while !self.lost.flag.load(Ordering::Acquire) {
            self.lost.notify.notified().await;
        }
    }
}

/// `future`'s result, or a timeout error.
async fn within<T, E: Into<BoxError>>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))),
    }
}

/// What the rooms and the link share.
#[derive(Debug)]
struct LinkState {
    url: String,
    /// Whether the link is connected: broadcasts are queued only then.
    up: AtomicBool,
    /// The rooms left the cluster ([`Rooms::leave_cluster`]).
    left: AtomicBool,
    /// Redis refused a membership change: the link rewrites this node's membership at the next
    /// heartbeat.
    dirty: AtomicBool,
    /// Joins and leaves not yet written, by room and connection: the link reads the registry
    /// for each. A set, so it holds one entry per member and room at most.
    pending: Mutex<HashSet<(Arc<str>, ConnectionId)>>,
    changed: Notify,
    /// Bytes of the broadcasts waiting to be published, and the most there may be.
    queued_bytes: AtomicUsize,
    queue_bytes: usize,
    /// Messages from other nodes dropped because the inbox was full, since last reported.
    inbound_dropped: AtomicUsize,
    timeout: Duration,
}

impl LinkState {
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    fn take_pending(&self) -> HashSet<(Arc<str>, ConnectionId)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn failed(&self, source: impl Into<BoxError>) -> ClusterError {
        ClusterError::Command {
            url: self.url.clone(),
            source: source.into(),
        }
    }

    fn unavailable(&self) -> ClusterError {
        ClusterError::Unavailable {
            url: self.url.clone(),
        }
    }
}

/// What the rooms ask of the link, in order.
enum Command {
    /// Publish `payload` on `channel`, paid for by `permit`.
    Publish {
        channel: String,
        payload: Vec<u8>,
        permit: Permit,
    },
    /// A cluster-wide question. Queued behind the broadcasts and answered after the pending
    /// membership changes are written, so its answer includes this node's earlier joins.
    Ask {
        question: redis::Cmd,
        answer: oneshot::Sender<Value>,
    },
    /// Leave the cluster once everything queued before is sent; says whether it was clean.
    Leave { done: oneshot::Sender<bool> },
}

/// Bytes of the publish budget ([`RedisConfig::queue`]) held by one queued broadcast: taken when
/// it is queued, and given back when the permit is dropped, which happens with the broadcast
/// whatever becomes of it (published, refused by a full channel, dropped with a lost link or a
/// failed pipeline). No path can forget to give the bytes back.
#[derive(Debug)]
struct Permit {
    state: Arc<LinkState>,
    bytes: usize,
}

impl Permit {
    /// Takes `bytes` of the budget, or `None` if that would go over it.
    fn take(state: &Arc<LinkState>, bytes: usize) -> Option<Self> {
        state
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(bytes)
                    .filter(|&total| total <= state.queue_bytes)
            })
            .ok()?;
        Some(Self {
            state: Arc::clone(state),
            bytes,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.state
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The backend held by the rooms: it queues for the link and never waits.
struct RedisBackend {
    commands: mpsc::Sender<Command>,
    state: Arc<LinkState>,
    keys: Arc<Keys>,
}

impl RedisBackend {
    fn queue(&self, channel: String, payload: Vec<u8>) -> Remote {
        if !self.state.up.load(Ordering::Acquire) {
            return Remote::NotDelivered;
        }
        let Some(permit) = Permit::take(&self.state, payload.len()) else {
            return Remote::NotDelivered;
        };
        let command = Command::Publish {
            channel,
            payload,
            permit,
        };
        // A refused command comes back in the error and is dropped here, with its permit.
        match self.commands.try_send(command) {
            Ok(()) => Remote::Sent,
            Err(_) => Remote::NotDelivered,
        }
    }

    /// Queues `command` (waiting for room: the caller awaits an answer anyway) and waits for
    /// its answer, all within two timeouts.
    fn ask<A: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<A>) -> Command,
    ) -> Answer<A> {
        let state = Arc::clone(&self.state);
        let commands = self.commands.clone();
        let (answer, answered) = oneshot::channel();
        let command = make(answer);
        Box::pin(async move {
            if !state.up.load(Ordering::Acquire) {
                return Err(state.unavailable());
            }
            let waited = tokio::time::timeout(state.timeout * 2, async {
                commands.send(command).await.ok()?;
                answered.await.ok()
            })
            .await;
            match waited {
                Ok(Some(answer)) => Ok(answer),
                // The link dropped the question: it lost Redis meanwhile.
                Ok(None) => Err(state.unavailable()),
                Err(_) if state.up.load(Ordering::Acquire) => Err(state.failed(format!(
                    "no answer within {:?} (the queue of broadcasts may be full)",
                    state.timeout * 2
                ))),
                Err(_) => Err(state.unavailable()),
            }
        })
    }

    fn question<T: redis::FromRedisValue + Send + 'static>(
        &self,
        room: &str,
        what: &str,
    ) -> Answer<T> {
        let mut question = redis::cmd("EVAL");
        question
            .arg(CLUSTER_MEMBERS)
            .arg(1)
            .arg(&self.keys.nodes)
            .arg(&self.keys.members)
            .arg(room)
            .arg(what);
        let state = Arc::clone(&self.state);
        let value = self.ask(|answer| Command::Ask { question, answer });
        Box::pin(async move {
            let value: Value = value.await?;
            let value = value.extract_error().map_err(|error| state.failed(error))?;
            redis::from_redis_value::<T>(value).map_err(|error| state.failed(error))
        })
    }
}

impl Backend for RedisBackend {
    fn publish(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) -> Remote {
        let envelope = Envelope::encode(self.keys.node, except, None, policy, message);
        self.queue(self.keys.room(room), envelope)
    }

    fn send_to(&self, id: ConnectionId, policy: SlowMember, message: &Message) -> Remote {
        let envelope = Envelope::encode(self.keys.node, None, Some(id), policy, message);
        self.queue(self.keys.process(id.process()), envelope)
    }

    fn membership_changed(&self, room: &Arc<str>, id: ConnectionId) {
        self.state
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((Arc::clone(room), id));
        self.state.changed.notify_one();
    }

    fn members(&self, room: &str) -> Answer<Vec<(ConnectionId, Vec<u8>)>> {
        let listed = self.question::<Vec<Vec<u8>>>(room, "members");
        Box::pin(async move {
            // Ids and data, one after the other. Every id was written by a node from
            // `ConnectionId`'s own text.
            let mut listed = listed.await?.into_iter();
            let mut members = Vec::new();
            while let (Some(id), Some(data)) = (listed.next(), listed.next()) {
                let id = std::str::from_utf8(&id).ok().and_then(|id| id.parse().ok());
                if let Some(id) = id {
                    members.push((id, data));
                }
            }
            Ok(members)
        })
    }

    fn member_count(&self, room: &str) -> Answer<usize> {
        self.question(room, "count")
    }

    fn leave(&self) -> Answer<()> {
        let state = Arc::clone(&self.state);
        let left = self.ask(|done| Command::Leave { done });
        Box::pin(async move {
            if state.left.load(Ordering::Acquire) {
                return Ok(());
            }
            match left.await? {
                true => Ok(()),
                false => Err(state.unavailable()),
            }
        })
    }

    fn state(&self) -> ClusterState {
        if self.state.left.load(Ordering::Acquire) {
            ClusterState::Left
        } else if self.state.up.load(Ordering::Acquire) {
            ClusterState::Connected
        } else {
            ClusterState::Reconnecting
        }
    }
}

/// Renews this node's heartbeat (`ARGV[1]`) to expire `ARGV[2]` ms from now by Redis's clock,
/// and the expiry of its member sets (`KEYS[2..]`). Returns 1 if the node had lapsed: it was
/// not listed, its heartbeat had expired, or a set was gone (evicted, expired).
const HEARTBEAT: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local lapsed = 0
if (not before) or tonumber(before) <= now then lapsed = 1 end
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ARGV[2]) == 0 then lapsed = 1 end
end
return lapsed";

/// Forgets the nodes whose heartbeat expired, then counts (`ARGV[3]` = `count`) or lists the
/// members of room `ARGV[2]` over the live nodes (each member's id, then its data: the hash of a
/// node's members in a room maps ids to data).
const CLUSTER_MEMBERS: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count, members = 0, {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. node .. ':' .. ARGV[2]
  if ARGV[3] == 'count' then
    count = count + redis.call('HLEN', key)
  else
    for _, field in ipairs(redis.call('HGETALL', key)) do members[#members + 1] = field end
  end
end
if ARGV[3] == 'count' then return count end
return members";

/// Hands what other nodes publish to this node's members, until the link and its connections
/// are gone. A task of its own, so a slow round trip of the link never holds it up.
async fn hand_out(mut received: mpsc::Receiver<PushInfo>, rooms: Weak<dyn Local>, keys: Arc<Keys>) {
    let mut warned = false;
    while let Some(info) = received.recv().await {
        let [Value::BulkString(channel), Value::BulkString(payload)] = &info.data[..] else {
            continue;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            // A foreign publisher, or a node of another version: say it once, not per message.
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(
                    channel = %String::from_utf8_lossy(channel),
                    "ignored a message on a rooms channel that this version of Tachyon did not write (said once)"
                );
            }
            continue;
        };
        if envelope.origin == keys.node {
            continue; // this node delivered its own broadcast when it was made
        }
        let Some(rooms) = rooms.upgrade() else {
            return;
        };
        let room = channel
            .strip_prefix(keys.room_channel.as_bytes())
            .and_then(|room| std::str::from_utf8(room).ok());
        match (room, envelope.target) {
            (Some(room), _) => {
                rooms.deliver(room, envelope.except, envelope.policy, &envelope.message);
            }
            (None, Some(target)) => {
                rooms.deliver_to(target, envelope.policy, &envelope.message);
            }
            (None, None) => {}
        }
    }
}

/// What one pipeline reply is for.
enum Slot {
    /// A membership write: an error reply means Redis lost it.
    Membership,
    Ask(oneshot::Sender<Value>),
}

/// The task that owns the node's connection to Redis.
struct Link {
    client: Client,
    keys: Arc<Keys>,
    state: Arc<LinkState>,
    rooms: Weak<dyn Local>,
    commands: mpsc::Receiver<Command>,
    /// For the push handler of each new connection.
    inbox: mpsc::Sender<PushInfo>,
    heartbeat: Duration,
    expiry: Duration,
    /// The rooms with members here, as Redis knows them: the connection listens to their
    /// channels, and this node wrote a member set for each.
    linked: HashSet<Arc<str>>,
}

/// Why [`Link::serve`] returned without an error.
enum End {
    /// Every `Rooms` was dropped.
    Dropped,
    /// [`Rooms::leave_cluster`].
    Leave(oneshot::Sender<bool>),
}

impl Link {
    async fn run(mut self, mut connection: Connection) {
        loop {
            let error = match self.serve(&mut connection).await {
                Ok(end) => {
                    let clean = self.leave_cluster(&mut connection).await;
                    if let End::Leave(done) = end {
                        let _ = done.send(clean);
                    }
                    return;
                }
                Err(error) => error,
            };
            self.state.set_up(false);
            tracing::warn!(
                url = %self.state.url, %error,
                "lost the link to Redis: broadcasts reach this server's members only until it is back; reconnecting"
            );
            connection = match self.reconnect().await {
                Some(connection) => connection,
                None => return,
            };
            tracing::info!(url = %self.state.url, "link to Redis back");
        }
    }

    /// Serves until every `Rooms` is dropped or asked to leave (`Ok`), or the link is lost.
    async fn serve(&mut self, connection: &mut Connection) -> Result<End, BoxError> {
        self.resync(connection, true).await?;
        self.state.set_up(true);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = self.commands.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return Ok(End::Dropped);
                    }
                    if let Some(done) = self.apply(connection, &mut batch).await? {
                        return Ok(End::Leave(done));
                    }
                }
                () = self.state.changed.notified() => {
                    self.apply(connection, &mut batch).await?;
                }
                () = connection.lost() => return Err("the connection to Redis closed".into()),
                _ = heartbeat.tick() => {
                    let lapsed = self.beat(connection).await?;
                    let dirty = self.state.dirty.swap(false, Ordering::AcqRel);
                    if lapsed || dirty {
                        self.resync(connection, false).await?;
                    }
                    let dropped = self.state.inbound_dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        tracing::warn!(
                            url = %self.state.url, dropped,
                            "messages from other servers were dropped: this server could not hand them out fast enough"
                        );
                    }
                }
            }
        }
    }

    /// Writes the pending membership changes, then sends a batch of commands: broadcasts in the
    /// order queued, in pipelines of at most about [`PIPELINE_BYTES`]. Returns the request to
    /// leave, if the batch held one.
    async fn apply(
        &mut self,
        connection: &mut Connection,
        batch: &mut Vec<Command>,
    ) -> Result<Option<oneshot::Sender<bool>>, BoxError> {
        let mut pipe = redis::pipe();
        let mut slots = Vec::new();
        let (subscribe, unsubscribe) = self.membership(&mut pipe, &mut slots);
        let timeout = self.state.timeout;
        if !subscribe.is_empty() {
            within(timeout, connection.commands.subscribe(subscribe)).await?;
        }
        if !unsubscribe.is_empty() {
            within(timeout, connection.commands.unsubscribe(unsubscribe)).await?;
        }
        let mut leave = None;
        // The permits of the broadcasts in `pipe`: dropped once it is sent, or with the error
        // that ends this call (the commands left in `batch` go with `batch`, cleared by the
        // caller or dropped with it).
        let mut paid: Vec<Permit> = Vec::new();
        let mut bytes = 0;
        for command in batch.drain(..) {
            match command {
                Command::Publish {
                    channel,
                    payload,
                    permit,
                } => {
                    bytes += payload.len();
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                    paid.push(permit);
                    if bytes >= PIPELINE_BYTES {
                        self.send(connection, &mut pipe, &mut slots).await?;
                        paid.clear();
                        bytes = 0;
                    }
                }
                Command::Ask { question, answer } => {
                    pipe.add_command(question);
                    slots.push(Slot::Ask(answer));
                }
                Command::Leave { done } => leave = Some(done),
            }
        }
        self.send(connection, &mut pipe, &mut slots).await?;
        drop(paid);
        Ok(leave)
    }

    /// Adds the pending membership changes to `pipe`, as the registry says they are now;
    /// returns the channels to subscribe to and to leave.
    fn membership(
        &mut self,
        pipe: &mut redis::Pipeline,
        slots: &mut Vec<Slot>,
    ) -> (Vec<String>, Vec<String>) {
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        let pending = self.state.take_pending();
        let Some(rooms) = self.rooms.upgrade() else {
            return (subscribe, unsubscribe);
        };
        let expiry = millis(self.expiry);
        for (room, id) in pending {
            let (has_members, member) = rooms.member(&room, id);
            let key = self.keys.members_of(&room);
            if let Some(data) = member {
                pipe.cmd("HSET").arg(&key).arg(id.to_string()).arg(data);
                pipe.cmd("PEXPIRE").arg(&key).arg(expiry);
                slots.extend([Slot::Membership, Slot::Membership]);
            } else {
                pipe.cmd("HDEL").arg(&key).arg(id.to_string());
                slots.push(Slot::Membership);
            }
            if has_members {
                if self.linked.insert(Arc::clone(&room)) {
                    subscribe.push(self.keys.room(&room));
                }
            } else if self.linked.remove(&room) {
                unsubscribe.push(self.keys.room(&room));
            }
        }
        (subscribe, unsubscribe)
    }

    /// Sends `pipe` and hands each reply to its slot. Error replies to membership writes make
    /// the membership dirty; only a lost connection is an error.
    async fn send(
        &self,
        connection: &mut Connection,
        pipe: &mut redis::Pipeline,
        slots: &mut Vec<Slot>,
    ) -> Result<(), BoxError> {
        if pipe.is_empty() {
            return Ok(());
        }
        let sent = std::mem::replace(pipe, redis::pipe());
        let replies: Vec<Value> = within(
            self.state.timeout,
            sent.clone()
                .ignore_errors()
                .query_async(&mut connection.commands),
        )
        .await?;
        for (slot, reply) in slots.drain(..).zip(replies) {
            match slot {
                Slot::Membership => {
                    if matches!(reply, Value::ServerError(_)) {
                        self.state.dirty.store(true, Ordering::Release);
                    }
                }
                Slot::Ask(answer) => {
                    let _ = answer.send(reply);
                }
            }
        }
        Ok(())
    }

    /// Renews the heartbeat and the expiry of this node's member sets; returns whether anything
    /// had lapsed meanwhile (then the membership is written again).
    async fn beat(&mut self, connection: &mut Connection) -> Result<bool, BoxError> {
        let mut script = redis::cmd("EVAL");
        script
            .arg(HEARTBEAT)
            .arg(1 + self.linked.len())
            .arg(&self.keys.nodes);
        for room in &self.linked {
            script.arg(self.keys.members_of(room));
        }
        script.arg(self.keys.node_name()).arg(millis(self.expiry));
        let lapsed: u32 = within(
            self.state.timeout,
            script.query_async(&mut connection.commands),
        )
        .await?;
        Ok(lapsed == 1)
    }

    /// Makes Redis say what this node's registry says: subscriptions, member sets, heartbeat.
    /// Run on every (re)connection (`fresh`: the connection listens to nothing yet), and when
    /// something lapsed or a write failed.
    async fn resync(&mut self, connection: &mut Connection, fresh: bool) -> Result<(), BoxError> {
        // Changes made from here on are pending again, and written after this.
        drop(self.state.take_pending());
        let local = match self.rooms.upgrade() {
            Some(rooms) => rooms.snapshot(),
            None => Vec::new(),
        };
        let wanted: HashSet<Arc<str>> = local.iter().map(|(room, _)| Arc::clone(room)).collect();
        let listening = if fresh { &HashSet::new() } else { &self.linked };
        let subscribe: Vec<String> = wanted
            .difference(listening)
            .map(|room| self.keys.room(room))
            .collect();
        let unsubscribe: Vec<String> = listening
            .difference(&wanted)
            .map(|room| self.keys.room(room))
            .collect();
        let timeout = self.state.timeout;
        if !subscribe.is_empty() {
            within(timeout, connection.commands.subscribe(subscribe)).await?;
        }
        if !unsubscribe.is_empty() {
            within(timeout, connection.commands.unsubscribe(unsubscribe)).await?;
        }

        let expiry = millis(self.expiry);
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Also the sets of rooms emptied while the link was down.
        for room in self.linked.union(&wanted) {
            pipe.cmd("DEL").arg(self.keys.members_of(room)).ignore();
        }
        for (room, members) in &local {
            let key = self.keys.members_of(room);
            let hset = pipe.cmd("HSET").arg(&key);
            for (id, data) in members {
                hset.arg(id.to_string()).arg(data);
            }
            hset.ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(expiry).ignore();
        }
        within(timeout, pipe.query_async::<()>(&mut connection.commands)).await?;
        self.linked = wanted;
        self.beat(connection).await?;
        Ok(())
    }

    /// Waits and reconnects, with backoff and jitter; `None` if every `Rooms` was dropped or
    /// asked to leave meanwhile. Broadcasts queued before the link was lost are dropped (and
    /// counted in the log), questions are answered "unavailable"; membership is written whole
    /// once the link is back.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut delay = Duration::from_millis(100);
        let mut lost = 0usize;
        loop {
            let jittered = delay.mul_f64(0.5 + (random_u64() % 1000) as f64 / 1000.0);
            let pause = tokio::time::sleep(jittered);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = self.commands.recv() => match command {
                        None => return None,
                        // Dropped, and its permit with it.
                        Some(Command::Publish { .. }) => lost += 1,
                        // Dropping the answer's sender answers it: unavailable.
                        Some(Command::Ask { .. }) => {}
                        Some(Command::Leave { done }) => {
                            // Nothing can be removed from Redis now: the heartbeat will expire.
                            self.state.left.store(true, Ordering::Release);
                            let _ = done.send(false);
                            return None;
                        }
                    },
                }
            }
            if lost > 0 {
                tracing::warn!(
                    url = %self.state.url, lost,
                    "broadcasts queued when the link to Redis was lost did not reach the other servers"
                );
                lost = 0;
            }
            match Connection::open(&self.client, &self.state, &self.keys, &self.inbox).await {
                Ok(connection) => return Some(connection),
                Err(error) => {
                    tracing::debug!(url = %self.state.url, %error, ?delay, "Redis still unreachable");
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Takes this node out of the cluster; best effort. Returns whether Redis took it.
    async fn leave_cluster(&mut self, connection: &mut Connection) -> bool {
        self.state.set_up(false);
        self.state.left.store(true, Ordering::Release);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(&self.keys.nodes)
            .arg(self.keys.node_name())
            .ignore();
        for room in &self.linked {
            pipe.cmd("DEL").arg(self.keys.members_of(room)).ignore();
        }
        let result = within(
            self.state.timeout,
            pipe.query_async::<()>(&mut connection.commands),
        )
        .await;
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(url = %self.state.url, %error, "could not leave the cluster cleanly; the heartbeat will expire");
                false
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What travels between nodes: who sent it, who is left out or targeted, the slow-member
/// policy, and the message. Encoded once per broadcast.
struct Envelope {
    origin: u64,
    except: Option<ConnectionId>,
    target: Option<ConnectionId>,
    policy: SlowMember,
    message: Message,
}

impl Envelope {
    const VERSION: u8 = 1;
    const BINARY: u8 = 1;
    const EXCEPT: u8 = 2;
    const TARGET: u8 = 4;
    const DROP: u8 = 8;

    fn encode(
        origin: u64,
        except: Option<ConnectionId>,
        target: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) -> Vec<u8> {
        let (flags, payload): (u8, &[u8]) = match message {
            Message::Text(text) => (0, text.as_bytes()),
            Message::Binary(bytes) => (Self::BINARY, bytes),
        };
        let mut flags = flags;
        if except.is_some() {
            flags |= Self::EXCEPT;
        }
        if target.is_some() {
            flags |= Self::TARGET;
        }
        if policy == SlowMember::Drop {
            flags |= Self::DROP;
        }
        let mut out = Vec::with_capacity(10 + 32 + payload.len());
        out.push(Self::VERSION);
        out.push(flags);
        out.extend_from_slice(&origin.to_be_bytes());
        for id in [except, target].into_iter().flatten() {
            out.extend_from_slice(&id.process().to_be_bytes());
            out.extend_from_slice(&id.as_u64().to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[version, flags], rest) = bytes.split_first_chunk::<2>()?;
        if version != Self::VERSION {
            return None;
        }
        let (origin, mut rest) = rest.split_first_chunk::<8>()?;
        let mut id = |present: bool| -> Option<Option<ConnectionId>> {
            if !present {
                return Some(None);
            }
            let (process, after) = rest.split_first_chunk::<8>()?;
            let (number, after) = after.split_first_chunk::<8>()?;
            rest = after;
            Some(Some(ConnectionId::from_parts(
                u64::from_be_bytes(*process),
                u64::from_be_bytes(*number),
            )))
        };
        let except = id(flags & Self::EXCEPT != 0)?;
        let target = id(flags & Self::TARGET != 0)?;
        let message = if flags & Self::BINARY != 0 {
            Message::Binary(Bytes::copy_from_slice(rest))
        } else {
            Message::Text(String::from_utf8(rest.to_vec()).ok()?.into())
        };
        Some(Self {
            origin: u64::from_be_bytes(*origin),
            except,
            target,
            policy: if flags & Self::DROP != 0 {
                SlowMember::Drop
            } else {
                SlowMember::Close
            },
            message,
        })
    }
}

/// The URL with its password hidden, for errors, logs and `Debug`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    // A password may sit in the user part or in a query parameter (`redis+unix://...?pass=`).
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (user_part, host) = match address.rfind('@') {
        Some(at) => (Some(&address[..at]), &address[at + 1..]),
        None => (None, address),
    };
    let mut shown = format!("{scheme}://");
    if let Some(user_part) = user_part {
        match user_part.split_once(':') {
            Some((user, _)) => shown.push_str(&format!("{user}:***@")),
            None => shown.push_str(&format!("{user_part}@")),
        }
    }
    shown.push_str(host);
    if !query.is_empty() {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("pass")
                        || name.eq_ignore_ascii_case("password") =>
                {
                    format!("{name}=***")
                }
                _ => parameter.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&parameters.join("&"));
    }
    shown
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_what_was_written() {
        let except = ConnectionId::from_parts(7, 42);
        let target = ConnectionId::from_parts(u64::MAX, u64::MAX);
        let cases = [
            (Some(except), None, SlowMember::Drop, Message::from("héllo")),
            (
                None,
                Some(target),
                SlowMember::Close,
                Message::from(vec![0, 1, 255]),
            ),
            (None, None, SlowMember::Close, Message::from("")),
        ];
        for (except, target, policy, message) in cases {
            let bytes = Envelope::encode(9, except, target, policy, &message);
            let envelope = Envelope::decode(&bytes).expect("decodes");
            assert_eq!(envelope.origin, 9);
            assert_eq!(envelope.except, except);
            assert_eq!(envelope.target, target);
            assert_eq!(envelope.policy, policy);
            assert_eq!(envelope.message, message);
        }
    }

    #[test]
    fn a_foreign_or_cut_envelope_is_refused() {
        let bytes = Envelope::encode(
            1,
            Some(ConnectionId::from_parts(1, 1)),
            None,
            SlowMember::Close,
            &Message::from("x"),
        );
        for end in 0..bytes.len() - 1 {
            assert!(Envelope::decode(&bytes[..end]).is_none(), "cut at {end}");
        }
        assert!(Envelope::decode(b"hello").is_none());
        let mut invalid_text =
            Envelope::encode(1, None, None, SlowMember::Close, &Message::from("x"));
        invalid_text.push(0xff);
        assert!(Envelope::decode(&invalid_text).is_none());
    }

    #[test]
    fn urls_hide_their_password() {
        let cases = [
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:secret@host", "redis://user:***@host"),
            ("redis://user@host", "redis://user@host"),
            ("redis://:pa/ss@host", "redis://:***@host"),
            (
                "redis+unix:///tmp/redis.sock?db=1&pass=secret",
                "redis+unix:///tmp/redis.sock?db=1&pass=***",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url secret", "(not a URL)"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
        let config = format!("{:?}", RedisConfig::new("redis://:secret@host"));
        assert!(
            config.contains(":***@host") && !config.contains("secret"),
            "{config}"
        );
    }
}
