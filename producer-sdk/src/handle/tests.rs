//! Task handles over a [`MemoryBroker`] and an in-memory SQLite store, with
//! a hand-driven "worker" that records outcomes and publishes events.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use spool_broker::store::{Finished, JobQuery, JobStore};
use spool_broker::{
    Broker, ControlStream, DeadLetter, DeadLetterEntry, DeliveryTag, Envelope, FetchBatch,
    JobStatus, MemoryBroker, Progress, QueueName, QueueStats, RateLimit, ReclaimRequest, Reclaimed,
    RecordPolicy, Task, TaskEvent, TaskEvents, TaskId, TaskOptions, TaskPlace, Timestamp,
    encode_payload,
};
use tokio::sync::broadcast;

use crate::{Client, Error};

#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    path: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Info {
    width: u32,
    height: u32,
}

impl Task for Probe {
    const NAME: &'static str = "test.handle.probe";
    type Output = Info;
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping;

impl Task for Ping {
    const NAME: &'static str = "test.handle.ping";
    type Output = ();
}

#[derive(Debug, Serialize, Deserialize)]
struct Quiet;

impl Task for Quiet {
    const NAME: &'static str = "test.handle.quiet";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            record: RecordPolicy::Off,
            ..TaskOptions::default()
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Sparse;

impl Task for Sparse {
    const NAME: &'static str = "test.handle.sparse";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            record: RecordPolicy::FailuresOnly,
            ..TaskOptions::default()
        }
    }
}

fn probe() -> Probe {
    Probe {
        path: "cat.mp4".into(),
    }
}

async fn store() -> JobStore {
    JobStore::connect("sqlite::memory:").await.unwrap()
}

async fn client<B: Broker>(broker: B) -> Client<B> {
    Client::new(broker).with_store(store().await)
}

/// Does what a worker with a store does at the end of a task: records the
/// outcome, then (if `announce`) publishes it.
async fn finish<B: Broker>(
    client: &Client<B>,
    id: TaskId,
    status: JobStatus,
    result: Option<Vec<u8>>,
    error: Option<&str>,
    announce: bool,
) {
    let store = client.store().unwrap();
    let record = store.get(id).await.unwrap().unwrap();
    let outcome = Finished {
        id,
        name: record.name,
        queue: record.queue,
        priority: record.priority,
        tenant: record.tenant,
        created_at: record.created_at,
        attempt: 1,
        status,
        result,
        error: error.map(Into::into),
        started_at: None,
        finished_at: Timestamp::now(),
        worker: None,
    };
    store.record_outcomes(&[outcome]).await.unwrap();
    if announce {
        client
            .broker()
            .publish_events(&[TaskEvent::Finished { id, status }])
            .await
            .unwrap();
    }
}

