//! What Tachyon reports about itself, through the [`metrics`](https://docs.rs/metrics) crate's
//! facade: with the `metrics` feature on, Tachyon records the metrics below, and the app
//! installs the exporter it wants (Prometheus, StatsD, OpenTelemetry...). Install it before the
//! server takes connections: a connection looks its metrics up once, when it opens. With the
//! feature off, nothing here is compiled in but the names.
//!
//! ```toml
//! tachyon-ws = { version = "0.1", features = ["metrics"] }
//! metrics-exporter-prometheus = { version = "0.18", default-features = false }
//! ```
//!
//! ```rust,no_run
//! # #[tachyon::websocket("/ws")]
//! # async fn echo(mut ws: tachyon::WebSocket) -> tachyon::Result<()> { ws.accept().await }
//! use tachyon::axum::{Router, routing::get};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // First, before the server takes connections.
//! let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! let app = tachyon::Tachyon::new().websocket(echo).merge(Router::new().route(
//!     "/metrics",
//!     get(move || {
//!         prometheus.run_upkeep(); // drains the histograms' buckets
//!         std::future::ready(prometheus.render())
//!     }),
//! ));
//! app.serve("127.0.0.1:8000").await?;
//! # Ok(())
//! # }
//! ```
//!
//! (The tour example does exactly this: `cargo run --example tour`, then
//! <http://127.0.0.1:8000/metrics>.)
//!
//! A connection counts its messages and bytes itself and adds them to the counters within a
//! second (and when it closes): adding to counters shared by every connection at each message
//! cost the echo 2.5 % of its CPU. Everything else is counted when it happens.
//!
//! Labels stay bounded: `route` is the route's pattern as axum matched it (`/chat/{room}`,
//! with a router's prefix), never the request's path, a room's name or a peer. Close codes are
//! those of RFC 6455 and the 3000 – 4999 range an application may use.
//!
//! | Name | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `tachyon_connections` | gauge | `route` | open WebSocket connections (accepted, not yet closed) |
//! | `tachyon_handshakes_total` | counter | `route`, `outcome` (`accepted`, `refused`), `status` | handshakes answered: `101` (`200` over HTTP/2) when accepted, the HTTP status of the refusal otherwise (`403`, `426`, `503`...) |
//! | `tachyon_handshake_duration_seconds` | histogram | `route` | from the request reaching the route to the handshake's answer (the handler's decision included) |
//! | `tachyon_messages_received_total` | counter | `route` | text and binary messages received whole (control frames aside) |
//! | `tachyon_messages_sent_total` | counter | `route` | text and binary messages handed to the socket, broadcasts included |
//! | `tachyon_bytes_received_total` | counter | `route` | bytes read from the socket after the handshake (frames as on the wire: headers, compressed payloads, control frames) |
//! | `tachyon_bytes_sent_total` | counter | `route` | bytes written to the socket after the handshake, as on the wire |
//! | `tachyon_closes_total` | counter | `route`, `code`, `closed_by` (`client`, `server`, `network`) | connections that ended, by close code; `network`: no close frame (code `1006`) |
//! | `tachyon_connection_duration_seconds` | histogram | `route` | how long connections lived, from accept to close |
//! | `tachyon_keepalive_timeouts_total` | counter | `route` | connections closed (1011) because the client answered no ping |
//! | `tachyon_rooms` | gauge | | rooms with at least one member on this server |
//! | `tachyon_room_members` | gauge | | memberships on this server (a connection in three rooms counts three) |
//! | `tachyon_broadcasts_total` | counter | | fan-outs to this server's members: each broadcast (`send*`, `send_waiting`, `send_confirmed`) and [`Rooms::send_to`](crate::Rooms::send_to) made here, and each arriving from another server through Redis (one recorded in a Redis history counts when Redis hands it back); counted even if it reached no one |
//! | `tachyon_deliveries_total` | counter | | members on this server whose queue (or socket) took a broadcast ([`Delivery::reached`](crate::rooms::Delivery::reached)) |
//! | `tachyon_broadcast_duration_seconds` | histogram | | the time a broadcast takes to reach this server's members (the fan-out) |
//! | `tachyon_slow_members_total` | counter | `action` (`dropped`, `closed`) | members whose queue was full at a broadcast, by what the [`SlowMember`](crate::rooms::SlowMember) policy did (members found already closing are not counted) |
//! | `tachyon_redis_publishes_failed_total` | counter | | broadcasts and `send_to` messages Redis did not take: not queued (link down, publish budget or queue full), dropped with a lost link or a failed pipeline, or refused by Redis; none after `leave_cluster` |
//! | `tachyon_redis_reconnects_total` | counter | | times the link to Redis came back after being lost |
//! | `tachyon_resumes_total` | counter | `outcome` (`recovered`, `not_recovered`) | joins through [`Rooms::join_since`](crate::Rooms::join_since) with a position, by whether everything missed was replayed (a join without a position is not counted) |

