//! `spoolctl top --once` against a real Redis and SQLite job store, with a
//! backlog on a queue nobody serves, a live worker, a task running with
//! progress and a task that failed: the frame fits 60 and 200 columns
//! (and `$COLUMNS`) without a line too wide, and shows those facts; the
//! JSON frame has them too, its times in RFC 3339.
//!
//! Build the binaries first: `cargo build -p spool-scheduler --bins`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::store::{JobStatus, JobStore};
use spool_broker::{Broker as _, Progress, QueueName, Task, TaskId, TaskOptions};
use spool_tests::{RunningWorker, TestRedis, bins, redis_url, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use spool_worker_cli::heartbeat::{self, Heartbeat};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs until released, after one progress report.
#[derive(Debug, Serialize, Deserialize)]
struct Hold;

impl Task for Hold {
    const NAME: &'static str = "test.top.hold";
    type Output = ();
}

/// Fails for good at once.
#[derive(Debug, Serialize, Deserialize)]
struct Broken;

impl Task for Broken {
    const NAME: &'static str = "test.top.broken";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 1,
            ..TaskOptions::default()
        }
    }
}

/// Served by no worker: dead-lettered as an unknown task.
#[derive(Debug, Serialize, Deserialize)]
struct Orphan;

impl Task for Orphan {
    const NAME: &'static str = "test.top.orphan";
    type Output = ();
}

const WAIT: Duration = Duration::from_secs(30);

/// `spoolctl top --once` with `args` (and `--interval 200ms` unless they
/// set it) on the test's Redis and store.
fn top(redis: &TestRedis, store_url: &str, args: &[&str], columns: Option<&str>) -> Output {
    let mut command = Command::new(bins::spoolctl());
    command
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["--store-url", store_url])
        .args(["top", "--once"]);
    if !args.contains(&"--interval") {
        command.args(["--interval", "200ms"]);
    }
    command.args(args).env_remove("COLUMNS");
    if let Some(columns) = columns {
        command.env("COLUMNS", columns);
    }
    command.output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Checks that no line of `frame` is wider than `width`.
fn assert_fits(frame: &str, width: usize) {
    for line in frame.lines() {
        let chars = line.chars().count();
        assert!(
            chars <= width,
            "a line of {chars} > {width}: {line:?}\n{frame}"
        );
    }
}

/// The line of `frame` that holds `needle`.
fn line_with<'a>(frame: &'a str, needle: &str) -> &'a str {
    frame
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{frame}"))
}

/// Real Redis and a SQLite store with: a backlog of 5 on gpu, which no
/// worker serves; a live worker (its registry record kept by the worker
/// binary's heartbeat) running a task that reported progress and holds
/// until released or revoked; a task that failed for good.
struct Scene {
    redis: TestRedis,
    dir: PathBuf,
    store_url: String,
    store: JobStore,
    running: TaskId,
    release: Arc<Notify>,
    worker: RunningWorker,
    beating: CancellationToken,
    beat: tokio::task::JoinHandle<()>,
    host: String,
}