async fn report<B: Broker>(client: &Client<B>, id: TaskId, percent: f32) {
    client
        .broker()
        .publish_events(&[TaskEvent::Progress {
            id,
            attempt: 1,
            progress: Progress::percent(percent),
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_without_a_store_hands_out_no_handles() {
    let client = Client::new(MemoryBroker::new());
    assert!(client.store().is_none());
    let err = client.task::<Probe>(TaskId::new()).unwrap_err();
    assert!(matches!(err, Error::NoStore), "{err:?}");
    assert!(err.to_string().contains("with_store"), "{err}");
}

#[tokio::test]
async fn enqueues_are_recorded_queued_or_scheduled() {
    let client = client(MemoryBroker::new()).await;
    let now = client.enqueue(probe()).await.unwrap();
    let later = client
        .enqueue(probe())
        .countdown(Duration::from_secs(60))
        .await
        .unwrap();
    let handle = client.task::<Probe>(now).unwrap();
    assert_eq!(handle.id(), now);
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Queued));
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.name, Probe::NAME);
    assert_eq!(record.attempts, 0);
    assert_eq!(
        client.task::<Probe>(later).unwrap().status().await.unwrap(),
        Some(JobStatus::Scheduled)
    );
}

#[tokio::test]
async fn enqueue_many_records_every_task_in_one_batch() {
    let client = client(MemoryBroker::new()).await;
    let ids = client
        .enqueue_many((0..25).map(|i| Probe {
            path: format!("{i}.mp4"),
        }))
        .await
        .unwrap();
    let page = client
        .store()
        .unwrap()
        .query(&JobQuery::new().status([JobStatus::Queued]).limit(100))
        .await
        .unwrap();
    let mut recorded: Vec<TaskId> = page.records.iter().map(|r| r.id).collect();
    let mut expected = ids.clone();
    recorded.sort_by_key(ToString::to_string);
    expected.sort_by_key(ToString::to_string);
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn unique_enqueues_record_only_the_first() {
    let client = client(MemoryBroker::new()).await;
    let ttl = Duration::from_secs(60);
    let first = client.enqueue(probe()).unique(ttl).await.unwrap();
    let again = client.enqueue(probe()).unique(ttl).await.unwrap();
    assert_eq!(first, again);
    let ids = client
        .enqueue_many([
            probe(),
            Probe {
                path: "dog.mp4".into(),
            },
        ])
        .unique(ttl)
        .await
        .unwrap();
    assert_eq!(ids[0], first);
    let page = client
        .store()
        .unwrap()
        .query(&JobQuery::new())
        .await
        .unwrap();
    assert_eq!(page.records.len(), 2, "{:?}", page.records);
    assert!(page.records.iter().any(|r| r.id == ids[1]));
}

#[tokio::test]
async fn policies_that_skip_queued_record_nothing() {
    let client = client(MemoryBroker::new()).await;
    let quiet = client.enqueue(Quiet).await.unwrap();
    let sparse = client.enqueue_many([Sparse, Sparse]).await.unwrap();
    assert_eq!(
        client.task::<Quiet>(quiet).unwrap().status().await.unwrap(),
        None
    );
    for id in sparse {
        assert_eq!(
            client.task::<Sparse>(id).unwrap().record().await.unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn wait_wakes_on_the_finished_event_with_the_typed_output() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(probe()).await.unwrap();
    let handle = client.task::<Probe>(id).unwrap();
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    broker.wait_for_listening(1).await;
    assert!(!waiting.is_finished());

    let info = Info {
        width: 1920,
        height: 1080,
    };
    let bytes = encode_payload(&info).unwrap();
    finish(&client, id, JobStatus::Succeeded, Some(bytes), None, true).await;
    let output = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(output, info);
}

#[tokio::test]
async fn wait_on_a_finished_task_returns_at_once() {
    let client = client(MemoryBroker::new()).await;
    let id = client.enqueue(probe()).await.unwrap();
    let info = Info {
        width: 640,
        height: 360,
    };
    let bytes = encode_payload(&info).unwrap();
    // Finished before anyone watched: no event will come.
    finish(&client, id, JobStatus::Succeeded, Some(bytes), None, false).await;
    let started = Instant::now();
    let output = client
        .task::<Probe>(id)
        .unwrap()
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(output, info);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn wait_reports_a_failure_with_its_error() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(probe()).await.unwrap();
    let handle = client.task::<Probe>(id).unwrap();
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    broker.wait_for_listening(1).await;
    finish(
        &client,
        id,
        JobStatus::Failed,
        None,
        Some("corrupt input"),
        true,
    )
    .await;
    let err = waiting.await.unwrap().unwrap_err();
    match &err {
        Error::TaskFailed { status, error } => {
            assert_eq!(*status, JobStatus::Failed);
            assert_eq!(error.as_deref(), Some("corrupt input"));
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert_eq!(err.to_string(), "the task ended failed: corrupt input");
    let bare = Error::TaskFailed {
        status: JobStatus::Revoked,
        error: None,
    };
    assert_eq!(bare.to_string(), "the task ended revoked");
}

#[tokio::test]
async fn a_unit_output_may_be_stored_as_nothing_or_nil() {
    let client = client(MemoryBroker::new()).await;
    let ids = client.enqueue_many([Ping, Ping]).await.unwrap();
    finish(&client, ids[0], JobStatus::Succeeded, None, None, false).await;
    let nil = encode_payload(&()).unwrap();
    finish(
        &client,
        ids[1],
        JobStatus::Succeeded,
        Some(nil),
        None,
        false,
    )
    .await;
    for id in ids {
        let handle = client.task::<Ping>(id).unwrap();
        handle.wait(Duration::from_secs(1)).await.unwrap();
        assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Succeeded));
    }
}

#[tokio::test]
async fn a_missing_output_is_a_decode_error_for_other_types() {
    let client = client(MemoryBroker::new()).await;
    let id = client.enqueue(probe()).await.unwrap();
    finish(&client, id, JobStatus::Succeeded, None, None, false).await;
    let err = client
        .task::<Probe>(id)
        .unwrap()
        .wait(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Broker(_)), "{err:?}");
}

#[tokio::test]
async fn wait_times_out_promptly() {
    let client = client(MemoryBroker::new()).await;
    let id = client.enqueue(probe()).await.unwrap();
    let handle = client.task::<Probe>(id).unwrap();
    let started = Instant::now();
    let err = handle.wait(Duration::from_millis(100)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Still waiting in its queue, untouched.
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Queued));
}

#[tokio::test]
async fn a_finished_event_without_a_record_is_not_found() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = TaskId::new();
    let handle = client.task::<Probe>(id).unwrap();
    assert_eq!(handle.status().await.unwrap(), None);
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    // Listening before the event is sent: it is not replayed.
    broker.wait_for_listening(1).await;
    client
        .broker()
        .publish_events(&[TaskEvent::Finished {
            id,
            status: JobStatus::Succeeded,
        }])
        .await
        .unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::NotFound(missing) if missing == id),
        "{err:?}"
    );
}

