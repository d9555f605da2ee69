//! What [`Rooms`](super::Rooms) needs from a backend that spreads rooms over several servers,
//! and what it reports about it: [`Remote`] in every delivery, [`ClusterState`], and
//! [`ClusterError`]. The in-process rooms have no backend; the `redis` feature adds one.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::connection::ConnectionId;
use crate::message::Message;

use super::SlowMember;
use super::history::{History, NotRecovered, Position};

/// What a broadcast did beyond this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Remote {
    /// Nothing went beyond this process: the rooms have no backend, or the message needed none
    /// ([`Rooms::send_to`](super::Rooms::send_to) found the connection here).
    #[default]
    InProcess,
    /// Handed to the backend, which publishes in the order messages were queued. Pub/sub is
    /// at-most-once: a server that loses its link to Redis at that moment misses it, and so
    /// does everyone if this server's link turns out to be lost before the message left (the
    /// log counts those). [`Rooms::send_to`](super::Rooms::send_to) says `Sent` for an id held
    /// by no server here, too: only the server holding it can tell.
    Sent,
    /// Not delivered to the other servers: the backend is reconnecting, or its queue of
    /// broadcasts waiting to be published is full. The members on this server got it.
    NotDelivered,
}

/// Whether the rooms reach the other servers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterState {
    /// The rooms live in this process only.
    InProcess,
    /// Linked to the backend: broadcasts reach the other servers.
    Connected,
    /// The link to the backend was lost; it is being re-established with backoff. Broadcasts
    /// reach this server's members only, and report [`Remote::NotDelivered`].
    Reconnecting,
    /// The rooms left the cluster ([`Rooms::leave_cluster`](super::Rooms::leave_cluster)):
    /// broadcasts reach this server's members only.
    Left,
}

/// Why the rooms' backend could not be reached or asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The URL given for the backend is not one it understands.
    #[error(
        "invalid Redis URL `{url}`: {source} (expected `redis://[:password@]host[:port][/db]`)"
    )]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// What the client said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The backend could not be reached when the rooms were built.
    #[error(
        "cannot reach Redis at `{url}`: {source}. Is a redis-server running there? \
         (start one with `redis-server --port 6379`, or pass another URL)"
    )]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// What failed.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The link to the backend is down and being re-established (or the rooms left the
    /// cluster): cluster-wide questions cannot be answered until it is back.
    #[error("Redis at `{url}` is unreachable; reconnecting")]
    Unavailable {
        /// The URL, password hidden.
        url: String,
    },
    /// The backend answered with an error, or did not answer in time (a question waits behind
    /// the queued broadcasts, so a full queue can make it late too).
    #[error("Redis at `{url}` failed: {source}")]
    Command {
        /// The URL, password hidden.
        url: String,
        /// What failed.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// A future answering a cluster-wide question.
pub(crate) type Answer<T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send>>;

/// What the rooms need from a backend. Everything but the questions returns at once: a
/// broadcast never waits on another server.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Hands a broadcast to `room` to the other servers.
    fn publish(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    ) -> Remote;

    /// A placeholder position for a broadcast to a room whose history the backend keeps, if the
    /// backend can take one now: the message is built with it, and the backend puts the real
    /// position in its place (every occurrence of the placeholder's text, which has the same
    /// length) once it has assigned one.
    fn placeholder(&self) -> Option<Position>;

    /// Records a broadcast built with `placeholder` in `room`'s history, and hands it to every
    /// server, this one included: each delivers it once the backend has given it its position,
    /// in the backend's order. With `confirm`, also the position, once the backend has it.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        history: &History,
        placeholder: Position,
        message: &Message,
        confirm: bool,
    ) -> (Remote, Option<Answer<Position>>);

    /// The messages of `room`'s history after `since`, or its newest one if `since` is `None`.
    fn read(&self, room: &str, since: Option<Position>, history: &History) -> Answer<Read>;

    /// Hands a message for a connection held by another process to the backend.
    fn send_to(&self, id: ConnectionId, policy: SlowMember, message: &Message) -> Remote;

    /// A connection joined or left `room` here: bring the cluster's view of it in line.
    fn membership_changed(&self, room: &Arc<str>, id: ConnectionId);

    /// The members of `room` on every server, each with its data as it was encoded.
    fn members(&self, room: &str) -> Answer<Vec<(ConnectionId, Vec<u8>)>>;

    /// How many members `room` has on every server.
    fn member_count(&self, room: &str) -> Answer<usize>;

    /// Sends what is queued, then takes this server out of the cluster.
    fn leave(&self) -> Answer<()>;

    /// Whether the backend is linked right now.
    fn state(&self) -> ClusterState;
}

/// What a backend read of a room's history.
#[derive(Debug)]
pub(crate) struct Read {
    /// Whether every message after the position asked for was there.
    pub(crate) outcome: Result<(), NotRecovered>,
    /// Those messages, each with its position, oldest first; or, if not, the newest message
    /// of a latest-value room (or nothing).
    pub(crate) messages: Vec<(Position, Message)>,
}

/// A member as the other servers see it: its id, and its data encoded.
#[cfg(feature = "redis")]
pub(crate) type EncodedMember = (ConnectionId, Vec<u8>);

/// What a backend may see and do of this server's rooms: a narrow handle, so that a backend
/// never reads the rooms' internals. The rooms hand it out as a weak reference.
#[cfg(feature = "redis")]
pub(crate) trait Local: Send + Sync + 'static {
    /// Whether `room` has members here, and the data of `id` in it (encoded for the other
    /// servers) if it is one of them.
    fn member(&self, room: &str, id: ConnectionId) -> (bool, Option<Vec<u8>>);

    /// Every room with members here, each with its members' ids and encoded data.
    fn snapshot(&self) -> Vec<(Arc<str>, Vec<EncodedMember>)>;

    /// Offers a broadcast from another server to this server's members of `room`, but `except`.
    fn deliver(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        message: &Message,
    );

    /// Offers a broadcast recorded at `position` in `room`'s history to this server's members of
    /// `room`, but `except`.
    fn deliver_recorded(
        &self,
        room: &str,
        except: Option<ConnectionId>,
        policy: SlowMember,
        position: Position,
        message: &Message,
    );

    /// Offers a message from another server to connection `id`, if it is in a room here.
    fn deliver_to(&self, id: ConnectionId, policy: SlowMember, message: &Message);
}
