//! The backend the rooms hold ([`RedisBackend`]): it turns broadcasts and questions into
//! [`Command`]s queued for the link, and never waits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use redis::Value;
use tokio::sync::{mpsc, oneshot};

use std::time::Duration;

use crate::connection::{ConnectionId, random_u64};
use crate::message::Message;
use crate::metrics;
use crate::rooms::SlowMember;
use crate::rooms::cluster::{Answer, Backend, ClusterState, Read, Remote};
use crate::rooms::history::{History, NotRecovered, Position};

use super::envelope::Envelope;
use super::keys::Keys;
use super::scripts::{CLUSTER_MEMBERS, READ, RECORD};
use super::state::{LinkState, Permit};

/// How long a room's history stays in Redis after its last broadcast when its [`History`] has
/// no age bound.
const UNAGED_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// What the rooms ask of the link, in order.
pub(super) enum Command {
    /// Send `command` (a `PUBLISH`, or the script that records a broadcast and publishes it),
    /// paid for by `permit`.
    Publish {
        command: redis::Cmd,
        kind: Kind,
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

/// What a published command is.
pub(super) enum Kind {
    Publish,
    /// The script recording a broadcast: its reply (the position) goes to `confirm`, if given.
    Record {
        confirm: Option<oneshot::Sender<Value>>,
    },
}

/// The backend held by the rooms: it queues for the link and never waits.
pub(super) struct RedisBackend {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) state: Arc<LinkState>,
    pub(super) keys: Arc<Keys>,
}

impl RedisBackend {
    /// Queues a broadcast for the link. One that is not queued (the link is down, the budget
    /// spent, the queue full) is counted in `tachyon_redis_publishes_failed_total`, as is one
    /// queued that Redis then does not take (its [`Permit`] counts it).
    fn queue(&self, command: redis::Cmd, bytes: usize, kind: Kind) -> Remote {
        if !self.state.up.load(Ordering::Acquire) {
            self.state.publish_failed();
            return Remote::NotDelivered;
        }
        let Some(permit) = Permit::take(&self.state, bytes) else {
            metrics::redis_publish_failed();
            return Remote::NotDelivered;
        };
        let command = Command::Publish {
            command,
            kind,
            permit,
        };
        // A refused command comes back in the error and is dropped here, with its permit
        // (which counts it as failed).
        match self.commands.try_send(command) {
            Ok(()) => Remote::Sent,
            Err(_) => Remote::NotDelivered,
        }
    }

    fn publish_on(&self, channel: String, envelope: Vec<u8>) -> Remote {
        let bytes = envelope.len();
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(envelope);
        self.queue(command, bytes, Kind::Publish)
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
        let envelope = Envelope::encode(self.keys.node, except, None, policy, None, message);
        self.publish_on(self.keys.room(room), envelope)
    }

    fn placeholder(&self) -> Option<Position> {
        if !self.state.up.load(Ordering::Acquire) {
            // The broadcast is not made at all: it reaches no one, here or elsewhere.
            self.state.publish_failed();
            return None;
        }
        Some(Position::new(random_u64(), random_u64()))
    }

