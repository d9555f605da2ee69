//! [`Settings`]: buffers, limits, queue bounds, keepalive and timeouts of WebSocket connections,
//! set per app, per router and per handler; the most specific setting wins.
//!
//! A `Settings` only holds what was set on it. Levels are merged from the outside in: the app's
//! settings, then each router's, then the handler's attribute options, then the defaults for
//! whatever is still unset. As a tower layer it does the same for plain axum routers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::origin::{OriginPattern, Origins};

/// How WebSocket connections are run: buffers, limits, the outbound queue, keepalive and timeouts.
///
/// Set it on the app ([`Tachyon::settings`](crate::Tachyon::settings)), on a router
/// ([`Router::settings`](crate::WebSocketRouter::settings)) or on one handler through the attribute
/// (`#[websocket("/upload", max_message_size = 16 * 1024 * 1024)]`, any method below as a key).
/// The most specific level wins, setting by setting; what no level sets takes its default.
///
/// ```
/// use std::time::Duration;
/// use tachyon::Settings;
///
/// let settings = Settings::new()
///     .max_message_size(4 * 1024 * 1024)
///     .keepalive_interval(Duration::from_secs(30))
///     .idle_timeout(Duration::from_secs(300));
/// ```
///
/// In a plain axum app, `Settings` is a tower layer: `router.layer(Settings::new()...)`, on a
/// router or on one route; inner layers override outer ones.
///
/// | setting | default | what it bounds |
/// |---|---|---|
/// | [`read_buffer_size`](Self::read_buffer_size) | (no effect) | nothing any more: connections keep no read buffer |
/// | [`write_buffer_size`](Self::write_buffer_size) | 8 KiB | queued bytes gathered into one write |
/// | [`max_write_buffer_size`](Self::max_write_buffer_size) | (no effect) | nothing any more: the queue bounds what waits |
/// | [`max_message_size`](Self::max_message_size) | 1 MiB | an incoming message (over it: close 1009) |
/// | [`max_frame_size`](Self::max_frame_size) | the message size | an incoming frame |
/// | [`queue_messages`](Self::queue_messages) | 1,024 | messages waiting to be sent |
/// | [`queue_bytes`](Self::queue_bytes) | 1 MiB | bytes waiting to be sent |
/// | [`close_timeout`](Self::close_timeout) | 5 s | the wait for the client's close reply |
/// | [`keepalive_interval`](Self::keepalive_interval) | 20 s | silence before a ping |
/// | [`keepalive_timeout`](Self::keepalive_timeout) | 20 s | the wait for the pong (then close 1011) |
/// | [`idle_timeout`](Self::idle_timeout) | off | time without a data message (then close 1001) |
/// | [`allowed_origins`](Self::allowed_origins) | the request's host | pages that may connect (others: `403`) |
/// | [`max_connections`](Self::max_connections) | unlimited | open connections (beyond: `503`) |
/// | [`expose_errors`](Self::expose_errors) | off (the `500` before `accept`: on in debug builds) | a handler's error text in its 1011 close or `500` |
/// | [`browser_readable_rejections`](Self::browser_readable_rejections) | off | `close` before `accept` as a close frame, not `403` |
/// | [`deflate`](Self::deflate) | off | permessage-deflate compression, when the client offers it |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Settings {
    read_buffer_size: Option<usize>,
    write_buffer_size: Option<usize>,
    max_write_buffer_size: Option<usize>,
    max_message_size: Option<usize>,
    max_frame_size: Option<usize>,
    queue_messages: Option<usize>,
    queue_bytes: Option<usize>,
    close_timeout: Option<Duration>,
    keepalive_interval: Option<Option<Duration>>,
    keepalive_timeout: Option<Duration>,
    idle_timeout: Option<Option<Duration>>,
    origins: Option<Origins>,
    expose_errors: Option<bool>,
    readable_rejections: Option<bool>,
    deflate: Option<Option<Deflate>>,
    /// Every level's limit applies, not only the most specific one.
    limits: Vec<ConnectionLimit>,
}

