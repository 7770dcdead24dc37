//! The job store suite: every test runs on SQLite (a file per test) and on
//! PostgreSQL (a database per test); see `common/mod.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::store::{
    Finished, JobQuery, JobStatus, JobStore, NewJob, Progress, ProgressUpdate, Started, WorkerId,
};
use spool_broker::{Envelope, Priority, QueueName, TaskId, Timestamp, encode_payload};

store_suite!(
    lifecycle_with_result,
    redelivered_task_leaves_one_record,
    stale_writes_in_one_batch_and_replays,
    retrying_then_succeeded,
    progress_follows_the_latest_attempt,
    enqueued_records_never_regress,
    queries_filter_by_each_field,
    pagination_has_no_duplicates_or_gaps,
    counts_by_status,
    prune_deletes_only_old_finished_records,
    large_batches_with_duplicates,
    reconnecting_keeps_records,
    only_create_creates_a_store,
    requeued_dead_letter_starts_a_fresh_life,
    revived_dead_letter_keeps_counting_attempts,
    arguments_are_recorded_with_secrets_redacted,
    several_processes_write_at_once,
    several_processes_create_the_database_at_once,
);

const T0: u64 = 1_750_000_000_000;

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn envelope(name: &str) -> Envelope {
    let mut e = Envelope::new(name, QueueName::DEFAULT, Vec::new());
    e.created_at = Timestamp::from_millis(T0);
    e
}

fn worker(pid: u32) -> WorkerId {
    WorkerId::new("gpu-host-1", pid)
}

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn finished(e: &Envelope, status: JobStatus, offset_ms: u64) -> Finished {
    let mut f = Finished::from_envelope(e, status, at(offset_ms));
    f.worker = Some(worker(100 + e.attempt));
    f
}

async fn get(store: &JobStore, id: TaskId) -> spool_broker::store::JobRecord {
    store.get(id).await.unwrap().expect("the task has a record")
}

async fn all(store: &JobStore, query: JobQuery) -> Vec<spool_broker::store::JobRecord> {
    let page = store.query(&query.limit(10_000)).await.unwrap();
    assert!(page.next.is_none());
    page.records
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Rendition {
    height: u32,
    vmaf: f64,
    playlist: String,
}

async fn lifecycle_with_result(store: JobStore, _url: String) {
    let mut e = envelope("video.transcode");
    e.queue = queue("gpu");
    e.priority = Priority::High;
    e.tenant = Some("acme".into());
    assert!(store.get(e.id).await.unwrap().is_none());

    store
        .record_enqueued(&[NewJob::from_envelope(&e)])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!(r.status, JobStatus::Queued);
    assert_eq!(
        (r.name.as_str(), r.queue.as_str(), r.priority),
        ("video.transcode", "gpu", Priority::High)
    );
    assert_eq!(r.tenant.as_deref(), Some("acme"));
    assert_eq!((r.attempts, r.created_at), (0, at(0)));
    assert_eq!(
        (r.started_at, r.finished_at, r.worker.clone()),
        (None, None, None)
    );

    store
        .record_started(&[Started::from_envelope(&e, &worker(4242), at(10))])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Running, 1));
    assert_eq!(r.worker, Some(worker(4242)));
    assert_eq!(r.started_at, Some(at(10)));
    assert_eq!(store.status(e.id).await.unwrap(), Some(JobStatus::Running));

    let output = Rendition {
        height: 720,
        vmaf: 94.25,
        playlist: "720p.m3u8".into(),
    };
    let mut done = Finished::from_envelope(&e, JobStatus::Succeeded, at(500));
    done.result = Some(encode_payload(&output).unwrap());
    store.record_outcomes(&[done]).await.unwrap();

    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Succeeded, 1));
    assert_eq!(r.worker, Some(worker(4242)), "kept from the start record");
    assert_eq!((r.started_at, r.finished_at), (Some(at(10)), Some(at(500))));
    assert_eq!(r.error, None);
    assert_eq!(r.output::<Rendition>().unwrap(), Some(output));
    assert_eq!(
        r.result_json().unwrap(),
        Some(serde_json::json!({"height": 720, "vmaf": 94.25, "playlist": "720p.m3u8"}))
    );
    let json = r.to_json();
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["result"]["height"], 720);
    assert_eq!(json["worker"]["pid"], 4242);
}

