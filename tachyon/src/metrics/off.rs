//! The `metrics` feature off: the same calls as `record.rs`, on zero-sized types, doing
//! nothing (so nothing is compiled in).

use std::task::Context;

use axum::http::StatusCode;

use crate::error::WebSocketDisconnect;

#[derive(Debug)]
pub(crate) struct Handshake;

impl Handshake {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn answered(self, _route: &str, _status: StatusCode) {}
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics;

impl ConnectionMetrics {
    #[inline(always)]
    pub(crate) fn new(_route: &str) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn keepalive_timeout(&self) {}

    #[inline(always)]
    pub(crate) fn open(&self) -> Open {
        Open
    }
}

#[derive(Debug)]
pub(crate) struct Tally;

impl Tally {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn message_received(&mut self) {}

    #[inline(always)]
    pub(crate) fn message_sent(&mut self) {}

    #[inline(always)]
    pub(crate) fn bytes_received(&mut self, _bytes: usize) {}

    #[inline(always)]
    pub(crate) fn bytes_sent(&mut self, _bytes: usize) {}

    #[inline(always)]
    pub(crate) fn poll_flush(&mut self, _cx: &mut Context<'_>, _metrics: &ConnectionMetrics) {}

    #[inline(always)]
    pub(crate) fn flush(&mut self, _metrics: &ConnectionMetrics) {}
}

#[derive(Debug)]
pub(crate) struct Open;

impl Open {
    #[inline(always)]
    pub(crate) fn close(&mut self, _ending: Option<&WebSocketDisconnect>) {}
}

#[derive(Debug)]
pub(crate) struct Direct;

impl Direct {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn sent(&mut self, _metrics: &ConnectionMetrics, _bytes: usize) {}
}

#[derive(Debug)]
pub(crate) struct Broadcast;

impl Broadcast {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn done(self, _reached: usize, _dropped: usize, _closed: usize) {}
}

#[inline(always)]
pub(crate) fn room_opened() {}

#[inline(always)]
pub(crate) fn room_closed() {}

#[inline(always)]
pub(crate) fn member_joined(_count: usize) {}

#[inline(always)]
pub(crate) fn member_left(_count: usize) {}

#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend calls it
#[inline(always)]
pub(crate) fn redis_publish_failed() {}

#[cfg_attr(not(feature = "redis"), allow(dead_code))] // only the Redis backend calls it
#[inline(always)]
pub(crate) fn redis_reconnected() {}

#[inline(always)]
pub(crate) fn resumed(_recovered: bool) {}
