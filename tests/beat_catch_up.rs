//! The missed-tick policies and the persisted schedule state, against a
//! real Redis. Time is passed in explicitly (`Beat::try_lead(now)`,
//! `Leader::tick(now)`), so a beat that was "down" for a minute takes no
//! minute to test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use spool_broker::{Priority, QueueName, Timestamp, decode_payload};
use spool_scheduler::beat::{Beat, BeatConfig, HEADER_ENTRY, HEADER_SCHEDULED_AT};
use spool_tests::TestRedis;

/// The arguments of `spool.echo`.
#[derive(Debug, serde::Deserialize)]
struct Echo {
    text: String,
}

/// Four entries every 10 s, one per policy, plus one with a 25 s window.
const ENTRIES: &str = r#"
    grace = "1s"

    [[entry]]
    name = "latest"
    task = "spool.echo"
    every = "10s"
    args = { text = "latest" }

    [[entry]]
    name = "all"
    task = "spool.echo"
    every = "10s"
    catch_up = "all"

    [[entry]]
    name = "skip"
    task = "spool.echo"
    every = "10s"
    catch_up = "skip"

    [[entry]]
    name = "windowed"
    task = "spool.echo"
    cron = "*/10 * * * * *"
    catch_up = "all"
    catch_up_window = "25s"
"#;

/// An entry added to the configuration later.
const FRESH: &str = r#"
    [[entry]]
    name = "fresh"
    task = "spool.ping"
    every = "10s"
    priority = "high"
"#;

/// Scheduled times (seconds after `base`) per entry, from the queue's
/// streams: what really was enqueued.
async fn enqueued(redis: &TestRedis, base: Timestamp) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for priority in Priority::ALL {
        for (_, envelope) in redis.stream_envelopes(&QueueName::DEFAULT, priority).await {
            let at: u64 = envelope.headers[HEADER_SCHEDULED_AT].parse().unwrap();
            let offset = (at - base.as_millis()) / 1000;
            assert_eq!(
                at,
                base.as_millis() + offset * 1000,
                "ticks fall on whole seconds"
            );
            out.entry(envelope.headers[HEADER_ENTRY].clone())
                .or_default()
                .push(offset);
        }
    }
    out
}

fn beat(redis: &TestRedis, owner: &str, toml: &str) -> Beat {
    let config = BeatConfig::from_toml(toml).unwrap();
    Beat::with_owner(redis.broker.clone(), config, owner.to_owned()).unwrap()
}

