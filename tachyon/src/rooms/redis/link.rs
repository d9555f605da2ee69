//! The link: the task that owns the node's connection to Redis, writes the membership, publishes
//! the queued broadcasts, beats the heartbeat, and reconnects.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{Client, PushInfo, Value};
use tokio::sync::{mpsc, oneshot};

use crate::connection::random_u64;
use crate::metrics;
#[cfg(doc)] // for the links of the documentation
use crate::rooms::Rooms;
use crate::rooms::cluster::Local;

use super::backend::{Command, Kind};
use super::connection::{Connection, within};
use super::keys::Keys;
use super::scripts::{HEARTBEAT, RECORD};
use super::state::{BoxError, LinkState, Permit};

/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most commands the link takes from its queue at once.
const BATCH: usize = 512;
/// A pipeline is sent once it carries this many bytes of messages.
const PIPELINE_BYTES: usize = 1024 * 1024;

/// What one pipeline reply is for.
enum Slot {
    /// A membership write: an error reply means Redis lost it.
    Membership,
    /// A recorded broadcast: an error reply means it reached no one (the script was flushed,
    /// Redis is out of memory). The reply goes to the broadcaster if it waits for it.
    Record(Option<oneshot::Sender<Value>>),
    Ask(oneshot::Sender<Value>),
}

/// The task that owns the node's connection to Redis.
pub(super) struct Link {
    pub(super) client: Client,
    pub(super) keys: Arc<Keys>,
    pub(super) state: Arc<LinkState>,
    pub(super) rooms: Weak<dyn Local>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// For the push handler of each new connection.
    pub(super) inbox: mpsc::Sender<PushInfo>,
    pub(super) heartbeat: Duration,
    pub(super) expiry: Duration,
    /// The rooms with members here, as Redis knows them: the connection listens to their
    /// channels, and this node wrote a member set for each.
    pub(super) linked: HashSet<Arc<str>>,
}

/// Why [`Link::serve`] returned without an error.
enum End {
    /// Every `Rooms` was dropped.
    Dropped,
    /// [`Rooms::leave_cluster`].
    Leave(oneshot::Sender<bool>),
}

impl Link {
    pub(super) async fn run(mut self, mut connection: Connection) {
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
            metrics::redis_reconnected();
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
        // caller or dropped with it). Only those of a pipeline Redis answered are marked sent:
        // every other one counts a failed publish as it is dropped.
        let mut paid: Vec<Permit> = Vec::new();
        let mut bytes = 0;
        for command in batch.drain(..) {
            match command {
                Command::Publish {
                    command,
                    kind,
                    permit,
                } => {
                    bytes += permit.bytes();
                    match kind {
                        Kind::Record { confirm } => {
                            pipe.add_command(command);
                            slots.push(Slot::Record(confirm));
                        }
                        Kind::Publish => {
                            pipe.add_command(command).ignore();
                        }
                    }
                    paid.push(permit);
                    if bytes >= PIPELINE_BYTES {
                        self.send(connection, &mut pipe, &mut slots).await?;
                        paid.iter_mut().for_each(Permit::sent);
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
        paid.iter_mut().for_each(Permit::sent);
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
                Slot::Record(confirm) => {
                    if let Value::ServerError(error) = &reply {
                        // The next heartbeat writes everything again, the script included.
                        self.state.dirty.store(true, Ordering::Release);
                        tracing::warn!(
                            url = %self.state.url, ?error,
                            "Redis refused to record a broadcast: it reached no one"
                        );
                        metrics::redis_publish_failed();
                    }
                    if let Some(confirm) = confirm {
                        let _ = confirm.send(reply);
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
        // The script that records broadcasts: a Redis that restarted has forgotten it.
        pipe.cmd("SCRIPT").arg("LOAD").arg(&RECORD.source).ignore();
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
                        // Dropped, and its permit with it (which counts it as failed).
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