async fn redelivered_task_leaves_one_record(store: JobStore, _url: String) {
    let first = envelope("video.transcode");
    let second = first.next_attempt(at(50));
    store
        .record_started(&[Started::from_envelope(&first, &worker(1), at(10))])
        .await
        .unwrap();
    store
        .record_started(&[Started::from_envelope(&second, &worker(2), at(60))])
        .await
        .unwrap();

    // Attempt 2's success is written first, then attempt 1's stale failure
    // and a stale start: neither may touch the newer outcome.
    let mut won = finished(&second, JobStatus::Succeeded, 90);
    won.result = Some(encode_payload(&7_u8).unwrap());
    store.record_outcomes(&[won]).await.unwrap();
    let mut stale = finished(&first, JobStatus::Failed, 95);
    stale.error = Some("worker 1 lost its lease".into());
    store.record_outcomes(&[stale]).await.unwrap();
    store
        .record_started(&[Started::from_envelope(&first, &worker(1), at(96))])
        .await
        .unwrap();

    let records = all(&store, JobQuery::new()).await;
    assert_eq!(records.len(), 1, "exactly one record per task id");
    let r = &records[0];
    assert_eq!(r.id, first.id);
    assert_eq!((r.status, r.attempts), (JobStatus::Succeeded, 2));
    assert_eq!(r.output::<u8>().unwrap(), Some(7));
    assert_eq!(r.error, None);
    assert_eq!(r.worker, Some(worker(102)));
    assert_eq!((r.started_at, r.finished_at), (Some(at(60)), Some(at(90))));
}

async fn stale_writes_in_one_batch_and_replays(store: JobStore, _url: String) {
    let first = envelope("video.probe");
    let second = first.next_attempt(at(1));
    let mut retry = finished(&first, JobStatus::Retrying, 5);
    retry.error = Some("timeout".into());
    let ok = finished(&second, JobStatus::Succeeded, 9);
    // Both attempts in one batch, newest first: the batch keeps the newest.
    store
        .record_outcomes(&[ok.clone(), retry.clone()])
        .await
        .unwrap();
    // A settler that retries a batch whose commit it did not see.
    store.record_outcomes(&[ok, retry]).await.unwrap();
    let records = all(&store, JobQuery::new()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].status, records[0].attempts),
        (JobStatus::Succeeded, 2)
    );
    assert_eq!(records[0].finished_at, Some(at(9)));

    // Two final outcomes of the same attempt (a reclaimed task that ran
    // twice): the later write wins, and there is still one record.
    let e = envelope("video.probe");
    let mut a = finished(&e, JobStatus::Failed, 10);
    a.error = Some("first runner".into());
    let b = finished(&e, JobStatus::Succeeded, 12);
    store.record_outcomes(&[a]).await.unwrap();
    store.record_outcomes(&[b]).await.unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.error), (JobStatus::Succeeded, None));
    assert_eq!(all(&store, JobQuery::new()).await.len(), 2);
}

async fn retrying_then_succeeded(store: JobStore, _url: String) {
    let first = envelope("video.vmaf");
    store
        .record_started(&[Started::from_envelope(&first, &worker(1), at(1))])
        .await
        .unwrap();
    store
        .record_progress(first.id, 1, &Progress::percent(40.0))
        .await
        .unwrap();
    let mut retry = finished(&first, JobStatus::Retrying, 20);
    retry.error = Some("ffmpeg exited with 1".into());
    store.record_outcomes(&[retry]).await.unwrap();
    let r = get(&store, first.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Retrying, 1));
    assert_eq!(r.error.as_deref(), Some("ffmpeg exited with 1"));

    let second = first.next_attempt(at(100));
    store
        .record_started(&[Started::from_envelope(&second, &worker(2), at(120))])
        .await
        .unwrap();
    let r = get(&store, first.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Running, 2));
    assert_eq!(r.worker, Some(worker(2)));
    assert_eq!((r.started_at, r.finished_at), (Some(at(120)), None));
    assert_eq!(r.progress, None, "a new attempt starts without progress");
    assert_eq!(
        r.error.as_deref(),
        Some("ffmpeg exited with 1"),
        "the last error stays visible while the task is retried"
    );

    let mut done = finished(&second, JobStatus::Succeeded, 300);
    done.result = Some(encode_payload(&93.1_f64).unwrap());
    store.record_outcomes(&[done]).await.unwrap();
    let r = get(&store, first.id).await;
    assert_eq!(
        (r.status, r.attempts, r.error.as_deref()),
        (JobStatus::Succeeded, 2, None)
    );
    assert_eq!(r.output::<f64>().unwrap(), Some(93.1));
    assert_eq!(all(&store, JobQuery::new()).await.len(), 1);
}