impl Settings {
    /// The default of [`Self::read_buffer_size`]: 4 KiB.
    pub const DEFAULT_READ_BUFFER_SIZE: usize = 4 * 1024;
    /// The default of [`Self::write_buffer_size`]: 8 KiB.
    pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 8 * 1024;
    /// The default of [`Self::max_message_size`]: 1 MiB (the Python `websockets` library's).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
    /// The default of [`Self::queue_messages`]: 1,024 messages.
    pub const DEFAULT_QUEUE_MESSAGES: usize = 1024;
    /// The default of [`Self::queue_bytes`]: 1 MiB.
    pub const DEFAULT_QUEUE_BYTES: usize = 1024 * 1024;
    /// The default of [`Self::close_timeout`]: 5 s.
    pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default of [`Self::keepalive_interval`]: 20 s.
    pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
    /// The default of [`Self::keepalive_timeout`]: 20 s.
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

    /// Settings that set nothing: every value comes from a wider level or the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kept so that settings written for earlier versions still build; it has no effect.
    /// Connections keep no read buffer of their own: reads from the socket take up to 64 KiB
    /// at once, through a buffer each runtime thread shares among its connections, and frames
    /// are parsed straight from it. Default 4 KiB (unused).
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = Some(bytes);
        self
    }

    /// How many bytes of queued messages are gathered into one write: messages queued together
    /// leave in one system call up to this size. A frame at least this large is written from
    /// its own buffer, without a copy. Default 8 KiB.
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = Some(bytes);
        self
    }

    /// Kept so that settings written for earlier versions still build; it has no effect. A
    /// connection holds at most [`write_buffer_size`](Self::write_buffer_size) bytes the socket
    /// has not taken yet, besides the message being written; the outbound queue
    /// ([`queue_bytes`](Self::queue_bytes)) bounds the rest.
    pub fn max_write_buffer_size(mut self, bytes: usize) -> Self {
        self.max_write_buffer_size = Some(bytes);
        self
    }

    /// The largest message a client may send. A larger one closes the connection with 1009
    /// (Message Too Big), and the handler's next `receive` returns that disconnect. A
    /// compressed message ([`deflate`](Self::deflate)) is measured inflated, and inflating stops
    /// at the limit: a small message that would inflate beyond it is never inflated whole.
    /// Default 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// The largest frame a client may send. Default: the message size limit.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// How many messages may wait in a connection's outbound queue. When it is full, `send_*`
    /// waits and `try_send_*` returns the message. Default 1,024.
    pub fn queue_messages(mut self, messages: usize) -> Self {
        self.queue_messages = Some(messages);
        self
    }

    /// How many bytes of messages may wait in a connection's outbound queue (a single message
    /// larger than this is let through when the queue is empty). Default 1 MiB.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = Some(bytes);
        self
    }

    /// How long the server waits, after sending its close frame, for the queued messages to
    /// leave and the client's close reply to come, before dropping the connection. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = Some(timeout);
        self
    }

    /// How long a connection may be silent before the server pings it; `None` turns
    /// keepalive off. Default 20 s.
    pub fn keepalive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keepalive_interval = Some(interval.into());
        self
    }

    /// How long the server waits for anything (normally the pong) after a ping before closing
    /// with 1011. Default 20 s.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = Some(timeout);
        self
    }

    /// Closes a connection whose client sent no data message for this long, with 1001 (Going
    /// Away); `None` (the default) turns it off. Pings and pongs do not count as activity.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = Some(timeout.into());
        self
    }

    /// Which web pages may open a connection, by their `Origin` header, besides pages of the
    /// request's own host: exact hosts (`"app.example.com"`, `"https://app.example.com:8443"`)
    /// or every subdomain (`"*.example.com"`). A handshake from any other page gets `403`
    /// before the handler runs; clients that send no `Origin` (not browsers) always pass.
    ///
    /// The default allows only the request's own host: browsers apply no CORS to WebSockets,
    /// so without this check any site could open a connection with its visitors' cookies.
    pub fn allowed_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<OriginPattern>,
    {
        self.origins = Some(Origins::List(origins.into_iter().map(Into::into).collect()));
        self
    }

    /// Lets pages from any site open a connection (for a public endpoint that authenticates in
    /// its own way, not with cookies).
    pub fn allow_any_origin(self) -> Self {
        self.origins(Origins::Any)
    }

    /// The origin policy as a value, for the attribute:
    /// `#[websocket("/public", origins = Origins::Any)]`.
    pub fn origins(mut self, origins: Origins) -> Self {
        self.origins = Some(origins);
        self
    }

    /// At most `max` connections open at once through this level (app, router or handler);
    /// beyond it the handshake gets `503` and the handler does not run. Each level's limit
    /// applies: an app limit and a route limit both hold.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits = vec![ConnectionLimit::new(max)];
        self
    }

    /// Sends a failed handler's error text to the client: as the reason of its 1011 close (cut
    /// to 123 bytes) after `accept`, and as the body of the `500` when it fails before `accept`.
    /// Off by default, since an error's text (a database's, say) is not for strangers: the
    /// client gets `internal error` and the text goes to the log (through `tracing`). One
    /// exception, for development: in debug builds the `500` before `accept` says why unless
    /// this is set to `false`; release builds never do by default.
    pub fn expose_errors(mut self, expose: bool) -> Self {
        self.expose_errors = Some(expose);
        self
    }

    /// Makes `close(code)` before `accept` complete the handshake and then close with that code
    /// and reason, instead of answering `403`. Browsers never show a page the HTTP status of a
    /// refused handshake (it sees 1006), but they do show a close code: with this on, the
    /// page's `onclose` sees `4001`. Off by default.
    pub fn browser_readable_rejections(mut self, readable: bool) -> Self {
        self.readable_rejections = Some(readable);
        self
    }

    /// Compresses messages with permessage-deflate (RFC 7692) on connections whose client
    /// offers it (every current browser does): `Some(Deflate::new())` or just
    /// `Deflate::new()` turns it on with the defaults, `None` turns off what a wider level
    /// turned on. Also an attribute key: `#[websocket("/feed", deflate = Deflate::new())]`.
    /// Off by default: compression costs server CPU per message, and pays for it only on
    /// messages that compress (JSON, text) over links where bytes cost more than CPU; see
    /// [`Deflate`] for what it costs and how it is tuned.
    pub fn deflate(mut self, deflate: impl Into<Option<Deflate>>) -> Self {
        self.deflate = Some(deflate.into());
        self
    }

    /// These settings, with every value that `inner` sets replaced by `inner`'s (connection
    /// limits add up: all of them apply).
    pub fn merge(self, inner: &Self) -> Self {
        let mut limits = self.limits;
        limits.extend(inner.limits.iter().cloned());
        Self {
            origins: inner.origins.clone().or(self.origins),
            expose_errors: inner.expose_errors.or(self.expose_errors),
            readable_rejections: inner.readable_rejections.or(self.readable_rejections),
            deflate: inner.deflate.or(self.deflate),
            limits,
            read_buffer_size: inner.read_buffer_size.or(self.read_buffer_size),
            write_buffer_size: inner.write_buffer_size.or(self.write_buffer_size),
            max_write_buffer_size: inner.max_write_buffer_size.or(self.max_write_buffer_size),
            max_message_size: inner.max_message_size.or(self.max_message_size),
            max_frame_size: inner.max_frame_size.or(self.max_frame_size),
            queue_messages: inner.queue_messages.or(self.queue_messages),
            queue_bytes: inner.queue_bytes.or(self.queue_bytes),
            close_timeout: inner.close_timeout.or(self.close_timeout),
            keepalive_interval: inner.keepalive_interval.or(self.keepalive_interval),
            keepalive_timeout: inner.keepalive_timeout.or(self.keepalive_timeout),
            idle_timeout: inner.idle_timeout.or(self.idle_timeout),
        }
    }

    /// The values in force: these settings, and the defaults for what they leave unset.
    pub(crate) fn resolve(&self) -> Config {
        let max_message_size = self
            .max_message_size
            .unwrap_or(Self::DEFAULT_MAX_MESSAGE_SIZE);
        Config {
            write_buffer_size: self
                .write_buffer_size
                .unwrap_or(Self::DEFAULT_WRITE_BUFFER_SIZE),
            max_message_size,
            max_frame_size: self.max_frame_size.unwrap_or(max_message_size),
            queue_messages: self
                .queue_messages
                .unwrap_or(Self::DEFAULT_QUEUE_MESSAGES)
                .max(1),
            queue_bytes: self.queue_bytes.unwrap_or(Self::DEFAULT_QUEUE_BYTES),
            close_timeout: self.close_timeout.unwrap_or(Self::DEFAULT_CLOSE_TIMEOUT),
            keepalive_interval: self
                .keepalive_interval
                .unwrap_or(Some(Self::DEFAULT_KEEPALIVE_INTERVAL)),
            keepalive_timeout: self
                .keepalive_timeout
                .unwrap_or(Self::DEFAULT_KEEPALIVE_TIMEOUT),
            idle_timeout: self.idle_timeout.unwrap_or(None),
            expose_errors: self.expose_errors.unwrap_or(false),
            explain_failures: self.expose_errors.unwrap_or(cfg!(debug_assertions)),
            readable_rejections: self.readable_rejections.unwrap_or(false),
            deflate: self.deflate.flatten(),
        }
    }

    /// The origin policy in force.
    pub(crate) fn origin_policy(&self) -> &Origins {
        static SAME_HOST: Origins = Origins::SameHost;
        self.origins.as_ref().unwrap_or(&SAME_HOST)
    }

    /// Takes a place under every connection limit, or none if one is full.
    pub(crate) fn admit(&self) -> Option<Admission> {
        let mut taken = Vec::with_capacity(self.limits.len());
        for limit in &self.limits {
            if !limit.take() {
                // Dropping `taken` gives back the places already taken.
                return None;
            }
            taken.push(Place(limit.clone()));
        }
        Some(Admission(taken))
    }
}

