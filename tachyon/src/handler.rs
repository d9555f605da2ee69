//! What `#[websocket]` makes of a function: a [`WebSocketHandler`] to register (the function,
//! whose [`HandlerFuture`] return type ties it to its [`WebSocketRoute`]), and the return types a
//! handler may have ([`HandlerReturn`]).

use std::any::Any;
use std::fmt::{self, Display};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::routing::MethodRouter;

use crate::error::{Error, WebSocketDisconnect};

/// A function annotated with `#[websocket("/path")]`, ready to register.
///
/// Give the function itself to [`Tachyon::websocket`](crate::Tachyon::websocket) or
/// [`Router::websocket`](crate::WebSocketRouter::websocket). `Args` only tells the function's arity apart
/// and is inferred. In plain axum, use the route the attribute generates:
/// `axum::Router::new().route(handler::PATH, handler::route())`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be registered in an app whose state is `{S}`",
    label = "an argument of this handler needs a state the app does not have, or it is not a `#[websocket]` handler",
    note = "every extractor argument must work with the app's state `{S}`: a `State<T>` argument (see the signature above) needs the app built with `Tachyon::with_state(..)` holding a `T`, or `FromRef<{S}>` implemented for `T`",
    note = "a plain function needs `#[tachyon::websocket(\"/path\")]` on an `async fn` that takes a `tachyon::WebSocket`"
)]
pub trait WebSocketHandler<S, Args>: Sized {
    /// The route's path, in axum's syntax (`/ws/{room_id}`).
    const PATH: &'static str;

    /// The axum route: a `GET` that performs the handshake and runs the handler.
    fn method_router() -> MethodRouter<S>;
}

/// The route side of a `#[websocket]` handler, implemented by the attribute on the type named
/// like the function (`room::PATH`, `room::route()`). Not meant to be implemented by hand.
pub trait WebSocketRoute<S> {
    /// The route's path, in axum's syntax.
    const PATH: &'static str;

    /// The axum route.
    fn method_router() -> MethodRouter<S>;
}

/// The future a `#[websocket]` function returns when called directly: it resolves to the
/// function's own return value. `H` ties the function to its route.
#[must_use = "futures do nothing unless awaited"]
pub struct HandlerFuture<H, T> {
    future: Pin<Box<dyn Future<Output = T> + Send + 'static>>,
    route: PhantomData<fn() -> H>,
}

impl<H, T> HandlerFuture<H, T> {
    #[doc(hidden)]
    pub fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            future: Box::pin(future),
            route: PhantomData,
        }
    }
}

impl<H, T> Future for HandlerFuture<H, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.future.as_mut().poll(cx)
    }
}

impl<H, T> fmt::Debug for HandlerFuture<H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFuture")
            .field("handler", &std::any::type_name::<H>())
            .finish_non_exhaustive()
    }
}

macro_rules! impl_websocket_handler {
    ($($arg:ident),*) => {
        impl<F, H, T, S, $($arg,)*> WebSocketHandler<S, ($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> HandlerFuture<H, T>,
            H: WebSocketRoute<S>,
        {
            const PATH: &'static str = H::PATH;

            fn method_router() -> MethodRouter<S> {
                H::method_router()
            }
        }
    };
}

impl_websocket_handler!(A1);
impl_websocket_handler!(A1, A2);
impl_websocket_handler!(A1, A2, A3);
impl_websocket_handler!(A1, A2, A3, A4);
impl_websocket_handler!(A1, A2, A3, A4, A5);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13);
impl_websocket_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14);
impl_websocket_handler!(
    A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15
);
impl_websocket_handler!(
    A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16
);

/// An argument that axum can extract with state `S`. `#[websocket]` checks each extractor argument
/// against the handler's state (from its `State<T>` argument, or `state = T`), so that a mistake
/// is reported on the argument. Implemented for every `FromRequestParts<S>`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "handler argument `{Self}` cannot be extracted with this handler's state `{S}`",
    label = "not an extractor for state `{S}`",
    note = "the handler's state is `{S}` (from its `State<{S}>` argument or the attribute's `state = ..`): an argument that needs another state must get it from this one (implement `FromRef<{S}>` for it), or the handler must take the state the argument needs"
)]
pub trait Extractor<S> {}

