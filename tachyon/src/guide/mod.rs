//! The guide: Tachyon feature by feature, with every example compiled.
//!
//! The [crate's front page](crate) gets an app running; these chapters say everything else. Each
//! is a module of its own (they hold no items, only text):
//!
//! 1. [Handlers and the handshake](handlers): path and query parameters, extractors and state,
//!    accepting, denying or closing before accept, what `#[websocket]` generates.
//! 2. [Messages, close codes and disconnects](messages): receiving and sending text, bytes and
//!    JSON, closing with a code, and the client leaving.
//! 3. [Connections](connections): [`Sender`](crate::Sender), the outbound queue,
//!    [`Settings`](crate::Settings), keepalive, graceful shutdown, memory.
//! 4. [Routers and plain axum](routers): prefixes, HTTP routes beside WebSockets, axum's own
//!    router and server.
//! 5. [Rooms](rooms): membership, broadcast, slow members, presence with member data, rooms
//!    across servers through Redis.
//! 6. [Resumable rooms](resuming): history, positions, catching up after a reconnect with no
//!    gap and no duplicate, the latest value on join, the guarantees.
//! 7. [Security and limits](security): origins, timeouts, connection limits, what bad input
//!    gets.
//! 8. [Errors, logging and metrics](errors): where errors go (`tracing`), the `500` before
//!    `accept`, the 1011 after it, the span of each connection, the `metrics` feature.
//! 9. [Testing](testing): axum-test clients for the happy path, refused handshakes and
//!    broadcasts.
//! 10. [Differences from the Python original](python).
//!
//! The [`websocket`](crate::websocket) attribute has its own reference: the path syntax, the
//! arguments, the options and what it generates.
//!
//! Examples here use only the dependencies the front page lists: axum is reached as
//! `tachyon::axum`.

#[doc = include_str!("handlers.md")]
pub mod handlers {}

#[doc = include_str!("messages.md")]
pub mod messages {}

#[doc = include_str!("connections.md")]
pub mod connections {}

#[doc = include_str!("routers.md")]
pub mod routers {}

#[doc = include_str!("rooms.md")]
pub mod rooms {}

#[doc = include_str!("resuming.md")]
pub mod resuming {}

#[doc = include_str!("security.md")]
pub mod security {}

#[doc = include_str!("errors.md")]
pub mod errors {}

#[doc = include_str!("testing.md")]
pub mod testing {}

#[doc = include_str!("python.md")]
pub mod python {}
