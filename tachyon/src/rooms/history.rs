//! What a room keeps of its broadcasts so that a member that comes back can catch up: the
//! [`History`] policy, the [`Position`] of each broadcast, and the [`Recovery`] a resuming join
//! reports. The rooms hold one [`Log`] per room with history, in this process; through Redis,
//! the log is a Redis stream instead.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::message::Message;

/// What a room keeps of its broadcasts, for members that come back
/// ([`Rooms::join_since`](super::Rooms::join_since)) and, with [`latest`](Self::latest), for
/// members that arrive: the newest messages, bounded by count, bytes and age (whichever bound
/// is reached first drops the oldest).
///
/// ```
/// use std::time::Duration;
/// use tachyon::rooms::History;
///
/// let chat = History::messages(100).bytes(256 * 1024).age(Duration::from_secs(120));
/// let ticker = History::latest(); // the newest message only, sent to every member that joins
/// # let _ = (chat, ticker);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct History {
    messages: usize,
    bytes: usize,
    age: Option<Duration>,
    latest: bool,
}

impl History {
    /// The default bound in bytes of one room's history: 1 MiB.
    pub const DEFAULT_BYTES: usize = 1024 * 1024;
    /// The default bound in age of [`History::messages`]: 5 minutes. [`History::latest`] keeps
    /// its message until a newer one comes, unless given an age.
    pub const DEFAULT_AGE: Duration = Duration::from_secs(300);

    /// Keeps the newest `messages` broadcasts of the room (at least 1), and at most
    /// [`DEFAULT_BYTES`](Self::DEFAULT_BYTES) of them, for [`DEFAULT_AGE`](Self::DEFAULT_AGE).
    pub fn messages(messages: usize) -> Self {
        Self {
            messages: messages.max(1),
            bytes: Self::DEFAULT_BYTES,
            age: Some(Self::DEFAULT_AGE),
            latest: false,
        }
    }

    /// Keeps the newest message only, and sends it to every member that joins the room
    /// (before any later broadcast): a ticker, a dashboard, a "current state" room. A member
    /// resuming with [`Rooms::join_since`](super::Rooms::join_since) that is already up to
    /// date gets nothing again.
    pub fn latest() -> Self {
        Self {
            messages: 1,
            bytes: Self::DEFAULT_BYTES,
            age: None,
            latest: true,
        }
    }

    /// At most `bytes` of messages together (their payloads; at least 1). A message larger
    /// than this is sent, and gets its position, but is not kept.
    pub fn bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes.max(1);
        self
    }

    /// Messages older than `age` are dropped (at least 1 ms). A room whose messages have all
    /// aged out and that has no members here is forgotten, with its epoch.
    pub fn age(mut self, age: Duration) -> Self {
        self.age = Some(age.max(Duration::from_millis(1)));
        self
    }

    /// The most messages kept.
    pub fn max_messages(&self) -> usize {
        self.messages
    }

    /// The most bytes kept.
    pub fn max_bytes(&self) -> usize {
        self.bytes
    }

    /// How long a message is kept, if that is bounded.
    pub fn max_age(&self) -> Option<Duration> {
        self.age
    }

    /// Whether the newest message is sent to every member that joins.
    pub fn sends_latest(&self) -> bool {
        self.latest
    }
}

/// Where a broadcast sits in its room's history: an offset (one more per message in the room,
/// the first is 1) and an epoch (names one unbroken history: it changes when the history was
/// lost, after a restart of an in-process room or a Redis that came back empty).
///
/// Give the client its text (`Display`, or `Serialize` as a string: 33 characters, always the
/// same length) and read it back with [`FromStr`] (or `Deserialize`) when it resumes. Text from
/// a client is untrusted: malformed text is a [`PositionError`], and a well-formed position the
/// room never issued (another room's, another epoch's, one from the future) is answered
/// [`NotRecovered`] by [`Rooms::join_since`](super::Rooms::join_since), never with another
/// room's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    epoch: u64,
    offset: u64,
}

impl Position {
    /// The length of a position's text.
    pub const TEXT_LEN: usize = 33;

