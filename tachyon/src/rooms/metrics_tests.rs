//! What the rooms record with the `metrics` feature, read back from a real recorder: the room
//! and membership gauges, broadcasts, deliveries and slow members, resumes. Each test records
//! into a recorder of its own ([`metrics::with_local_recorder`], on the test's thread; async
//! code runs on a current-thread runtime inside it, so every task records there too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use super::{History, Position, Recovery, Rooms, SlowMember};
use crate::connection::{ConnectionId, Shared};
use crate::metrics::{
    BROADCAST_DURATION, BROADCASTS, ConnectionMetrics, DELIVERIES, RESUMES, ROOM_MEMBERS, ROOMS,
    SLOW_MEMBERS,
};
use crate::sender::Sender;
use crate::settings::Settings;

/// What a recorder was given, summed over every snapshot (a snapshot of the debugging
/// recorder hands each counter's and gauge's value out and sets it back to 0).
struct Recorded {
    snapshotter: Snapshotter,
    /// Counters and gauges by `name{label=value,...}`; histograms by how many samples.
    values: BTreeMap<String, f64>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            values: BTreeMap::new(),
        }
    }

    /// The value of `name` with exactly `labels`, as recorded so far (0 if never).
    fn get(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(count) => count as f64,
                DebugValue::Gauge(value) => value.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            *self.values.entry(name).or_default() += value;
        }
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{name}{{{}}}", labels.join(","));
        self.values.get(&key).copied().unwrap_or_default()
    }

    /// `tachyon_rooms` and `tachyon_room_members`.
    fn gauges(&mut self) -> (f64, f64) {
        (self.get(ROOMS, &[]), self.get(ROOM_MEMBERS, &[]))
    }

    /// Broadcasts, deliveries, fan-out time samples, slow members dropped and closed.
    fn broadcasts(&mut self) -> [f64; 5] {
        [
            self.get(BROADCASTS, &[]),
            self.get(DELIVERIES, &[]),
            self.get(BROADCAST_DURATION, &[]),
            self.get(SLOW_MEMBERS, &[("action", "dropped")]),
            self.get(SLOW_MEMBERS, &[("action", "closed")]),
        ]
    }

    /// Resumes recovered and not.
    fn resumes(&mut self) -> (f64, f64) {
        (
            self.get(RESUMES, &[("outcome", "recovered")]),
            self.get(RESUMES, &[("outcome", "not_recovered")]),
        )
    }
}

/// A connection's sender, with no socket and nobody reading its queue of `queue` messages.
fn member(queue: usize) -> Sender {
    let config = Settings::new().queue_messages(queue).resolve();
    let shared = Shared::new(
        &config,
        ConnectionId::next(),
        None,
        None,
        ConnectionMetrics::new("/test"),
    );
    Sender::new(shared)
}

/// Runs `test` with a recorder of its own.
fn recording(test: impl FnOnce(&mut Recorded)) {
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(&recorder);
    metrics::with_local_recorder(&recorder, || test(&mut recorded));
}

/// Runs the async `test` on a current-thread runtime, with a recorder of its own.
fn recording_async<F: Future<Output = ()>>(test: impl FnOnce(Recorded) -> F) {
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), test(recorded))
                .await
                .expect("the test to end within 10 s");
        });
    });
}

