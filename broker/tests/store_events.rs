//! Each task's timeline (`JobStore::events`): one event per transition of
//! each attempt, written with the record, never duplicated by a
//! redelivered write, pruned with the record. Every test runs on SQLite
//! and on PostgreSQL; see `common/mod.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use spool_broker::store::{
    EVENT_ERROR_LEN, Finished, JobEvent, JobQuery, JobStatus, JobStore, JobTransition, NewJob,
    Started, WorkerId,
};
use spool_broker::{Envelope, QueueName, TaskId, Timestamp};

store_suite!(
    every_transition_of_every_attempt_in_order,
    redelivered_writes_add_no_events,
    duplicates_in_one_batch_write_one_event,
    revoked_before_any_attempt,
    requeued_dead_letter_continues_the_timeline,
    long_errors_are_cut_to_an_excerpt,
    pruning_a_record_forgets_its_events,
    events_of_many_tasks_in_large_batches,
);

const T0: u64 = 1_750_000_000_000;

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn envelope(name: &str) -> Envelope {
    let mut e = Envelope::new(name, QueueName::DEFAULT, Vec::new());
    e.created_at = at(0);
    e
}

fn worker(pid: u32) -> WorkerId {
    WorkerId::new("gpu-host-1", pid)
}

fn started(e: &Envelope, pid: u32, offset_ms: u64) -> Started {
    Started::from_envelope(e, &worker(pid), at(offset_ms))
}

fn finished(e: &Envelope, status: JobStatus, offset_ms: u64, pid: u32) -> Finished {
    let mut f = Finished::from_envelope(e, status, at(offset_ms));
    f.worker = Some(worker(pid));
    f
}

/// The timeline as (attempt, transition, time offset, worker pid, error).
async fn timeline(
    store: &JobStore,
    id: TaskId,
) -> Vec<(u32, JobTransition, u64, Option<u32>, Option<String>)> {
    store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e: JobEvent| {
            (
                e.attempt,
                e.transition,
                e.at.as_millis() - T0,
                e.worker.map(|w| w.pid),
                e.error,
            )
        })
        .collect()
}

async fn every_transition_of_every_attempt_in_order(store: JobStore, _url: String) {
    let e = envelope("video.transcode");
    assert!(store.events(e.id).await.unwrap().is_empty());
    store
        .record_enqueued(&[NewJob::from_envelope(&e)])
        .await
        .unwrap();
    store.record_started(&[started(&e, 7, 10)]).await.unwrap();
    let mut retry = finished(&e, JobStatus::Retrying, 20, 7);
    retry.error = Some("encoder crashed".into());
    store.record_outcomes(&[retry]).await.unwrap();
    let second = e.next_attempt(None);
    store
        .record_started(&[started(&second, 8, 30)])
        .await
        .unwrap();
    store
        .record_outcomes(&[finished(&second, JobStatus::Succeeded, 40, 8)])
        .await
        .unwrap();

    use JobTransition::{Queued, Retrying, Running, Succeeded};
    assert_eq!(
        timeline(&store, e.id).await,
        [
            (1, Queued, 0, None, None),
            (1, Running, 10, Some(7), None),
            (1, Retrying, 20, Some(7), Some("encoder crashed".to_owned())),
            (2, Running, 30, Some(8), None),
            (2, Succeeded, 40, Some(8), None),
        ]
    );
    // The events as the CLI and the dashboard write them.
    let events = store.events(e.id).await.unwrap();
    let json = serde_json::to_value(&events[2]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "attempt": 1,
            "transition": "retrying",
            "at": "2025-06-15T15:06:40.020Z",
            "worker": {"host": "gpu-host-1", "pid": 7},
            "error": "encoder crashed",
        })
    );
    // Another task's events are its own.
    assert!(store.events(envelope("x").id).await.unwrap().is_empty());
}

