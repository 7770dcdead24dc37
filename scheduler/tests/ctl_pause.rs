//! `spoolctl pause` and `resume` on the real Redis under a test prefix:
//! what `queues` and a fetch then see, and with a real worker running (in
//! this process): a paused queue's tasks are not started, a running one
//! finishes, and after the resume every task runs once. Waits are on the
//! worker's events, with time limits.

mod ctl_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spool_broker::{Broker as _, QueueName, TaskId};
use spool_worker::{Observer, Outcome, TaskInfo, Worker, WorkerConfig};

use self::ctl_support::{Ctl, queue, runtime, wait_until};

/// How long any one awaited event may take.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Started(TaskId),
    Finished(TaskId, Outcome),
}

/// Forwards the worker's starts and outcomes to the test thread.
struct Events(std::sync::Mutex<Sender<Event>>);

impl Observer for Events {
    fn started(&self, task: &TaskInfo<'_>) {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(Event::Started(task.id));
    }

    fn finished(&self, task: &TaskInfo<'_>, outcome: Outcome, _ran_for: Duration) {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(Event::Finished(task.id, outcome));
    }
}

/// Every event seen so far, and a way to wait for more.
struct Seen {
    rx: Receiver<Event>,
    events: Vec<Event>,
}

impl Seen {
    /// Waits until `done` holds over the events seen, failing after
    /// [`LIMIT`] or if an event breaks `allowed`.
    fn until(
        &mut self,
        what: &str,
        allowed: impl Fn(&Event) -> bool,
        done: impl Fn(&[Event]) -> bool,
    ) {
        let deadline = Instant::now() + LIMIT;
        while !done(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => {
                    assert!(allowed(&event), "{event:?} while waiting for {what}");
                    self.events.push(event);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}; seen {:?}", self.events)
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the worker stopped"),
            }
        }
    }

    fn finished(&self, id: TaskId) -> Vec<Outcome> {
        let outcomes = self.events.iter().filter_map(|e| match e {
            Event::Finished(task, outcome) if *task == id => Some(*outcome),
            _ => None,
        });
        outcomes.collect()
    }

    fn started(&self, id: TaskId) -> usize {
        self.events
            .iter()
            .filter(|e| **e == Event::Started(id))
            .count()
    }
}

fn ids(ctl: &Ctl, args: &[&str]) -> Vec<TaskId> {
    let out = ctl.ok(args);
    out.lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("an id: {l}")))
        .collect()
}

