//! The broker contract, written once and run on every transport: the
//! in-memory broker (`on_memory::`) and Redis at `SPOOL_REDIS_URL`
//! (`on_redis::`), which is one server in the main pass and the local
//! Redis Cluster in `ops/scripts/test.sh`'s cluster pass. A case that passes
//! on one and fails on another is a transport that breaks the contract.
//!
//! Time is waited on with deadlines, never slept: leases use short
//! visibility timeouts and are polled until they lapse.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use spool_broker::JobStatus;
use spool_broker::{
    Broker, ControlMessage, ControlStream, DeadLetter, DeadReason, Delivery, DeliveryTag, Envelope,
    Error, FetchBatch, MemoryBroker, Priority, QueueName, QueueStats, RateLimit, ReclaimRequest,
    Reclaimed, TaskEvent, TaskId, TaskPlace, Timestamp,
};
use spool_tests::{TestRedis, wait_until};
use tokio::time::Instant;

conformance!(
    fetch_serves_higher_priorities_first_in_order,
    fetch_claims_at_most_max,
    a_waiting_fetch_wakes_on_enqueue_and_claims_at_most_max,
    delayed_tasks_are_promoted_when_due,
    a_waiting_fetch_returns_a_delayed_task_when_due,
    stats_count_every_state,
    ack_settles_for_good,
    retry_schedules_the_next_attempt,
    dead_letters_keep_the_bytes_reason_and_attempts,
    requeued_dead_letters_get_a_fresh_budget,
    requeue_gives_an_unstarted_entry_back_at_the_tail,
    renewed_leases_are_kept_and_lapsed_ones_reclaimed,
    reclaim_claims_at_most_max_and_holds_suspects_back,
    pause_stops_fetching_until_resumed,
    revocations_are_announced_and_forgotten_after_their_ttl,
    unique_keys_admit_one_task_until_released_or_expired,
    rate_limits_keep_one_bucket_per_task_name,
    purge_deletes_every_state,
    task_events_reach_their_subscribers,
    find_task_looks_in_every_state,
);

/// Runs every case once per transport, each in a test of its own.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        /// The in-memory broker: a fresh one per test.
        mod on_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&spool_broker::MemoryBroker::new()).await;
                }
            )*
        }

        /// Redis at `SPOOL_REDIS_URL`, under a key prefix of the test's own.
        mod on_redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let redis = spool_tests::TestRedis::new().await;
                    super::$case(&redis).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}
use conformance;

/// A broker under test, with what the cases need beyond the trait.
trait Subject: Sync {
    type Broker: Broker;

    fn broker(&self) -> &Self::Broker;

    /// Appends `bytes`, which are not a valid envelope, to a ready stream,
    /// as a buggy producer would.
    fn push_raw(
        &self,
        queue: &QueueName,
        priority: Priority,
        bytes: Vec<u8>,
    ) -> impl Future<Output = ()> + Send;
}

impl Subject for MemoryBroker {
    type Broker = Self;

    fn broker(&self) -> &Self {
        self
    }

    async fn push_raw(&self, queue: &QueueName, priority: Priority, bytes: Vec<u8>) {
        MemoryBroker::push_raw(self, queue, priority, bytes);
    }
}

impl Subject for TestRedis {
    type Broker = spool_broker::RedisBroker;

    fn broker(&self) -> &Self::Broker {
        &self.broker
    }

    async fn push_raw(&self, queue: &QueueName, priority: Priority, bytes: Vec<u8>) {
        self.xadd_raw(queue, priority, &[("e", &bytes)]).await;
    }
}

const Q: QueueName = QueueName::DEFAULT;

/// How long any awaited event may take, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(15);

fn task(name: &str, priority: Priority) -> Envelope {
    let mut envelope = Envelope::new(name, Q, vec![0x80]);
    envelope.priority = priority;
    envelope
}

fn in_ms(ms: u64) -> Timestamp {
    Timestamp::now().saturating_add(Duration::from_millis(ms))
}

fn names(batch: &FetchBatch) -> Vec<&str> {
    batch
        .deliveries
        .iter()
        .map(|d| d.envelope.name.as_str())
        .collect()
}

fn tags(batch: &FetchBatch) -> Vec<DeliveryTag> {
    batch.deliveries.iter().map(|d| d.tag.clone()).collect()
}

fn reclaim_request(min_idle_ms: u64, max: usize, alone: bool) -> ReclaimRequest {
    ReclaimRequest {
        min_idle: Duration::from_millis(min_idle_ms),
        max,
        suspect_at: 3,
        alone,
    }
}

async fn enqueue<S: Subject>(s: &S, tasks: &[Envelope]) {
    s.broker().enqueue(tasks).await.unwrap();
}

/// Claims what is ready now.
async fn fetch<S: Subject>(s: &S, queue: &QueueName, consumer: &str, max: usize) -> FetchBatch {
    s.broker()
        .fetch(queue, consumer, max, Duration::ZERO)
        .await
        .unwrap()
}