    pub(crate) fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// The offset: one more per message in the room; 0 is "before the first message".
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The epoch: the same for every position of one unbroken history.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.epoch, self.offset)
    }
}

/// Text that is not a [`Position`]'s: a client sent something the server never wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a room position: expected the 33 characters of a position the server sent (`{{epoch}}-{{offset}}`, each 16 hex digits)"
)]
#[non_exhaustive]
pub struct PositionError;

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(text: &str) -> Result<Self, PositionError> {
        let hex = |part: &str| {
            if part.len() == 16 && part.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                u64::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        let (epoch, offset) = text.split_once('-').ok_or(PositionError)?;
        match (hex(epoch), hex(offset)) {
            (Some(epoch), Some(offset)) => Ok(Self { epoch, offset }),
            _ => Err(PositionError),
        }
    }
}

impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a resuming join ([`Rooms::join_since`](super::Rooms::join_since)) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Every message after the position was still in history: `missed` were queued for the
    /// member, in order, before any live one. Nothing was lost, nothing comes twice.
    Recovered {
        /// How many messages were replayed (0: the member was up to date).
        missed: usize,
    },
    /// Nothing was replayed: the member joined live, and the app should resync it (send the
    /// current state, or tell the client it missed messages).
    NotRecovered(NotRecovered),
}

impl Recovery {
    /// Whether the member caught up with no gap.
    pub fn is_recovered(&self) -> bool {
        matches!(self, Self::Recovered { .. })
    }

    /// How many messages were replayed.
    pub fn missed(&self) -> usize {
        match self {
            Self::Recovered { missed } => *missed,
            Self::NotRecovered(_) => 0,
        }
    }
}

/// Why a member could not catch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRecovered {
    /// The join gave no position (a first visit, or text that was not a position).
    NoPosition,
    /// The room keeps no history.
    NoHistory,
    /// Messages after the position are no longer in history (too many since, too large, too
    /// old).
    Expired,
    /// The position belongs to another history: the room's history was lost since (a restart,
    /// Redis emptied), or the position is another room's.
    OtherEpoch,
    /// The position is ahead of the room: it was never issued.
    Future,
    /// The connection was in the room already: it has been getting its messages all along.
    AlreadyJoined,
    /// The history could not be read (through Redis: the link is down, or Redis failed).
    Unavailable,
}

/// One room's history in this process.
#[derive(Debug)]
pub(crate) struct Log {
    policy: History,
    epoch: u64,
    /// The offset of the newest message (0 before the first).
    last: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    message: Message,
}

