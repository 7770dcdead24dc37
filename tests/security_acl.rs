//! Redis ACL users: a `redis-server` loads the shipped `ops/redis/users.acl`
//! as it is, and again with passwords added and key patterns narrowed to
//! the tests' prefixes; then producers, workers and `spoolctl` run as
//! `spool-producer`, `spool-worker` and `spool-admin`, and each is refused
//! what its role must not do.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use spool_broker::{Broker, QueueName, RedisBroker, RedisConfig, Task};
use spool_sdk::Client;
use spool_sdk::workflow::{EdgePolicy, NodeState, Workflow, WorkflowState};
use spool_tests::{RedisServer, TestRedis, bins, free_port, metrics, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

const WORKER_PASSWORD: &str = "worker-pw-4f1d";
const PRODUCER_PASSWORD: &str = "producer-pw-9a2c";
const ADMIN_PASSWORD: &str = "admin-pw-77e0";
const MONITOR_PASSWORD: &str = "monitor-pw-0b6e";

/// The shipped ACL file with a password on each user and `spool:`
/// narrowed to the test prefixes (`spool-test-*:`), plus a default user
/// for the harness itself (the file leaves `default` alone).
fn acl_file(dir: &Path) -> PathBuf {
    let shipped = shipped_acl_file();
    let text = std::fs::read_to_string(&shipped).unwrap();
    let mut out = String::new();
    let mut users = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Some(rest) = line.strip_prefix("user ") else {
            panic!(
                "{}: Redis refuses a line that is not a user: {line}",
                shipped.display()
            );
        };
        let (name, rules) = rest.split_once(' ').unwrap();
        let password = match name {
            "spool-worker" => WORKER_PASSWORD,
            "spool-producer" => PRODUCER_PASSWORD,
            "spool-admin" => ADMIN_PASSWORD,
            "spool-monitor" => MONITOR_PASSWORD,
            other => panic!("unexpected user {other} in {}", shipped.display()),
        };
        users.push(name.to_owned());
        let rules = rules.replace("spool:", "spool-test-*:");
        out.push_str(&format!("user {name} >{password} {rules}\n"));
    }
    assert_eq!(
        users,
        [
            "spool-worker",
            "spool-producer",
            "spool-admin",
            "spool-monitor"
        ]
    );
    out.push_str("user default on nopass ~* &* +@all\n");
    let path = dir.join("users.acl");
    std::fs::write(&path, out).unwrap();
    path
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `ACL DRYRUN` of `command` as `user`: `OK`, or Redis' reason.
async fn dryrun(
    conn: &mut redis::aio::MultiplexedConnection,
    user: &str,
    command: &[&str],
) -> String {
    redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg(command)
        .query_async(conn)
        .await
        .unwrap()
}

fn shipped_acl_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/redis/users.acl")
}

struct AclServer {
    server: RedisServer,
    _dir: PathBuf,
}

impl AclServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("spool-acl-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = acl_file(&dir);
        let server = RedisServer::start(&["--aclfile", acl.to_str().unwrap()]);
        Self { server, _dir: dir }
    }

    /// A server, the harness on it, and a producer's client and a
    /// worker's broker under the harness' prefix.
    async fn start_with_roles() -> (Self, TestRedis, Client<RedisBroker>, RedisBroker) {
        let acl = Self::start();
        let harness = TestRedis::at(&acl.server.url()).await;
        let producer = acl
            .broker_as("spool-producer", PRODUCER_PASSWORD, &harness.prefix)
            .await;
        let worker = acl
            .broker_as("spool-worker", WORKER_PASSWORD, &harness.prefix)
            .await;
        (acl, harness, Client::new(producer), worker)
    }

    fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/", self.server.port)
    }

    /// A plain redis-rs connection as `user`, for commands Spool never
    /// sends.
    async fn connect_as(&self, user: &str, password: &str) -> redis::aio::MultiplexedConnection {
        connect(&self.url_as(user, password)).await
    }

    async fn broker_as(&self, user: &str, password: &str, prefix: &str) -> RedisBroker {
        RedisBroker::connect(RedisConfig {
            key_prefix: prefix.to_owned(),
            ..RedisConfig::from_url(self.url_as(user, password))
        })
        .await
        .unwrap()
    }
}

