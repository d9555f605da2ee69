//! What the Redis-backed rooms record with the `metrics` feature, read from a Prometheus
//! recorder: publishes that did not reach the other servers, the link coming back, broadcasts
//! from another server fanned out here, and resumes through Redis.
//!
//! Each test records into a recorder of its own (`metrics::with_local_recorder`, on the test's
//! thread), and runs on a current-thread runtime inside it, so the rooms' tasks (the link, the
//! hand-out of what other servers publish, the handlers) record there too. The harness starts
//! its own `redis-server` on loopback, as tests/redis.rs does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tachyon::rooms::{ClusterState, History, Remote};
use tachyon::{ConnectionId, Rooms};

use support::redis_server::RedisServer;
use support::resume::{config, join, node, split};
use support::{next_text, within};

/// Runs `test` on a current-thread runtime with a Prometheus recorder of its own.
fn recording<F: Future<Output = ()>>(test: impl FnOnce(PrometheusHandle) -> F) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    metrics::with_local_recorder(&recorder, || runtime.block_on(test(handle)));
}

/// The value of the sample `sample` (`name` or `name{label="value"}`) in the scrape; 0 if absent.
fn value(metrics: &PrometheusHandle, sample: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

async fn until_state(rooms: &Rooms, state: ClusterState) {
    within(&format!("the rooms to be {state:?}"), async {
        while rooms.cluster_state() != state {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn until_count(rooms: &Rooms, room: &str, count: usize) {
    within(&format!("{count} members in {room}"), async {
        while rooms.cluster_member_count(room).await.ok() != Some(count) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

const FAILED: &str = "tachyon_redis_publishes_failed_total";
const RECONNECTS: &str = "tachyon_redis_reconnects_total";

#[test]
fn publishes_redis_does_not_take_and_the_link_coming_back_are_counted() {
    recording(|metrics| async move {
        let mut redis = RedisServer::start().await;
        let rooms = within(
            "the rooms to reach Redis",
            Rooms::builder().redis(config(&redis)),
        )
        .await
        .expect("Redis-backed rooms");
        let recorded = within(
            "the rooms to reach Redis",
            Rooms::builder()
                .history(History::messages(8))
                .redis(config(&redis)),
        )
        .await
        .expect("Redis-backed rooms with history");
        let elsewhere: ConnectionId = "conn-000000000000000a-7".parse().expect("an id");

        assert_eq!(rooms.to("lobby").send("one").remote(), Remote::Sent);
        assert_eq!(recorded.to("lobby").send("one").remote(), Remote::Sent);
        // A question waits behind the broadcasts: once answered, Redis has taken them.
        until_count(&rooms, "lobby", 0).await;
        until_count(&recorded, "lobby", 0).await;
        assert_eq!(
            (value(&metrics, FAILED), value(&metrics, RECONNECTS)),
            (0.0, 0.0)
        );

        redis.stop().await;
        until_state(&rooms, ClusterState::Reconnecting).await;
        until_state(&recorded, ClusterState::Reconnecting).await;
        // A broadcast, a message to a connection of another server, a recorded broadcast.
        for text in ["two", "three"] {
            assert_eq!(rooms.to("lobby").send(text).remote(), Remote::NotDelivered);
        }
        assert_eq!(
            rooms.send_to(elsewhere, "four").remote(),
            Remote::NotDelivered
        );
        assert_eq!(
            recorded.to("lobby").send("five").remote(),
            Remote::NotDelivered
        );
        assert_eq!(value(&metrics, FAILED), 4.0);

        redis.restart().await;
        until_state(&rooms, ClusterState::Connected).await;
        until_state(&recorded, ClusterState::Connected).await;
        assert_eq!(value(&metrics, RECONNECTS), 2.0, "each link came back once");
        assert_eq!(rooms.to("lobby").send("six").remote(), Remote::Sent);
        assert_eq!(recorded.to("lobby").send("six").remote(), Remote::Sent);
        until_count(&rooms, "lobby", 0).await;
        until_count(&recorded, "lobby", 0).await;
        assert_eq!(value(&metrics, FAILED), 4.0);

        // Left the cluster: broadcasts stay here on purpose, and fail nothing.
        within("leaving the cluster", rooms.leave_cluster())
            .await
            .expect("left");
        assert_eq!(
            rooms.to("lobby").send("seven").remote(),
            Remote::NotDelivered
        );
        assert_eq!(value(&metrics, FAILED), 4.0);
    });
}

#[test]
fn broadcasts_from_another_server_and_resumes_through_redis_are_counted() {
    recording(|metrics| async move {
        let redis = RedisServer::start().await;
        let (a, b) = (
            node(&redis, History::messages(100)).await,
            node(&redis, History::messages(100)).await,
        );
        let (mut member, said) = join(&b, "lobby", None).await;
        assert_eq!(said, "not NoPosition");
        until_count(&a.rooms, "lobby", 1).await;
        assert_eq!(value(&metrics, "tachyon_room_members"), 1.0);
        assert_eq!(value(&metrics, "tachyon_rooms"), 1.0);

        // Made on `a`, which has no member in the room (and does not listen to it): fanned
        // out on `b` only, once it came back from Redis with its position.
        a.rooms
            .to("lobby")
            .send_with(|position| format!("{} one", position.unwrap()));
        let (first, body) = split(&next_text(&mut member).await);
        assert_eq!(body, "one");
        assert_eq!(value(&metrics, "tachyon_broadcasts_total"), 1.0);
        assert_eq!(value(&metrics, "tachyon_deliveries_total"), 1.0);
        drop(member);
        until_count(&a.rooms, "lobby", 0).await;

        // Back on `a`, after what it missed: recovered. From a position Redis never gave: not.
        a.rooms
            .to("lobby")
            .send_with(|position| format!("{} two", position.unwrap()));
        // The replay comes first, then what the handler says of the recovery.
        let (mut member, replayed) = join(&a, "lobby", Some(&first.to_string())).await;
        assert_eq!(split(&replayed).1, "two");
        assert_eq!(next_text(&mut member).await, "recovered 1");
        let (_other, said) = join(&b, "lobby", Some("00000000000000aa-0000000000000001")).await;
        assert!(said.starts_with("not "), "{said}");
        let resumes = |outcome| format!("tachyon_resumes_total{{outcome=\"{outcome}\"}}");
        assert_eq!(value(&metrics, &resumes("recovered")), 1.0);
        assert_eq!(value(&metrics, &resumes("not_recovered")), 1.0);
        until_count(&a.rooms, "lobby", 2).await;
        assert_eq!(value(&metrics, "tachyon_room_members"), 2.0);
        assert_eq!(value(&metrics, "tachyon_rooms"), 2.0, "one on each server");
    });
}