/// Fetches until something comes, failing after [`PATIENCE`].
async fn fetch_when_ready<S: Subject>(s: &S, consumer: &str, max: usize) -> FetchBatch {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let batch = s
            .broker()
            .fetch(&Q, consumer, max, Duration::from_millis(200))
            .await
            .unwrap();
        if !batch.is_empty() {
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "nothing came within {PATIENCE:?}"
        );
    }
}

/// Reclaims until something comes, failing after [`PATIENCE`].
async fn reclaim_when_lapsed<S: Subject>(
    s: &S,
    consumer: &str,
    request: ReclaimRequest,
) -> Reclaimed {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reclaimed = s.broker().reclaim(&Q, consumer, request).await.unwrap();
        if !reclaimed.batch.is_empty() {
            return reclaimed;
        }
        assert!(
            Instant::now() < deadline,
            "no lease lapsed within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next_control(control: &mut ControlStream) -> ControlMessage {
    tokio::time::timeout(PATIENCE, control.next())
        .await
        .expect("no control message came")
        .expect("the control channel ended")
}

async fn fetch_serves_higher_priorities_first_in_order<S: Subject>(s: &S) {
    let order = [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("high-1", Priority::High),
        ("low-2", Priority::Low),
        ("normal-2", Priority::Normal),
        ("high-2", Priority::High),
    ];
    let tasks: Vec<Envelope> = order.iter().map(|(n, p)| task(n, *p)).collect();
    enqueue(s, &tasks).await;
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.ready, stats.enqueued_total), ([2, 2, 2], 6));

    let batch = fetch(s, &Q, "a", 10).await;
    assert_eq!(
        names(&batch),
        ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]
    );
    for delivery in &batch.deliveries {
        let sent = tasks.iter().find(|t| t.id == delivery.envelope.id).unwrap();
        assert_eq!(&delivery.envelope, sent);
        assert_eq!(delivery.tag.priority(), sent.priority);
        assert_eq!(delivery.tag.queue(), &Q);
        assert_eq!(delivery.deliveries, 1);
    }
    assert!(batch.malformed.is_empty());
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.ready, stats.pending), ([0, 0, 0], 6));
    assert!(fetch(s, &Q, "a", 10).await.is_empty());
}

async fn fetch_claims_at_most_max<S: Subject>(s: &S) {
    let tasks = [
        task("h0", Priority::High),
        task("h1", Priority::High),
        task("n0", Priority::Normal),
        task("n1", Priority::Normal),
        task("l0", Priority::Low),
        task("l1", Priority::Low),
    ];
    enqueue(s, &tasks).await;
    // The bound holds across the priority streams.
    assert_eq!(names(&fetch(s, &Q, "a", 3).await), ["h0", "h1", "n0"]);
    // A fetch claims at least one.
    assert_eq!(names(&fetch(s, &Q, "a", 0).await), ["n1"]);
    assert_eq!(names(&fetch(s, &Q, "b", 1).await), ["l0"]);
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.ready, stats.pending), ([0, 0, 1], 5));
    // Another queue is not touched.
    assert!(fetch(s, &QueueName::GPU, "a", 10).await.is_empty());
}

async fn a_waiting_fetch_wakes_on_enqueue_and_claims_at_most_max<S: Subject>(s: &S) {
    // Fewer slots than streams, and more: the bound holds while waiting too.
    for max in [1, 2, 4] {
        let queue = QueueName::new(format!("wake-{max}")).unwrap();
        let waiting = {
            let broker = s.broker().clone();
            let queue = queue.clone();
            tokio::spawn(async move { broker.fetch(&queue, "a", max, PATIENCE * 4).await })
        };
        let tasks: Vec<Envelope> = Priority::ALL
            .into_iter()
            .flat_map(|p| [0, 1].map(|i| task(&format!("{p}-{i}"), p)))
            .map(|mut t| {
                t.queue = queue.clone();
                t
            })
            .collect();
        enqueue(s, &tasks).await;
        // The long wait cannot be what ends the fetch.
        let batch = tokio::time::timeout(PATIENCE, waiting)
            .await
            .expect("the waiting fetch was not woken by the enqueue")
            .unwrap()
            .unwrap();
        assert!(
            (1..=max).contains(&batch.len()),
            "a fetch of at most {max} claimed {}",
            batch.len()
        );
        let pending = s.broker().stats(&queue).await.unwrap().pending;
        assert_eq!(pending, batch.len() as u64);
    }
}