impl Drop for AclServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Encode {
    n: u32,
    /// Runs that fail before one succeeds; `u32::MAX` always fails for good.
    failures: u32,
}

impl Task for Encode {
    const NAME: &'static str = "test.acl.encode";
    type Output = u32;
}

/// A task no worker handles: it is dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Orphan;

impl Task for Orphan {
    const NAME: &'static str = "test.acl.orphan";
    type Output = ();
}

async fn encode(task: Encode, ctx: TaskContext) -> Result<u32, TaskError> {
    if task.failures == u32::MAX {
        return Err(TaskError::fail("corrupt input"));
    }
    if ctx.attempt() <= task.failures {
        return Err(TaskError::retry_after(
            "transient",
            Duration::from_millis(50),
        ));
    }
    Ok(task.n)
}

/// Splits into `parts` children (`Encode { n }` for each `n` below
/// `parts`) and a join, `sum`, that adds their outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Split {
    parts: u32,
}

impl Task for Split {
    const NAME: &'static str = "test.acl.split";
    type Output = ();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sum;

impl Task for Sum {
    const NAME: &'static str = "test.acl.sum";
    type Output = u32;
}

async fn split(task: Split, ctx: TaskContext) -> Result<(), TaskError> {
    for n in 0..task.parts {
        ctx.add_child(&format!("part-{n}"), &Encode { n, failures: 0 })?;
    }
    ctx.join_children("sum", &Sum, EdgePolicy::Fail)?;
    Ok(())
}

async fn sum(_: Sum, ctx: TaskContext) -> Result<u32, TaskError> {
    let mut total = 0;
    for parent in ctx.parents() {
        total += ctx.parent::<Encode>(parent.name.as_str())?;
    }
    Ok(total)
}

/// Redis' refusals: `NOPERM` for a command, and its own words for a
/// command a script ran on the caller's behalf.
fn is_noperm(error: &impl std::fmt::Display) -> bool {
    let text = error.to_string();
    text.contains("NOPERM")
        || text.contains("no permissions")
        || text.contains("can't run this command")
        || text.contains("can't access at least one of the keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_workers_and_admins_do_their_jobs_with_the_shipped_acls() {
    let (acl, harness, producer, worker_broker) = AclServer::start_with_roles().await;
    let prefix = harness.prefix.clone();

    for n in 0..4 {
        producer.enqueue(Encode { n, failures: 0 }).await.unwrap();
    }
    producer
        .enqueue(Encode { n: 10, failures: 0 })
        .countdown(Duration::from_millis(300))
        .await
        .unwrap();
    producer
        .enqueue(Encode { n: 11, failures: 0 })
        .unique_key("asset:11", Duration::from_secs(60))
        .await
        .unwrap();
    producer
        .enqueue(Encode { n: 12, failures: 1 })
        .await
        .unwrap();
    producer
        .enqueue(Encode {
            n: 13,
            failures: u32::MAX,
        })
        .await
        .unwrap();
    producer
        .enqueue(Encode { n: 14, failures: 0 })
        .queue(QueueName::ANALYSIS)
        .await
        .unwrap();
    producer.enqueue(Orphan).await.unwrap();

    // The worker checks the server's settings as it starts: INFO is
    // allowed, CONFIG GET is not, which it reports rather than fails on.
    let warnings = worker_broker.server_warnings().await.unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("CONFIG")),
        "{warnings:?}"
    );
    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::ANALYSIS],
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let worker =
        spawn_worker(Worker::new(worker_broker.clone(), config).register::<Encode, _>(encode));
    worker
        .wait_for(
            "8 successes, a retry, a failure and a dead letter",
            Duration::from_secs(15),
            |c| c.succeeded == 8 && c.retried == 1 && c.failed == 1 && c.dead_lettered == 1,
        )
        .await;

    // A producer may revoke; the revocation reaches the worker.
    let held = producer
        .enqueue(Encode { n: 20, failures: 0 })
        .countdown(Duration::from_secs(60))
        .await
        .unwrap();
    producer.revoke(held).await.unwrap();
    assert!(worker_broker.revoked().await.unwrap().contains(&held));
    let report = worker.stop().await;
    assert_eq!(report.started, 10, "the orphan never starts: {report:?}");

    // The operator's tool, as spool-admin.
    let admin_url = acl.url_as("spool-admin", ADMIN_PASSWORD);
    let queues: serde_json::Value =
        serde_json::from_str(&spoolctl(&admin_url, &prefix, &["queues", "--json"])).unwrap();
    let default = queues
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["queue"] == "default"))
        .unwrap_or_else(|| panic!("no default row: {queues}"));
    assert_eq!(default["dead"], 1, "{queues}");
    let dead = spoolctl(&admin_url, &prefix, &["dead", "list", "default"]);
    assert!(dead.contains(Orphan::NAME), "{dead}");
    let purged = spoolctl(&admin_url, &prefix, &["purge", "default", "--yes"]);
    assert!(
        purged.contains('2'),
        "the held task and the dead letter: {purged}"
    );
    harness.cleanup().await;
}

