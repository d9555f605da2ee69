//! The `metrics` feature on: every metric of the table is recorded through the facade. A
//! connection looks its handles up once (per route label set) and then only increments them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, counter, gauge, histogram};
use axum::http::StatusCode;
use tokio::time::Sleep;

use super::{
    BROADCAST_DURATION, BROADCASTS, BYTES_RECEIVED, BYTES_SENT, CLOSES, CONNECTION_DURATION,
    CONNECTIONS, DELIVERIES, HANDSHAKE_DURATION, HANDSHAKES, KEEPALIVE_TIMEOUTS, MESSAGES_RECEIVED,
    MESSAGES_SENT, REDIS_PUBLISHES_FAILED, REDIS_RECONNECTS, RESUMES, ROOM_MEMBERS, ROOMS,
    SLOW_MEMBERS, closed_by,
};
use crate::error::WebSocketDisconnect;

/// A handshake being answered: started when the request reaches the route.
#[derive(Debug)]
pub(crate) struct Handshake {
    started: Instant,
}

impl Handshake {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// The handshake was answered with `status`.
    pub(crate) fn answered(self, route: &str, status: StatusCode) {
        let outcome = if status == StatusCode::SWITCHING_PROTOCOLS || status.is_success() {
            "accepted"
        } else {
            "refused"
        };
        let route = route.to_owned();
        counter!(
            HANDSHAKES,
            "route" => route.clone(),
            "outcome" => outcome,
            "status" => status.as_str().to_owned()
        )
        .increment(1);
        histogram!(HANDSHAKE_DURATION, "route" => route).record(self.started.elapsed());
    }
}

/// The counters of one open connection, shared by its driver and its broadcasters.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics(Arc<Handles>);

#[derive(Debug)]
struct Handles {
    route: String,
    received: Counter,
    sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
}

impl ConnectionMetrics {
    pub(crate) fn new(route: &str) -> Self {
        Self(Arc::new(Handles {
            route: route.to_owned(),
            received: counter!(MESSAGES_RECEIVED, "route" => route.to_owned()),
            sent: counter!(MESSAGES_SENT, "route" => route.to_owned()),
            bytes_received: counter!(BYTES_RECEIVED, "route" => route.to_owned()),
            bytes_sent: counter!(BYTES_SENT, "route" => route.to_owned()),
        }))
    }

    /// The client answered no ping in time.
    pub(crate) fn keepalive_timeout(&self) {
        counter!(KEEPALIVE_TIMEOUTS, "route" => self.0.route.clone()).increment(1);
    }

    /// The connection is open (accepted): counted in `tachyon_connections` until
    /// [`Open::close`].
    pub(crate) fn open(&self) -> Open {
        let gauge = gauge!(CONNECTIONS, "route" => self.0.route.clone());
        gauge.increment(1.0);
        Open {
            route: Some(self.0.route.clone()),
            gauge,
            opened: Instant::now(),
        }
    }
}

/// How long the driver's counts wait before they are added to the counters: a second at most
/// behind, so a dashboard (or a scrape every few seconds) sees them.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The driver's counts of messages and bytes, added to the connection's counters at most
/// [`FLUSH_EVERY`] later and when the connection ends. The counters are shared by every
/// connection of the route, on every thread: adding to them at each message made each echo
/// wait for four cache lines held by the other core (2.5 % of the 32 B echo's server CPU).
#[derive(Debug)]
pub(crate) struct Tally {
    received: u64,
    sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
    /// When to add them, once there is something to add.
    due: Option<Pin<Box<Sleep>>>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            received: 0,
            sent: 0,
            bytes_received: 0,
            bytes_sent: 0,
            due: None,
        }
    }

    #[inline]
    pub(crate) fn message_received(&mut self) {
        self.received += 1;
    }

    #[inline]
    pub(crate) fn message_sent(&mut self) {
        self.sent += 1;
    }

    #[inline]
    pub(crate) fn bytes_received(&mut self, bytes: usize) {
        self.bytes_received += bytes as u64;
    }

    #[inline]
    pub(crate) fn bytes_sent(&mut self, bytes: usize) {
        self.bytes_sent += bytes as u64;
    }

    /// Adds the counts to `metrics` if they have waited [`FLUSH_EVERY`]; else makes sure the
    /// task is woken when they have.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>, metrics: &ConnectionMetrics) {
        if self.received | self.sent | self.bytes_received | self.bytes_sent == 0 {
            return;
        }
        match &mut self.due {
            // Polled once, so that it wakes the task when due; after that, whatever wakes the
            // task only asks whether it is due, which is cheaper than polling it again.
            None => {
                let mut due = Box::pin(tokio::time::sleep(FLUSH_EVERY));
                let ready = due.as_mut().poll(cx).is_ready();
                self.due = Some(due);
                if ready {
                    self.flush(metrics);
                }
            }
            Some(due) if due.is_elapsed() => self.flush(metrics),
            Some(_) => {}
        }
    }

    /// Adds the counts to `metrics` now.
    pub(crate) fn flush(&mut self, metrics: &ConnectionMetrics) {
        let handles = &metrics.0;
        for (count, counter) in [
            (&mut self.received, &handles.received),
            (&mut self.sent, &handles.sent),
            (&mut self.bytes_received, &handles.bytes_received),
            (&mut self.bytes_sent, &handles.bytes_sent),
        ] {
            if *count > 0 {
                counter.increment(std::mem::take(count));
            }
        }
        self.due = None;
    }
}