#[test]
fn the_room_gauges_follow_every_way_in_and_out_and_return_to_zero() {
    recording(|recorded| {
        let rooms = Rooms::new();
        let (a, b, c) = (member(8), member(8), member(8));
        rooms.join("lobby", &a).unwrap();
        rooms.join("news", &a).unwrap();
        rooms.join("lobby", &b).unwrap();
        rooms.join("lobby", &b).unwrap(); // joining twice is joining once
        rooms.join("games", &c).unwrap();
        rooms.join("lobby", &c).unwrap();
        assert_eq!(recorded.gauges(), (3.0, 5.0));

        // A leave, and a leave of a room it is not in.
        assert!(rooms.leave("news", a.id()));
        assert!(!rooms.leave("news", a.id()));
        assert_eq!(recorded.gauges(), (2.0, 4.0));

        // Every room at once.
        assert_eq!(rooms.leave_all(c.id()).len(), 2);
        assert!(rooms.leave_all(c.id()).is_empty());
        assert_eq!(recorded.gauges(), (1.0, 2.0));

        // Its connection ends: it leaves by itself.
        b.close(1000, "bye").unwrap();
        assert_eq!(recorded.gauges(), (1.0, 1.0));

        // The room is closed: its members leave as their connections end.
        rooms.join("news", &a).unwrap();
        assert_eq!(recorded.gauges(), (2.0, 2.0));
        assert_eq!(rooms.close_room("lobby", 4000, "closed").unwrap(), 1);
        assert_eq!(recorded.gauges(), (0.0, 0.0));
        assert!(rooms.room_names().is_empty());

        // A connection that ended before it joined is out at once.
        rooms.join("lobby", &a).unwrap();
        assert_eq!(recorded.gauges(), (0.0, 0.0));
    });
}

#[test]
fn rooms_dropped_with_members_leave_the_gauges() {
    recording(|recorded| {
        let (a, b) = (member(8), member(8));
        let rooms = Rooms::new();
        rooms.join("lobby", &a).unwrap();
        rooms.join("news", &a).unwrap();
        rooms.join("lobby", &b).unwrap();
        let other = Rooms::new();
        other.join("lobby", &b).unwrap();
        assert_eq!(recorded.gauges(), (3.0, 4.0));
        drop(rooms);
        assert_eq!(recorded.gauges(), (1.0, 1.0));
        // The end hooks of the first rooms find nothing left to count.
        a.close(1000, "").unwrap();
        b.close(1000, "").unwrap();
        assert_eq!(recorded.gauges(), (0.0, 0.0));
        drop(other);
        assert_eq!(recorded.gauges(), (0.0, 0.0));
    });
}

#[test]
fn broadcasts_and_deliveries_are_counted_once_each() {
    recording(|recorded| {
        let rooms = Rooms::new();
        let members = [member(64), member(64), member(64)];
        for member in &members {
            rooms.join("lobby", member).unwrap();
        }
        assert_eq!(rooms.to("lobby").send("one").reached(), 3);
        assert_eq!(recorded.broadcasts(), [1.0, 3.0, 1.0, 0.0, 0.0]);

        let delivery = rooms.to("lobby").except(members[0].id()).send("two");
        assert_eq!(delivery.reached(), 2);
        rooms.to("lobby").send_json(&["three"]).unwrap();
        rooms.to("lobby").send_with(|_| "four");
        assert_eq!(recorded.broadcasts(), [4.0, 11.0, 4.0, 0.0, 0.0]);

        // A room without members here: a broadcast reaching no one.
        assert_eq!(rooms.to("empty").send("five").reached(), 0);
        assert_eq!(recorded.broadcasts(), [5.0, 11.0, 5.0, 0.0, 0.0]);

        // To one member; to a connection in no room, nothing is sent, nothing counted.
        assert_eq!(rooms.send_to(members[1].id(), "six").reached(), 1);
        assert_eq!(rooms.send_to(ConnectionId::next(), "seven").reached(), 0);
        assert_eq!(recorded.broadcasts(), [6.0, 12.0, 6.0, 0.0, 0.0]);
    });
}