async fn progress_follows_the_latest_attempt(store: JobStore, _url: String) {
    let first = envelope("video.hls");
    // Progress for a task with no record is dropped without error.
    store
        .record_progress(first.id, 1, &Progress::percent(1.0))
        .await
        .unwrap();
    assert!(store.get(first.id).await.unwrap().is_none());

    store
        .record_started(&[Started::from_envelope(&first, &worker(1), at(1))])
        .await
        .unwrap();
    let report = Progress {
        percent: 37.5,
        stage: Some("encode 1080p".into()),
        message: Some("pass 1 of 2".into()),
        fps: Some(119.5),
        eta_seconds: Some(42.0),
        speed: None,
    };
    store.record_progress(first.id, 1, &report).await.unwrap();
    assert_eq!(get(&store, first.id).await.progress, Some(report.clone()));

    // A newer attempt started: the old attempt's reports are ignored.
    let second = first.next_attempt(at(2));
    store
        .record_started(&[Started::from_envelope(&second, &worker(2), at(3))])
        .await
        .unwrap();
    store
        .record_progress(first.id, 1, &Progress::percent(99.0))
        .await
        .unwrap();
    assert_eq!(get(&store, first.id).await.progress, None);

    let other = envelope("video.hls");
    store
        .record_started(&[Started::from_envelope(&other, &worker(3), at(1))])
        .await
        .unwrap();
    store
        .record_progress_many(&[
            ProgressUpdate {
                id: first.id,
                attempt: 2,
                progress: Progress::percent(10.0),
            },
            ProgressUpdate {
                id: other.id,
                attempt: 1,
                progress: Progress::percent(20.0),
            },
            ProgressUpdate {
                id: first.id,
                attempt: 2,
                progress: Progress::percent(15.0),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        get(&store, first.id).await.progress,
        Some(Progress::percent(15.0))
    );
    assert_eq!(
        get(&store, other.id).await.progress,
        Some(Progress::percent(20.0))
    );

    // A success ends at 100 % "done", whatever the last report said (a
    // throttled or late one is not left showing 15 %); a report after
    // the outcome changes nothing.
    store
        .record_outcomes(&[finished(&second, JobStatus::Succeeded, 9)])
        .await
        .unwrap();
    store
        .record_progress(first.id, 2, &Progress::percent(50.0))
        .await
        .unwrap();
    assert_eq!(
        get(&store, first.id).await.progress,
        Some(Progress {
            stage: Some("done".into()),
            ..Progress::percent(100.0)
        })
    );
    // A failure keeps the last progress: where it stopped.
    store
        .record_outcomes(&[finished(&other, JobStatus::Failed, 9)])
        .await
        .unwrap();
    assert_eq!(
        get(&store, other.id).await.progress,
        Some(Progress::percent(20.0))
    );
}

async fn enqueued_records_never_regress(store: JobStore, _url: String) {
    let mut later = envelope("video.thumbnail");
    later.eta = Some(at(60_000));
    let now = envelope("video.thumbnail");
    store
        .record_enqueued(&[NewJob::from_envelope(&later), NewJob::from_envelope(&now)])
        .await
        .unwrap();
    assert_eq!(get(&store, later.id).await.status, JobStatus::Scheduled);
    assert_eq!(get(&store, now.id).await.status, JobStatus::Queued);

    // The producer's record arrives after the worker's: it changes nothing.
    let e = envelope("video.thumbnail");
    store
        .record_started(&[Started::from_envelope(&e, &worker(1), at(5))])
        .await
        .unwrap();
    store
        .record_enqueued(&[NewJob::from_envelope(&e)])
        .await
        .unwrap();
    assert_eq!(get(&store, e.id).await.status, JobStatus::Running);
    store.record_enqueued(&[]).await.unwrap();
    store.record_started(&[]).await.unwrap();
    store.record_outcomes(&[]).await.unwrap();
}

/// Records over three queues, two tenants (and none), two names, several
/// statuses and creation times `T0 + i` seconds.
async fn seed(store: &JobStore, n: u64) -> Vec<Envelope> {
    let queues = ["default", "gpu", "analysis"];
    let mut envelopes = Vec::new();
    let mut outcomes = Vec::new();
    let mut started = Vec::new();
    let mut enqueued = Vec::new();
    for i in 0..n {
        let mut e = envelope(if i % 2 == 0 {
            "video.transcode"
        } else {
            "video.vmaf"
        });
        e.queue = queue(queues[(i % 3) as usize]);
        e.tenant = match i % 4 {
            0 => Some("acme".into()),
            1 => Some("globex".into()),
            _ => None,
        };
        e.created_at = at(i * 1_000);
        match i % 5 {
            0 => enqueued.push(NewJob::from_envelope(&e)),
            1 => started.push(Started::from_envelope(&e, &worker(1), at(i * 1_000 + 1))),
            2 => outcomes.push(finished(&e, JobStatus::Succeeded, i * 1_000 + 2)),
            3 => outcomes.push(finished(&e, JobStatus::Failed, i * 1_000 + 2)),
            _ => outcomes.push(finished(&e, JobStatus::Dead, i * 1_000 + 2)),
        }
        envelopes.push(e);
    }
    store.record_enqueued(&enqueued).await.unwrap();
    store.record_started(&started).await.unwrap();
    store.record_outcomes(&outcomes).await.unwrap();
    envelopes
}

fn ids(records: &[spool_broker::store::JobRecord]) -> HashSet<TaskId> {
    records.iter().map(|r| r.id).collect()
}

fn expected(envelopes: &[Envelope], keep: impl Fn(usize, &Envelope) -> bool) -> HashSet<TaskId> {
    envelopes
        .iter()
        .enumerate()
        .filter(|(i, e)| keep(*i, e))
        .map(|(_, e)| e.id)
        .collect()
}

async fn queries_filter_by_each_field(store: JobStore, _url: String) {
    let envelopes = seed(&store, 60).await;
    let status_of = |i: usize| match i % 5 {
        0 => JobStatus::Queued,
        1 => JobStatus::Running,
        2 => JobStatus::Succeeded,
        3 => JobStatus::Failed,
        _ => JobStatus::Dead,
    };

    let failed = all(
        &store,
        JobQuery::new().status([JobStatus::Failed, JobStatus::Dead]),
    )
    .await;
    assert_eq!(
        ids(&failed),
        expected(&envelopes, |i, _| matches!(
            status_of(i),
            JobStatus::Failed | JobStatus::Dead
        ))
    );
    assert!(
        failed
            .iter()
            .all(|r| matches!(r.status, JobStatus::Failed | JobStatus::Dead))
    );

    let gpu = all(&store, JobQuery::new().queue(queue("gpu"))).await;
    assert_eq!(
        ids(&gpu),
        expected(&envelopes, |_, e| e.queue.as_str() == "gpu")
    );

    let acme = all(&store, JobQuery::new().tenant("acme")).await;
    assert_eq!(
        ids(&acme),
        expected(&envelopes, |_, e| e.tenant.as_deref() == Some("acme"))
    );

    let vmaf = all(&store, JobQuery::new().name("video.vmaf")).await;
    assert_eq!(
        ids(&vmaf),
        expected(&envelopes, |_, e| e.name == "video.vmaf")
    );

    let window = all(
        &store,
        JobQuery::new().created_between(Some(at(10_000)), Some(at(20_000))),
    )
    .await;
    assert_eq!(
        ids(&window),
        expected(&envelopes, |i, _| (10..20).contains(&i))
    );
    // Newest first by default.
    assert!(window.windows(2).all(|w| w[0].created_at > w[1].created_at));

    let combined = all(
        &store,
        JobQuery::new()
            .queue(queue("default"))
            .status([JobStatus::Succeeded])
            .created_between(Some(at(0)), None),
    )
    .await;
    assert_eq!(
        ids(&combined),
        expected(&envelopes, |i, e| {
            e.queue == QueueName::DEFAULT && status_of(i) == JobStatus::Succeeded
        })
    );
    assert!(!combined.is_empty());

    let none = all(&store, JobQuery::new().tenant("nobody")).await;
    assert!(none.is_empty());
    // An empty status list filters nothing.
    let everything = all(&store, JobQuery::new().status([])).await;
    assert_eq!(everything.len(), 60);
}

async fn pagination_has_no_duplicates_or_gaps(store: JobStore, _url: String) {
    // 250 records, ten per millisecond: ties on the creation time must be
    // broken by id without losing or repeating anything.
    let mut outcomes = Vec::new();
    for i in 0..250 {
        let mut e = envelope("video.page");
        e.created_at = at(i / 10);
        outcomes.push(finished(&e, JobStatus::Succeeded, 1_000));
    }
    store.record_outcomes(&outcomes).await.unwrap();
    let everything: HashSet<TaskId> = outcomes.iter().map(|f| f.id).collect();

    for oldest_first in [false, true] {
        let mut query = JobQuery::new().limit(100);
        query.oldest_first = oldest_first;
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let page = store.query(&query).await.unwrap();
            sizes.push(page.records.len());
            seen.extend(page.records.iter().map(|r| (r.created_at, r.id)));
            match page.next {
                Some(cursor) => {
                    // Cursors survive a round trip through text (a CLI flag).
                    query.after = Some(cursor.to_string().parse().unwrap());
                }
                None => break,
            }
        }
        assert_eq!(sizes, [100, 100, 50], "oldest_first={oldest_first}");
        let unique: HashSet<TaskId> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(unique.len(), 250, "no duplicates");
        assert_eq!(unique, everything, "no gaps");
        let mut sorted = seen.clone();
        sorted.sort();
        if !oldest_first {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "pages in order, oldest_first={oldest_first}");
    }

    // A page that ends exactly at the last record has no next.
    let page = store.query(&JobQuery::new().limit(250)).await.unwrap();
    assert_eq!((page.records.len(), page.next), (250, None));
}

async fn counts_by_status(store: JobStore, _url: String) {
    assert!(store.count_by_status(None).await.unwrap().is_empty());
    let envelopes = seed(&store, 30).await;
    let counts = store.count_by_status(None).await.unwrap();
    assert_eq!(
        counts,
        [
            (JobStatus::Queued, 6),
            (JobStatus::Running, 6),
            (JobStatus::Succeeded, 6),
            (JobStatus::Failed, 6),
            (JobStatus::Dead, 6),
        ]
    );
    let gpu = store.count_by_status(Some(&queue("gpu"))).await.unwrap();
    let expected_gpu = envelopes
        .iter()
        .filter(|e| e.queue.as_str() == "gpu")
        .count() as u64;
    assert_eq!(gpu.iter().map(|(_, n)| n).sum::<u64>(), expected_gpu);
    assert!(
        store
            .count_by_status(Some(&queue("nowhere")))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn prune_deletes_only_old_finished_records(store: JobStore, _url: String) {
    let day = 86_400_000;
    let now = Timestamp::now().as_millis();
    let old = now - 10 * day;
    let mut outcomes = Vec::new();
    let mut keep = HashSet::new();
    // 23 old finished records of every final status: pruned.
    for (i, status) in JobStatus::FINISHED.iter().cycle().take(23).enumerate() {
        let mut e = envelope("video.old");
        e.created_at = Timestamp::from_millis(old - 1_000);
        let mut f = Finished::from_envelope(&e, *status, Timestamp::from_millis(old + i as u64));
        f.attempt = 1;
        outcomes.push(f);
    }
    // Recent finished records: kept.
    for _ in 0..5 {
        let e = envelope("video.new");
        let f = Finished::from_envelope(&e, JobStatus::Succeeded, Timestamp::from_millis(now));
        keep.insert(f.id);
        outcomes.push(f);
    }
    // An old retrying record: not finished, kept.
    let e = envelope("video.retrying");
    let f = Finished::from_envelope(&e, JobStatus::Retrying, Timestamp::from_millis(old));
    keep.insert(f.id);
    outcomes.push(f);
    store.record_outcomes(&outcomes).await.unwrap();
    // Old running and queued records: kept.
    let mut e = envelope("video.running");
    e.created_at = Timestamp::from_millis(old);
    store
        .record_started(&[Started::from_envelope(
            &e,
            &worker(1),
            Timestamp::from_millis(old),
        )])
        .await
        .unwrap();
    keep.insert(e.id);
    let mut q = envelope("video.queued");
    q.created_at = Timestamp::from_millis(old);
    store
        .record_enqueued(&[NewJob::from_envelope(&q)])
        .await
        .unwrap();
    keep.insert(q.id);

    // Batches of 7: four batches delete 7, 7, 7 and 2.
    let pruned = store.prune(Duration::from_secs(86_400), 7).await.unwrap();
    assert_eq!(pruned, 23);
    let left = all(&store, JobQuery::new()).await;
    assert_eq!(ids(&left), keep);
    assert_eq!(
        store.prune(Duration::from_secs(86_400), 7).await.unwrap(),
        0
    );

    // An exact multiple of the batch size ends too.
    assert_eq!(
        store
            .prune_finished_before(Timestamp::from_millis(now + 1), 5)
            .await
            .unwrap(),
        5
    );
}

async fn large_batches_with_duplicates(store: JobStore, _url: String) {
    // A settler's full group commit: 4096 outcomes, some of them the same
    // task twice (two attempts), in one call.
    let mut outcomes = Vec::new();
    let mut distinct = HashSet::new();
    for i in 0..4_000 {
        let mut e = envelope("bench.noop");
        e.created_at = at(i);
        distinct.insert(e.id);
        outcomes.push(finished(&e, JobStatus::Succeeded, i + 1));
        if i % 40 == 0 {
            // 100 tasks also carry a stale retry later in the batch.
            outcomes.push(finished(
                &e.next_attempt(at(0)),
                JobStatus::Succeeded,
                i + 2,
            ));
            outcomes.push(finished(&e, JobStatus::Retrying, i + 3));
        }
    }
    assert!(outcomes.len() == 4_200);
    store.record_outcomes(&outcomes[..4_096]).await.unwrap();
    store.record_outcomes(&outcomes[4_096..]).await.unwrap();
    let counts = store.count_by_status(None).await.unwrap();
    assert_eq!(counts, [(JobStatus::Succeeded, 4_000)]);
    let page = store
        .query(&JobQuery::new().status([JobStatus::Succeeded]).limit(10_000))
        .await
        .unwrap();
    assert_eq!(ids(&page.records), distinct);
    assert_eq!(page.records.iter().filter(|r| r.attempts == 2).count(), 100);
}

async fn reconnecting_keeps_records(store: JobStore, url: String) {
    let e = envelope("video.persist");
    store
        .record_outcomes(&[finished(&e, JobStatus::Succeeded, 1)])
        .await
        .unwrap();
    // A second process opening the store finds what the first wrote.
    let again = JobStore::connect(&url).await.unwrap();
    assert_eq!(get(&again, e.id).await.status, JobStatus::Succeeded);
    again.close().await;
    assert!(matches!(
        again.get(e.id).await,
        Err(spool_broker::Error::Closed)
    ));
}

async fn only_create_creates_a_store(_store: JobStore, url: String) {
    // A SQLite file that does not exist yet; a PostgreSQL database that
    // does not exist yet.
    let fresh = match url.strip_suffix("spool.db") {
        Some(dir) => format!("{dir}other.db"),
        None => format!("{url}_fresh"),
    };
    // Opening names the store and creates nothing.
    let err = JobStore::connect(&fresh).await.unwrap_err().to_string();
    assert!(
        err.contains("does not exist") && err.contains("spoolctl store migrate"),
        "{err}"
    );
    if let Some(dir) = url.strip_suffix("spool.db") {
        assert!(!std::path::Path::new(&fresh["sqlite://".len()..]).exists());
        // Nor are directories made for a path that has none.
        let nested = format!("{dir}nested/deeper/other.db");
        let err = JobStore::create(&nested).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}nested", &dir["sqlite://".len()..])),
            "{err}"
        );
        assert!(!std::path::Path::new(&format!("{}nested", &dir["sqlite://".len()..])).exists());
    }
    let store = JobStore::create(&fresh).await.unwrap();
    let e = envelope("video.fresh");
    store
        .record_outcomes(&[finished(&e, JobStatus::Succeeded, 1)])
        .await
        .unwrap();
    assert_eq!(get(&store, e.id).await.status, JobStatus::Succeeded);
    store.close().await;
    // Once created, it opens.
    let again = JobStore::connect(&fresh).await.unwrap();
    assert_eq!(get(&again, e.id).await.status, JobStatus::Succeeded);
    again.close().await;
    if fresh.starts_with("postgres") {
        use sqlx::migrate::MigrateDatabase;
        sqlx::Postgres::force_drop_database(&fresh).await.unwrap();
    }
}

async fn requeued_dead_letter_starts_a_fresh_life(store: JobStore, _url: String) {
    let mut e = envelope("video.transcode");
    e.attempt = 3;
    let mut dead = finished(&e, JobStatus::Dead, 10);
    dead.error = Some("out of attempts".into());
    store.record_outcomes(&[dead]).await.unwrap();

    // An operator sends the dead letter back: attempts count from 1 again.
    let mut revived = e.clone();
    revived.attempt = 1;
    store
        .record_requeued(&[NewJob::from_envelope(&revived)])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Queued, 0));
    assert_eq!((r.finished_at, r.worker.clone()), (None, None));
    assert_eq!(r.error.as_deref(), Some("out of attempts"));

    store
        .record_started(&[Started::from_envelope(&revived, &worker(9), at(20))])
        .await
        .unwrap();
    store
        .record_outcomes(&[finished(&revived, JobStatus::Succeeded, 30)])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Succeeded, 1));
    assert_eq!((r.error, r.finished_at), (None, Some(at(30))));
    assert_eq!(all(&store, JobQuery::new()).await.len(), 1);
}