/// An open connection, in `tachyon_connections` until closed.
#[derive(Debug)]
pub(crate) struct Open {
    /// `None` once closed.
    route: Option<String>,
    gauge: Gauge,
    opened: Instant,
}

impl Open {
    /// The connection ended, as `ending` says (`None`: it was dropped with no close at all).
    /// Only the first call counts.
    pub(crate) fn close(&mut self, ending: Option<&WebSocketDisconnect>) {
        let Some(route) = self.route.take() else {
            return;
        };
        self.gauge.decrement(1.0);
        let (code, by) = match ending {
            Some(ending) => (ending.code, closed_by(ending.kind)),
            None => (WebSocketDisconnect::ABNORMAL_CLOSURE, "network"),
        };
        counter!(
            CLOSES,
            "route" => route.clone(),
            "code" => code.to_string(),
            "closed_by" => by
        )
        .increment(1);
        histogram!(CONNECTION_DURATION, "route" => route).record(self.opened.elapsed());
    }
}

/// The messages one fan-out wrote straight into members' sockets (the drivers count the rest in
/// their [`Tally`]), added to each route's counters once, when it is dropped: at each delivery,
/// the increments cost a single broadcast to `Tachyon::serve`'s members 13 % more CPU per
/// delivery.
#[derive(Debug)]
pub(crate) struct Direct {
    /// Per route: its counters, messages and bytes.
    routes: Vec<(ConnectionMetrics, u64, u64)>,
}

impl Direct {
    pub(crate) fn new() -> Self {
        Self { routes: Vec::new() }
    }

    /// A message of `bytes` went straight into the socket of a connection counted in `metrics`.
    pub(crate) fn sent(&mut self, metrics: &ConnectionMetrics, bytes: usize) {
        let same_route = |(counted, ..): &&mut (ConnectionMetrics, u64, u64)| {
            Arc::ptr_eq(&counted.0, &metrics.0) || counted.0.route == metrics.0.route
        };
        match self.routes.iter_mut().find(same_route) {
            Some((_, messages, total)) => {
                *messages += 1;
                *total += bytes as u64;
            }
            None => self.routes.push((metrics.clone(), 1, bytes as u64)),
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        for (metrics, messages, bytes) in self.routes.drain(..) {
            metrics.0.sent.increment(messages);
            metrics.0.bytes_sent.increment(bytes);
        }
    }
}

/// A broadcast on its way to this server's members.
#[derive(Debug)]
pub(crate) struct Broadcast {
    started: Instant,
}

impl Broadcast {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// It reached `reached` members; `dropped` and `closed` met the slow-member policy.
    pub(crate) fn done(self, reached: usize, dropped: usize, closed: usize) {
        let elapsed: Duration = self.started.elapsed();
        counter!(BROADCASTS).increment(1);
        counter!(DELIVERIES).increment(reached as u64);
        if dropped > 0 {
            counter!(SLOW_MEMBERS, "action" => "dropped").increment(dropped as u64);
        }
        if closed > 0 {
            counter!(SLOW_MEMBERS, "action" => "closed").increment(closed as u64);
        }
        histogram!(BROADCAST_DURATION).record(elapsed);
    }
}

/// A room got its first member on this server.
pub(crate) fn room_opened() {
    gauge!(ROOMS).increment(1.0);
}

/// A room lost its last member on this server.
pub(crate) fn room_closed() {
    gauge!(ROOMS).decrement(1.0);
}

/// `count` memberships began.
pub(crate) fn member_joined(count: usize) {
    gauge!(ROOM_MEMBERS).increment(count as f64);
}

/// `count` memberships ended.
pub(crate) fn member_left(count: usize) {
    gauge!(ROOM_MEMBERS).decrement(count as f64);
}

/// A broadcast did not reach the other servers: Redis refused or could not take the publish.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend calls it
pub(crate) fn redis_publish_failed() {
    counter!(REDIS_PUBLISHES_FAILED).increment(1);
}

/// The link to Redis is back after being lost.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend calls it
pub(crate) fn redis_reconnected() {
    counter!(REDIS_RECONNECTS).increment(1);
}

/// A member joined with a position: everything it missed was replayed, or not.
pub(crate) fn resumed(recovered: bool) {
    let outcome = if recovered {
        "recovered"
    } else {
        "not_recovered"
    };
    counter!(RESUMES, "outcome" => outcome).increment(1);
}