/// A limit on open connections, shared by every request through the level that set it.
#[derive(Clone)]
struct ConnectionLimit(Arc<LimitState>);

struct LimitState {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionLimit {
    fn new(max: usize) -> Self {
        Self(Arc::new(LimitState {
            max,
            open: AtomicUsize::new(0),
        }))
    }

    fn take(&self) -> bool {
        self.0
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.0.max).then_some(open + 1)
            })
            .is_ok()
    }
}

impl PartialEq for ConnectionLimit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConnectionLimit {}

impl fmt::Debug for ConnectionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} open",
            self.0.open.load(Ordering::Relaxed),
            self.0.max
        )
    }
}

/// One place taken under a limit, given back when dropped.
struct Place(ConnectionLimit);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The places a connection holds under every limit; dropped when the connection ends (or the
/// handshake is refused), which frees them.
pub(crate) struct Admission(Vec<Place>);

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Admission({} limits)", self.0.len())
    }
}

/// permessage-deflate (RFC 7692): how messages are compressed on connections that negotiate
/// it. Turned on with [`Settings::deflate`]; a client that does not offer it (or offers
/// parameters Tachyon cannot honour) gets uncompressed messages, as without the setting.
///
/// ```
/// use tachyon::Settings;
/// use tachyon::settings::Deflate;
///
/// let settings = Settings::new().deflate(Deflate::new().threshold(512));
/// ```
///
/// What the server answers a browser's offer: `permessage-deflate; server_no_context_takeover;
/// client_no_context_takeover` (and the offer's `server_max_window_bits`, if it set one).
/// Without context takeover, each message is compressed on its own, so:
/// - an idle connection keeps no compressor and no decompressor: what compresses and inflates
///   is kept per runtime thread and shared by its connections, and a connection holds an
///   inflater only while a compressed message is arriving;
/// - a broadcast is compressed once for every member that negotiated it, and framed once.
///
/// Messages shorter than the [threshold](Self::threshold) go out uncompressed, and so does a
/// message that would not shrink. Incoming compressed messages are bounded by
/// [`Settings::max_message_size`] once inflated, and inflating stops at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Deflate {
    threshold: usize,
    level: u8,
    context_takeover: bool,
}