async fn delayed_tasks_are_promoted_when_due<S: Subject>(s: &S) {
    let mut later = task("later", Priority::High);
    let eta = in_ms(500);
    later.eta = Some(eta);
    let mut past = task("past", Priority::Low);
    past.eta = Some(Timestamp::from_millis(
        Timestamp::now().as_millis().saturating_sub(1000),
    ));
    enqueue(s, &[later.clone(), past]).await;
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.delayed, stats.ready), (1, [0, 0, 1]));

    let first = fetch(s, &Q, "a", 10).await;
    let fetched_at = Timestamp::now();
    assert!(names(&first).contains(&"past"), "{:?}", names(&first));
    // Unless the machine stalled past the eta, only the due task came.
    if fetched_at < eta {
        assert_eq!(
            names(&first),
            ["past"],
            "a delayed task came before its eta"
        );
    }
    let batch = if first.len() == 2 {
        first
    } else {
        fetch_when_ready(s, "a", 10).await
    };
    assert!(
        Timestamp::now() >= eta,
        "a delayed task came before its eta"
    );
    let delivery = batch
        .deliveries
        .iter()
        .find(|d| d.envelope.id == later.id)
        .unwrap();
    assert_eq!(delivery.envelope, later);
    assert_eq!(delivery.tag.priority(), Priority::High);
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.delayed, stats.pending), (0, 2));
}

async fn a_waiting_fetch_returns_a_delayed_task_when_due<S: Subject>(s: &S) {
    // Fewer slots than streams, and more: both ways of waiting.
    for max in [1, 10] {
        let mut later = task(&format!("later-{max}"), Priority::Normal);
        let eta = in_ms(300);
        later.eta = Some(eta);
        enqueue(s, std::slice::from_ref(&later)).await;
        let batch = s.broker().fetch(&Q, "a", max, PATIENCE).await.unwrap();
        assert!(
            Timestamp::now() >= eta,
            "a delayed task came before its eta"
        );
        assert_eq!(names(&batch), [later.name.as_str()], "max {max}");
    }
}

async fn stats_count_every_state<S: Subject>(s: &S) {
    let broker = s.broker();
    let mut soon = task("soon", Priority::Normal);
    soon.eta = Some(in_ms(300));
    let mut later = task("later", Priority::Normal);
    later.eta = Some(in_ms(600_000));
    let ready = ["a", "b", "c"].map(|n| task(n, Priority::High));
    let before = Timestamp::now();
    enqueue(s, &ready).await;
    enqueue(s, &[soon, later, task("low", Priority::Low)]).await;
    let fresh = broker.stats(&Q).await.unwrap();
    assert_eq!(
        (
            fresh.ready,
            fresh.delayed,
            fresh.consumers,
            fresh.enqueued_total
        ),
        ([3, 0, 1], 2, 0, 4)
    );
    assert!(!fresh.paused);

    let batch = fetch(s, &Q, "a", 2).await;
    broker.ack(&tags(&batch)[..1]).await.unwrap();
    wait_until("the first delayed task to fall due", PATIENCE, || async {
        broker.stats(&Q).await.unwrap().delayed_due == 1
    })
    .await;
    let s1 = broker.stats(&Q).await.unwrap();
    assert_eq!(
        (s1.ready, s1.pending, s1.delayed, s1.delayed_due),
        ([1, 0, 1], 1, 2, 1)
    );
    assert_eq!((s1.backlog(), s1.consumers), (3, 1));
    assert_eq!((s1.enqueued_total, s1.completed_total), (4, 1));
    let age = s1.oldest_age.expect("tasks wait");
    assert!(age <= Timestamp::now().saturating_since(before), "{age:?}");

    // Promoting the due task counts it in; settling counts everything out.
    let batch = fetch(s, &Q, "b", 10).await;
    assert_eq!(names(&batch), ["c", "soon", "low"]);
    broker.ack(&tags(&batch)).await.unwrap();
    let s2 = broker.stats(&Q).await.unwrap();
    assert_eq!((s2.enqueued_total, s2.completed_total), (5, 4));
    assert_eq!((s2.backlog(), s2.oldest_age, s2.consumers), (0, None, 2));
    assert_eq!((s2.pending, s2.delayed, s2.delayed_due), (1, 1, 0));
}

async fn ack_settles_for_good<S: Subject>(s: &S) {
    let tasks = ["a", "b", "c"].map(|n| task(n, Priority::Normal));
    enqueue(s, &tasks).await;
    let batch = fetch(s, &Q, "a", 10).await;
    let tags = tags(&batch);
    s.broker().ack(&tags).await.unwrap();
    let settled = s.broker().stats(&Q).await.unwrap();
    assert!(settled.is_drained(), "{settled:?}");
    assert_eq!((settled.enqueued_total, settled.completed_total), (3, 3));

    // A settled entry ignores every later outcome.
    s.broker().ack(&tags).await.unwrap();
    s.broker().ack(&[]).await.unwrap();
    s.broker().requeue(&tags[0]).await.unwrap();
    s.broker()
        .retry(&tags[1], &tasks[1].next_attempt(Timestamp::now()))
        .await
        .unwrap();
    let letter = DeadLetter {
        reason: DeadReason::AttemptsExhausted,
        error: "late".into(),
        attempts: 1,
    };
    s.broker().dead_letter(&tags[2], &letter).await.unwrap();
    let after = s.broker().stats(&Q).await.unwrap();
    assert_eq!(
        (
            after.ready_total(),
            after.pending,
            after.delayed,
            after.dead
        ),
        (0, 0, 0, 0),
        "{after:?}"
    );
    assert!(fetch(s, &Q, "a", 10).await.is_empty());
}

