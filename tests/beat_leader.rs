//! The beat's leader lock and fenced tick enqueue against a real Redis: one
//! holder at a time, growing tokens, stale leaders refused, each tick once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use redis::AsyncCommands;
use spool_broker::{
    Envelope, FencingToken, LeaderLock, Priority, QueueName, TickOutcome, Timestamp,
};
use spool_scheduler::beat::{Beat, BeatConfig, HEADER_SCHEDULED_AT, LOCK_NAME};
use spool_tests::{TestRedis, wait_until};

const LONG: Duration = Duration::from_secs(30);

fn lock(redis: &TestRedis, owner: &str, lease: Duration) -> LeaderLock {
    redis.broker.leader_lock("beat", owner, lease).unwrap()
}

/// Waits until nobody holds the lock (its lease ran out).
async fn wait_lapsed(lock: &LeaderLock) {
    wait_until("the lease to run out", Duration::from_secs(5), || async {
        lock.holder().await.unwrap().is_none()
    })
    .await;
}

fn ping() -> Envelope {
    Envelope::new("spool.ping", QueueName::DEFAULT, vec![])
}

#[tokio::test]
async fn one_holder_at_a_time_with_growing_tokens() {
    let redis = TestRedis::new().await;
    let a = lock(&redis, "a", LONG);
    let b = lock(&redis, "b", LONG);

    let first = a
        .try_acquire()
        .await
        .unwrap()
        .expect("a free lock is taken");
    assert_eq!(b.try_acquire().await.unwrap(), None, "b must wait");
    assert_eq!(
        a.try_acquire().await.unwrap(),
        Some(first),
        "the holder keeps its token"
    );
    let holder = a.holder().await.unwrap().unwrap();
    assert_eq!((holder.owner.as_str(), holder.token), ("a", first));
    assert!(holder.expires_in > Duration::ZERO && holder.expires_in <= LONG);

    assert!(a.renew(first).await.unwrap());
    assert!(!b.renew(first).await.unwrap(), "only the holder renews");
    assert!(!b.release(first).await.unwrap(), "only the holder releases");

    assert!(a.release(first).await.unwrap());
    assert_eq!(a.holder().await.unwrap(), None);
    let second = b
        .try_acquire()
        .await
        .unwrap()
        .expect("a released lock is free");
    assert!(second > first, "{second} must be newer than {first}");
    assert!(!a.renew(first).await.unwrap(), "a lost the lock");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_lapsed_lease_passes_the_lock_on() {
    let redis = TestRedis::new().await;
    let a = lock(&redis, "a", Duration::from_millis(200));
    let b = lock(&redis, "b", LONG);
    let first = a.try_acquire().await.unwrap().unwrap();
    wait_lapsed(&a).await;
    let second = b.try_acquire().await.unwrap().unwrap();
    assert!(second > first);
    assert!(
        !a.renew(first).await.unwrap(),
        "a lapsed lease is not renewed"
    );
    assert_eq!(a.try_acquire().await.unwrap(), None);
    redis.cleanup().await;
}

#[tokio::test]
async fn each_tick_is_enqueued_once_and_stale_tokens_are_fenced_off() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let a = lock(&redis, "a", Duration::from_millis(200));
    let b = lock(&redis, "b", LONG);
    let at = |s: u64| Timestamp::from_millis(1_700_000_000_000 + s * 1000);

    let old = a.try_acquire().await.unwrap().unwrap();
    let first = ping();
    let outcome = a.enqueue_tick(old, "e", at(0), &first).await.unwrap();
    assert_eq!(outcome, TickOutcome::Enqueued);
    // The same tick again, or an older one, is a duplicate.
    for again in [at(0), at(0), Timestamp::from_millis(at(0).as_millis() - 1)] {
        let outcome = a.enqueue_tick(old, "e", again, &ping()).await.unwrap();
        assert_eq!(outcome, TickOutcome::AlreadyEnqueued { last: at(0) });
    }

    wait_lapsed(&a).await;
    let new = b.try_acquire().await.unwrap().unwrap();
    // Until the new leader touches the queue, the former one can still
    // enqueue a new tick, but that tick then happens once all the same.
    let late = ping();
    let outcome = a.enqueue_tick(old, "e", at(1), &late).await.unwrap();
    assert_eq!(outcome, TickOutcome::Enqueued);
    let outcome = b.enqueue_tick(new, "e", at(1), &ping()).await.unwrap();
    assert_eq!(outcome, TickOutcome::AlreadyEnqueued { last: at(1) });

    // Once it has, the stale token is refused, for fencing and ticks alike.
    assert!(b.fence_queue(new, &queue).await.unwrap());
    let outcome = a.enqueue_tick(old, "e", at(2), &ping()).await.unwrap();
    assert_eq!(outcome, TickOutcome::Fenced { newer: new });
    assert!(!a.fence_queue(old, &queue).await.unwrap());
    assert_eq!(a.queue_token(&queue).await.unwrap(), Some(new));
    let third = ping();
    let outcome = b.enqueue_tick(new, "e", at(2), &third).await.unwrap();
    assert_eq!(outcome, TickOutcome::Enqueued);

    // Exactly three tasks reached the stream, in tick order, each intact.
    let ids: Vec<_> = redis
        .stream_envelopes(&queue, Priority::Normal)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ids, [first, late, third]);
    assert_eq!(
        redis.broker.last_tick(&queue, "e").await.unwrap(),
        Some(at(2))
    );
    assert_eq!(redis.broker.last_tick(&queue, "other").await.unwrap(), None);
    redis.cleanup().await;
}

