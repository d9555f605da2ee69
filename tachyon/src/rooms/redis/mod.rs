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

mod backend;
mod config;
mod connection;
mod envelope;
mod hand_out;
mod keys;
mod link;
mod scripts;
mod state;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

#[cfg(doc)] // for the links of the documentation
use super::cluster::Remote;
use super::cluster::{ClusterError, Local};
use super::{Rooms, RoomsBuilder};

use backend::RedisBackend;
use config::redact;
use connection::{Connection, resp3_client};
use hand_out::hand_out;
use keys::Keys;
use link::Link;
use state::LinkState;

pub use config::RedisConfig;

/// Messages from other nodes waiting to be handed to the local members, at most.
const INBOX: usize = 8192;

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
    /// backoff, and resubscribes. When every message must arrive, give the rooms a
    /// [`History`](super::History) ([`history`](Self::history)): it is kept in Redis, and a
    /// member that missed messages catches up with [`Rooms::join_since`], on any server
    /// ([guide](crate::guide::resuming)).
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