async fn retry_schedules_the_next_attempt<S: Subject>(s: &S) {
    let mut flaky = task("flaky", Priority::Low);
    flaky.max_attempts = 3;
    enqueue(s, std::slice::from_ref(&flaky)).await;
    let first = fetch(s, &Q, "a", 1).await.deliveries.remove(0);
    let eta = in_ms(300);
    let next = first.envelope.next_attempt(eta);
    s.broker().retry(&first.tag, &next).await.unwrap();
    // Settled already: a second outcome schedules nothing more.
    s.broker().retry(&first.tag, &next).await.unwrap();
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.delayed, stats.ready_total()),
        (0, 1, 0)
    );

    let again: Delivery = fetch_when_ready(s, "b", 10).await.deliveries.remove(0);
    assert!(Timestamp::now() >= eta, "the retry came before its eta");
    assert_eq!(again.envelope, next);
    assert_eq!((again.envelope.id, again.envelope.attempt), (flaky.id, 2));
    assert_eq!((again.tag.priority(), again.deliveries), (Priority::Low, 1));
    assert_ne!(again.tag, first.tag);
}

async fn dead_letters_keep_the_bytes_reason_and_attempts<S: Subject>(s: &S) {
    s.push_raw(&Q, Priority::High, b"garbage".to_vec()).await;
    let doomed = task("doomed", Priority::Normal);
    enqueue(s, std::slice::from_ref(&doomed)).await;
    let mut batch = fetch(s, &Q, "a", 10).await;
    assert_eq!((batch.malformed.len(), batch.deliveries.len()), (1, 1));
    let (bad, good) = (batch.malformed.remove(0), batch.deliveries.remove(0));
    assert_eq!(bad.reason, DeadReason::Malformed);
    assert_eq!(bad.tag.priority(), Priority::High);
    assert!(bad.error.contains("envelope"), "{}", bad.error);

    let before = Timestamp::now();
    for (tag, reason, attempts) in [
        (&bad.tag, DeadReason::Malformed, 0),
        (&good.tag, DeadReason::AttemptsExhausted, 3),
    ] {
        let letter = DeadLetter {
            reason,
            error: format!("{reason} error"),
            attempts,
        };
        s.broker().dead_letter(tag, &letter).await.unwrap();
        // Settled: a second outcome adds no second letter.
        s.broker().dead_letter(tag, &letter).await.unwrap();
    }
    let after = Timestamp::now();
    let dead = s.broker().dead_letters(&Q, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (&dead[0].raw[..], &dead[0].reason[..], dead[0].attempts),
        (&b"garbage"[..], "malformed", 0)
    );
    assert!(dead[0].envelope.is_none());
    assert_eq!(dead[1].raw, doomed.encode().unwrap());
    assert_eq!(dead[1].envelope.as_ref(), Some(&doomed));
    assert_eq!(
        (&dead[1].reason[..], &dead[1].error[..], dead[1].attempts),
        ("attempts_exhausted", "attempts_exhausted error", 3)
    );
    for letter in &dead {
        assert_eq!(letter.queue, Q);
        assert!((before..=after).contains(&letter.dead_at), "{letter:?}");
    }
    assert_eq!(s.broker().dead_letters(&Q, 1).await.unwrap().len(), 1);
    let stats = s.broker().stats(&Q).await.unwrap();
    assert!(stats.is_drained() && stats.dead == 2, "{stats:?}");
    assert_eq!(s.broker().purge_dead(&Q).await.unwrap(), 2);
    assert!(s.broker().dead_letters(&Q, 10).await.unwrap().is_empty());
}