#[tokio::test]
async fn a_restarted_beat_resumes_from_redis_and_catches_up_by_policy() {
    let redis = TestRedis::new().await;
    // A whole minute, an hour ago: every schedule has a tick at base + 10 s.
    let base = Timestamp::from_millis((Timestamp::now().as_millis() / 60_000 - 60) * 60_000);
    let at = |ms: u64| Timestamp::from_millis(base.as_millis() + ms);

    // The first replica starts at 5 s and enqueues the 10 s tick of each.
    let first = beat(&redis, "first", ENTRIES);
    let mut leader = first.try_lead(at(5_000)).await.unwrap().unwrap();
    let pass = leader.tick(at(10_200)).await.unwrap();
    assert_eq!(pass.enqueued.len(), 4, "{pass:?}");
    assert_eq!((pass.missed, pass.duplicates, pass.deposed), (0, 0, false));
    leader.resign().await.unwrap();

    // No beat runs from 10.2 s to 65 s: 20..=60 s are missed (60 s is 5 s
    // late, past the 1 s grace). A new replica, with one more entry, takes
    // over at 65 s and reads where each entry stands from Redis.
    let second = beat(&redis, "second", &format!("{ENTRIES}{FRESH}"));
    let mut leader = second.try_lead(at(65_000)).await.unwrap().unwrap();
    let pass = leader.tick(at(65_000)).await.unwrap();
    // latest: 4 missed; all: 0; skip: 5; windowed: 2 (20, 30 s).
    assert_eq!(pass.missed, 4 + 5 + 2, "{pass:?}");
    let again = leader.tick(at(65_000)).await.unwrap();
    assert!(again.enqueued.is_empty() && again.missed == 0, "{again:?}");
    // Back to normal: the 70 s tick, on time, for every entry.
    let pass = leader.tick(at(70_400)).await.unwrap();
    assert_eq!(pass.enqueued.len(), 5, "{pass:?}");
    leader.resign().await.unwrap();

    // A third replica, restarted later at the same instant, fires nothing
    // twice, not even for a time that was already covered.
    let third = beat(&redis, "third", &format!("{ENTRIES}{FRESH}"));
    let mut leader = third.try_lead(at(70_600)).await.unwrap().unwrap();
    for now in [at(70_600), at(10_200), at(65_000)] {
        let pass = leader.tick(now).await.unwrap();
        assert!(pass.enqueued.is_empty(), "{pass:?}");
    }
    leader.resign().await.unwrap();

    let expected: BTreeMap<String, Vec<u64>> = [
        ("latest", vec![10, 60, 70]),
        ("all", vec![10, 20, 30, 40, 50, 60, 70]),
        ("skip", vec![10, 70]),
        ("windowed", vec![10, 40, 50, 60, 70]),
        // A new entry starts with its next tick, not with the past.
        ("fresh", vec![70]),
    ]
    .into_iter()
    .map(|(name, ticks)| (name.to_owned(), ticks))
    .collect();
    let mut got = enqueued(&redis, base).await;
    for ticks in got.values_mut() {
        ticks.sort_unstable();
    }
    assert_eq!(got, expected);

    // The state each replica resumed from.
    for (name, ticks) in &expected {
        let last = redis
            .broker
            .last_tick(&QueueName::DEFAULT, name)
            .await
            .unwrap();
        assert_eq!(last, Some(at(ticks[ticks.len() - 1] * 1000)), "{name}");
    }
    // Each task carries its entry's arguments and options.
    let high = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::High)
        .await;
    assert_eq!(high.len(), 1);
    assert_eq!(high[0].1.name, "spool.ping");
    let normal = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await;
    let latest = normal
        .iter()
        .find(|(_, e)| e.headers[HEADER_ENTRY] == "latest")
        .unwrap();
    let args: Echo = decode_payload(&latest.1.payload).unwrap();
    assert_eq!(args.text, "latest");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_long_outage_is_caught_up_in_bounded_passes() {
    let redis = TestRedis::new().await;
    let base = Timestamp::from_millis((Timestamp::now().as_millis() / 60_000 - 120) * 60_000);
    let at = |ms: u64| Timestamp::from_millis(base.as_millis() + ms);
    let toml = r#"
        [[entry]]
        name = "dense"
        task = "spool.ping"
        every = "1s"
        catch_up = "all"
        catch_up_window = "1h"
    "#;
    let beat = beat(&redis, "a", toml);
    let mut leader = beat.try_lead(at(0)).await.unwrap().unwrap();
    assert_eq!(leader.tick(at(1_000)).await.unwrap().enqueued.len(), 1);

    // Down for 2500 s: 2500 ticks are due, in passes of at most 1000.
    let mut passes = 0;
    let mut total = 0;
    loop {
        let pass = leader.tick(at(2_501_000)).await.unwrap();
        passes += 1;
        total += pass.enqueued.len();
        if !pass.more {
            break;
        }
    }
    assert_eq!((passes, total), (3, 2500));
    assert_eq!(
        redis.xlen(&QueueName::DEFAULT, Priority::Normal).await,
        2501
    );
    assert_eq!(
        redis
            .broker
            .last_tick(&QueueName::DEFAULT, "dense")
            .await
            .unwrap(),
        Some(at(2_501_000))
    );
    redis.cleanup().await;
}
