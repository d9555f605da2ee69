//! The handshake as the handler sees it: what the request said ([`RequestHead`]), how to accept
//! it ([`Accept`]), and the decision that goes back to the request ([`Decision`]). The request
//! side that waits for that decision is in `endpoint`.

use axum::extract::OriginalUri;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::close::CloseCode;
use crate::params::Params;

/// Options for [`WebSocket::accept_with`](crate::WebSocket::accept_with): a subprotocol and extra response headers.
///
/// ```
/// use tachyon::Accept;
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
    headers: HeaderMap,
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
        self.headers.append(name, value);
        self
    }

    pub(crate) fn chosen_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    pub(crate) fn into_parts(self) -> (Option<String>, HeaderMap) {
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
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) path_params: Params,
    pub(crate) query_params: Params,
}

impl RequestHead {
    /// Keeps what the handler may read of the request, as owned copies: hyper's header values
    /// and URI share its read buffer, which would otherwise live as long as the connection.
    pub(crate) fn new(parts: &Parts, path_params: Params) -> Self {
        let uri = owned_uri(original_uri(parts));
        let query_params = uri.query().map(Params::from_query).unwrap_or_default();
        Self {
            uri,
            headers: owned_headers(&parts.headers),
            path_params,
            query_params,
        }
    }

    pub(crate) fn requested_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.headers
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

fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            owned.append(name.clone(), copy);
        }
    }
    owned
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