#[tokio::test]
async fn other_tasks_events_do_not_end_a_wait() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let ids = client.enqueue_many([Ping, Ping]).await.unwrap();
    let handle = client.task::<Ping>(ids[0]).unwrap();
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    broker.wait_for_listening(1).await;
    // Had the other task's event reached the wait, it would come first and
    // end it with the other task's success, not this one's death.
    finish(&client, ids[1], JobStatus::Succeeded, None, None, true).await;
    finish(&client, ids[0], JobStatus::Dead, None, Some("poison"), true).await;
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::TaskFailed {
                status: JobStatus::Dead,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn progress_streams_reports_until_the_task_finishes() {
    let client = client(MemoryBroker::new()).await;
    let id = client.enqueue(probe()).await.unwrap();
    let handle = client.task::<Probe>(id).unwrap();
    let progress = handle.progress().await.unwrap();
    let collected = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(5), progress.collect::<Vec<_>>()).await
    });
    for percent in [10.0, 20.0, 30.0] {
        report(&client, id, percent).await;
    }
    // Someone else's progress is not ours.
    report(&client, TaskId::new(), 99.0).await;
    let bytes = encode_payload(&Info {
        width: 1,
        height: 1,
    })
    .unwrap();
    finish(&client, id, JobStatus::Succeeded, Some(bytes), None, true).await;
    let reports = collected.await.unwrap().unwrap();
    let percents: Vec<f32> = reports.iter().map(|p| p.percent).collect();
    assert_eq!(percents, [10.0, 20.0, 30.0]);
}

#[tokio::test]
async fn progress_of_a_finished_task_is_empty() {
    let client = client(MemoryBroker::new()).await;
    let id = client.enqueue(Ping).await.unwrap();
    finish(&client, id, JobStatus::Expired, None, None, false).await;
    let progress = client.task::<Ping>(id).unwrap().progress().await.unwrap();
    let reports = tokio::time::timeout(Duration::from_secs(1), progress.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(reports.is_empty());
}

/// A [`MemoryBroker`] whose task-event subscriptions the test can break, as
/// a dropped Redis connection would.
#[derive(Debug, Clone)]
struct Breaking {
    inner: MemoryBroker,
    cut: broadcast::Sender<()>,
    subscriptions: Arc<AtomicUsize>,
    /// Subscriptions whose subscriber has started reading events: past
    /// whatever it did between subscribing and listening.
    listening: Arc<AtomicUsize>,
    /// Events handed to subscribers.
    delivered: Arc<AtomicUsize>,
}

impl Breaking {
    fn new() -> Self {
        Self {
            inner: MemoryBroker::new(),
            cut: broadcast::channel(16).0,
            subscriptions: Arc::default(),
            listening: Arc::default(),
            delivered: Arc::default(),
        }
    }

    fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::SeqCst)
    }

    /// Ends every subscription made so far.
    fn cut(&self) {
        let _ = self.cut.send(());
    }

    async fn wait_for_subscriptions(&self, n: usize) {
        wait_for("subscriptions", &self.subscriptions, n).await;
    }

    async fn wait_for_listening(&self, n: usize) {
        wait_for("listening subscribers", &self.listening, n).await;
    }

    async fn wait_for_delivered(&self, n: usize) {
        wait_for("delivered events", &self.delivered, n).await;
    }
}

