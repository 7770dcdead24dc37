//! The in-memory broker's unit tests.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::broker::DeadReason;

const Q: QueueName = QueueName::DEFAULT;

fn task(name: &str, priority: Priority) -> Envelope {
    let mut envelope = Envelope::new(name, Q, vec![]);
    envelope.priority = priority;
    envelope
}

fn in_30_ms() -> Timestamp {
    Timestamp::now().saturating_add(Duration::from_millis(30))
}

fn names(batch: &FetchBatch) -> Vec<&str> {
    let names = batch.deliveries.iter().map(|d| d.envelope.name.as_str());
    names.collect()
}

async fn enqueue(broker: &MemoryBroker, tasks: &[Envelope]) {
    broker.enqueue(tasks).await.unwrap();
}

async fn fetch(broker: &MemoryBroker, max: usize) -> FetchBatch {
    broker.fetch(&Q, "c", max, Duration::ZERO).await.unwrap()
}

async fn stats(broker: &MemoryBroker) -> QueueStats {
    broker.stats(&Q).await.unwrap()
}

/// Fetches until something comes; fails after a second.
async fn fetch_when_ready(broker: &MemoryBroker) -> FetchBatch {
    let limit = Duration::from_secs(1);
    let attempts = async {
        loop {
            let batch = broker.fetch(&Q, "c", 10, limit).await.unwrap();
            if !batch.is_empty() {
                return batch;
            }
        }
    };
    tokio::time::timeout(limit, attempts).await.unwrap()
}

#[tokio::test]
async fn higher_priorities_come_first_and_ack_settles() {
    let broker = MemoryBroker::new();
    let tasks = [Priority::Low, Priority::Normal, Priority::High].map(|p| task(p.as_str(), p));
    enqueue(&broker, &tasks).await;
    let batch = fetch(&broker, 10).await;
    assert_eq!(names(&batch), ["high", "normal", "low"]);
    assert_eq!(stats(&broker).await.pending, 3);

    let tags: Vec<_> = batch.deliveries.into_iter().map(|d| d.tag).collect();
    broker.ack(&tags).await.unwrap();
    // Settled entries are ignored, whatever the outcome.
    broker.ack(&tags).await.unwrap();
    broker.requeue(&tags[0]).await.unwrap();
    let settled = stats(&broker).await;
    assert!(settled.is_drained() && settled.dead == 0, "{settled:?}");
    assert_eq!((settled.enqueued_total, settled.completed_total), (3, 3));
}

#[tokio::test]
async fn fetch_claims_exactly_max_and_at_least_one() {
    let broker = MemoryBroker::new();
    let tasks = ["0", "1", "2", "3", "4"].map(|n| task(n, Priority::Normal));
    enqueue(&broker, &tasks).await;
    assert_eq!(names(&fetch(&broker, 2).await), ["0", "1"]);
    assert_eq!(names(&fetch(&broker, 0).await), ["2"]);
    let stats = stats(&broker).await;
    assert_eq!((stats.ready, stats.pending), ([0, 2, 0], 3));
}

#[tokio::test]
async fn delayed_tasks_are_promoted_when_due() {
    let broker = MemoryBroker::new();
    let mut later = task("later", Priority::High);
    later.eta = Some(in_30_ms());
    enqueue(&broker, std::slice::from_ref(&later)).await;
    let batch = fetch(&broker, 10).await;
    assert!(batch.is_empty());
    assert_eq!(stats(&broker).await.delayed, 1);
    assert_eq!(names(&fetch_when_ready(&broker).await), ["later"]);
}

