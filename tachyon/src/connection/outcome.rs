//! How a handler ended, what is logged about it, and the close frame it calls for.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::close::CloseCode;
use crate::error::WebSocketDisconnect;
use crate::handler::Failure;

/// How a handler ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Completed,
    Failed(Failure),
    Panicked(String),
}

impl Outcome {
    pub(crate) fn new(result: std::thread::Result<Result<(), Failure>>) -> Self {
        match result {
            Ok(Ok(())) => Self::Completed,
            Ok(Err(failure)) => Self::Failed(failure),
            Err(payload) => Self::Panicked(panic_message(payload.as_ref()).to_owned()),
        }
    }

    /// The answer to a handshake the handler never decided: `403` if it returned, `500` if it
    /// failed or panicked. The error is logged; the `500`'s body says what it was only if
    /// `explain` (a debug build, or `expose_errors`).
    pub(crate) fn before_accept(self, uri: &Uri, explain: bool) -> Response {
        self.log(uri, None);
        let why = match &self {
            Self::Completed => {
                return (
                    StatusCode::FORBIDDEN,
                    "WebSocket connection rejected: the handler returned without accepting it",
                )
                    .into_response();
            }
            Self::Failed(failure) if explain => Some(failure.to_string()),
            Self::Panicked(message) if explain => Some(format!("it panicked: {message}")),
            Self::Failed(_) | Self::Panicked(_) => None,
        };
        let failed = "the WebSocket handler failed before accepting the connection";
        let body = match why {
            Some(why) => format!(
                "{failed}: {why}\n(this text is sent in debug builds and with \
                 `Settings::expose_errors(true)`; it is also logged through `tracing`)"
            ),
            None => format!("{failed}; the server's log says why"),
        };
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }

    /// Logs a failure: as an error, unless the connection ending is what ended the handler.
    pub(crate) fn log(&self, uri: &Uri, gone: Option<&WebSocketDisconnect>) {
        match self {
            Self::Completed => {}
            // The connection ending, returned as is (or in a boxed error): not a failure of the
            // handler.
            Self::Failed(failure) if failure.is_disconnect() => {
                let code = gone.map(|disconnect| disconnect.code);
                tracing::debug!(
                    path = %uri.path(),
                    code,
                    ending = %failure,
                    "WebSocket client disconnected"
                );
            }
            Self::Failed(failure) => {
                tracing::error!(path = %uri.path(), error = %failure, "WebSocket handler failed");
            }
            Self::Panicked(message) => {
                tracing::error!(path = %uri.path(), panic = %message, "WebSocket handler panicked");
            }
        }
    }

    /// The close frame for an accepted connection: 1000 after success, 1011 after a failure or a
    /// panic, with a generic reason unless `expose_errors` (then the error text).
    pub(crate) fn close_frame(&self, expose_errors: bool) -> (CloseCode, String) {
        match self {
            Self::Completed => (CloseCode::NORMAL, String::new()),
            Self::Failed(failure) if expose_errors => {
                (CloseCode::INTERNAL_ERROR, failure.to_string())
            }
            Self::Failed(_) | Self::Panicked(_) => {
                (CloseCode::INTERNAL_ERROR, "internal error".to_owned())
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a panic without a message"
    }
}