impl Scene {
    async fn new() -> Self {
        let redis = TestRedis::new().await;
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "spool-top-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store_url = format!("sqlite://{}", dir.join("jobs.db").display());
        let store = JobStore::create(&store_url).await.unwrap();
        let client = redis.client().with_store(store.clone());
        for _ in 0..5 {
            client.enqueue(Hold).queue(QueueName::GPU).await.unwrap();
        }

        let release = Arc::new(Notify::new());
        let held = release.clone();
        let worker = Worker::new(
            redis.broker.clone(),
            WorkerConfig {
                concurrency: 2,
                poll_interval: Duration::from_millis(50),
                queues: vec![QueueName::DEFAULT],
                ..WorkerConfig::default()
            },
        )
        .with_store(store.clone())
        .register::<Hold, _>(move |_: Hold, ctx: TaskContext| {
            let held = held.clone();
            async move {
                // Reported again and again, as an encode does: the events
                // carry FFmpeg's speed, which the store does not keep.
                loop {
                    ctx.progress(Progress {
                        stage: Some("encode 720p".into()),
                        fps: Some(118.0),
                        speed: Some(3.9),
                        eta_seconds: Some(90.0),
                        ..Progress::percent(37.0)
                    });
                    tokio::select! {
                        () = held.notified() => return Ok(()),
                        () = ctx.cancellation().cancelled() => return Err(TaskError::fail("revoked")),
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        })
        .register::<Broken, _>(|_: Broken, _: TaskContext| async {
            Err::<(), _>(TaskError::fail("disk on fire"))
        });
        let record = heartbeat::initial_record(
            "top-worker-1",
            "top-worker",
            vec![QueueName::DEFAULT],
            2,
            None,
            Default::default(),
        );
        let heartbeat = Heartbeat::new(redis.broker.clone(), record, Duration::from_millis(200));
        let worker = spawn_worker(worker.observe(heartbeat.observer()));
        let beating = CancellationToken::new();
        let beat = tokio::spawn(heartbeat.clone().run(beating.clone()));

        let orphan = client.enqueue(Orphan).await.unwrap();
        let broken = client.enqueue(Broken).await.unwrap();
        let running = client.enqueue(Hold).await.unwrap();
        wait_until(
            "the failure and the running task's progress in the store",
            WAIT,
            || {
                let store = store.clone();
                async move {
                    let failed = store.get(broken).await.unwrap().map(|r| r.status);
                    let dead = store.get(orphan).await.unwrap().map(|r| r.status);
                    let held = store.get(running).await.unwrap();
                    failed == Some(JobStatus::Failed)
                        && dead == Some(JobStatus::Dead)
                        && held
                            .is_some_and(|r| r.status == JobStatus::Running && r.progress.is_some())
                }
            },
        )
        .await;
        wait_until(
            "the worker's record naming the running task",
            WAIT,
            || async {
                redis
                    .broker
                    .workers()
                    .await
                    .unwrap()
                    .iter()
                    .any(|r| r.is_live() && r.running.contains(&running))
            },
        )
        .await;
        let host = redis.broker.workers().await.unwrap()[0].host.clone();
        Self {
            redis,
            dir,
            store_url,
            store,
            running,
            release,
            worker,
            beating,
            beat,
            host,
        }
    }

    /// Waits for the held task to reach `status` in the store.
    async fn wait_for(&self, status: JobStatus) {
        wait_until(&format!("the held task to be {status}"), WAIT, || {
            let store = self.store.clone();
            let running = self.running;
            async move { store.get(running).await.unwrap().map(|r| r.status) == Some(status) }
        })
        .await;
    }

    async fn cleanup(self) {
        self.worker.stop().await;
        self.beating.cancel();
        self.beat.await.unwrap();
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.redis.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_fits_60_and_200_columns_and_shows_what_runs() {
    let scene = Scene::new().await;
    let (redis, store_url, running, host) = (
        &scene.redis,
        scene.store_url.as_str(),
        scene.running,
        scene.host.as_str(),
    );

    for width in [60, 200] {
        // 1.5 s between the readings: a progress event comes in between.
        let width_arg = width.to_string();
        let out = top(
            redis,
            store_url,
            &["--width", &width_arg, "--interval", "1500ms"],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let frame = text(&out.stdout);
        assert_fits(&frame, width);
        // The backlog on the queue nobody serves.
        let gpu = line_with(&frame, "gpu ");
        assert_eq!(gpu.split_whitespace().nth(1), Some("5"), "{gpu}\n{frame}");
        // The live worker.
        assert!(frame.contains("Workers (1)"), "{frame}");
        let busy = line_with(&frame, &host[..host.len().min(6)]);
        assert!(
            busy.contains("1/2"),
            "one slot of two busy: {busy}\n{frame}"
        );
        // The running task: name, percent and ETA.
        let task = line_with(&frame, "test.top.hold");
        assert!(
            task.contains("37%") && task.contains("1m 30s"),
            "{task}\n{frame}"
        );
        assert!(frame.contains("Running (1)"), "{frame}");
        // The failure.
        let failure = line_with(&frame, "test.top.broken");
        assert!(
            failure.contains("failed") && failure.contains("disk on fire"),
            "{failure}"
        );
        if width == 200 {
            assert!(task.contains(&running.to_string()), "the whole id: {task}");
            assert!(
                task.contains("encode 720p") && task.contains("118"),
                "{task}"
            );
            for header in ["CONSUMERS", "IN~", "OUT~", "ELAPSED", "PROCESSED"] {
                assert!(frame.contains(header), "{header} at 200:\n{frame}");
            }
        } else {
            assert!(!frame.contains("CONSUMERS"), "dropped at 60:\n{frame}");
        }
    }

    // Without --width, a pipe: $COLUMNS.
    let out = top(redis, store_url, &[], Some("72"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let frame = text(&out.stdout);
    assert_fits(&frame, 72);
    assert!(
        frame.lines().any(|l| l.chars().count() == 72),
        "the rules span $COLUMNS:\n{frame}"
    );

    // JSON: the running task, the failure, RFC 3339 times.
    let out = top(redis, store_url, &["--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gpu = json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "gpu")
        .unwrap();
    assert_eq!(gpu["backlog"], 5);
    assert!(
        gpu["rate_in"].is_number(),
        "two readings make the rates: {gpu}"
    );
    assert_eq!(json["workers"].as_array().unwrap().len(), 1);
    let task = &json["running"][0];
    assert_eq!(task["id"], running.to_string());
    assert_eq!(task["name"], "test.top.hold");
    assert_eq!(task["progress"]["percent"], 37.0);
    assert_eq!(task["eta_seconds"], 90.0);
    let failure = |name: &str| {
        json["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {}", json["failures"]))
            .clone()
    };
    let broken = failure("test.top.broken");
    assert_eq!(broken["error"], "disk on fire");
    assert_eq!(broken["status"], "failed");
    assert_eq!(failure("test.top.orphan")["status"], "dead");
    for time in [&json["at"], &task["started_at"], &broken["at"]] {
        let time = time.as_str().unwrap();
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
    }

    // Without a job store: the running task by id from the worker's
    // record, the failures from the dead letters, and a line saying so.
    let out = Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["--store-url", "none"])
        .args(["top", "--once", "--interval", "200ms", "--width", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let frame = text(&out.stdout);
    assert_fits(&frame, 120);
    assert!(frame.contains("no job store"), "{frame}");
    let task = line_with(&frame, &running.to_string());
    assert!(task.contains('?'), "no name without the store: {task}");
    let dead = line_with(&frame, "test.top.orphan");
    assert!(
        dead.contains("dead") && dead.contains("unknown_task"),
        "{dead}\n{frame}"
    );
    assert!(
        !frame.contains("test.top.broken"),
        "failed, not dead-lettered: {frame}"
    );

    scene.release.notify_one();
    scene.wait_for(JobStatus::Succeeded).await;
    scene.cleanup().await;
}

/// `spoolctl top` on a pseudo-terminal of 40 rows and 160 columns: what
/// it drew, and the keys to send it.
struct Terminal {
    child: std::process::Child,
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
    screen: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    fn spawn(scene: &Scene) -> Self {
        use std::os::fd::AsFd as _;
        let size = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).unwrap();
        let stdio = || std::process::Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
        let child = Command::new(bins::spoolctl())
            .args([
                "--redis-url",
                &redis_url(),
                "--key-prefix",
                &scene.redis.prefix,
            ])
            .args(["--store-url", &scene.store_url])
            .args(["top", "--interval", "200ms"])
            .env("TERM", "xterm")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let drawn = screen.clone();
        // The terminal must be read, or the child blocks on its output.
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buffer = [0u8; 65536];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                drawn.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Self {
            child,
            master,
            slave: pty.slave,
            screen,
        }
    }

    /// Everything drawn so far, as text (escape sequences included).
    fn drawn(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    async fn wait_for_text(&self, text: &str) {
        wait_until(&format!("{text:?} on the terminal"), WAIT, || {
            let found = self.drawn().contains(text);
            async move { found }
        })
        .await;
    }

    fn send(&mut self, keys: &[u8]) {
        use std::io::Write as _;
        self.master.write_all(keys).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits for spoolctl to exit, and checks it restored the terminal:
    /// out of the alternate screen, cooked mode (canonical input, echo,
    /// signals) back.
    async fn assert_exits_restored(mut self) {
        let status = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("spoolctl top to exit");
        assert!(status.success(), "{status:?}: {}", self.drawn());
        let drawn = self.drawn();
        let entered = drawn.find("\x1b[?1049h").expect("the alternate screen");
        let left = drawn
            .rfind("\x1b[?1049l")
            .expect("the alternate screen left");
        assert!(left > entered, "{drawn:?}");
        use nix::sys::termios::{LocalFlags, tcgetattr};
        let modes = tcgetattr(&self.slave).unwrap();
        for flag in [LocalFlags::ICANON, LocalFlags::ECHO, LocalFlags::ISIG] {
            assert!(modes.local_flags.contains(flag), "{flag:?} restored");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_on_a_terminal_drills_in_pauses_revokes_and_restores_the_terminal() {
    let scene = Scene::new().await;
    let queues = || async { scene.redis.broker.paused().await.unwrap() };

    let mut terminal = Terminal::spawn(&scene);
    terminal.wait_for_text("Running (1)").await;
    terminal.wait_for_text("test.top.hold").await;
    // The running task is selected: Enter shows its record.
    terminal.send(b"\r");
    terminal.wait_for_text("(Esc closes)").await;
    terminal.wait_for_text("encode 720p").await;
    terminal.send(b"\x1b");
    // x asks before revoking; n answers no.
    terminal.send(b"x");
    terminal.wait_for_text("y revokes").await;
    terminal.send(b"n");
    // Tab twice: to the failures, then the queues; the first is default.
    terminal.send(b"\t\t");
    terminal.send(b"p");
    wait_until("default paused", WAIT, || async {
        queues().await == [QueueName::DEFAULT]
    })
    .await;
    // The keys run in order: the n came before, and revoked nothing.
    assert!(
        !scene
            .redis
            .broker
            .revoked()
            .await
            .unwrap()
            .contains(&scene.running)
    );
    terminal.send(b"p");
    wait_until("default resumed", WAIT, || async {
        queues().await.is_empty()
    })
    .await;
    // Back to the running task: x and y revoke it.
    terminal.send(b"\t");
    terminal.send(b"x");
    terminal.send(b"y");
    wait_until("the task revoked", WAIT, || async {
        scene
            .redis
            .broker
            .revoked()
            .await
            .unwrap()
            .contains(&scene.running)
    })
    .await;
    scene.wait_for(JobStatus::Revoked).await;
    terminal.send(b"q");
    terminal.assert_exits_restored().await;

    // Ctrl-C, a key in raw mode, quits too.
    let mut terminal = Terminal::spawn(&scene);
    terminal.wait_for_text("Queues (").await;
    terminal.send(b"\x03");
    terminal.assert_exits_restored().await;

    // And SIGTERM from elsewhere.
    let terminal = Terminal::spawn(&scene);
    terminal.wait_for_text("Queues (").await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(terminal.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    terminal.assert_exits_restored().await;

    scene.cleanup().await;
}
