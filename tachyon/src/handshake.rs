//! The handshake as the handler sees it: how to accept it ([`Accept`]), and the request's
//! parameters ([`Params`], from [`WebSocket::path_params`](crate::WebSocket::path_params) and
//! [`query_params`](crate::WebSocket::query_params)).
//!
//! Inside the crate: what the request said (`RequestHead`) and the decision that goes back to
//! the request (`Decision`); the request side that waits for that decision is in `endpoint`.

use std::mem;
use std::sync::OnceLock;

use axum::extract::OriginalUri;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::close::CloseCode;
use crate::connection::ConnectionId;
pub use crate::params::Params;

/// Options for [`WebSocket::accept_with`](crate::WebSocket::accept_with): a subprotocol and extra response headers.
///
/// ```
/// use tachyon::handshake::Accept;
/// use axum::http::{HeaderName, HeaderValue};
///
/// let accept = Accept::new()
///     .subprotocol("chat.v2")
///     .header(HeaderName::from_static("x-server"), HeaderValue::from_static("tachyon"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Accept {
    subprotocol: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Accept {
    /// A plain accept: no subprotocol, no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Selects `protocol`, which must be one the client offered
    /// ([`WebSocket::requested_subprotocols`](crate::WebSocket::requested_subprotocols)).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Adds a header to the `101 Switching Protocols` response.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn chosen_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    pub(crate) fn into_parts(self) -> (Option<String>, Vec<(HeaderName, HeaderValue)>) {
        (self.subprotocol, self.headers)
    }
}

/// What the handler decided about the handshake.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept(Accept),
    Reject(Response),
}

/// What the handshake request said, kept for the handler.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// The connection's id, drawn with the request so that the handler has it before `accept`.
    pub(crate) id: ConnectionId,
    pub(crate) uri: Uri,
    headers: Headers,
    pub(crate) path_params: Params,
    pub(crate) query_params: Params,
    /// The subprotocol the handler accepted with.
    pub(crate) subprotocol: Option<String>,
    /// `close` before `accept` completes the handshake and sends a close frame, not `403`.
    pub(crate) readable_rejections: bool,
}

/// The request's headers: as hyper parsed them while the handshake is open, then (an accepted
/// connection may live for days) packed into one allocation, and unpacked again only if the
/// handler asks for them.
#[derive(Debug)]
enum Headers {
    Parsed(HeaderMap),
    Packed {
        /// `name\nvalue\n` per header (neither may contain a newline), `!` before a sensitive
        /// value's name.
        packed: Box<[u8]>,
        unpacked: OnceLock<HeaderMap>,
    },
}

impl RequestHead {
    /// Keeps what the handler may read of the request, as owned copies: hyper's header values
    /// and URI share its read buffer, which would otherwise live as long as the connection.
    pub(crate) fn new(parts: &mut Parts, path_params: Params) -> Self {
        let uri = owned_uri(original_uri(parts));
        let query_params = uri.query().map(Params::from_query).unwrap_or_default();
        Self {
            id: ConnectionId::next(),
            uri,
            headers: Headers::Parsed(mem::take(&mut parts.headers)),
            path_params,
            query_params,
            subprotocol: None,
            readable_rejections: false,
        }
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        match &self.headers {
            Headers::Parsed(headers) => headers,
            Headers::Packed { packed, unpacked } => unpacked.get_or_init(|| unpack(packed)),
        }
    }

    /// Packs the headers: hyper's header values share its read buffer, which would otherwise
    /// live as long as the connection, and a `HeaderMap` costs far more than its bytes.
    pub(crate) fn compact(&mut self) {
        if let Headers::Parsed(headers) = &self.headers {
            self.headers = Headers::Packed {
                packed: pack(headers),
                unpacked: OnceLock::new(),
            };
        }
    }

    pub(crate) fn requested_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|protocol| !protocol.is_empty())
    }
}

/// The `403` sent when a handler closes before accepting.
pub(crate) fn rejected_by_close(code: CloseCode, reason: &str) -> Response {
    let mut body = format!("WebSocket connection rejected by the server (close code {code}");
    if !reason.is_empty() {
        body.push_str(": ");
        body.push_str(reason);
    }
    body.push(')');
    (StatusCode::FORBIDDEN, body).into_response()
}

fn pack(headers: &HeaderMap) -> Box<[u8]> {
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 3)
        .sum();
    let mut packed = Vec::with_capacity(size);
    for (name, value) in headers {
        if value.is_sensitive() {
            packed.push(b'!');
        }
        packed.extend_from_slice(name.as_str().as_bytes());
        packed.push(b'\n');
        packed.extend_from_slice(value.as_bytes());
        packed.push(b'\n');
    }
    packed.into_boxed_slice()
}

fn unpack(packed: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut lines = packed.split(|byte| *byte == b'\n');
    while let (Some(name), Some(value)) = (lines.next(), lines.next()) {
        let (sensitive, name) = match name.strip_prefix(b"!") {
            Some(name) => (true, name),
            None => (false, name),
        };
        // Both were valid when packed; a failure here would be a bug, and drops one header.
        if let (Ok(name), Ok(mut value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            value.set_sensitive(sensitive);
            headers.append(name, value);
        }
    }
    headers
}

fn owned_uri(uri: Uri) -> Uri {
    Uri::from_maybe_shared(axum::body::Bytes::from(uri.to_string())).unwrap_or(uri)
}

/// The request's URI as the client sent it: `axum::Router::nest` strips its prefix from
/// `parts.uri`, and keeps the original in an extension.
pub(crate) fn original_uri(parts: &Parts) -> Uri {
    parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.clone(), |original| original.0.clone())
}

/// `426 Upgrade Required`, for a plain HTTP request to a WebSocket route.
pub(crate) fn upgrade_required(path: &str) -> Response {
    let body = format!(
        "`{path}` is a WebSocket endpoint: connect with a WebSocket client (this request has no \
         `Upgrade: websocket` header)"
    );
    (
        StatusCode::UPGRADE_REQUIRED,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
        ],
        body,
    )
        .into_response()
}