/// Workflows under the shipped ACLs: the producer submits, follows,
/// cancels and retries them; the worker runs their nodes (a retry,
/// dynamic children and their join, a failure that cancels a dependent)
/// and one past its deadline expires; `spoolctl` shows,
/// retries and cancels them as `spool-admin`. Every script these steps
/// run is checked against the caller's rules, command by command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_run_under_the_shipped_acls() {
    let (acl, harness, producer, worker_broker) = AclServer::start_with_roles().await;
    let prefix = harness.prefix.clone();
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        workflow_sweep_interval: Some(Duration::from_millis(200)),
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(
        Worker::new(worker_broker, config)
            .register::<Encode, _>(encode)
            .register::<Split, _>(split)
            .register::<Sum, _>(sum),
    );
    let within = Duration::from_secs(20);

    // A node retried once, then one that adds children and their join.
    let mut wf = Workflow::new();
    wf.node("probe", Encode { n: 1, failures: 1 });
    wf.node("split", Split { parts: 3 }).after(&["probe"]);
    let pipeline = producer.submit_workflow(wf).await.unwrap();
    let status = pipeline.finished(within).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded, "{status:?}");
    assert_eq!(status.nodes.len(), 6, "{status:?}");
    assert_eq!(pipeline.wait::<Sum>("sum", within).await.unwrap(), 3);

    // A failure for good cancels its dependent; the producer's retry
    // reruns both, and they fail the same way.
    let mut wf = Workflow::new();
    wf.node(
        "bad",
        Encode {
            n: 5,
            failures: u32::MAX,
        },
    );
    wf.node("after", Encode { n: 6, failures: 0 })
        .after(&["bad"]);
    let failing = producer.submit_workflow(wf).await.unwrap();
    let failed = |state: &WorkflowState| matches!(state, WorkflowState::Failed { node, .. } if node.as_str() == "bad");
    let status = failing.finished(within).await.unwrap();
    assert!(failed(&status.state), "{status:?}");
    assert_eq!(failing.retry().await.unwrap(), 2);
    let status = failing.finished(within).await.unwrap();
    assert!(failed(&status.state), "{status:?}");

    // The worker's sweeper expires a workflow past its deadline.
    // (A retry every 50 ms for 5 s: it outlives the deadline.)
    let mut wf = Workflow::new().deadline_in(Duration::from_millis(300));
    wf.node(
        "slow",
        Encode {
            n: 7,
            failures: 1_000,
        },
    )
    .max_attempts(100);
    let expiring = producer.submit_workflow(wf).await.unwrap();
    let status = expiring.finished(within).await.unwrap();
    // (Expired by the sweeper, or by the worker that fetched a retry of
    // its task after the deadline, whichever came first.)
    assert!(
        matches!(&status.state, WorkflowState::Failed { node, .. } if node.as_str() == "slow"),
        "{status:?}"
    );
    assert_eq!(status.nodes[0].state, NodeState::Expired, "{status:?}");

    // The producer cancels one.
    let mut wf = Workflow::new();
    wf.node(
        "slow",
        Encode {
            n: 8,
            failures: 1_000,
        },
    );
    wf.node("after", Encode { n: 9, failures: 0 })
        .after(&["slow"]);
    let cancelled = producer.submit_workflow(wf).await.unwrap();
    assert!(cancelled.cancel().await.unwrap());
    let status = cancelled.status().await.unwrap();
    assert_eq!(status.state, WorkflowState::Cancelled, "{status:?}");

    // The operator's tool: show, retry and cancel, as spool-admin (with
    // the worker stopped, so that the retried run waits for the cancel).
    worker.stop().await;
    let admin_url = acl.url_as("spool-admin", ADMIN_PASSWORD);
    let show = |id: String| {
        let out = Command::new(bins::spoolctl())
            .env("SPOOL_REDIS_URL", &admin_url)
            .args(["--key-prefix", &prefix, "workflow", "show", &id, "--json"])
            .output()
            .unwrap();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let view = show(pipeline.id().to_string());
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(6), "{view}");
    let id = failing.id().to_string();
    let retried = spoolctl(&admin_url, &prefix, &["workflow", "retry", &id]);
    assert!(retried.contains("2 nodes to run again"), "{retried}");
    let cancel = spoolctl(&admin_url, &prefix, &["workflow", "cancel", &id]);
    assert!(cancel.contains(&id), "{cancel}");
    assert_eq!(show(id)["state"], "cancelled");
    harness.cleanup().await;
}

