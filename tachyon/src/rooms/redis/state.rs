//! What the rooms and the link share ([`LinkState`]), and the publish budget a queued broadcast
//! holds ([`Permit`]).

use std::collections::HashSet;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::connection::ConnectionId;
use crate::metrics;
use crate::rooms::ClusterError;
#[cfg(doc)] // for the links of the documentation
use crate::rooms::{RedisConfig, Rooms};

pub(super) type BoxError = Box<dyn StdError + Send + Sync>;

/// What the rooms and the link share.
#[derive(Debug)]
pub(super) struct LinkState {
    pub(super) url: String,
    /// Whether the link is connected: broadcasts are queued only then.
    pub(super) up: AtomicBool,
    /// The rooms left the cluster ([`Rooms::leave_cluster`]).
    pub(super) left: AtomicBool,
    /// Redis refused a membership change: the link rewrites this node's membership at the next
    /// heartbeat.
    pub(super) dirty: AtomicBool,
    /// Joins and leaves not yet written, by room and connection: the link reads the registry
    /// for each. A set, so it holds one entry per member and room at most.
    pub(super) pending: Mutex<HashSet<(Arc<str>, ConnectionId)>>,
    pub(super) changed: Notify,
    /// Bytes of the broadcasts waiting to be published, and the most there may be.
    pub(super) queued_bytes: AtomicUsize,
    pub(super) queue_bytes: usize,
    /// Messages from other nodes dropped because the inbox was full, since last reported.
    pub(super) inbound_dropped: AtomicUsize,
    pub(super) timeout: Duration,
}

impl LinkState {
    pub(super) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    pub(super) fn take_pending(&self) -> HashSet<(Arc<str>, ConnectionId)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn failed(&self, source: impl Into<BoxError>) -> ClusterError {
        ClusterError::Command {
            url: self.url.clone(),
            source: source.into(),
        }
    }

    pub(super) fn unavailable(&self) -> ClusterError {
        ClusterError::Unavailable {
            url: self.url.clone(),
        }
    }

    /// A broadcast was not handed to the link because it is down: a failed publish, unless
    /// the rooms left the cluster (then none is meant to be made).
    pub(super) fn publish_failed(&self) {
        if !self.left.load(Ordering::Acquire) {
            metrics::redis_publish_failed();
        }
    }
}

/// Bytes of the publish budget ([`RedisConfig::queue`]) held by one queued broadcast: taken when
/// it is queued, and given back when the permit is dropped, which happens with the broadcast
/// whatever becomes of it (published, refused by a full channel, dropped with a lost link or a
/// failed pipeline). No path can forget to give the bytes back.
///
/// Likewise, a permit dropped before its broadcast was [sent](Self::sent) counts a failed
/// publish (`tachyon_redis_publishes_failed_total`): refused by a full queue, dropped with a
/// lost link or a failed pipeline, left in the queue when the link ended.
#[derive(Debug)]
pub(super) struct Permit {
    state: Arc<LinkState>,
    bytes: usize,
    /// Redis answered the pipeline that carried the broadcast.
    #[cfg(feature = "metrics")]
    sent: bool,
}

impl Permit {
    /// Redis took the broadcast (answered the pipeline carrying it): it is no failure.
    #[inline]
    pub(super) fn sent(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.sent = true;
        }
    }

    /// The bytes it holds.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `bytes` of the budget, or `None` if that would go over it.
    pub(super) fn take(state: &Arc<LinkState>, bytes: usize) -> Option<Self> {
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
            #[cfg(feature = "metrics")]
            sent: false,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.state
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
        #[cfg(feature = "metrics")]
        if !self.sent {
            metrics::redis_publish_failed();
        }
    }
}
