//! Keepalive and the connection's other clocks: a ping after a silence, a close when the pong
//! does not come, the idle timeout, and the deadline of a close in progress.
//!
//! One timer serves them all. It is not moved on every message (that would touch the timer
//! wheel per message): it fires at the earliest deadline it knew of, and the deadlines are then
//! checked against the latest activity.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::settings::Config;

/// What is due when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Ping the client.
    Ping,
    /// The client answered no ping in time.
    KeepaliveTimeout,
    /// The client sent no data message in time.
    IdleTimeout,
    /// The close did not complete in time.
    CloseTimeout,
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Option<Duration>,
    timeout: Duration,
    idle: Option<Duration>,
    close_timeout: Duration,
    /// When the client last sent anything.
    last_frame: Instant,
    /// When the client last sent a data message.
    last_data: Instant,
    /// When the unanswered ping left.
    ping_sent: Option<Instant>,
    /// When the close in progress must have completed.
    close_by: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Keepalive {
    pub(crate) fn new(config: &Config) -> Self {
        let now = Instant::now();
        let mut keepalive = Self {
            interval: config.keepalive_interval,
            timeout: config.keepalive_timeout,
            idle: config.idle_timeout,
            close_timeout: config.close_timeout,
            last_frame: now,
            last_data: now,
            ping_sent: None,
            close_by: None,
            timer: None,
        };
        keepalive.arm(now);
        keepalive
    }

    /// The client sent a frame (`data`: a text or binary message).
    pub(crate) fn saw_frame(&mut self, data: bool) {
        let now = Instant::now();
        self.last_frame = now;
        self.ping_sent = None;
        if data && self.idle.is_some() {
            self.last_data = now;
        }
    }

    /// A ping just left.
    pub(crate) fn pinged(&mut self) {
        let now = Instant::now();
        self.ping_sent = Some(now);
        self.arm(now);
    }

    /// A close started: from now on only its deadline counts.
    pub(crate) fn closing(&mut self) {
        if self.close_by.is_none() {
            let now = Instant::now();
            self.close_by = Some(now + self.close_timeout);
            self.arm(now);
        }
    }

    /// What is due now, if anything. `reading_paused`: the handler has not taken the message
    /// read ahead, so the driver reads nothing, pongs included; the client's last message proves
    /// it alive, so neither keepalive nor the idle timeout counts that time against it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, reading_paused: bool) -> Option<Due> {
        let timer = self.timer.as_mut()?;
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        let now = Instant::now();
        if reading_paused {
            self.last_frame = now;
            self.last_data = now;
            self.ping_sent = None;
        }
        let due = self.due(now);
        if due != Some(Due::Ping) {
            self.arm(now);
        }
        if let Some(timer) = &mut self.timer {
            // Registers the waker for the new deadline (or fires again at once if it passed).
            let _ = timer.as_mut().poll(cx);
        }
        due
    }

    fn due(&self, now: Instant) -> Option<Due> {
        if let Some(close_by) = self.close_by {
            return (now >= close_by).then_some(Due::CloseTimeout);
        }
        if let Some(idle) = self.idle {
            if now >= self.last_data + idle {
                return Some(Due::IdleTimeout);
            }
        }
        if let Some(sent) = self.ping_sent {
            return (now >= sent + self.timeout).then_some(Due::KeepaliveTimeout);
        }
        let interval = self.interval?;
        (now >= self.last_frame + interval).then_some(Due::Ping)
    }

    /// Sets the timer to the earliest deadline (none: no timer at all).
    fn arm(&mut self, now: Instant) {
        let next = if let Some(close_by) = self.close_by {
            Some(close_by)
        } else {
            let idle = self.idle.map(|idle| self.last_data + idle);
            let keepalive = match self.ping_sent {
                Some(sent) => Some(sent + self.timeout),
                None => self.interval.map(|interval| self.last_frame + interval),
            };
            match (idle, keepalive) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let Some(deadline) = next else {
            self.timer = None;
            return;
        };
        let deadline = deadline.max(now);
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}