async fn requeued_dead_letters_get_a_fresh_budget<S: Subject>(s: &S) {
    s.push_raw(&Q, Priority::Low, b"garbage".to_vec()).await;
    let mut doomed = task("doomed", Priority::High);
    doomed.max_attempts = 2;
    doomed.attempt = 2;
    doomed.eta = Some(Timestamp::from_millis(1));
    let mut other = task("other", Priority::Normal);
    other.max_attempts = 1;
    enqueue(s, &[doomed.clone(), other.clone()]).await;
    let batch = fetch(s, &Q, "a", 10).await;
    let letter = DeadLetter {
        reason: DeadReason::AttemptsExhausted,
        error: "no".into(),
        attempts: 2,
    };
    for tag in batch
        .deliveries
        .iter()
        .map(|d| &d.tag)
        .chain(batch.malformed.iter().map(|m| &m.tag))
    {
        s.broker().dead_letter(tag, &letter).await.unwrap();
    }
    let dead = s.broker().dead_letters(&Q, 10).await.unwrap();
    assert_eq!(dead.len(), 3);

    // One by id, then the rest; an id already requeued is skipped.
    let doomed_letter = dead
        .iter()
        .find(|d| d.envelope.as_ref().is_some_and(|e| e.id == doomed.id))
        .unwrap();
    let ids = [doomed_letter.entry_id.clone()];
    assert_eq!(s.broker().requeue_dead(&Q, Some(&ids)).await.unwrap(), 1);
    assert_eq!(s.broker().requeue_dead(&Q, Some(&ids)).await.unwrap(), 0);
    let revived = fetch(s, &Q, "a", 10).await.deliveries.remove(0);
    assert_eq!(revived.envelope.id, doomed.id);
    // It keeps counting attempts, gets as many again, and runs at once.
    assert_eq!(
        (revived.envelope.attempt, revived.envelope.max_attempts),
        (3, 4)
    );
    assert_eq!(revived.envelope.eta, None);
    assert_eq!(revived.tag.priority(), Priority::High);

    assert_eq!(s.broker().requeue_dead(&Q, None).await.unwrap(), 2);
    assert_eq!(s.broker().requeue_dead(&Q, None).await.unwrap(), 0);
    let mut batch = fetch(s, &Q, "a", 10).await;
    let again = batch.deliveries.remove(0);
    assert_eq!(again.envelope.id, other.id);
    assert_eq!(
        (again.envelope.attempt, again.envelope.max_attempts),
        (2, 2)
    );
    // What never was an envelope goes back as it was, to be refused again.
    assert_eq!(batch.malformed.len(), 1);
    assert_eq!(batch.malformed[0].reason, DeadReason::Malformed);
    assert_eq!(s.broker().stats(&Q).await.unwrap().dead, 0);
}

async fn requeue_gives_an_unstarted_entry_back_at_the_tail<S: Subject>(s: &S) {
    let tasks = [
        task("a", Priority::Normal),
        task("b", Priority::Normal),
        task("h", Priority::High),
    ];
    enqueue(s, &tasks).await;
    let mut batch = fetch(s, &Q, "a", 2).await;
    assert_eq!(names(&batch), ["h", "a"]);
    let a = batch.deliveries.remove(1);
    let h = batch.deliveries.remove(0);
    s.broker().requeue(&a.tag).await.unwrap();
    s.broker().requeue(&h.tag).await.unwrap();
    // Settled: a second requeue changes nothing.
    s.broker().requeue(&a.tag).await.unwrap();
    let stats = s.broker().stats(&Q).await.unwrap();
    assert_eq!((stats.ready, stats.pending), ([1, 2, 0], 0));

    let batch = fetch(s, &Q, "b", 10).await;
    assert_eq!(names(&batch), ["h", "b", "a"]);
    let requeued = &batch.deliveries[2];
    assert_eq!(requeued.envelope, a.envelope);
    assert_ne!(requeued.tag, a.tag);
    // Given back unstarted, it is a fresh delivery.
    assert_eq!(requeued.deliveries, 1);
    assert_eq!(batch.deliveries[0].tag.priority(), Priority::High);
}

