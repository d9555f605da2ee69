//! The link's connection to Redis: a RESP3 client, the connection with its push handler, and
//! round trips bounded by the timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind,
};
use tokio::sync::{Notify, mpsc};

use crate::connection::this_process;

use super::keys::Keys;
use super::state::{BoxError, LinkState};

/// A client for `url` that speaks RESP3, so that one connection carries commands and
/// subscriptions.
pub(super) fn resp3_client(url: &str) -> redis::RedisResult<Client> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// The link's connection to Redis, and the flag its push handler raises when it closes.
pub(super) struct Connection {
    pub(super) commands: MultiplexedConnection,
    lost: Arc<Lost>,
}

#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    notify: Notify,
}

impl Connection {
    /// Connects, and subscribes to this process's channel. What other nodes publish goes to
    /// `inbox` (bounded: when it is full, a message is dropped and counted).
    pub(super) async fn open(
        client: &Client,
        state: &Arc<LinkState>,
        keys: &Keys,
        inbox: &mpsc::Sender<PushInfo>,
    ) -> Result<Self, BoxError> {
        let lost = Arc::new(Lost::default());
        let push = {
            let (lost, inbox, state) = (Arc::clone(&lost), inbox.clone(), Arc::clone(state));
            move |info: PushInfo| -> Result<(), ()> {
                match info.kind {
                    PushKind::Message => {
                        let full = inbox.try_send(info).is_err();
                        state
                            .inbound_dropped
                            .fetch_add(usize::from(full), Ordering::Relaxed);
                    }
                    PushKind::Disconnection => {
                        lost.flag.store(true, Ordering::Release);
                        lost.notify.notify_one();
                    }
                    _ => {}
                }
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(state.timeout))
            .set_response_timeout(Some(state.timeout))
            .set_push_sender(push);
        let mut commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        within(
            state.timeout,
            commands.subscribe(keys.process(this_process())),
        )
        .await?;
        Ok(Self { commands, lost })
    }

    pub(super) async fn lost(&self) {
        while !self.lost.flag.load(Ordering::Acquire) {
            self.lost.notify.notified().await;
        }
    }
}

/// `future`'s result, or a timeout error.
pub(super) async fn within<T, E: Into<BoxError>>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))),
    }
}