async fn revived_dead_letter_keeps_counting_attempts(store: JobStore, _url: String) {
    let mut e = envelope("video.transcode");
    e.attempt = 3;
    store
        .record_outcomes(&[finished(&e, JobStatus::Dead, 10)])
        .await
        .unwrap();
    // What the broker sends back: the next attempt of the same task.
    let revived = e.next_attempt(None);
    store
        .record_requeued(&[NewJob::from_envelope(&revived)])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Queued, 3));
    // The dead run's late writes no longer apply; the new run's do.
    store
        .record_outcomes(&[finished(&e, JobStatus::Dead, 15)])
        .await
        .unwrap();
    assert_eq!(get(&store, e.id).await.status, JobStatus::Queued);
    store
        .record_started(&[Started::from_envelope(&revived, &worker(9), at(20))])
        .await
        .unwrap();
    let r = get(&store, e.id).await;
    assert_eq!((r.status, r.attempts), (JobStatus::Running, 4));
}

async fn arguments_are_recorded_with_secrets_redacted(store: JobStore, url: String) {
    let args =
        serde_json::json!({"video": "in.mp4", "auth": {"user": "ci", "token": "s3cr3t-t0ken"}});
    let mut e = Envelope::new("media.fetch", queue("q"), encode_payload(&args).unwrap());
    e.mark_secret(&["auth.token"]);
    e.eta = Some(at(60_000));
    store
        .record_enqueued(&[NewJob::from_envelope(&e)])
        .await
        .unwrap();
    let expected = serde_json::json!({"video": "in.mp4", "auth": {"user": "ci", "token": "***"}});
    let r = get(&store, e.id).await;
    assert_eq!(
        (r.status, r.args.as_ref()),
        (JobStatus::Scheduled, Some(&expected))
    );
    assert_eq!(r.to_json()["args"], expected);

    // The worker's writes keep the producer's arguments.
    store
        .record_started(&[Started::from_envelope(&e, &worker(1), at(70_000))])
        .await
        .unwrap();
    store
        .record_outcomes(&[finished(&e, JobStatus::Succeeded, 80_000)])
        .await
        .unwrap();
    assert_eq!(get(&store, e.id).await.args, Some(expected));

    // The secret is nowhere in the database, whatever column one reads.
    store.close().await;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let db = path.split('?').next().unwrap();
        let needle = b"s3cr3t-t0ken";
        let files = [db.to_owned(), format!("{db}-wal")].map(|f| {
            let bytes = std::fs::read(&f).unwrap_or_default();
            (f, bytes)
        });
        for (file, bytes) in &files {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{file}");
        }
        // The files read are the ones written: the record is in one of
        // them (still in the write-ahead log if no checkpoint ran yet).
        assert!(
            files
                .iter()
                .any(|(_, bytes)| bytes.windows(11).any(|w| w == b"media.fetch"))
        );
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM spool_jobs t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(dump.contains("media.fetch") && !dump.contains("s3cr3t"));
    }
}