async fn renewed_leases_are_kept_and_lapsed_ones_reclaimed<S: Subject>(s: &S) {
    let broker = s.broker();
    enqueue(
        s,
        &[
            task("kept", Priority::High),
            task("lapsed", Priority::Normal),
        ],
    )
    .await;
    let batch = fetch(s, &Q, "a", 10).await;
    assert_eq!(names(&batch), ["kept", "lapsed"]);
    let (kept, lapsed) = (batch.deliveries[0].clone(), batch.deliveries[1].clone());

    // `a` renews one lease and not the other: only the other lapses.
    let min_idle = 1000;
    let deadline = Instant::now() + PATIENCE;
    let reclaimed = loop {
        let lost = broker
            .renew("a", std::slice::from_ref(&kept.tag))
            .await
            .unwrap();
        assert!(lost.is_empty(), "{lost:?}");
        let reclaimed = broker
            .reclaim(&Q, "b", reclaim_request(min_idle, 10, false))
            .await
            .unwrap();
        if !reclaimed.batch.is_empty() {
            break reclaimed;
        }
        assert!(Instant::now() < deadline, "the lease did not lapse");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(names(&reclaimed.batch), ["lapsed"]);
    let taken = &reclaimed.batch.deliveries[0];
    assert_eq!(taken.envelope, lapsed.envelope);
    assert_eq!((&taken.tag, taken.deliveries), (&lapsed.tag, 2));

    // The lapsed lease is `b`'s now: `a` hears it lost it.
    let both = [kept.tag.clone(), lapsed.tag.clone()];
    assert_eq!(broker.renew("a", &both).await.unwrap(), both[1..]);
    assert!(broker.renew("b", &both[1..]).await.unwrap().is_empty());
    // A settled entry is held by nobody.
    broker.ack(&both[1..]).await.unwrap();
    assert_eq!(broker.renew("b", &both[1..]).await.unwrap(), [lapsed.tag]);
    assert!(broker.renew("a", &both[..1]).await.unwrap().is_empty());
    assert_eq!(broker.stats(&Q).await.unwrap().pending, 1);
}

async fn reclaim_claims_at_most_max_and_holds_suspects_back<S: Subject>(s: &S) {
    let broker = s.broker();
    let tasks = [
        task("n0", Priority::Normal),
        task("n1", Priority::Normal),
        task("h", Priority::High),
    ];
    enqueue(s, &tasks).await;
    assert_eq!(fetch(s, &Q, "a", 10).await.len(), 3);

    // Claimed at one instant, the three lapse together: `max` bounds the
    // claim, highest priority first.
    let min_idle = 300;
    let first = reclaim_when_lapsed(s, "b", reclaim_request(min_idle, 2, false)).await;
    assert_eq!(names(&first.batch), ["h", "n0"]);
    assert_eq!(first.suspects_waiting, 0);
    assert!(first.batch.deliveries.iter().all(|d| d.deliveries == 2));
    let rest = reclaim_when_lapsed(s, "b", reclaim_request(min_idle, 2, false)).await;
    assert_eq!(names(&rest.batch), ["n1"]);
    assert_eq!(rest.batch.deliveries[0].deliveries, 2);

    // A third delivery would make suspects of them: held back from a
    // worker that holds other tasks...
    wait_until("the suspects' leases to lapse", PATIENCE, || async {
        let reclaimed = broker
            .reclaim(&Q, "c", reclaim_request(min_idle, 10, false))
            .await
            .unwrap();
        assert!(reclaimed.batch.is_empty(), "a suspect was reclaimed");
        reclaimed.suspects_waiting == 3
    })
    .await;
    // ...and given, one at a time, to one that holds nothing else.
    let alone_at = Instant::now();
    let alone = broker
        .reclaim(&Q, "c", reclaim_request(min_idle, 10, true))
        .await
        .unwrap();
    assert_eq!(names(&alone.batch), ["h"]);
    assert_eq!(alone.batch.deliveries[0].deliveries, 3);
    assert_eq!(alone.suspects_waiting, 0);
    let left = broker
        .reclaim(&Q, "d", reclaim_request(min_idle, 10, false))
        .await
        .unwrap();
    assert!(left.batch.is_empty(), "a suspect was reclaimed");
    // The other two wait; so does `h` once its new lease has lapsed too,
    // which a loaded machine can take as long as between two calls.
    let waiting: &[usize] = if alone_at.elapsed() < Duration::from_millis(min_idle) {
        &[2]
    } else {
        &[2, 3]
    };
    assert!(
        waiting.contains(&left.suspects_waiting),
        "{} suspects waiting",
        left.suspects_waiting
    );
}

async fn pause_stops_fetching_until_resumed<S: Subject>(s: &S) {
    let broker = s.broker();
    let mut control = broker.control().await.unwrap();
    broker.pause(&Q).await.unwrap();
    assert_eq!(
        next_control(&mut control).await,
        ControlMessage::Pause { queue: Q }
    );
    // Pausing a paused queue changes nothing.
    broker.pause(&Q).await.unwrap();
    broker.pause(&QueueName::ANALYSIS).await.unwrap();
    assert_eq!(
        broker.paused().await.unwrap(),
        [QueueName::ANALYSIS, Q],
        "sorted by name"
    );
    broker.resume(&QueueName::ANALYSIS).await.unwrap();
    assert_eq!(broker.paused().await.unwrap(), [Q]);

    let mut delayed = task("delayed", Priority::Low);
    let eta = in_ms(100);
    delayed.eta = Some(eta);
    enqueue(s, &[task("ready", Priority::High), delayed]).await;
    let mut elsewhere = task("elsewhere", Priority::Normal);
    elsewhere.queue = QueueName::GPU;
    enqueue(s, &[elsewhere]).await;
    assert!(fetch(s, &Q, "a", 10).await.is_empty());
    // Other queues are not paused with it.
    assert_eq!(
        names(&fetch(s, &QueueName::GPU, "a", 10).await),
        ["elsewhere"]
    );

    // Due, the delayed task still waits for the resume.
    wait_until("the delayed task to fall due", PATIENCE, || async {
        Timestamp::now() > eta
    })
    .await;
    assert!(fetch(s, &Q, "a", 10).await.is_empty());
    // A fetch waiting on the paused queue claims nothing enqueued meanwhile.
    let waiting = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.fetch(&Q, "a", 10, Duration::from_millis(300)).await })
    };
    enqueue(s, &[task("meanwhile", Priority::Normal)]).await;
    let batch = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(batch.is_empty(), "{:?}", names(&batch));
    let stats = broker.stats(&Q).await.unwrap();
    assert!(stats.paused);
    assert_eq!(
        (stats.ready, stats.delayed, stats.pending),
        ([1, 1, 0], 1, 0)
    );

    broker.resume(&Q).await.unwrap();
    // Every pause and resume is announced, in order, even one that changes
    // nothing.
    let mut announced = Vec::new();
    while announced.len() < 4 {
        announced.push(next_control(&mut control).await);
    }
    assert_eq!(
        announced,
        [
            ControlMessage::Pause { queue: Q },
            ControlMessage::Pause {
                queue: QueueName::ANALYSIS
            },
            ControlMessage::Resume {
                queue: QueueName::ANALYSIS
            },
            ControlMessage::Resume { queue: Q },
        ]
    );
    assert!(broker.paused().await.unwrap().is_empty());
    let batch = fetch(s, &Q, "a", 10).await;
    assert_eq!(names(&batch), ["ready", "meanwhile", "delayed"]);
    assert!(!broker.stats(&Q).await.unwrap().paused);
    // Resuming a queue that is not paused changes nothing.
    broker.resume(&Q).await.unwrap();
    assert!(broker.paused().await.unwrap().is_empty());
}