#[test]
fn a_paused_queue_is_not_fetched_until_resumed_and_nothing_is_lost() {
    let mut ctl = Ctl::new();
    ctl.extra_queues.push("probe".to_owned());
    let probe: QueueName = "probe".parse().expect("a queue name");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let broker = rt.block_on(ctl.broker());
    let (tx, rx) = channel();
    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, probe.clone()],
        concurrency: 4,
        prefetch: 8,
        poll_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(broker, config)
        .with_builtin_tasks()
        .observe(Arc::new(Events(std::sync::Mutex::new(tx))));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let mut seen = Seen {
        rx,
        events: Vec::new(),
    };
    let any = |_: &Event| true;

    // A task running when its queue is paused finishes and is acknowledged.
    let long = ids(
        &ctl,
        &["call", "--force", "spool.sleep", "--args", r#"{"ms": 300}"#],
    )[0];
    seen.until("the long task to start", any, |e| {
        e.contains(&Event::Started(long))
    });
    ctl.ok(&["pause", "default"]);
    seen.until("the long task to finish", any, |e| {
        e.contains(&Event::Finished(long, Outcome::Succeeded))
    });

    // Tasks enqueued while paused, one of them delayed, are not started.
    let mut held = ids(&ctl, &["call", "--force", "spool.ping", "--count", "3"]);
    held.extend(ids(
        &ctl,
        &["call", "--force", "spool.ping", "--countdown", "100ms"],
    ));
    // (A held task fetched in a race may be given back: that is no start.)
    let not_held = |event: &Event| match event {
        Event::Started(id) => !held.contains(id),
        Event::Finished(..) => true,
    };
    // Meanwhile the worker keeps serving its other queue: several rounds
    // of it, each a full fetch cycle, start none of the held tasks.
    for round in 0..3 {
        let id = ids(&ctl, &["call", "--force", "spool.ping", "--queue", "probe"])[0];
        let what = format!("probe task {round} to finish");
        seen.until(&what, not_held, |e| {
            e.contains(&Event::Finished(id, Outcome::Succeeded))
        });
    }
    // The delayed task falls due but is not promoted either.
    wait_until("the delayed task to fall due", LIMIT, || {
        queue(&ctl.queues(), "default")["delayed_due"] == 1
    });
    let rows = ctl.json(&["queues", "--json", "--sample", "0s", "--queue", "probe"]);
    let default = queue(&rows, "default");
    assert_eq!(default["paused"], true, "{rows}");
    assert_eq!(
        (&default["ready"], &default["pending"], &default["delayed"]),
        (&Value::from(3), &Value::from(0), &Value::from(1)),
        "{rows}"
    );
    assert_eq!(default["backlog"], 4, "{rows}");
    assert!(
        default["oldest_age_seconds"].as_f64().is_some(),
        "the held tasks wait: {rows}"
    );
    assert_eq!(queue(&rows, "probe")["consumers"], 1, "{rows}");
    assert!(held.iter().all(|&id| seen.started(id) == 0));

    // Resumed: every held task runs, once.
    ctl.ok(&["resume", "default"]);
    seen.until("the held tasks to finish", any, |events| {
        held.iter()
            .all(|&id| events.contains(&Event::Finished(id, Outcome::Succeeded)))
    });
    let _ = stop.send(());
    let report = rt
        .block_on(running)
        .expect("the worker task")
        .expect("the worker ran");
    // Drain what the worker reported until it stopped.
    seen.events.extend(seen.rx.try_iter());
    for &id in held.iter().chain([&long]) {
        assert_eq!(seen.started(id), 1, "{id} started once: {:?}", seen.events);
        assert_eq!(
            seen.finished(id).last(),
            Some(&Outcome::Succeeded),
            "{id}: {:?}",
            seen.events
        );
    }
    assert_eq!(report.succeeded, 1 + 4 + 3);

    let rows = ctl.json(&["queues", "--json", "--sample", "100ms"]);
    let default = queue(&rows, "default");
    assert_eq!(
        (
            &default["backlog"],
            &default["pending"],
            &default["delayed"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(0)),
        "drained: {rows}"
    );
    assert_eq!(
        default["enqueued_total"], default["completed_total"],
        "whatever entered the streams left them: {rows}"
    );
    assert!(default["rate_out"].is_f64(), "{rows}");
    let mut by_outcome: HashMap<&str, usize> = HashMap::new();
    for event in &seen.events {
        if let Event::Finished(_, outcome) = event {
            *by_outcome.entry(outcome.as_str()).or_default() += 1;
        }
    }
    assert_eq!(by_outcome.get("succeeded"), Some(&8), "{by_outcome:?}");
}

#[test]
fn a_fetch_waiting_when_its_queue_is_paused_claims_nothing() {
    let ctl = Ctl::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let broker = rt.block_on(ctl.broker());
    let q = QueueName::DEFAULT;
    // Create the consumer group, so the next fetch blocks in XREADGROUP.
    let first = rt.block_on(broker.fetch(&q, "test", 10, Duration::ZERO));
    assert!(first.expect("fetched").is_empty());
    let mut conn = rt.block_on(async {
        let client = redis::Client::open(ctl_support::redis_url()).expect("a Redis URL");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("a connection")
    });
    let newer_than: u64 = rt
        .block_on(redis::cmd("CLIENT").arg("ID").query_async(&mut conn))
        .expect("CLIENT ID");
    let waiting = {
        let broker = broker.clone();
        let q = q.clone();
        rt.spawn(async move { broker.fetch(&q, "test", 10, Duration::from_secs(5)).await })
    };
    // Wait until it blocks: a client that connected after `newer_than` is
    // blocked in XREADGROUP. (Another process's may be taken for it: then
    // the fetch is paused before it blocks, which must claim nothing too.)
    wait_until("the fetch to block", LIMIT, || {
        rt.block_on(blocked_readers(&mut conn))
            .iter()
            .any(|&id| id > newer_than)
    });
    ctl.ok(&["pause", "default"]);
    let id = ids(&ctl, &["call", "--force", "spool.ping"])[0];
    let batch = rt
        .block_on(waiting)
        .expect("the fetch task")
        .expect("fetched");
    assert!(batch.is_empty(), "claimed {:?}", batch.deliveries);
    let rows = ctl.queues();
    let default = queue(&rows, "default");
    assert_eq!(
        (&default["ready"], &default["pending"]),
        (&Value::from(1), &Value::from(0)),
        "given back: {rows}"
    );
    ctl.ok(&["resume", "default"]);
    let batch = rt
        .block_on(broker.fetch(&q, "test", 10, Duration::ZERO))
        .expect("fetched");
    assert_eq!(batch.deliveries.len(), 1);
    assert_eq!(batch.deliveries[0].envelope.id, id);
}

/// The ids of the clients blocked in XREADGROUP now.
async fn blocked_readers(conn: &mut redis::aio::MultiplexedConnection) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let blocked = field("flags").is_some_and(|f| f.contains('b'));
            let reading = field("cmd") == Some("xreadgroup");
            (blocked && reading).then(|| field("id")?.parse().ok())?
        })
        .collect()
}

