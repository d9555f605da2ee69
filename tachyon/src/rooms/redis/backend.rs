//! The backend the rooms hold ([`RedisBackend`]): it turns broadcasts and questions into
//! [`Command`]s queued for the link, and never waits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use redis::Value;
use tokio::sync::{mpsc, oneshot};

use crate::connection::ConnectionId;
use crate::message::Message;
use crate::rooms::SlowMember;
use crate::rooms::cluster::{Answer, Backend, ClusterState, Remote};

use super::envelope::Envelope;
use super::keys::Keys;
use super::scripts::CLUSTER_MEMBERS;
use super::state::{LinkState, Permit};

/// What the rooms ask of the link, in order.
pub(super) enum Command {
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

/// The backend held by the rooms: it queues for the link and never waits.
pub(super) struct RedisBackend {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) state: Arc<LinkState>,
    pub(super) keys: Arc<Keys>,
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