#[test]
fn slow_members_are_counted_by_what_the_policy_did() {
    recording(|recorded| {
        let rooms = Rooms::new();
        let (fast, slow) = (member(64), member(1));
        rooms.join("lobby", &fast).unwrap();
        rooms.join("lobby", &slow).unwrap();
        // The slow member's queue takes one message, then is full.
        let delivery = rooms.to("lobby").policy(SlowMember::Drop).send("one");
        assert_eq!((delivery.reached(), delivery.dropped()), (2, 0));
        let delivery = rooms.to("lobby").policy(SlowMember::Drop).send("two");
        assert_eq!((delivery.reached(), delivery.dropped()), (1, 1));
        assert_eq!(recorded.broadcasts(), [2.0, 3.0, 2.0, 1.0, 0.0]);

        // Closed, it is out of the room, and the next broadcast no longer meets it.
        let delivery = rooms.to("lobby").send("three");
        assert_eq!((delivery.reached(), delivery.closed()), (1, 1));
        assert!(slow.is_closed());
        assert_eq!(rooms.to("lobby").send("four").reached(), 1);
        assert_eq!(recorded.broadcasts(), [4.0, 5.0, 4.0, 1.0, 1.0]);
        assert_eq!(recorded.gauges(), (1.0, 1.0));

        // Also a message to one member.
        let slow = member(1);
        rooms.join("lobby", &slow).unwrap();
        assert_eq!(rooms.send_to(slow.id(), "five").reached(), 1);
        assert_eq!(rooms.send_to(slow.id(), "six").closed(), 1);
        assert_eq!(recorded.broadcasts(), [6.0, 6.0, 6.0, 1.0, 2.0]);
    });
}

#[test]
fn a_broadcast_that_waits_is_counted_once_it_reached_everyone() {
    recording_async(|mut recorded| async move {
        let rooms = Rooms::builder().history(History::messages(8)).build();
        let (a, b) = (member(64), member(64));
        rooms.join("lobby", &a).unwrap();
        rooms.join("lobby", &b).unwrap();
        let delivery = rooms.to("lobby").send_waiting("one").await;
        assert_eq!(delivery.reached(), 2);
        let delivery = rooms.to("lobby").except(a.id()).send_waiting("two").await;
        assert_eq!(delivery.reached(), 1);
        let delivery = rooms.to("lobby").send_confirmed(|_| "three").await.unwrap();
        assert_eq!(delivery.reached(), 2);
        assert_eq!(recorded.broadcasts(), [3.0, 5.0, 3.0, 0.0, 0.0]);
    });
}

#[test]
fn resumes_are_counted_recovered_or_not_and_fresh_joins_are_not_resumes() {
    recording_async(|mut recorded| async move {
        let rooms = Rooms::builder().history(History::messages(2)).build();
        let first = rooms.to("lobby").send("one").position().unwrap();
        for text in ["two", "three", "four"] {
            rooms.to("lobby").send(text);
        }

        // No position: a first join, no resume.
        let recovery = rooms.join_since("lobby", &member(64), None).await.unwrap();
        assert!(!recovery.is_recovered());
        assert_eq!(recorded.resumes(), (0.0, 0.0));

        // From the second message: the log still holds what came after it.
        let second = Position::new(first.epoch(), first.offset() + 1);
        let resumer = member(64);
        let recovery = rooms.join_since("lobby", &resumer, Some(second));
        assert!(matches!(
            recovery.await.unwrap(),
            Recovery::Recovered { missed: 2 }
        ));
        assert_eq!(recorded.resumes(), (1.0, 0.0));

        // From the first: aged out. From another epoch. A room without history.
        let recovery = rooms.join_since("lobby", &member(64), Some(first)).await;
        assert!(!recovery.unwrap().is_recovered());
        let elsewhere = Position::new(first.epoch() ^ 1, 0);
        let recovery = rooms
            .join_since("lobby", &member(64), Some(elsewhere))
            .await;
        assert!(!recovery.unwrap().is_recovered());
        let plain = Rooms::new();
        let recovery = plain.join_since("lobby", &member(64), Some(second)).await;
        assert!(!recovery.unwrap().is_recovered());
        assert_eq!(recorded.resumes(), (1.0, 3.0));

        // Already in the room: nothing replayed, so not recovered.
        let again = member(64);
        rooms.join("lobby", &again).unwrap();
        let recovery = rooms.join_since("lobby", &again, Some(second)).await;
        assert!(!recovery.unwrap().is_recovered());
        assert_eq!(recorded.resumes(), (1.0, 4.0));
    });
}