async fn revocations_are_announced_and_forgotten_after_their_ttl<S: Subject>(s: &S) {
    let broker = s.broker();
    let mut control = broker.control().await.unwrap();
    let (long, short) = (TaskId::new(), TaskId::new());
    broker.revoke(long, Duration::from_secs(600)).await.unwrap();
    broker
        .revoke(short, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        next_control(&mut control).await,
        ControlMessage::Revoke { id: long }
    );
    assert_eq!(
        next_control(&mut control).await,
        ControlMessage::Revoke { id: short }
    );
    let mut revoked = broker.revoked().await.unwrap();
    revoked.sort();
    let mut both = vec![long, short];
    both.sort();
    // Unless the short one lapsed already on a slow machine.
    assert!(revoked == both || revoked == [long], "{revoked:?}");
    wait_until("the short revocation to lapse", PATIENCE, || async {
        broker.revoked().await.unwrap() == [long]
    })
    .await;
}

async fn unique_keys_admit_one_task_until_released_or_expired<S: Subject>(s: &S) {
    let broker = s.broker();
    let unique = |key: &str| {
        let mut envelope = task(key, Priority::Normal);
        envelope.unique_key = Some(key.to_owned());
        envelope
    };
    let ttl = Duration::from_secs(600);
    let first = unique("k");
    assert_eq!(broker.enqueue_unique(&first, ttl).await.unwrap(), None);
    let second = unique("k");
    assert_eq!(
        broker.enqueue_unique(&second, ttl).await.unwrap(),
        Some(first.id)
    );
    assert_eq!(broker.stats(&Q).await.unwrap().ready_total(), 1);

    // Only the holder releases the key.
    broker.release_unique(&Q, "k", second.id).await.unwrap();
    assert_eq!(
        broker.enqueue_unique(&second, ttl).await.unwrap(),
        Some(first.id)
    );
    broker.release_unique(&Q, "k", first.id).await.unwrap();
    assert_eq!(broker.enqueue_unique(&second, ttl).await.unwrap(), None);
    assert_eq!(broker.stats(&Q).await.unwrap().ready_total(), 2);

    // Keys are per queue.
    let mut elsewhere = unique("k");
    elsewhere.queue = QueueName::GPU;
    assert_eq!(broker.enqueue_unique(&elsewhere, ttl).await.unwrap(), None);

    // A delayed unique task waits in the delayed set, holding its key.
    let mut later = unique("later");
    later.eta = Some(in_ms(600_000));
    assert_eq!(broker.enqueue_unique(&later, ttl).await.unwrap(), None);
    assert_eq!(
        broker.enqueue_unique(&unique("later"), ttl).await.unwrap(),
        Some(later.id)
    );
    assert_eq!(broker.stats(&Q).await.unwrap().delayed, 1);

    // A key outlives neither its time to live...
    let brief = unique("brief");
    let short = Duration::from_millis(300);
    let taken_at = Instant::now();
    assert_eq!(broker.enqueue_unique(&brief, short).await.unwrap(), None);
    let successor = unique("brief");
    let answer = broker.enqueue_unique(&successor, short).await.unwrap();
    if taken_at.elapsed() < short {
        assert_eq!(answer, Some(brief.id));
    }
    if answer.is_some() {
        wait_until("the key to expire", PATIENCE, || async {
            broker
                .enqueue_unique(&successor, short)
                .await
                .unwrap()
                .is_none()
        })
        .await;
        assert!(taken_at.elapsed() >= short - Duration::from_millis(5));
    }

    // ...nor a task without a key.
    let err = broker
        .enqueue_unique(&task("x", Priority::Normal), ttl)
        .await;
    assert!(matches!(err, Err(Error::Config(_))), "{err:?}");
}