#[test]
fn pause_and_resume_against_redis() {
    let mut ctl = Ctl::new();
    ctl.extra_queues.push("uploads".to_owned());
    let text = ctl.ok(&["pause", "gpu"]);
    assert_eq!(
        text,
        "paused queue gpu: workers stop fetching it; running tasks finish\n"
    );
    let json = ctl.json(&["pause", "uploads", "--json"]);
    assert_eq!(json, json!({"queue": "uploads", "paused": true}));
    // Pausing twice changes nothing.
    ctl.ok(&["pause", "uploads"]);
    ctl.ok(&[
        "call",
        "--force",
        "spool.ping",
        "--queue",
        "uploads",
        "--count",
        "2",
    ]);

    let rows = ctl.queues();
    let names: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["queue"].as_str())
        .collect();
    assert_eq!(
        names,
        ["default", "analysis", "streaming", "gpu", "uploads"],
        "a paused queue is listed: {rows}"
    );
    assert_eq!(queue(&rows, "gpu")["paused"], true);
    assert_eq!(queue(&rows, "default")["paused"], false);
    let uploads = queue(&rows, "uploads");
    assert_eq!(
        (&uploads["paused"], &uploads["backlog"]),
        (&json!(true), &json!(2))
    );
    let table = ctl.ok(&["queues", "--sample", "0s"]);
    let paused: Vec<&str> = table
        .lines()
        .filter(|l| l.split_whitespace().nth(9) == Some("yes"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(paused, ["gpu", "uploads"], "{table}");

    // A fetch of the paused queue claims nothing, and leaves it whole.
    let rt = runtime();
    let fetched = rt.block_on(async {
        let broker = ctl.broker().await;
        let uploads: QueueName = "uploads".parse().expect("a queue name");
        broker
            .fetch(&uploads, "test", 10, Duration::ZERO)
            .await
            .expect("fetched")
            .len()
    });
    assert_eq!(fetched, 0);

    assert_eq!(
        ctl.ok(&["resume", "uploads"]),
        "resumed queue uploads: workers fetch it again\n"
    );
    let json = ctl.json(&["resume", "gpu", "--json"]);
    assert_eq!(json, json!({"queue": "gpu", "paused": false}));
    // Resumed, uploads stays listed: it still holds its two tasks.
    let rows = ctl.queues();
    assert_eq!(rows.as_array().map(Vec::len), Some(5), "{rows}");
    assert_eq!(rows[4]["queue"], "uploads", "{rows}");
    assert_eq!(rows[4]["backlog"], 2, "{rows}");
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .all(|r| r["paused"] == false)
    );

    let stderr = ctl.fails(&["pause", "bad{queue}"]);
    assert!(stderr.contains("invalid queue name"), "{stderr}");
    let stderr = ctl.fails(&["resume"]);
    assert!(stderr.contains("Usage:"), "{stderr}");
}