impl Deflate {
    /// The default of [`Self::threshold`]: 256 bytes.
    pub const DEFAULT_THRESHOLD: usize = 256;
    /// The default of [`Self::level`]: 1, the fastest.
    pub const DEFAULT_LEVEL: u32 = 1;

    /// Compression with the defaults: messages of 256 bytes and more, level 1, no context
    /// takeover.
    pub const fn new() -> Self {
        Self {
            threshold: Self::DEFAULT_THRESHOLD,
            level: 1,
            context_takeover: false,
        }
    }

    /// Messages shorter than `bytes` are sent uncompressed (compressing them costs more CPU
    /// than the bytes it saves). Default 256.
    pub const fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The compression level, from 1 (fastest) to 9 (smallest); values above 9 count as 9, and
    /// 0 as 1. Default 1.
    pub const fn level(mut self, level: u32) -> Self {
        self.level = match level {
            0 => 1,
            1..=9 => level as u8,
            _ => 9,
        };
        self
    }

    /// Keeps the compression context from one message to the next, in both directions, when
    /// the client allows it: repeated content then compresses much better, but every
    /// connection keeps a compressor and a decompressor for its whole life, idle or not
    /// (measured: 163 KiB per idle connection after one message, against 3.2 KiB without; see
    /// `BENCHMARKS.md`). Messages sent to a room are still compressed once, without the
    /// context (the connection's compressor then starts again). Default `false`.
    pub const fn context_takeover(mut self, keep: bool) -> Self {
        self.context_takeover = keep;
        self
    }