#[tokio::test]
async fn retry_schedules_the_next_attempt() {
    let broker = MemoryBroker::new();
    enqueue(&broker, &[task("flaky", Priority::Low)]).await;
    let first = fetch(&broker, 1).await.deliveries.remove(0);
    let next = first.envelope.next_attempt(in_30_ms());
    broker.retry(&first.tag, &next).await.unwrap();
    // Settled already: a second outcome changes nothing.
    broker.retry(&first.tag, &next).await.unwrap();
    let stats = stats(&broker).await;
    assert_eq!((stats.pending, stats.delayed), (0, 1));

    let again = fetch_when_ready(&broker).await.deliveries.remove(0);
    assert_eq!(again.envelope.id, first.envelope.id);
    assert_eq!(again.envelope.attempt, 2);
    assert_eq!(again.tag.priority(), Priority::Low);
}

#[tokio::test]
async fn dead_letters_keep_the_original_bytes_and_reason() {
    let broker = MemoryBroker::new();
    broker.push_raw(&Q, Priority::High, b"garbage".to_vec());
    let doomed = task("doomed", Priority::Normal);
    enqueue(&broker, std::slice::from_ref(&doomed)).await;
    let mut batch = fetch(&broker, 10).await;
    let (bad, good) = (batch.malformed.remove(0), batch.deliveries.remove(0));
    assert!(bad.error.contains("envelope"), "{}", bad.error);

    for (tag, reason, attempts) in [
        (&bad.tag, DeadReason::Malformed, 0),
        (&good.tag, DeadReason::AttemptsExhausted, 3),
    ] {
        let error = format!("{reason} error");
        let letter = DeadLetter {
            reason,
            error,
            attempts,
        };
        broker.dead_letter(tag, &letter).await.unwrap();
    }
    let dead = broker.dead_letters(&Q, 10).await.unwrap();
    assert_eq!(
        (&dead[0].raw[..], &dead[0].reason[..]),
        (&b"garbage"[..], "malformed")
    );
    assert!(dead[0].envelope.is_none());
    assert_eq!(dead[1].raw, doomed.encode().unwrap());
    assert_eq!(dead[1].envelope, Some(doomed));
    assert_eq!(dead[1].error, "attempts_exhausted error");
    assert_eq!(
        (&dead[1].reason[..], dead[1].attempts),
        ("attempts_exhausted", 3)
    );
    assert_eq!(broker.dead_letters(&Q, 1).await.unwrap().len(), 1);
    let stats = stats(&broker).await;
    assert!(stats.is_drained() && stats.dead == 2);
    assert_eq!(broker.purge(&Q).await.unwrap(), 2);
    // The tasks are gone; the worker that fetched still serves the queue.
    let purged = QueueStats {
        consumers: 1,
        ..QueueStats::default()
    };
    assert_eq!(self::stats(&broker).await, purged);
}

#[tokio::test]
async fn requeue_puts_an_unstarted_entry_back_at_the_tail() {
    let broker = MemoryBroker::new();
    enqueue(&broker, &["a", "b"].map(|n| task(n, Priority::Normal))).await;
    let a = fetch(&broker, 1).await.deliveries.remove(0);
    broker.requeue(&a.tag).await.unwrap();
    assert_eq!(stats(&broker).await.ready, [0, 2, 0]);
    let batch = fetch(&broker, 10).await;
    assert_eq!(names(&batch), ["b", "a"]);
    assert_ne!(batch.deliveries[1].tag, a.tag);
}

// Paused time: the producer's sleep ends only once the fetch waits (the
// clock moves when every task is idle), and the timeout is virtual too.
#[tokio::test(start_paused = true)]
async fn a_waiting_fetch_wakes_on_enqueue() {
    let broker = MemoryBroker::new();
    let producer = broker.clone();
    let handle = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        enqueue(&producer, &[task("wake", Priority::Low)]).await;
    });
    // The long wait cannot be what ends the fetch.
    let waiting = broker.fetch(&Q, "c", 1, Duration::from_secs(60));
    let batch = tokio::time::timeout(Duration::from_secs(1), waiting).await;
    assert_eq!(names(&batch.unwrap().unwrap()), ["wake"]);
    handle.await.unwrap();
}

