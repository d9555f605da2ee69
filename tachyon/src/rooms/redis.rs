//! The Redis backend of [`Rooms`]: rooms spread over every server linked to one Redis, through
//! Redis pub/sub (the engine Django Channels, Phoenix.PubSub and socketioxide use for this).
//!
//! Each server ("node") runs one task, the link, that owns two connections to Redis: one for
//! commands (publish, membership, heartbeat) and one subscribed to the channels of the rooms
//! that have members on this node, and to this process's channel (messages for one
//! connection). A broadcast is delivered to the local members at once and queued, encoded once,
//! for the link, which publishes queued broadcasts in order, in pipelines. A node skips its own
//! broadcasts when they come back, so every member gets a broadcast once.
//!
//! Membership over the cluster: every node keeps, per room, a Redis set of its members, and a
//! heartbeat in a sorted set of nodes (score: when it expires, by Redis's clock). A node that
//! stops without leaving drops out of every count once its heartbeat expires, and its sets
//! expire with it.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, Msg};
use tokio::sync::{mpsc, oneshot};

use crate::connection::ConnectionId;
use crate::message::Message;

use super::cluster::{Answer, Backend, ClusterError, ClusterState, Remote};
use super::{Inner, Rooms, RoomsBuilder, SlowMember};

/// How [`Rooms`] reach Redis: give it to [`RoomsBuilder::redis`].
///
/// ```no_run
/// use std::time::Duration;
/// use tachyon::{RedisConfig, Rooms};
///
/// # async fn run() -> Result<(), tachyon::ClusterError> {
/// let rooms = Rooms::builder()
///     .redis(RedisConfig::new("redis://127.0.0.1:6379").prefix("chat"))
///     .await?; // fails at once, naming the URL, if Redis cannot be reached
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisConfig {
    url: String,
    prefix: String,
    heartbeat: Duration,
    queue: usize,
    timeout: Duration,
}

/// How long a node's heartbeat lasts, in heartbeat intervals.
const HEARTBEATS_TO_EXPIRE: u32 = 3;
/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most commands the link sends to Redis in one pipeline.
const BATCH: usize = 512;

impl RedisConfig {
    /// Redis at `url` (`redis://[:password@]host[:port][/db]`; `rediss://` needs a TLS
    /// feature of the `redis` crate).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tachyon".to_owned(),
            heartbeat: Duration::from_secs(5),
            queue: 4096,
            timeout: Duration::from_secs(2),
        }
    }

    /// What every key and channel name starts with (default `tachyon`): servers with the same
    /// prefix share rooms; another prefix makes a separate cluster on the same Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often a node tells Redis it is alive (default 5 s). The members of a node that
    /// stopped without leaving (a crash, a lost network) disappear from
    /// [`Rooms::cluster_members`] within three intervals (15 s by default).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Duration::from_millis(10));
        self
    }

    /// How many broadcasts may wait to be published (default 4,096). A broadcast that finds
    /// the queue full reaches this server's members only, and reports
    /// [`Remote::NotDelivered`]: memory stays bounded when Redis is slow.
    pub fn queue(mut self, messages: usize) -> Self {
        self.queue = messages.max(1);
        self
    }

    /// How long connecting, and each command, may take (default 2 s); longer counts as a lost
    /// link.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn ttl(&self) -> Duration {
        self.heartbeat * HEARTBEATS_TO_EXPIRE
    }
}

