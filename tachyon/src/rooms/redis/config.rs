//! How the rooms reach Redis ([`RedisConfig`]), and the URL with its password hidden for
//! errors, logs and `Debug`.

use std::fmt;
use std::time::Duration;

#[cfg(doc)] // for the links of the documentation
use crate::rooms::{Remote, Rooms, RoomsBuilder};

/// How [`Rooms`] reach Redis: give it to [`RoomsBuilder::redis`].
///
/// ```no_run
/// use std::time::Duration;
/// use tachyon::Rooms;
/// use tachyon::rooms::RedisConfig;
///
/// # async fn run() -> Result<(), tachyon::rooms::ClusterError> {
/// let rooms = Rooms::builder()
///     .redis(RedisConfig::new("redis://127.0.0.1:6379").prefix("chat"))
///     .await?; // fails at once, naming the URL, if Redis cannot be reached
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) heartbeat: Duration,
    pub(super) queue: usize,
    pub(super) queue_bytes: usize,
    pub(super) timeout: Duration,
}

/// A node's heartbeat lasts this many intervals (or longer: see [`RedisConfig::expiry`]).
const HEARTBEATS_TO_EXPIRE: u32 = 3;

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("heartbeat", &self.heartbeat)
            .field("queue", &self.queue)
            .field("queue_bytes", &self.queue_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Redis at `url` (`redis://[:password@]host[:port][/db]`; `rediss://` needs a TLS feature
    /// of the `redis` crate). Redis 6 or later (the link speaks RESP3).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tachyon".to_owned(),
            heartbeat: Duration::from_secs(5),
            queue: 4096,
            queue_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(2),
        }
    }

    /// What every key and channel name starts with (default `tachyon`): servers with the same
    /// prefix share rooms; another prefix makes a separate cluster on the same Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often a node tells Redis it is alive (default 5 s; between 10 ms and 1 hour). The
    /// members of a node that stopped without leaving (a crash, a lost network) disappear from
    /// [`Rooms::cluster_members`] once its heartbeat expires: see [`expiry`](Self::expiry).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.clamp(Duration::from_millis(10), Duration::from_secs(3600));
        self
    }

    /// How many broadcasts may wait to be published (default 4,096), and how many bytes they
    /// may hold together (default 64 MiB). A broadcast that finds the queue full reaches this
    /// server's members only and reports [`Remote::NotDelivered`]: memory stays bounded when
    /// Redis is slow.
    pub fn queue(mut self, messages: usize, bytes: usize) -> Self {
        self.queue = messages.max(1);
        self.queue_bytes = bytes.max(1);
        self
    }

    /// How long connecting, and each round trip, may take (default 2 s; between 10 ms and
    /// 60 s); longer counts as a lost link.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(10), Duration::from_secs(60));
        self
    }

    /// How long after its last heartbeat a node's members still count: three heartbeats, or a
    /// heartbeat and two timeouts if that is longer (a heartbeat may wait behind a slow round
    /// trip). 15 s with the defaults.
    pub fn expiry(&self) -> Duration {
        (self.heartbeat * HEARTBEATS_TO_EXPIRE).max(self.heartbeat + self.timeout * 2)
    }
}

/// The URL with its password hidden, for errors, logs and `Debug`.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    // A password may sit in the user part or in a query parameter (`redis+unix://...?pass=`).
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (user_part, host) = match address.rfind('@') {
        Some(at) => (Some(&address[..at]), &address[at + 1..]),
        None => (None, address),
    };
    let mut shown = format!("{scheme}://");
    if let Some(user_part) = user_part {
        match user_part.split_once(':') {
            Some((user, _)) => shown.push_str(&format!("{user}:***@")),
            None => shown.push_str(&format!("{user_part}@")),
        }
    }
    shown.push_str(host);
    if !query.is_empty() {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("pass")
                        || name.eq_ignore_ascii_case("password") =>
                {
                    format!("{name}=***")
                }
                _ => parameter.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&parameters.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_their_password() {
        let cases = [
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:secret@host", "redis://user:***@host"),
            ("redis://user@host", "redis://user@host"),
            ("redis://:pa/ss@host", "redis://:***@host"),
            (
                "redis+unix:///tmp/redis.sock?db=1&pass=secret",
                "redis+unix:///tmp/redis.sock?db=1&pass=***",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url secret", "(not a URL)"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
        let config = format!("{:?}", RedisConfig::new("redis://:secret@host"));
        assert!(
            config.contains(":***@host") && !config.contains("secret"),
            "{config}"
        );
    }
}