// ------------------------------------------------------------ processes

const WRITERS: u32 = 4;
const PER_WRITER: usize = 2_000;
const WRITER_BATCH: usize = 100;
const SHARED: usize = 50;

/// Four OS processes (this test binary, re-run as `writer_process`) write
/// 2,000 outcomes each into the same database at the same moment, in
/// batches of 100, each also starting and finishing the same 50 shared
/// tasks as a different attempt: a task re-delivered across workers.
async fn several_processes_write_at_once(store: JobStore, url: String) {
    let shared: Vec<TaskId> = (0..SHARED).map(|_| TaskId::new()).collect();
    let pids = run_writers(&url, &shared).await;
    check_writers(&store, &shared, &pids).await;
}

/// The same four processes on a database nobody has opened yet: they race
/// to create it (the SQLite file, the PostgreSQL database) and to migrate
/// it, as the workers of a new fleet do.
async fn several_processes_create_the_database_at_once(_store: JobStore, url: String) {
    let fresh = match url.strip_suffix("spool.db") {
        Some(dir) => format!("{dir}race.db"),
        None => format!("{url}_race"),
    };
    let shared: Vec<TaskId> = (0..SHARED).map(|_| TaskId::new()).collect();
    let pids = run_writers(&fresh, &shared).await;
    let store = JobStore::connect(&fresh).await.unwrap();
    check_writers(&store, &shared, &pids).await;
    store.close().await;
    if fresh.starts_with("postgres") {
        use sqlx::migrate::MigrateDatabase;
        sqlx::Postgres::force_drop_database(&fresh).await.unwrap();
    }
}