impl RoomsBuilder {
    /// The rooms, shared with every server linked to the same Redis (and prefix): a broadcast
    /// reaches the members of every server once, [`Rooms::send_to`] reaches a connection
    /// wherever it is, and [`Rooms::cluster_members`] counts them all. This server subscribes to
    /// a room's channel only while the room has members here.
    ///
    /// Pub/sub is at-most-once: a server whose link to Redis is down misses what is broadcast
    /// meanwhile (the broadcaster's [`Delivery::remote`](super::Delivery::remote) says
    /// [`Remote::NotDelivered`] when it is the one cut off). The link reconnects by itself with
    /// backoff, and resubscribes. When every message must arrive, keep them in a store the
    /// clients can catch up from (a Redis stream, a database) and use the broadcast as the
    /// nudge.
    ///
    /// Needs a Tokio runtime; works with a standalone Redis or a primary (not Redis Cluster).
    ///
    /// # Errors
    /// [`ClusterError::InvalidUrl`], or [`ClusterError::Connect`] naming the URL when Redis
    /// cannot be reached within the timeout.
    pub async fn redis(self, config: RedisConfig) -> Result<Rooms, ClusterError> {
        let url = redact(&config.url);
        let client =
            Client::open(config.url.as_str()).map_err(|error| ClusterError::InvalidUrl {
                url: url.clone(),
                source: Box::new(error),
            })?;
        let keys = Arc::new(Keys::new(&config.prefix));
        let connection = Connection::open(&client, config.timeout, &keys)
            .await
            .map_err(|source| ClusterError::Connect {
                url: url.clone(),
                source,
            })?;
        let (commands, receiver) = mpsc::channel(config.queue);
        let state = Arc::new(LinkState {
            url,
            up: AtomicBool::new(true),
            dirty: AtomicBool::new(false),
            timeout: config.timeout,
        });
        Ok(self.build_with(|rooms| {
            let link = Link {
                client,
                keys: Arc::clone(&keys),
                state: Arc::clone(&state),
                rooms,
                commands: receiver,
                heartbeat: config.heartbeat,
                ttl: config.ttl(),
                subscribed: HashSet::new(),
                written: HashSet::new(),
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

    fn process(&self, process: u32) -> String {
        format!("{}{process:08x}", self.process_channel)
    }

    fn members_of(&self, room: &str) -> String {
        format!("{}{:016x}:{room}", self.members, self.node)
    }
}

/// The two connections of a link.
struct Connection {
    commands: MultiplexedConnection,
    subscriptions: PubSubSink,
    messages: PubSubStream,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Connection {
    async fn open(client: &Client, timeout: Duration, keys: &Keys) -> Result<Self, BoxError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let pubsub = within(timeout, client.get_async_pubsub()).await?;
        let (mut subscriptions, messages) = pubsub.split();
        within(
            timeout,
            subscriptions.subscribe(keys.process(crate::connection::this_process())),
        )
        .await?;
        Ok(Self {
            commands,
            subscriptions,
            messages,
        })
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
    /// A membership change could not be queued: the link rewrites this node's membership at
    /// the next heartbeat.
    dirty: AtomicBool,
    timeout: Duration,
}

impl LinkState {
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    fn failed(&self, source: impl Into<BoxError>) -> ClusterError {
        ClusterError::Command {
            url: self.url.clone(),
            source: source.into(),
        }
    }
}

/// What the rooms ask of the link.
enum Command {
    /// Publish `payload` on `channel`.
    Publish { channel: String, payload: Vec<u8> },
    /// A connection joined or left a room here: make Redis say what the registry says now.
    Membership { room: Arc<str>, id: ConnectionId },
    /// A cluster-wide question. Sent in order with the rest, so its answer includes this
    /// node's earlier joins and leaves.
    Ask {
        question: redis::Cmd,
        answer: oneshot::Sender<redis::Value>,
    },
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
        match self
            .commands
            .try_send(Command::Publish { channel, payload })
        {
            Ok(()) => Remote::Sent,
            Err(_) => Remote::NotDelivered,
        }
    }

    fn ask<T: redis::FromRedisValue + Send + 'static>(&self, room: &str, what: &str) -> Answer<T> {
        let state = Arc::clone(&self.state);
        let commands = self.commands.clone();
        let mut question = redis::cmd("EVAL");
        question
            .arg(CLUSTER_MEMBERS)
            .arg(1)
            .arg(&self.keys.nodes)
            .arg(&self.keys.members)
            .arg(room)
            .arg(what);
        Box::pin(async move {
            let unavailable = || ClusterError::Unavailable {
                url: state.url.clone(),
            };
            if !state.up.load(Ordering::Acquire) {
                return Err(unavailable());
            }
            let (answer, answered) = oneshot::channel();
            let asked = Command::Ask { question, answer };
            // Waiting for room in the queue is fine here: the caller awaits an answer anyway.
            let value = within(state.timeout * 2, async {
                commands.send(asked).await.map_err(|_| "the link ended")?;
                answered
                    .await
                    .map_err(|_| "the link was lost before answering")
            })
            .await
            .map_err(|error| {
                if state.up.load(Ordering::Acquire) {
                    state.failed(error)
                } else {
                    unavailable()
                }
            })?;
            redis::from_redis_value::<T>(
                value.extract_error().map_err(|error| state.failed(error))?,
            )
            .map_err(|error| state.failed(error))
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
        let command = Command::Membership {
            room: Arc::clone(room),
            id,
        };
        if self.commands.try_send(command).is_err() {
            self.state.dirty.store(true, Ordering::Release);
        }
    }

    fn members(&self, room: &str) -> Answer<Vec<ConnectionId>> {
        let ids = self.ask::<Vec<String>>(room, "members");
        Box::pin(async move {
            // Every id was written by a node from `ConnectionId`'s own text.
            Ok(ids.await?.iter().filter_map(|id| id.parse().ok()).collect())
        })
    }

    fn member_count(&self, room: &str) -> Answer<usize> {
        self.ask(room, "count")
    }

    fn state(&self) -> ClusterState {
        if self.state.up.load(Ordering::Acquire) {
            ClusterState::Connected
        } else {
            ClusterState::Reconnecting
        }
    }
}

/// Sets this node's heartbeat to expire `ARGV[2]` ms from now, by Redis's clock; returns 1 if
/// the node was not (or no longer) listed.
const HEARTBEAT: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])";

/// Forgets the nodes whose heartbeat expired, then counts (`ARGV[3]` = `count`) or lists the
/// members of room `ARGV[2]` over the live nodes.
const CLUSTER_MEMBERS: &str = "\
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count, members = 0, {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. node .. ':' .. ARGV[2]
  if ARGV[3] == 'count' then
    count = count + redis.call('SCARD', key)
  else
    for _, id in ipairs(redis.call('SMEMBERS', key)) do members[#members + 1] = id end
  end
end
if ARGV[3] == 'count' then return count end
return members";

/// The task that owns the node's connections to Redis.
struct Link {
    client: Client,
    keys: Arc<Keys>,
    state: Arc<LinkState>,
    rooms: Weak<Inner>,
    commands: mpsc::Receiver<Command>,
    heartbeat: Duration,
    ttl: Duration,
    /// The rooms whose channel the subscription connection listens to.
    subscribed: HashSet<Arc<str>>,
    /// The rooms whose member set this node wrote.
    written: HashSet<Arc<str>>,
}

impl Link {
    async fn run(mut self, mut connection: Connection) {
        loop {
            let error = match self.serve(&mut connection).await {
                Ok(()) => {
                    // Every `Rooms` was dropped: leave the cluster, then end.
                    self.leave_cluster(&mut connection).await;
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
            self.subscribed.clear();
            tracing::info!(url = %self.state.url, "link to Redis back");
        }
    }

    /// Serves until every `Rooms` is dropped (`Ok`) or the link is lost.
    async fn serve(&mut self, connection: &mut Connection) -> Result<(), BoxError> {
        self.resync(connection).await?;
        self.state.set_up(true);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = self.commands.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return Ok(());
                    }
                    self.apply(connection, &mut batch).await?;
                }
                message = connection.messages.next() => match message {
                    Some(message) => self.deliver(&message),
                    None => return Err("the subscription connection closed".into()),
                },
                _ = heartbeat.tick() => {
                    let lapsed = self.beat(connection).await?;
                    if lapsed || self.state.dirty.swap(false, Ordering::AcqRel) {
                        self.resync(connection).await?;
                    }
                }
            }
        }
    }

    /// Sends a batch of commands: broadcasts in the order queued, in one pipeline.
    async fn apply(
        &mut self,
        connection: &mut Connection,
        batch: &mut Vec<Command>,
    ) -> Result<(), BoxError> {
        let rooms = self.rooms.upgrade();
        let ttl = millis(self.ttl);
        let mut pipe = redis::pipe();
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        let mut answers = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Publish { channel, payload } => {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                }
                Command::Ask { question, answer } => {
                    pipe.add_command(question);
                    answers.push(answer);
                }
                Command::Membership { room, id } => {
                    let Some(rooms) = &rooms else { continue };
                    let (is_member, has_members) = {
                        let registry = rooms
                            .registry
                            .read()
                            .unwrap_or_else(PoisonError::into_inner);
                        let members = registry.room(&room);
                        (
                            members.is_some_and(|m| m.contains_key(&id)),
                            members.is_some(),
                        )
                    };
                    let key = self.keys.members_of(&room);
                    if is_member {
                        pipe.cmd("SADD").arg(&key).arg(id.to_string()).ignore();
                        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                    } else {
                        pipe.cmd("SREM").arg(&key).arg(id.to_string()).ignore();
                    }
                    if has_members {
                        self.written.insert(Arc::clone(&room));
                        if self.subscribed.insert(Arc::clone(&room)) {
                            subscribe.push(self.keys.room(&room));
                        }
                    } else {
                        self.written.remove(&room);
                        if self.subscribed.remove(&room) {
                            unsubscribe.push(self.keys.room(&room));
                        }
                    }
                }
            }
        }
        let timeout = self.state.timeout;
        if !subscribe.is_empty() {
            within(timeout, connection.subscriptions.subscribe(subscribe)).await?;
        }
        if !unsubscribe.is_empty() {
            within(timeout, connection.subscriptions.unsubscribe(unsubscribe)).await?;
        }
        if pipe.is_empty() {
            return Ok(());
        }
        // Only the questions' replies come back (everything else is ignored), in order. An
        // error reply to one question goes to its asker, not to the whole link.
        let replies: Vec<redis::Value> = within(
            timeout,
            pipe.ignore_errors().query_async(&mut connection.commands),
        )
        .await?;
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = answer.send(reply);
        }
        Ok(())
    }