    fn record(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        history: &History,
        placeholder: Position,
        message: &Message,
        confirm: bool,
    ) -> (Remote, Option<Answer<Position>>) {
        let position = Some(placeholder);
        let envelope = Envelope::encode(self.keys.node, except, None, policy, position, message);
        let bytes = envelope.len();
        let age = history.max_age().map_or(0, millis);
        let expiry = millis(history.max_age().unwrap_or(UNAGED_EXPIRY));
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(&RECORD.hash)
            .arg(3)
            .arg(self.keys.history_of(room))
            .arg(self.keys.history_meta_of(room))
            .arg(self.keys.history_index_of(room))
            .arg(envelope)
            .arg(placeholder.to_string())
            .arg(format!("{:016x}", random_u64()))
            .arg(history.max_messages())
            .arg(history.max_bytes())
            .arg(age)
            .arg(expiry.max(1))
            .arg(self.keys.room(room))
            .arg(Envelope::header_len(except, None, position));
        let (confirm, confirmed) = if confirm {
            let (confirm, confirmed) = oneshot::channel();
            (Some(confirm), Some(confirmed))
        } else {
            (None, None)
        };
        let remote = self.queue(command, bytes, Kind::Record { confirm });
        let confirmed = confirmed
            .filter(|_| remote == Remote::Sent)
            .map(|confirmed| {
                let state = Arc::clone(&self.state);
                let answer: Answer<Position> = Box::pin(async move {
                    let reply = match tokio::time::timeout(state.timeout * 2, confirmed).await {
                        Ok(Ok(reply)) => reply,
                        // The link dropped it: Redis was lost before it answered.
                        Ok(Err(_)) => return Err(state.unavailable()),
                        Err(_) => return Err(state.failed("no position within two timeouts")),
                    };
                    recorded_position(reply).map_err(|error| state.failed(error))
                });
                answer
            });
        (remote, confirmed)
    }

    fn read(&self, room: &str, since: Option<Position>, history: &History) -> Answer<Read> {
        let mut question = redis::cmd("EVAL");
        question
            .arg(&READ.source)
            .arg(3)
            .arg(self.keys.history_of(room))
            .arg(self.keys.history_meta_of(room))
            .arg(self.keys.history_index_of(room))
            .arg(since.map_or_else(String::new, |since| format!("{:016x}", since.epoch())))
            .arg(since.map_or(0, |since| since.offset()))
            .arg(history.max_messages())
            .arg(history.max_messages())
            .arg(history.max_bytes())
            .arg(history.max_age().map_or(0, millis))
            .arg(if history.sends_latest() { "1" } else { "0" });
        let state = Arc::clone(&self.state);
        let value = self.ask(|answer| Command::Ask { question, answer });
        Box::pin(async move {
            let value: Value = value.await?;
            let value = value.extract_error().map_err(|error| state.failed(error))?;
            let reply: Vec<Vec<u8>> =
                redis::from_redis_value(value).map_err(|error| state.failed(error))?;
            Ok(read_reply(reply))
        })
    }

    fn send_to(&self, id: ConnectionId, policy: SlowMember, message: &Message) -> Remote {
        let envelope = Envelope::encode(self.keys.node, None, Some(id), policy, None, message);
        self.publish_on(self.keys.process(id.process()), envelope)
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

/// What the read script answered: `ok` and the envelopes after the position, or why not and
/// perhaps the newest envelope. An envelope this version cannot read is left out.
fn read_reply(reply: Vec<Vec<u8>>) -> Read {
    let mut reply = reply.into_iter();
    let status = reply.next().unwrap_or_default();
    let messages = reply
        .filter_map(|envelope| {
            let envelope = Envelope::decode(&envelope)?;
            Some((envelope.position?, envelope.message))
        })
        .collect();
    let outcome = match &status[..] {
        b"ok" => Ok(()),
        b"unasked" => Err(NotRecovered::NoPosition),
        b"future" => Err(NotRecovered::Future),
        b"expired" => Err(NotRecovered::Expired),
        // `none`: Redis has no history of the room (never had, expired, evicted, emptied).
        _ => Err(NotRecovered::OtherEpoch),
    };
    Read { outcome, messages }
}

/// The position the record script answered (`{epoch, offset}`).
fn recorded_position(reply: Value) -> Result<Position, String> {
    let reply = reply.extract_error().map_err(|error| error.to_string())?;
    let (epoch, offset): (String, u64) =
        redis::from_redis_value(reply).map_err(|error| error.to_string())?;
    let epoch = u64::from_str_radix(&epoch, 16).map_err(|error| error.to_string())?;
    Ok(Position::new(epoch, offset))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