impl<T, S> Extractor<S> for T where T: axum::extract::FromRequestParts<S> {}

/// The return types a `#[websocket]` handler may have: `()`, or `Result<(), E>` where `E`
/// displays (`tachyon::Result<()>`, `anyhow::Result<()>`, `Result<(), String>`...).
///
/// An `Err` after `accept` closes the connection with 1011 and the error text as the reason,
/// and is logged with `tracing` unless it is the client's disconnect. Before `accept` it answers
/// the handshake with `500`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a `#[websocket]` handler",
    label = "return `()` or `Result<(), E>` where `E: Display`",
    note = "`tachyon::Result<()>` lets the handler use `?` on every WebSocket operation"
)]
pub trait HandlerReturn: Send + 'static {
    /// `Ok` for success, or why the handler failed.
    ///
    /// # Errors
    /// The handler's error, as a [`Failure`].
    fn into_result(self) -> Result<(), Failure>;
}

impl HandlerReturn for () {
    fn into_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl<E> HandlerReturn for Result<(), E>
where
    E: Display + Send + 'static,
{
    fn into_result(self) -> Result<(), Failure> {
        self.map_err(|error| Failure {
            disconnect: is_disconnect(&error),
            message: error.to_string(),
        })
    }
}

/// Whether a handler's error is the connection ending: a [`Error::Disconnected`] or a
/// [`WebSocketDisconnect`], as is or inside a boxed error's chain of sources. Recognised by type,
/// never by its text.
fn is_disconnect(error: &(dyn Any + Send)) -> bool {
    if let Some(error) = error.downcast_ref::<Error>() {
        return error.is_disconnect();
    }
    if error.is::<WebSocketDisconnect>() {
        return true;
    }
    let boxed: Option<&(dyn std::error::Error + 'static)> =
        match error.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
            Some(boxed) => Some(&**boxed),
            None => error
                .downcast_ref::<Box<dyn std::error::Error + Send>>()
                .map(|boxed| &**boxed as &(dyn std::error::Error + 'static)),
        };
    let mut next = boxed;
    while let Some(error) = next {
        if error
            .downcast_ref::<Error>()
            .is_some_and(Error::is_disconnect)
            || error.is::<WebSocketDisconnect>()
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Why a handler failed: its error's text, and whether the error was the client disconnecting.
#[derive(Debug, Clone)]
pub struct Failure {
    message: String,
    disconnect: bool,
}

impl Failure {
    /// Whether the error was a [`WebSocketDisconnect`] (the client leaving, not a failure).
    pub fn is_disconnect(&self) -> bool {
        self.disconnect
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DisconnectKind;

    #[derive(Debug, thiserror::Error)]
    #[error("the chat loop ended")]
    struct Wrapper(#[source] Error);

    fn gone() -> Error {
        WebSocketDisconnect::new(DisconnectKind::ClientClosed, 1000, "bye").into()
    }

    /// Whether `result`, a handler's failure, counts as the connection ending.
    fn ended(result: impl HandlerReturn) -> bool {
        result
            .into_result()
            .err()
            .is_some_and(|failure| failure.is_disconnect())
    }

    #[test]
    fn a_disconnect_is_recognised_by_type_not_by_text() {
        let direct: Result<(), Error> = Err(gone());
        assert!(ended(direct));
        let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> =
            Err(Box::new(Wrapper(gone())));
        assert!(ended(boxed));
        // The same words in a string are not the disconnect.
        let text: Result<(), String> = Err(gone().to_string());
        assert!(!ended(text));
        let other: Result<(), Box<dyn std::error::Error + Send + Sync>> =
            Err("database is down".into());
        assert!(!ended(other));
    }
}