impl Log {
    pub(crate) fn new(policy: History, epoch: u64) -> Self {
        Self {
            policy,
            epoch,
            last: 0,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    pub(crate) fn policy(&self) -> &History {
        &self.policy
    }

    /// The position the next message gets.
    pub(crate) fn next(&self) -> Position {
        Position::new(self.epoch, self.last + 1)
    }

    /// Records `message` at [`next`](Self::next), then drops what the bounds no longer allow.
    pub(crate) fn push(&mut self, message: Message, now: Instant) {
        self.last += 1;
        self.bytes += message.len();
        self.entries.push_back(Entry {
            offset: self.last,
            at: now,
            message,
        });
        self.trim(now);
    }

    /// Drops the oldest messages while any bound is exceeded.
    pub(crate) fn trim(&mut self, now: Instant) {
        while let Some(oldest) = self.entries.front() {
            let too_old = self
                .policy
                .age
                .is_some_and(|age| now.saturating_duration_since(oldest.at) > age);
            if !(too_old
                || self.entries.len() > self.policy.messages
                || self.bytes > self.policy.bytes)
            {
                break;
            }
            self.bytes -= oldest.message.len();
            self.entries.pop_front();
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    /// The messages after `since`, oldest first, if the history still holds every one of them.
    pub(crate) fn since(
        &mut self,
        since: Position,
        now: Instant,
    ) -> Result<impl Iterator<Item = &Message>, NotRecovered> {
        self.trim(now);
        if since.epoch != self.epoch {
            return Err(NotRecovered::OtherEpoch);
        }
        if since.offset > self.last {
            return Err(NotRecovered::Future);
        }
        let first = self
            .entries
            .front()
            .map_or(self.last + 1, |entry| entry.offset);
        if since.offset + 1 < first {
            return Err(NotRecovered::Expired);
        }
        // Offsets in the log are contiguous, so the first to send is at a known index.
        let skip = usize::try_from(since.offset + 1 - first).unwrap_or(usize::MAX);
        Ok(self.entries.iter().skip(skip).map(|entry| &entry.message))
    }

    /// The newest message, if still kept.
    pub(crate) fn latest(&mut self, now: Instant) -> Option<&Message> {
        self.trim(now);
        self.entries.back().map(|entry| &entry.message)
    }

    /// Whether nothing is kept any longer (after trimming to `now`).
    pub(crate) fn is_spent(&mut self, now: Instant) -> bool {
        self.trim(now);
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn texts<'a>(messages: impl Iterator<Item = &'a Message>) -> Vec<String> {
        messages
            .map(|message| match message {
                Message::Text(text) => text.to_string(),
                Message::Binary(_) => "binary".to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_position_reads_back_from_its_text_and_nothing_else() {
        let position = Position::new(0x9f3a_c1d2_e4b5_a6f7, 42);
        let text = position.to_string();
        assert_eq!(text.len(), Position::TEXT_LEN);
        assert_eq!(text.parse::<Position>(), Ok(position));
        let json = serde_json::to_string(&position).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Position>(&json).expect("reads"),
            position
        );
        for bad in [
            "",
            "garbage",
            "42",
            "9f3ac1d2e4b5a6f7-",
            "9f3ac1d2e4b5a6f7-+00000000000002a",
            "9f3ac1d2e4b5a6f7-000000000000002a0",
            "9f3ac1d2e4b5a6f7_000000000000002a",
            "9f3ac1d2e4b5a6fé-000000000000002a",
            "-9f3ac1d2e4b5a6f7-00000000000002a",
        ] {
            assert_eq!(bad.parse::<Position>(), Err(PositionError), "{bad:?}");
        }
        assert!(serde_json::from_str::<Position>("\"garbage\"").is_err());
    }

    #[test]
    fn a_log_keeps_the_newest_within_each_bound() {
        let start = Instant::now();
        let mut by_count = Log::new(History::messages(3), 7);
        for n in 1..=5 {
            by_count.push(Message::from(format!("m{n}")), start);
        }
        let since = Position::new(7, 2);
        assert_eq!(
            texts(by_count.since(since, start).expect("kept")),
            ["m3", "m4", "m5"]
        );
        assert_eq!(
            by_count.since(Position::new(7, 1), start).err(),
            Some(NotRecovered::Expired)
        );
        assert_eq!(
            by_count.since(Position::new(7, 6), start).err(),
            Some(NotRecovered::Future)
        );
        assert_eq!(
            by_count.since(Position::new(8, 4), start).err(),
            Some(NotRecovered::OtherEpoch)
        );
        assert_eq!(
            by_count
                .since(Position::new(7, 5), start)
                .expect("up to date")
                .count(),
            0
        );

        let mut by_bytes = Log::new(History::messages(100).bytes(10), 1);
        for text in ["aaaa", "bbbb", "cccc"] {
            by_bytes.push(Message::from(text), start);
        }
        assert_eq!(
            texts(by_bytes.since(Position::new(1, 1), start).expect("kept")),
            ["bbbb", "cccc"]
        );
        by_bytes.push(Message::from("x".repeat(11)), start);
        assert!(
            by_bytes.is_spent(start),
            "a message over the bound is not kept"
        );
        assert_eq!(by_bytes.next().offset(), 5, "but it had its position");

        let age = Duration::from_secs(10);
        let mut by_age = Log::new(History::messages(100).age(age), 1);
        by_age.push(Message::from("old"), start);
        by_age.push(Message::from("new"), start + Duration::from_secs(6));
        let later = start + Duration::from_secs(11);
        assert_eq!(
            by_age.since(Position::new(1, 0), later).err(),
            Some(NotRecovered::Expired)
        );
        assert_eq!(
            texts(by_age.since(Position::new(1, 1), later).expect("kept")),
            ["new"]
        );
        assert!(by_age.is_spent(start + Duration::from_secs(17)));
    }
}