/// Runs the writer processes against `url`, which they open together a
/// second from now, and returns their process ids once all have passed.
async fn run_writers(url: &str, shared: &[TaskId]) -> Vec<u32> {
    let shared_arg = shared
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let start = Timestamp::now().as_millis() + 1_000;
    let children: Vec<_> = (0..WRITERS)
        .map(|index| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "writer_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("SPOOL_STORE_TEST_WRITER", index.to_string())
                .env("SPOOL_STORE_TEST_URL", url)
                .env("SPOOL_STORE_TEST_SHARED", &shared_arg)
                .env("SPOOL_STORE_TEST_START_MS", start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (index, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "writer {index} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "writer {index} did not run"
        );
    }
    pids
}

/// Exactly one record per task: 8,000 unique ones, and the 50 shared ones
/// with the highest attempt's outcome.
async fn check_writers(store: &JobStore, shared: &[TaskId], pids: &[u32]) {
    let unique = all(store, JobQuery::new().name("proc.unique")).await;
    assert_eq!(unique.len(), WRITERS as usize * PER_WRITER);
    assert!(unique.iter().all(|r| r.status == JobStatus::Succeeded));
    assert_eq!(ids(&unique).len(), unique.len());

    let records = all(store, JobQuery::new().name("proc.shared")).await;
    assert_eq!(ids(&records), shared.iter().copied().collect());
    let last = pids[WRITERS as usize - 1];
    for r in &records {
        assert_eq!((r.status, r.attempts), (JobStatus::Succeeded, WRITERS));
        assert_eq!(r.worker.as_ref().map(|w| w.pid), Some(last));
    }
    let total: u64 = store
        .count_by_status(None)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, (WRITERS as usize * PER_WRITER + SHARED) as u64);
}