/// Runs `spoolctl` as the user in `url`, returning stdout.
fn spoolctl(url: &str, prefix: &str, args: &[&str]) -> String {
    bins::stdout_of(
        Command::new(bins::spoolctl())
            .env("SPOOL_REDIS_URL", url)
            .args(["--key-prefix", prefix])
            .args(args),
    )
}

/// The file loads as it ships (Redis refuses to start on a line it cannot
/// read), and the producer's workflow rights reach workflows' keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_file_loads_as_it_is() {
    let shipped = shipped_acl_file();
    let server = RedisServer::start(&["--aclfile", shipped.to_str().unwrap()]);
    let mut conn = connect(&server.url()).await;
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut conn)
        .await
        .unwrap();
    for user in [
        "spool-worker",
        "spool-producer",
        "spool-admin",
        "spool-monitor",
    ] {
        assert!(users.iter().any(|u| u == user), "{user} not in {users:?}");
    }
    for allowed in [
        &["HSET", "spool:{wf:0190}:state", "encode", "queued"][..],
        &["ZREM", "spool:{wf:0190}:outbox", "encode"],
        &["ZADD", "spool:{default}:delayed", "1", "x"],
        &["XADD", "spool:{default}:normal", "*", "e", "x"],
    ] {
        let verdict = dryrun(&mut conn, "spool-producer", allowed).await;
        assert_eq!(verdict, "OK", "{allowed:?}");
    }
    for refused in [
        &["ZREM", "spool:{default}:delayed", "x"][..],
        &["HSET", "spool:workers", "w", "x"],
        &["RPUSH", "spool:{default}:normal-list", "x"],
        &["XDEL", "spool:{default}:normal", "0-1"],
    ] {
        let verdict = dryrun(&mut conn, "spool-producer", refused).await;
        assert_ne!(verdict, "OK", "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_what_it_must_not_do() {
    let acl = AclServer::start();
    let harness = TestRedis::at(&acl.server.url()).await;
    let prefix = harness.prefix.clone();
    let producer = acl
        .broker_as("spool-producer", PRODUCER_PASSWORD, &prefix)
        .await;
    Client::new(producer.clone())
        .enqueue(Encode { n: 1, failures: 0 })
        .await
        .unwrap();

    // A producer can neither claim, purge nor drop dead letters.
    let fetch = producer
        .fetch(&QueueName::DEFAULT, "thief", 10, Duration::ZERO)
        .await;
    assert!(fetch.as_ref().is_err_and(is_noperm), "{fetch:?}");
    let purge = producer.purge(&QueueName::DEFAULT).await;
    assert!(purge.as_ref().is_err_and(is_noperm), "{purge:?}");
    let drop_dead = producer.purge_dead(&QueueName::DEFAULT).await;
    assert!(drop_dead.as_ref().is_err_and(is_noperm), "{drop_dead:?}");
    assert_eq!(harness.stats(&QueueName::DEFAULT).await.ready_total(), 1);
    // Nor remove delayed tasks, nor write hashes other than workflows'.
    let mut as_producer = acl.connect_as("spool-producer", PRODUCER_PASSWORD).await;
    let unschedule: redis::RedisResult<i64> = as_producer
        .zrem(format!("{prefix}:{{default}}:delayed"), "x")
        .await;
    assert!(unschedule.as_ref().is_err_and(is_noperm), "{unschedule:?}");
    let overwrite: redis::RedisResult<i64> = as_producer
        .hset(format!("{prefix}:workers"), "w", "x")
        .await;
    assert!(overwrite.as_ref().is_err_and(is_noperm), "{overwrite:?}");

    // No role reaches keys outside Spool's prefix, nor server-wide
    // commands.
    for (user, password) in [
        ("spool-worker", WORKER_PASSWORD),
        ("spool-producer", PRODUCER_PASSWORD),
        ("spool-admin", ADMIN_PASSWORD),
    ] {
        let mut conn = acl.connect_as(user, password).await;
        let outside: redis::RedisResult<()> = conn.set("billing:invoice:1", "x").await;
        assert!(
            outside.as_ref().is_err_and(is_noperm),
            "{user}: {outside:?}"
        );
        let flush: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut conn).await;
        assert!(flush.as_ref().is_err_and(is_noperm), "{user}: {flush:?}");
        let config: redis::RedisResult<()> = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("allkeys-lru")
            .query_async(&mut conn)
            .await;
        assert!(config.as_ref().is_err_and(is_noperm), "{user}: {config:?}");
    }

    // The monitor reads what KEDA's lagCount trigger reads, and nothing else.
    let stream = format!("{prefix}:{{default}}:normal");
    let mut monitor = acl.connect_as("spool-monitor", MONITOR_PASSWORD).await;
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut monitor)
        .await
        .unwrap();
    assert!(matches!(groups, redis::Value::Array(_)), "{groups:?}");
    let length: u64 = monitor.xlen(&stream).await.unwrap();
    assert_eq!(length, 1);
    let read: redis::RedisResult<redis::Value> = monitor.xrange_all(&stream).await;
    assert!(read.as_ref().is_err_and(is_noperm), "payloads: {read:?}");
    let write: redis::RedisResult<String> = monitor.xadd(&stream, "*", &[("e", "x")]).await;
    assert!(write.as_ref().is_err_and(is_noperm), "{write:?}");

    // A wrong password is refused at connect time, with Redis' reason.
    let wrong = RedisBroker::connect(RedisConfig {
        key_prefix: prefix.clone(),
        ..RedisConfig::from_url(acl.url_as("spool-worker", "not-the-password"))
    })
    .await;
    let err = wrong.unwrap_err().to_string();
    assert!(
        err.contains("WRONGPASS") || err.contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_runs_as_spool_worker() {
    let acl = AclServer::start();
    let harness = TestRedis::at(&acl.server.url()).await;
    let prefix = harness.prefix.clone();
    // With its /metrics, whose queue signals it reads from Redis.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let worker = Command::new(bins::spool_worker())
        .env(
            "SPOOL_REDIS_URL",
            acl.url_as("spool-worker", WORKER_PASSWORD),
        )
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_QUEUES", "default")
        .args(["--no-video", "--no-probe", "--metrics-addr", &metrics_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let producer = Client::new(
        acl.broker_as("spool-producer", PRODUCER_PASSWORD, &prefix)
            .await,
    );
    for value in 0..3 {
        producer
            .enqueue(spool_worker::builtin::Echo {
                value: serde_json::json!(value),
            })
            .await
            .unwrap();
    }
    wait_until(
        "the worker binary to run 3 tasks",
        Duration::from_secs(20),
        || async { harness.stats(&QueueName::DEFAULT).await.completed_total == 3 },
    )
    .await;
    // Its children heartbeat the registry as spool-worker.
    let admin_url = acl.url_as("spool-admin", ADMIN_PASSWORD);
    let workers = spoolctl(&admin_url, &prefix, &["workers", "--json"]);
    assert!(workers.contains("\"default\""), "{workers}");

    // The queue's signals, read with the worker's rules (stats.lua).
    let ready = "spool_queue_ready{queue=\"default\"}";
    wait_until(
        "the queue's signals on /metrics",
        Duration::from_secs(20),
        || {
            let seen = metrics::scrape(&metrics_addr).and_then(|m| metrics::sample(&m, ready));
            async move { seen == Some(0.0) }
        },
    )
    .await;

    let stderr = bins::stop_warm(worker);
    assert!(
        !stderr.contains("NOPERM") && !is_noperm(&stderr),
        "{stderr}"
    );
    harness.cleanup().await;
}