#[tokio::test]
async fn a_waiting_fetch_returns_empty_after_its_wait() {
    let broker = MemoryBroker::new();
    let start = tokio::time::Instant::now();
    let wait = Duration::from_millis(50);
    assert!(broker.fetch(&Q, "c", 1, wait).await.unwrap().is_empty());
    assert!(start.elapsed() >= wait);
}

#[tokio::test]
async fn stats_report_backlog_age_consumers_and_counters() {
    let broker = MemoryBroker::new();
    let mut soon = task("soon", Priority::Normal);
    // Far enough ahead that it is still in the future when enqueued on a
    // loaded machine; the wait below is bounded by events, not by this.
    soon.eta = Some(Timestamp::now().saturating_add(Duration::from_millis(300)));
    let mut later = task("later", Priority::Normal);
    later.eta = Some(Timestamp::now().saturating_add(Duration::from_secs(60)));
    let ready = ["a", "b", "c"].map(|n| task(n, Priority::High));
    enqueue(&broker, &ready).await;
    enqueue(&broker, &[soon, later]).await;
    let empty = stats(&broker).await;
    assert_eq!((empty.consumers, empty.enqueued_total), (0, 3));

    let batch = broker.fetch(&Q, "c", 1, Duration::ZERO).await.unwrap();
    broker
        .ack(&[batch.deliveries[0].tag.clone()])
        .await
        .unwrap();
    // Wait (bounded) for the first delayed task to fall due.
    let due = async {
        while stats(&broker).await.delayed_due == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), due)
        .await
        .unwrap();
    let s = stats(&broker).await;
    assert_eq!((s.ready_total(), s.delayed, s.delayed_due), (2, 2, 1));
    assert_eq!(s.backlog(), 3);
    assert_eq!(
        (s.consumers, s.enqueued_total, s.completed_total),
        (1, 3, 1)
    );
    assert!(
        s.oldest_age
            .is_some_and(|age| age < Duration::from_secs(60))
    );
    assert!(!s.paused);

    // Promoting the due task counts it in; a drain counts everything out.
    let batch = broker.fetch(&Q, "d", 10, Duration::ZERO).await.unwrap();
    assert_eq!(batch.deliveries.len(), 3);
    let tags: Vec<_> = batch.deliveries.iter().map(|d| d.tag.clone()).collect();
    broker.ack(&tags).await.unwrap();
    let s = stats(&broker).await;
    assert_eq!((s.enqueued_total, s.completed_total), (4, 4));
    assert_eq!((s.backlog(), s.oldest_age, s.consumers), (0, None, 2));
}

#[tokio::test]
async fn a_paused_queue_is_neither_promoted_nor_fetched_until_resumed() {
    let broker = MemoryBroker::new();
    broker.pause(&Q).await.unwrap();
    broker.pause(&Q).await.unwrap();
    assert_eq!(broker.paused().await.unwrap(), [Q]);
    let mut delayed = task("delayed", Priority::Low);
    delayed.eta = Some(in_30_ms());
    enqueue(&broker, &[task("ready", Priority::High), delayed]).await;
    assert!(fetch(&broker, 10).await.is_empty());
    let s = stats(&broker).await;
    assert!(s.paused);
    assert_eq!((s.ready_total(), s.delayed), (1, 1));

    // A fetch waiting on the paused queue is woken by the resume.
    let resumer = broker.clone();
    let waiting =
        tokio::spawn(async move { resumer.fetch(&Q, "c", 10, Duration::from_secs(60)).await });
    let mut control = broker.control().await.unwrap();
    broker.resume(&Q).await.unwrap();
    let message = futures_util::StreamExt::next(&mut control).await;
    assert_eq!(message, Some(ControlMessage::Resume { queue: Q }));
    let batch = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(names(&batch), ["ready"]);
    assert!(broker.paused().await.unwrap().is_empty());
    assert_eq!(names(&fetch_when_ready(&broker).await), ["delayed"]);
}