/// Waits (at most 5 s) until `counter` reaches `n`.
async fn wait_for(what: &str, counter: &AtomicUsize, n: usize) {
    let reached = async {
        while counter.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), reached)
        .await
        .is_err()
    {
        panic!(
            "waited 5 s for {n} {what}, saw {}",
            counter.load(Ordering::SeqCst)
        );
    }
}

type R<T> = spool_broker::Result<T>;

impl Broker for Breaking {
    async fn enqueue(&self, envelopes: &[Envelope]) -> R<()> {
        self.inner.enqueue(envelopes).await
    }
    async fn enqueue_unique(&self, envelope: &Envelope, ttl: Duration) -> R<Option<TaskId>> {
        self.inner.enqueue_unique(envelope, ttl).await
    }
    async fn release_unique(&self, queue: &QueueName, key: &str, holder: TaskId) -> R<()> {
        self.inner.release_unique(queue, key, holder).await
    }
    async fn acquire_rate(&self, name: &str, limit: RateLimit) -> R<Option<Duration>> {
        self.inner.acquire_rate(name, limit).await
    }
    async fn fetch(
        &self,
        queue: &QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> R<FetchBatch> {
        self.inner.fetch(queue, consumer, max, wait).await
    }
    async fn reclaim(
        &self,
        queue: &QueueName,
        consumer: &str,
        request: ReclaimRequest,
    ) -> R<Reclaimed> {
        self.inner.reclaim(queue, consumer, request).await
    }
    async fn renew(&self, consumer: &str, tags: &[DeliveryTag]) -> R<Vec<DeliveryTag>> {
        self.inner.renew(consumer, tags).await
    }
    async fn ack(&self, tags: &[DeliveryTag]) -> R<()> {
        self.inner.ack(tags).await
    }
    async fn retry(&self, tag: &DeliveryTag, next: &Envelope) -> R<()> {
        self.inner.retry(tag, next).await
    }
    async fn dead_letter(&self, tag: &DeliveryTag, letter: &DeadLetter) -> R<()> {
        self.inner.dead_letter(tag, letter).await
    }
    async fn requeue(&self, tag: &DeliveryTag) -> R<()> {
        self.inner.requeue(tag).await
    }
    async fn revoke(&self, id: TaskId, ttl: Duration) -> R<()> {
        self.inner.revoke(id, ttl).await
    }
    async fn find_task(&self, queue: &QueueName, id: TaskId) -> R<Option<TaskPlace>> {
        self.inner.find_task(queue, id).await
    }
    async fn revoked(&self) -> R<Vec<TaskId>> {
        self.inner.revoked().await
    }
    async fn control(&self) -> R<ControlStream> {
        self.inner.control().await
    }
    async fn publish_events(&self, events: &[TaskEvent]) -> R<()> {
        self.inner.publish_events(events).await
    }
    async fn task_events(&self, id: TaskId) -> R<TaskEvents> {
        let mut cut = self.cut.subscribe();
        let events = self.inner.task_events(id).await?;
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        let (listening, delivered) = (Arc::clone(&self.listening), Arc::clone(&self.delivered));
        let mut events = Box::pin(events.take_until(async move {
            let _ = cut.recv().await;
        }));
        let mut first = true;
        Ok(Box::pin(futures_util::stream::poll_fn(move |cx| {
            if std::mem::take(&mut first) {
                listening.fetch_add(1, Ordering::SeqCst);
            }
            let next = events.poll_next_unpin(cx);
            if let std::task::Poll::Ready(Some(_)) = &next {
                delivered.fetch_add(1, Ordering::SeqCst);
            }
            next
        })))
    }
    async fn server_warnings(&self) -> R<Vec<String>> {
        self.inner.server_warnings().await
    }
    async fn stats(&self, queue: &QueueName) -> R<QueueStats> {
        self.inner.stats(queue).await
    }
    async fn pause(&self, queue: &QueueName) -> R<()> {
        self.inner.pause(queue).await
    }
    async fn resume(&self, queue: &QueueName) -> R<()> {
        self.inner.resume(queue).await
    }
    async fn paused(&self) -> R<Vec<QueueName>> {
        self.inner.paused().await
    }
    async fn purge(&self, queue: &QueueName) -> R<u64> {
        self.inner.purge(queue).await
    }
    async fn requeue_dead(&self, queue: &QueueName, entry_ids: Option<&[String]>) -> R<u64> {
        self.inner.requeue_dead(queue, entry_ids).await
    }
    async fn purge_dead(&self, queue: &QueueName) -> R<u64> {
        self.inner.purge_dead(queue).await
    }
    async fn dead_letters(&self, queue: &QueueName, limit: usize) -> R<Vec<DeadLetterEntry>> {
        self.inner.dead_letters(queue, limit).await
    }
    async fn submit_workflow(&self, spec: &spool_broker::workflow::WorkflowSpec) -> R<()> {
        self.inner.submit_workflow(spec).await
    }
    async fn settle_node(
        &self,
        settlement: &spool_broker::workflow::NodeSettlement,
    ) -> R<spool_broker::workflow::Settled> {
        self.inner.settle_node(settlement).await
    }
    async fn dispatch_outbox(&self, workflow: spool_broker::workflow::WorkflowId) -> R<usize> {
        self.inner.dispatch_outbox(workflow).await
    }
    async fn node_context(
        &self,
        workflow: spool_broker::workflow::WorkflowId,
        node: &spool_broker::workflow::NodeName,
    ) -> R<Option<spool_broker::workflow::NodeContext>> {
        self.inner.node_context(workflow, node).await
    }
    async fn workflow_status(
        &self,
        workflow: spool_broker::workflow::WorkflowId,
    ) -> R<Option<spool_broker::workflow::WorkflowStatus>> {
        self.inner.workflow_status(workflow).await
    }
    async fn cancel_workflow(&self, workflow: spool_broker::workflow::WorkflowId) -> R<bool> {
        self.inner.cancel_workflow(workflow).await
    }
    async fn retry_workflow(&self, workflow: spool_broker::workflow::WorkflowId) -> R<usize> {
        self.inner.retry_workflow(workflow).await
    }
    async fn sweep_workflows(&self, grace: Duration) -> R<spool_broker::workflow::SweepReport> {
        self.inner.sweep_workflows(grace).await
    }
}

#[tokio::test]
async fn wait_subscribes_again_and_reads_what_it_missed() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(Ping).await.unwrap();
    let handle = client.task::<Ping>(id).unwrap();
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    // Past its first read of the store: only the resubscription's reads it.
    broker.wait_for_listening(1).await;