/// `tachyon_connections`: see the [module](self)'s table.
pub const CONNECTIONS: &str = "tachyon_connections";
/// `tachyon_handshakes_total`: see the [module](self)'s table.
pub const HANDSHAKES: &str = "tachyon_handshakes_total";
/// `tachyon_handshake_duration_seconds`: see the [module](self)'s table.
pub const HANDSHAKE_DURATION: &str = "tachyon_handshake_duration_seconds";
/// `tachyon_messages_received_total`: see the [module](self)'s table.
pub const MESSAGES_RECEIVED: &str = "tachyon_messages_received_total";
/// `tachyon_messages_sent_total`: see the [module](self)'s table.
pub const MESSAGES_SENT: &str = "tachyon_messages_sent_total";
/// `tachyon_bytes_received_total`: see the [module](self)'s table.
pub const BYTES_RECEIVED: &str = "tachyon_bytes_received_total";
/// `tachyon_bytes_sent_total`: see the [module](self)'s table.
pub const BYTES_SENT: &str = "tachyon_bytes_sent_total";
/// `tachyon_closes_total`: see the [module](self)'s table.
pub const CLOSES: &str = "tachyon_closes_total";
/// `tachyon_connection_duration_seconds`: see the [module](self)'s table.
pub const CONNECTION_DURATION: &str = "tachyon_connection_duration_seconds";
/// `tachyon_keepalive_timeouts_total`: see the [module](self)'s table.
pub const KEEPALIVE_TIMEOUTS: &str = "tachyon_keepalive_timeouts_total";
/// `tachyon_rooms`: see the [module](self)'s table.
pub const ROOMS: &str = "tachyon_rooms";
/// `tachyon_room_members`: see the [module](self)'s table.
pub const ROOM_MEMBERS: &str = "tachyon_room_members";
/// `tachyon_broadcasts_total`: see the [module](self)'s table.
pub const BROADCASTS: &str = "tachyon_broadcasts_total";
/// `tachyon_deliveries_total`: see the [module](self)'s table.
pub const DELIVERIES: &str = "tachyon_deliveries_total";
/// `tachyon_broadcast_duration_seconds`: see the [module](self)'s table.
pub const BROADCAST_DURATION: &str = "tachyon_broadcast_duration_seconds";
/// `tachyon_slow_members_total`: see the [module](self)'s table.
pub const SLOW_MEMBERS: &str = "tachyon_slow_members_total";
/// `tachyon_redis_publishes_failed_total`: see the [module](self)'s table.
pub const REDIS_PUBLISHES_FAILED: &str = "tachyon_redis_publishes_failed_total";
/// `tachyon_redis_reconnects_total`: see the [module](self)'s table.
pub const REDIS_RECONNECTS: &str = "tachyon_redis_reconnects_total";
/// `tachyon_resumes_total`: see the [module](self)'s table.
pub const RESUMES: &str = "tachyon_resumes_total";

#[cfg(feature = "metrics")]
mod record;
#[cfg(not(feature = "metrics"))]
#[path = "metrics/off.rs"]
mod record;

pub(crate) use record::{
    Broadcast, ConnectionMetrics, Direct, Handshake, Open, Tally, member_joined, member_left,
    resumed, room_closed, room_opened,
};
#[cfg(feature = "redis")]
pub(crate) use record::{redis_publish_failed, redis_reconnected};

/// How a connection ended, for `closed_by`: the client's close frame, the server's, or neither.
pub(crate) fn closed_by(kind: crate::error::DisconnectKind) -> &'static str {
    use crate::error::DisconnectKind;
    match kind {
        DisconnectKind::ClientClosed => "client",
        DisconnectKind::ConnectionLost => "network",
        _ => "server",
    }
}