#[tokio::test]
async fn ticks_go_to_their_priority_stream_and_bad_input_is_refused() {
    let redis = TestRedis::new().await;
    let a = lock(&redis, "a", LONG);
    let token = a.try_acquire().await.unwrap().unwrap();
    let mut high = Envelope::new("spool.ping", QueueName::GPU, vec![]);
    high.priority = Priority::High;
    let outcome = a
        .enqueue_tick(token, "gpu-probe", Timestamp::from_millis(1), &high)
        .await
        .unwrap();
    assert_eq!(outcome, TickOutcome::Enqueued);
    assert_eq!(redis.xlen(&QueueName::GPU, Priority::High).await, 1);
    assert_eq!(redis.xlen(&QueueName::GPU, Priority::Normal).await, 0);

    let mut later = ping();
    later.eta = Some(Timestamp::now().saturating_add(LONG));
    let err = a
        .enqueue_tick(token, "e", Timestamp::from_millis(1), &later)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("future ETA"), "{err}");
    let err = a
        .enqueue_tick(token, "a b", Timestamp::from_millis(1), &ping())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("entry name"), "{err}");
    let err = redis
        .broker
        .leader_lock("x{y}", "a", LONG)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock name"), "{err}");
    assert!(redis.broker.leader_lock("beat", "", LONG).is_err());
    assert!(
        redis
            .broker
            .leader_lock("beat", "a", Duration::ZERO)
            .is_err()
    );
    redis.cleanup().await;
}

fn config(lock_ttl: &str) -> BeatConfig {
    BeatConfig::from_toml(&format!(
        r#"
        lock_ttl = "{lock_ttl}"
        [[entry]]
        name = "tick"
        task = "spool.ping"
        every = "1s"
        catch_up = "all"
        "#
    ))
    .unwrap()
}

#[tokio::test]
async fn a_deposed_beat_leader_enqueues_nothing() {
    let redis = TestRedis::new().await;
    let a = Beat::with_owner(redis.broker.clone(), config("30s"), "a".into()).unwrap();
    let b = Beat::with_owner(redis.broker.clone(), config("30s"), "b".into()).unwrap();
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let at = |ms: u64| Timestamp::from_millis(t0.as_millis() + ms);

    let mut leader_a = a.try_lead(t0).await.unwrap().expect("a leads");
    assert!(b.try_lead(t0).await.unwrap().is_none(), "b stands by");
    let pass = leader_a.tick(at(1_100)).await.unwrap();
    assert_eq!(pass.enqueued.len(), 1);

    // The lock vanishes under a (as when Redis loses it); b takes over and
    // fences the queue, while a still believes its lease runs.
    let mut raw = redis.raw();
    let lock_key = format!("{}:{{@leader}}:{LOCK_NAME}", redis.prefix);
    let _: () = raw.del(&lock_key).await.unwrap();
    let mut leader_b = b.try_lead(at(1_200)).await.unwrap().expect("b leads");
    assert!(leader_b.token() > leader_a.token());
    assert!(leader_a.holds_lease());

    let pass = leader_a.tick(at(3_100)).await.unwrap();
    assert!(pass.deposed, "{pass:?}");
    assert!(pass.enqueued.is_empty());
    assert!(!a.metrics().is_leader());
    assert!(!leader_a.renew().await.unwrap());

    // b resumes after a's last tick: 2 s and 3 s, once each.
    let pass = leader_b.tick(at(3_100)).await.unwrap();
    let ticks: Vec<_> = pass.enqueued.iter().map(|t| t.scheduled).collect();
    assert_eq!(ticks, [at(2_000), at(3_000)]);
    let scheduled: Vec<String> = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await
        .into_iter()
        .map(|(_, e)| e.headers[HEADER_SCHEDULED_AT].clone())
        .collect();
    let expected: Vec<String> = [1_000, 2_000, 3_000]
        .iter()
        .map(|&ms| at(ms).as_millis().to_string())
        .collect();
    assert_eq!(scheduled, expected);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_lost_token_counter_is_recovered_from_the_queues() {
    let redis = TestRedis::new().await;
    let beat = Beat::with_owner(redis.broker.clone(), config("30s"), "a".into()).unwrap();
    let now = Timestamp::now();
    let mut seen = FencingToken::new(0);
    for _ in 0..3 {
        let leader = beat.try_lead(now).await.unwrap().unwrap();
        seen = leader.token();
        leader.resign().await.unwrap();
    }

    // Redis loses the counter but keeps the queue's copy of the token.
    let counter = format!("{}:{{@leader}}:{LOCK_NAME}:fence", redis.prefix);
    let _: () = redis.raw().del(&counter).await.unwrap();
    assert!(
        beat.try_lead(now).await.unwrap().is_none(),
        "an older token than the queue's is not a lead"
    );
    let leader = beat.try_lead(now).await.unwrap().expect("recovered");
    assert!(leader.token() > seen, "{} > {seen}", leader.token());
    assert_eq!(
        beat.lock().queue_token(&QueueName::DEFAULT).await.unwrap(),
        Some(leader.token())
    );
    redis.cleanup().await;
}