    /// Hands a message from another node to this node's members.
    fn deliver(&self, message: &Msg) {
        let Some(envelope) = Envelope::decode(message.get_payload_bytes()) else {
            tracing::warn!(
                channel = message.get_channel_name(),
                "ignored a message on a rooms channel that no Tachyon node wrote"
            );
            return;
        };
        if envelope.origin == self.keys.node {
            return; // this node delivered its own broadcast when it was made
        }
        let Some(inner) = self.rooms.upgrade() else {
            return;
        };
        let rooms = Rooms { inner };
        let channel = message.get_channel_name();
        let delivery = match (
            channel.strip_prefix(&self.keys.room_channel),
            envelope.target,
        ) {
            (Some(room), _) => {
                rooms.deliver(room, envelope.except, envelope.policy, &envelope.message)
            }
            (None, Some(target)) => rooms.deliver_to(target, envelope.policy, &envelope.message),
            (None, None) => return,
        };
        if !delivery.is_complete() {
            tracing::debug!(
                channel,
                ?delivery,
                "a broadcast from another node left members out"
            );
        }
    }

    /// Renews the heartbeat and the expiry of this node's member sets; returns whether the node
    /// had dropped out of the cluster meanwhile (its sets may be gone).
    async fn beat(&mut self, connection: &mut Connection) -> Result<bool, BoxError> {
        let ttl = millis(self.ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(1)
            .arg(&self.keys.nodes)
            .arg(self.keys.node_name())
            .arg(ttl);
        for room in &self.written {
            pipe.cmd("PEXPIRE")
                .arg(self.keys.members_of(room))
                .arg(ttl)
                .ignore();
        }
        let (added,): (u32,) = within(
            self.state.timeout,
            pipe.query_async(&mut connection.commands),
        )
        .await?;
        Ok(added == 1)
    }

    /// Makes Redis say what this node's registry says: subscriptions, member sets, heartbeat.
    /// Run on every (re)connection, and when a change could not be queued.
    async fn resync(&mut self, connection: &mut Connection) -> Result<(), BoxError> {
        let local: Vec<(Arc<str>, Vec<String>)> = match self.rooms.upgrade() {
            Some(rooms) => {
                let registry = rooms
                    .registry
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                registry
                    .rooms()
                    .map(|(room, members)| {
                        (
                            Arc::clone(room),
                            members.keys().map(ToString::to_string).collect(),
                        )
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let wanted: HashSet<Arc<str>> = local.iter().map(|(room, _)| Arc::clone(room)).collect();
        let subscribe: Vec<String> = wanted
            .difference(&self.subscribed)
            .map(|room| self.keys.room(room))
            .collect();
        let unsubscribe: Vec<String> = self
            .subscribed
            .difference(&wanted)
            .map(|room| self.keys.room(room))
            .collect();
        let timeout = self.state.timeout;
        if !subscribe.is_empty() {
            within(timeout, connection.subscriptions.subscribe(subscribe)).await?;
        }
        if !unsubscribe.is_empty() {
            within(timeout, connection.subscriptions.unsubscribe(unsubscribe)).await?;
        }
        self.subscribed.clone_from(&wanted);

        let ttl = millis(self.ttl);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for room in self.written.union(&wanted) {
            pipe.cmd("DEL").arg(self.keys.members_of(room)).ignore();
        }
        for (room, ids) in &local {
            let key = self.keys.members_of(room);
            pipe.cmd("SADD").arg(&key).arg(ids).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        }
        pipe.cmd("EVAL")
            .arg(HEARTBEAT)
            .arg(1)
            .arg(&self.keys.nodes)
            .arg(self.keys.node_name())
            .arg(ttl)
            .ignore();
        within(timeout, pipe.query_async::<()>(&mut connection.commands)).await?;
        self.written = wanted;
        Ok(())
    }

    /// Waits and reconnects, with backoff; `None` if every `Rooms` was dropped meanwhile.
    /// Broadcasts queued before the link was lost are dropped (and counted in the log):
    /// membership is rewritten whole once the link is back.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut delay = Duration::from_millis(100);
        let mut lost = 0usize;
        loop {
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    command = self.commands.recv() => match command {
                        None => return None,
                        Some(Command::Publish { .. }) => lost += 1,
                        // Dropping the question's sender answers it: unavailable.
                        Some(Command::Membership { .. } | Command::Ask { .. }) => {}
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
            match Connection::open(&self.client, self.state.timeout, &self.keys).await {
                Ok(connection) => return Some(connection),
                Err(error) => {
                    tracing::debug!(url = %self.state.url, %error, ?delay, "Redis still unreachable");
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Takes this node out of the cluster (every `Rooms` was dropped); best effort.
    async fn leave_cluster(&mut self, connection: &mut Connection) {
        self.state.set_up(false);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(&self.keys.nodes)
            .arg(self.keys.node_name())
            .ignore();
        for room in &self.written {
            pipe.cmd("DEL").arg(self.keys.members_of(room)).ignore();
        }
        let result = within(
            self.state.timeout,
            pipe.query_async::<()>(&mut connection.commands),
        )
        .await;
        if let Err(error) = result {
            tracing::debug!(url = %self.state.url, %error, "could not leave the cluster cleanly; the heartbeat will expire");
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
        let mut out = Vec::with_capacity(10 + 24 + payload.len());
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
            let (process, after) = rest.split_first_chunk::<4>()?;
            let (number, after) = after.split_first_chunk::<8>()?;
            rest = after;
            Some(Some(ConnectionId::from_parts(
                u32::from_be_bytes(*process),
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

/// The URL with its password hidden, for errors and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at]
                .split_once(':')
                .map_or(&rest[..at], |(user, _)| user);
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// 64 random bits, from the operating system's randomness (through `RandomState`).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_what_was_written() {
        let except = ConnectionId::from_parts(7, 42);
        let target = ConnectionId::from_parts(u32::MAX, u64::MAX);
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
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact("redis://user:secret@host"), "redis://user:***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("not a url"), "not a url");
    }
}