async fn redelivered_writes_add_no_events(store: JobStore, _url: String) {
    let mut e = envelope("video.probe");
    e.eta = Some(at(5_000));
    let job = NewJob::from_envelope(&e);
    let start = started(&e, 1, 10);
    let mut end = finished(&e, JobStatus::Failed, 20, 1);
    end.error = Some("no such file".into());
    // Every write arrives twice, and the start once more after the end.
    for _ in 0..2 {
        store
            .record_enqueued(std::slice::from_ref(&job))
            .await
            .unwrap();
        store
            .record_started(std::slice::from_ref(&start))
            .await
            .unwrap();
        store
            .record_outcomes(std::slice::from_ref(&end))
            .await
            .unwrap();
    }
    store
        .record_started(std::slice::from_ref(&start))
        .await
        .unwrap();
    use JobTransition::{Failed, Running, Scheduled};
    let expected = [
        (1, Scheduled, 0, None, None),
        (1, Running, 10, Some(1), None),
        (1, Failed, 20, Some(1), Some("no such file".to_owned())),
    ];
    assert_eq!(timeline(&store, e.id).await, expected);

    // The same attempt redelivered to another worker after its lease ran
    // out: its later start replaces the first, as it does in the record.
    store.record_started(&[started(&e, 2, 15)]).await.unwrap();
    let events = timeline(&store, e.id).await;
    assert_eq!(events[1], (1, Running, 15, Some(2), None));
    assert_eq!(events.len(), 3);
    // A late replay of the first start does not bring it back.
    store.record_started(&[start]).await.unwrap();
    assert_eq!(
        timeline(&store, e.id).await[1],
        (1, Running, 15, Some(2), None)
    );
}

async fn duplicates_in_one_batch_write_one_event(store: JobStore, _url: String) {
    let e = envelope("video.vmaf");
    let second = e.next_attempt(None);
    store
        .record_started(&[
            started(&e, 1, 10),
            started(&e, 1, 10),
            started(&second, 2, 30),
        ])
        .await
        .unwrap();
    store
        .record_outcomes(&[
            finished(&e, JobStatus::Retrying, 20, 1),
            finished(&second, JobStatus::Succeeded, 40, 2),
            finished(&e, JobStatus::Retrying, 20, 1),
            finished(&second, JobStatus::Succeeded, 41, 2),
        ])
        .await
        .unwrap();
    use JobTransition::{Retrying, Running, Succeeded};
    // Every transition is kept, not just the one the record ends with; of
    // two writes of one transition, the later wins.
    assert_eq!(
        timeline(&store, e.id).await,
        [
            (1, Running, 10, Some(1), None),
            (1, Retrying, 20, Some(1), None),
            (2, Running, 30, Some(2), None),
            (2, Succeeded, 41, Some(2), None),
        ]
    );
    let record = store.get(e.id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Succeeded, 2));
}

async fn revoked_before_any_attempt(store: JobStore, _url: String) {
    let e = envelope("thumbs.make");
    store
        .record_enqueued(&[NewJob::from_envelope(&e)])
        .await
        .unwrap();
    let mut revoked = Finished::from_envelope(&e, JobStatus::Revoked, at(50));
    revoked.attempt = 0;
    store.record_outcomes(&[revoked]).await.unwrap();
    use JobTransition::{Queued, Revoked};
    assert_eq!(
        timeline(&store, e.id).await,
        [(1, Queued, 0, None, None), (0, Revoked, 50, None, None)]
    );
}

async fn requeued_dead_letter_continues_the_timeline(store: JobStore, _url: String) {
    let mut e = envelope("video.transcode");
    e.attempt = 3;
    let mut dead = finished(&e, JobStatus::Dead, 10, 3);
    dead.error = Some("out of attempts".into());
    store.record_outcomes(&[dead]).await.unwrap();
    let revived = e.next_attempt(None);
    let before = Timestamp::now();
    store
        .record_requeued(&[NewJob::from_envelope(&revived)])
        .await
        .unwrap();
    store
        .record_started(&[started(&revived, 4, 20)])
        .await
        .unwrap();
    let events = store.events(e.id).await.unwrap();
    let kinds: Vec<(u32, JobTransition)> =
        events.iter().map(|e| (e.attempt, e.transition)).collect();
    // The requeue is stamped when it was written, after the fixed times
    // of this test's other writes.
    assert_eq!(
        kinds,
        [
            (3, JobTransition::Dead),
            (4, JobTransition::Running),
            (4, JobTransition::Requeued),
        ]
    );
    assert!(events[2].at >= before, "{events:?}");
}