async fn rate_limits_keep_one_bucket_per_task_name<S: Subject>(s: &S) {
    let broker = s.broker();
    // A token comes back every 2 s: long enough that the three takes
    // below fall within it even on a loaded machine.
    let limit = RateLimit {
        limit: 2,
        period: Duration::from_secs(4),
    };
    assert_eq!(broker.acquire_rate("a", limit).await.unwrap(), None);
    assert_eq!(broker.acquire_rate("a", limit).await.unwrap(), None);
    let refused_at = Instant::now();
    let wait = broker
        .acquire_rate("a", limit)
        .await
        .unwrap()
        .expect("a third start within the period must wait");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    // Another task's bucket is its own.
    assert_eq!(broker.acquire_rate("b", limit).await.unwrap(), None);

    wait_until("a token to come back", PATIENCE, || async {
        broker.acquire_rate("a", limit).await.unwrap().is_none()
    })
    .await;
    // Not before the wait it announced (less the clock's millisecond).
    assert!(
        refused_at.elapsed() + Duration::from_millis(2) >= wait,
        "{:?} < {wait:?}",
        refused_at.elapsed()
    );
}

async fn purge_deletes_every_state<S: Subject>(s: &S) {
    let broker = s.broker();
    let mut delayed = task("delayed", Priority::Normal);
    delayed.eta = Some(in_ms(600_000));
    let tasks = [
        task("pending", Priority::High),
        task("dead", Priority::High),
        task("ready", Priority::Low),
        delayed,
    ];
    enqueue(s, &tasks).await;
    let batch = fetch(s, &Q, "a", 2).await;
    let letter = DeadLetter {
        reason: DeadReason::BadPayload,
        error: "bad".into(),
        attempts: 1,
    };
    broker
        .dead_letter(&batch.deliveries[1].tag, &letter)
        .await
        .unwrap();
    let stats = broker.stats(&Q).await.unwrap();
    assert_eq!(
        (
            stats.ready_total(),
            stats.pending,
            stats.delayed,
            stats.dead
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(broker.purge(&Q).await.unwrap(), 4);
    let stats = broker.stats(&Q).await.unwrap();
    // Every task is gone; the worker that fetched still serves the queue.
    let purged = QueueStats {
        consumers: 1,
        ..QueueStats::default()
    };
    assert_eq!(stats, purged);
    // The deliveries held are gone too.
    let held = tags(&batch);
    assert_eq!(broker.renew("a", &held[..1]).await.unwrap(), held[..1]);
    assert!(fetch(s, &Q, "a", 10).await.is_empty());
    assert_eq!(broker.purge(&Q).await.unwrap(), 0);
}

async fn task_events_reach_their_subscribers<S: Subject>(s: &S) {
    let broker = s.broker();
    let (watched, other) = (TaskId::new(), TaskId::new());
    let mut events = broker.task_events(watched).await.unwrap();
    let finished = |id| TaskEvent::Finished {
        id,
        status: JobStatus::Succeeded,
    };
    broker
        .publish_events(&[finished(other), finished(watched)])
        .await
        .unwrap();
    broker.publish_events(&[]).await.unwrap();
    let event = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("no event came")
        .expect("the subscription ended");
    assert_eq!(event, finished(watched));
}

async fn find_task_looks_in_every_state<S: Subject>(s: &S) {
    let other = QueueName::new("conformance-other").unwrap();
    // More than a page (Redis reads 1000 entries a call) before the one
    // looked for, and garbage that no id matches.
    s.push_raw(&Q, Priority::Normal, b"garbage".to_vec()).await;
    let backlog: Vec<Envelope> = (0..2100).map(|_| task("b", Priority::Normal)).collect();
    enqueue(s, &backlog).await;
    let last = task("last", Priority::Low);
    let mut later = task("later", Priority::High);
    later.eta = Some(in_ms(3_600_000));
    enqueue(s, &[last.clone(), later.clone()]).await;
    let find = |id| async move { s.broker().find_task(&Q, id).await.unwrap() };
    assert_eq!(find(last.id).await, Some(TaskPlace::Queued));
    assert_eq!(find(backlog[0].id).await, Some(TaskPlace::Queued));
    assert_eq!(find(later.id).await, Some(TaskPlace::Delayed));
    assert_eq!(find(TaskId::new()).await, None);
    assert_eq!(s.broker().find_task(&other, last.id).await.unwrap(), None);

    // Running (fetched, not settled) is still queued; dead is dead.
    let running = fetch(s, &Q, "a", 2).await;
    let held = &running.deliveries[0];
    assert_eq!(find(held.envelope.id).await, Some(TaskPlace::Queued));
    let letter = DeadLetter {
        reason: DeadReason::Malformed,
        error: "x".into(),
        attempts: 0,
    };
    s.broker().dead_letter(&held.tag, &letter).await.unwrap();
    assert_eq!(find(held.envelope.id).await, Some(TaskPlace::Dead));
}