/// The child side of `several_processes_write_at_once`; does nothing in a
/// normal test run.
#[test]
fn writer_process() {
    let Ok(index) = std::env::var("SPOOL_STORE_TEST_WRITER") else {
        return;
    };
    let index: u32 = index.parse().unwrap();
    let url = std::env::var("SPOOL_STORE_TEST_URL").unwrap();
    let start: u64 = std::env::var("SPOOL_STORE_TEST_START_MS")
        .unwrap()
        .parse()
        .unwrap();
    let shared: Vec<TaskId> = std::env::var("SPOOL_STORE_TEST_SHARED")
        .unwrap()
        .split(',')
        .map(|id| id.parse().unwrap())
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(write_as_process(index, &url, start, &shared));
}

async fn write_as_process(index: u32, url: &str, start: u64, shared: &[TaskId]) {
    let wait = start.saturating_sub(Timestamp::now().as_millis());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let store = JobStore::create(url).await.unwrap();
    let me = WorkerId::new("writer-host", std::process::id());

    let attempt = index + 1;
    let shared: Vec<Envelope> = shared
        .iter()
        .map(|id| {
            let mut e = Envelope::new("proc.shared", QueueName::DEFAULT, Vec::new());
            e.id = *id;
            e.attempt = attempt;
            e
        })
        .collect();
    let batches = PER_WRITER / WRITER_BATCH;
    for batch in 0..batches {
        let mut envelopes: Vec<Envelope> = (0..WRITER_BATCH)
            .map(|_| Envelope::new("proc.unique", QueueName::DEFAULT, Vec::new()))
            .collect();
        if batch == batches / 2 {
            envelopes.extend(shared.iter().cloned());
        }
        let started: Vec<Started> = envelopes
            .iter()
            .map(|e| Started::from_envelope(e, &me, Timestamp::now()))
            .collect();
        store.record_started(&started).await.unwrap();
        let outcomes: Vec<Finished> = envelopes
            .iter()
            .map(|e| {
                let mut f = Finished::from_envelope(e, JobStatus::Succeeded, Timestamp::now());
                f.worker = Some(me.clone());
                f.result = Some(encode_payload(&(index, batch)).unwrap());
                f
            })
            .collect();
        store.record_outcomes(&outcomes).await.unwrap();
    }
    store.close().await;
}