async fn long_errors_are_cut_to_an_excerpt(store: JobStore, _url: String) {
    let e = envelope("video.transcode");
    let mut failed = finished(&e, JobStatus::Failed, 10, 1);
    // Multi-byte characters: the cut falls on a character boundary.
    failed.error = Some("é".repeat(EVENT_ERROR_LEN * 3));
    store.record_outcomes(&[failed.clone()]).await.unwrap();
    let events = store.events(e.id).await.unwrap();
    let excerpt = events[0].error.as_deref().unwrap();
    assert_eq!(excerpt.chars().count(), EVENT_ERROR_LEN);
    assert!(excerpt.chars().all(|c| c == 'é'));
    // The record keeps the whole error.
    let record = store.get(e.id).await.unwrap().unwrap();
    assert_eq!(record.error, failed.error);
}

async fn pruning_a_record_forgets_its_events(store: JobStore, _url: String) {
    let day = 86_400_000;
    let old = Timestamp::now().as_millis() - 10 * day;
    let mut gone = envelope("video.old");
    gone.created_at = Timestamp::from_millis(old - 1_000);
    let mut kept = envelope("video.running");
    kept.created_at = Timestamp::from_millis(old - 1_000);
    store
        .record_enqueued(&[NewJob::from_envelope(&gone), NewJob::from_envelope(&kept)])
        .await
        .unwrap();
    store
        .record_started(&[Started::from_envelope(
            &kept,
            &worker(1),
            Timestamp::from_millis(old),
        )])
        .await
        .unwrap();
    let mut done =
        Finished::from_envelope(&gone, JobStatus::Succeeded, Timestamp::from_millis(old));
    done.attempt = 1;
    store.record_outcomes(&[done]).await.unwrap();
    assert_eq!(store.events(gone.id).await.unwrap().len(), 2);

    assert_eq!(
        store.prune(Duration::from_secs(86_400), 10).await.unwrap(),
        1
    );
    assert!(store.get(gone.id).await.unwrap().is_none());
    assert!(store.events(gone.id).await.unwrap().is_empty());
    assert_eq!(store.events(kept.id).await.unwrap().len(), 2);
    assert_eq!(
        store.query(&JobQuery::new()).await.unwrap().records.len(),
        1
    );
}

async fn events_of_many_tasks_in_large_batches(store: JobStore, _url: String) {
    // More than one chunk of rows per statement, with repeats.
    let envelopes: Vec<Envelope> = (0..700).map(|_| envelope("video.bulk")).collect();
    let jobs: Vec<NewJob> = envelopes.iter().map(NewJob::from_envelope).collect();
    store.record_enqueued(&jobs).await.unwrap();
    let starts: Vec<Started> = envelopes
        .iter()
        .chain(&envelopes[..300])
        .map(|e| started(e, 1, 10))
        .collect();
    store.record_started(&starts).await.unwrap();
    let ends: Vec<Finished> = envelopes
        .iter()
        .map(|e| finished(e, JobStatus::Succeeded, 20, 1))
        .collect();
    store.record_outcomes(&ends).await.unwrap();
    for e in [
        &envelopes[0],
        &envelopes[299],
        &envelopes[300],
        &envelopes[699],
    ] {
        let kinds: Vec<JobTransition> = store
            .events(e.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.transition)
            .collect();
        assert_eq!(
            kinds,
            [
                JobTransition::Queued,
                JobTransition::Running,
                JobTransition::Succeeded
            ]
        );
    }
}