    // The outcome is recorded but its event is lost with the connection.
    finish(&client, id, JobStatus::Succeeded, None, None, false).await;
    broker.cut();
    tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(broker.subscriptions(), 2);
}

#[tokio::test]
async fn wait_keeps_waiting_after_a_resubscription() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(Ping).await.unwrap();
    let handle = client.task::<Ping>(id).unwrap();
    let waiting = tokio::spawn(async move { handle.wait(Duration::from_secs(10)).await });
    broker.wait_for_subscriptions(1).await;
    broker.cut();
    broker.wait_for_listening(2).await;
    assert!(!waiting.is_finished());
    finish(&client, id, JobStatus::Revoked, None, None, true).await;
    let err = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TaskFailed {
                status: JobStatus::Revoked,
                error: None
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn progress_subscribes_again_after_a_break() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(Ping).await.unwrap();
    let progress = client.task::<Ping>(id).unwrap().progress().await.unwrap();
    let collected = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(5), progress.collect::<Vec<_>>()).await
    });
    report(&client, id, 10.0).await;
    // The report is in before the break, the next one after it.
    broker.wait_for_delivered(1).await;
    broker.cut();
    broker.wait_for_listening(2).await;
    report(&client, id, 50.0).await;
    finish(&client, id, JobStatus::Succeeded, None, None, true).await;
    let percents: Vec<f32> = collected
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|p| p.percent)
        .collect();
    assert_eq!(percents, [10.0, 50.0]);
}

#[tokio::test]
async fn progress_ends_when_the_task_finished_during_a_break() {
    let broker = Breaking::new();
    let client = client(broker.clone()).await;
    let id = client.enqueue(Ping).await.unwrap();
    let progress = client.task::<Ping>(id).unwrap().progress().await.unwrap();
    let collected = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(5), progress.collect::<Vec<_>>()).await
    });
    broker.wait_for_listening(1).await;
    finish(&client, id, JobStatus::Succeeded, None, None, false).await;
    broker.cut();
    let reports = collected.await.unwrap().unwrap();
    assert!(reports.is_empty());
}

#[test]
fn handles_are_debug_and_clone() {
    fn assert_traits<T: std::fmt::Debug + Clone + Send + Sync>() {}
    assert_traits::<crate::TaskHandle<Probe, MemoryBroker>>();
}