    pub(crate) fn min_size(&self) -> usize {
        self.threshold
    }

    pub(crate) fn compression_level(&self) -> u32 {
        u32::from(self.level)
    }

    pub(crate) fn keeps_context(&self) -> bool {
        self.context_takeover
    }
}

impl Default for Deflate {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings with every value decided, as one connection runs with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) write_buffer_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) queue_messages: usize,
    pub(crate) queue_bytes: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) expose_errors: bool,
    /// A handler that fails before `accept` gets a `500` saying why: in debug builds, unless
    /// `expose_errors(false)`, and wherever `expose_errors(true)`.
    pub(crate) explain_failures: bool,
    pub(crate) readable_rejections: bool,
    /// permessage-deflate, if on.
    pub(crate) deflate: Option<Deflate>,
}

impl<S> Layer<S> for Settings {
    type Service = SettingsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SettingsService {
            inner,
            settings: self.clone(),
        }
    }
}

/// The service of the [`Settings`] layer: it merges its settings over those of the layers
/// outside it, in the request's extensions, where the WebSocket routes read them.
#[derive(Debug, Clone)]
pub struct SettingsService<S> {
    inner: S,
    settings: Settings,
}

impl<S, B> Service<Request<B>> for SettingsService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let merged = match request.extensions().get::<Settings>() {
            Some(outer) => outer.clone().merge(&self.settings),
            None => self.settings.clone(),
        };
        request.extensions_mut().insert(merged);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inner_level_wins_setting_by_setting() {
        let app = Settings::new()
            .max_message_size(10)
            .keepalive_interval(None);
        let route = Settings::new().max_message_size(20);
        let config = app.merge(&route).resolve();
        assert_eq!(config.max_message_size, 20);
        assert_eq!(config.keepalive_interval, None);
        assert_eq!(config.max_frame_size, 20, "frames follow the message limit");
        assert_eq!(config.queue_messages, Settings::DEFAULT_QUEUE_MESSAGES);
    }

    #[test]
    fn deflate_is_set_and_unset_level_by_level() {
        let app = Settings::new().deflate(Deflate::new().threshold(10));
        assert_eq!(
            app.clone().merge(&Settings::new()).resolve().deflate,
            Some(Deflate::new().threshold(10))
        );
        assert_eq!(
            app.merge(&Settings::new().deflate(None)).resolve().deflate,
            None
        );
        assert_eq!(Deflate::new().level(0), Deflate::new().level(1));
        assert_eq!(Deflate::new().level(42), Deflate::new().level(9));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Settings::new().resolve();
        assert_eq!(config.write_buffer_size, 8192);
        assert_eq!(config.max_message_size, 1 << 20);
        assert_eq!(config.deflate, None);
        assert_eq!(config.keepalive_interval, Some(Duration::from_secs(20)));
        assert_eq!(config.idle_timeout, None);
    }
}
