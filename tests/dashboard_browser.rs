//! The web dashboard in a real browser: Debian's Chromium, headless,
//! driven through chromedriver, against a real Redis, a real SQLite job
//! store, real `spool-worker` processes and the real `spool-dashboard`
//! binary. Every page renders; clicking pause, resume, revoke, retry and
//! cancel changes what Redis and the store hold; live updates arrive
//! without a reload; an argument holding `<script>` shows as text; the
//! player plays a ladder packaged by the real video task; off loopback, a
//! request without the token is refused. Screenshots of each page go to
//! target/dashboard-screenshots/.
//!
//! The suites skip, saying so, only when chromedriver is not installed
//! (ops/scripts/setup.sh installs it).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use spool_broker::store::{JobStatus, JobStore, WorkflowRecordStatus};
use spool_broker::workflow::WorkflowState;
use spool_broker::{Broker as _, QueueName, TaskId};
use spool_sdk::video::{
    Analyze, Codec, Package, PackageOutput, Preset, RateControl, Size, Transcode,
};
use spool_sdk::workflow::Workflow;
use spool_tests::browser::{
    Browser, DashboardProcess, WorkerProcess, chromedriver_or_skip, http, http_with_body, wait,
};
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip};
use spool_tests::{TestRedis, redis_url};
use spool_worker::builtin::{Echo, Fail, Sleep};

const PATIENCE: Duration = Duration::from_secs(60);

/// A scratch directory with a SQLite job store, removed on drop.
struct Scratch {
    dir: PathBuf,
    store: JobStore,
    store_url: String,
}

impl Scratch {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spool-dashboard-{}-{:012x}",
            std::process::id(),
            fastrand::u64(..1 << 48)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store_url = format!("sqlite://{}", dir.join("jobs.db").display());
        let store = JobStore::create(&store_url).await.unwrap();
        Self {
            dir,
            store,
            store_url,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn status_of(store: &JobStore, id: TaskId) -> Option<JobStatus> {
    store.get(id).await.unwrap().map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_and_its_actions_change_redis_and_the_store() {
    let Some(driver) = chromedriver_or_skip("every_page_renders_and_its_actions") else {
        return;
    };
    let redis = TestRedis::new().await;
    let scratch = Scratch::new().await;
    let beat = scratch.dir.join("beat.toml");
    std::fs::write(
        &beat,
        "[[entry]]\nname = \"nightly-sweep\"\ntask = \"spool.ping\"\ncron = \"30 2 * * *\"\n",
    )
    .unwrap();
    let worker = WorkerProcess::start(&redis_url(), &redis.prefix, "default", &scratch.store_url);
    let dashboard = DashboardProcess::start(
        &redis_url(),
        &redis.prefix,
        &[
            "--store-url",
            &scratch.store_url,
            "--beat-config",
            beat.to_str().unwrap(),
        ],
    )
    .await;
    let client = redis.client().with_store(scratch.store.clone());
    let browser = Browser::start(&driver).await;

    // A task whose argument holds markup, run to its end. The queue is
    // paused while it is enqueued: the SDK records the task (with its
    // arguments) just after Redis has it, and a worker that recorded its
    // start first would keep the arguments out of the record.
    let default = QueueName::DEFAULT;
    redis.broker.pause(&default).await.unwrap();
    let hostile = "<script>window.__xss = 1</script><b>bold</b>";
    let echo = client
        .enqueue(Echo {
            value: serde_json::json!({ "title": hostile }),
        })
        .await
        .unwrap();
    redis.broker.resume(&default).await.unwrap();
    let store = &scratch.store;
    wait("the echo task to succeed", PATIENCE, || async {
        status_of(store, echo).await == Some(JobStatus::Succeeded)
    })
    .await;

    // The overview: the queue table, the charts, the fleet.
    browser.goto(&dashboard.url("/")).await;
    browser
        .wait_for("#queues tr[data-queue='default']", PATIENCE)
        .await;
    browser.wait_for("#charts svg", PATIENCE).await;
    // The worker process registers, and the fleet shows it live.
    wait("a live worker on the overview", PATIENCE, || async {
        let fleet = browser.text("#fleet").await;
        fleet.contains(" live") && !fleet.contains("0 live")
    })
    .await;
    browser.screenshot("overview").await;

    // The task page shows the argument as text and runs none of it.
    browser
        .goto(&dashboard.url(&format!("/tasks/{echo}")))
        .await;
    let arguments = browser.text("#arguments pre").await;
    assert!(arguments.contains(hostile), "{arguments}");
    assert_eq!(
        browser.eval("return window.__xss === undefined").await,
        true
    );
    assert!(!browser.has("#arguments b").await, "markup was not escaped");
    assert!(browser.text("#summary").await.contains("succeeded"));
    assert!(browser.text("#outcome").await.contains("bold"));
    browser.screenshot("task").await;

    // Search finds it by name, and by id.
    browser
        .goto(&dashboard.url("/tasks?name=spool.echo&status=succeeded"))
        .await;
    browser
        .wait_for(&format!("tr[data-task='{echo}']"), PATIENCE)
        .await;
    browser.screenshot("tasks").await;
    browser
        .goto(&dashboard.url(&format!("/tasks?id={echo}")))
        .await;
    assert!(browser.text("h1").await.contains("spool.echo"));

    // Pause and resume: Redis holds the pause, then no longer.
    browser.goto(&dashboard.url("/queues/default")).await;
    browser.screenshot("queue").await;
    browser.click("button.pause").await;
    wait("the pause in Redis", PATIENCE, || async {
        redis.broker.paused().await.unwrap().contains(&default)
    })
    .await;
    browser.wait_for(".flash", PATIENCE).await;
    browser.click("button.resume").await;
    wait("the resume in Redis", PATIENCE, || async {
        !redis.broker.paused().await.unwrap().contains(&default)
    })
    .await;

    // Revoke a task waiting in a paused queue: Redis holds the
    // revocation at once; once the queue resumes, the worker skips the
    // task and the store records it revoked.
    redis.broker.pause(&default).await.unwrap();
    let sleeper = client.enqueue(Sleep { ms: 120_000 }).await.unwrap();
    browser
        .goto(&dashboard.url(&format!("/tasks/{sleeper}")))
        .await;
    assert!(browser.text("#summary").await.contains("queued"));
    browser.click("button.revoke").await;
    wait("the revocation in Redis", PATIENCE, || async {
        redis.broker.revoked().await.unwrap().contains(&sleeper)
    })
    .await;
    browser.wait_for(".flash", PATIENCE).await;
    redis.broker.resume(&default).await.unwrap();
    wait("the store to record the revocation", PATIENCE, || async {
        status_of(store, sleeper).await == Some(JobStatus::Revoked)
    })
    .await;
    // The task page follows without a reload.
    wait("the revoked status on the page", PATIENCE, || async {
        browser.text("#summary").await.contains("revoked")
    })
    .await;

    // A dead task, seen in the dead letters, retried from its page: it
    // leaves the dead letters and succeeds on its next attempt.
    let failing = client
        .enqueue(Fail { times: 1 })
        .max_attempts(1)
        .await
        .unwrap();
    wait("the failing task to die", PATIENCE, || async {
        status_of(store, failing).await == Some(JobStatus::Dead)
            && redis.stats(&default).await.dead == 1
    })
    .await;
    browser.goto(&dashboard.url("/queues/default/dead")).await;
    browser
        .wait_for("table.dead tr[data-entry]", PATIENCE)
        .await;
    browser.screenshot("dead-letters").await;
    browser
        .goto(&dashboard.url(&format!("/tasks/{failing}")))
        .await;
    browser.click("button.retry").await;
    browser.wait_for(".flash", PATIENCE).await;
    wait("the dead letter to be requeued", PATIENCE, || async {
        redis.stats(&default).await.dead == 0
    })
    .await;
    wait("the retried task to succeed", PATIENCE, || async {
        status_of(store, failing).await == Some(JobStatus::Succeeded)
    })
    .await;

    // Workers, beat.
    browser.goto(&dashboard.url("/workers")).await;
    browser.wait_for("tr[data-worker]", PATIENCE).await;
    assert!(browser.text("table.workers").await.contains("default"));
    browser.screenshot("workers").await;
    browser.goto(&dashboard.url("/beat")).await;
    assert!(browser.text("table.beat").await.contains("nightly-sweep"));
    browser.screenshot("beat").await;

    // Purge asks for the queue's name; with it, the queue is emptied.
    client
        .enqueue(Sleep { ms: 1 })
        .queue("analysis".parse().unwrap())
        .await
        .unwrap();
    let analysis: QueueName = "analysis".parse().unwrap();
    browser.goto(&dashboard.url("/queues/analysis")).await;
    browser.click("details.danger summary").await;
    browser
        .client
        .find(fantoccini::Locator::Css("input[name='confirm']"))
        .await
        .unwrap()
        .send_keys("analysis")
        .await
        .unwrap();
    browser.click("button.purge").await;
    wait("the purge", PATIENCE, || async {
        redis.stats(&analysis).await.backlog() == 0
    })
    .await;

    browser.close().await;
    drop(dashboard);
    drop(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_arrive_without_a_reload_and_a_workflow_is_cancelled() {
    let Some(driver) = chromedriver_or_skip("live_updates_arrive_without_a_reload") else {
        return;
    };
    let redis = TestRedis::new().await;
    let scratch = Scratch::new().await;
    let worker = WorkerProcess::start(&redis_url(), &redis.prefix, "default", &scratch.store_url);
    let dashboard = DashboardProcess::start(
        &redis_url(),
        &redis.prefix,
        &["--store-url", &scratch.store_url],
    )
    .await;
    let client = redis.client().with_store(scratch.store.clone());
    let browser = Browser::start(&driver).await;

    // The overview, then three tasks on a queue nobody serves: the backlog
    // shows them through the event stream, in the same document.
    browser.goto(&dashboard.url("/")).await;
    browser
        .wait_for("#queues tr[data-queue='streaming']", PATIENCE)
        .await;
    let loaded = browser.eval("return window.spoolLoadedAt").await;
    for _ in 0..3 {
        client
            .enqueue(Sleep { ms: 1 })
            .queue("streaming".parse().unwrap())
            .await
            .unwrap();
    }
    wait("the live backlog", PATIENCE, || async {
        browser
            .text("#queues tr[data-queue='streaming'] td[data-field='backlog']")
            .await
            == "3"
    })
    .await;
    assert_eq!(browser.eval("return window.spoolLoadedAt").await, loaded);
    assert!(browser.has("body[data-updates]").await);
    browser.screenshot("overview-live").await;

    // An ingest-like workflow: four chunks, then a long step. The page
    // shows the chunk map filling in live, then cancel stops it.
    let mut wf = Workflow::new();
    for i in 0..4 {
        wf.node(&format!("chunk-{i}"), Sleep { ms: 300 });
    }
    wf.node("assemble", Sleep { ms: 120_000 })
        .after(&["chunk-0", "chunk-1", "chunk-2", "chunk-3"]);
    let handle = client.submit_workflow(wf).await.unwrap();
    let id = handle.id();
    browser
        .goto(&dashboard.url(&format!("/workflows/{id}")))
        .await;
    let loaded = browser.eval("return window.spoolLoadedAt").await;
    browser.wait_for(".chunk-map .chunk", PATIENCE).await;
    wait("every chunk done, live", PATIENCE, || async {
        browser.text("#chunks").await.contains("4 of 4 chunks done")
    })
    .await;
    // The last step leaves `waiting` once its four parents are done.
    browser
        .wait_for(
            "a.node[data-node='assemble']:not([data-state='waiting'])",
            PATIENCE,
        )
        .await;
    assert_eq!(browser.eval("return window.spoolLoadedAt").await, loaded);
    browser.screenshot("workflow").await;
    browser.click("button.cancel").await;
    wait("the cancellation in Redis", PATIENCE, || async {
        matches!(
            redis
                .broker
                .workflow_status(id)
                .await
                .unwrap()
                .map(|s| s.state),
            Some(WorkflowState::Cancelled)
        )
    })
    .await;
    wait("the cancellation in the store", PATIENCE, || async {
        scratch
            .store
            .workflow(id)
            .await
            .unwrap()
            .is_some_and(|w| w.status == WorkflowRecordStatus::Cancelled)
    })
    .await;
    browser.goto(&dashboard.url("/workflows")).await;
    browser.wait_for("table.workflows", PATIENCE).await;
    browser.screenshot("workflows").await;

    browser.close().await;
    drop(dashboard);
    drop(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_plays_a_packaged_ladder_and_an_analysis_is_charted() {
    let Some(driver) = chromedriver_or_skip("the_player_plays_a_packaged_ladder") else {
        return;
    };
    let Some(ffmpeg) = ffmpeg_or_skip("the_player_plays_a_packaged_ladder") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    // 720p: the default ladder keeps three rungs (720p, 480p, 360p).
    env.clip("clip.mp4", Clip::new(1280, 720).seconds(4.0))
        .await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);
    let package = client
        .enqueue(
            Package::new("clip.mp4", "streams/clip")
                .preset(Preset::UltraFast)
                .segment_duration(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let output: PackageOutput = client
        .task::<Package>(package)
        .unwrap()
        .wait(Duration::from_secs(180))
        .await
        .unwrap();
    assert!(output.hls_master.is_some() && output.dash_mpd.is_some());
    assert_eq!(output.renditions.len(), 3, "{output:?}");
    // The clip against a small, heavily compressed copy of itself.
    let small = client
        .enqueue(
            Transcode::new("clip.mp4", "small.mp4", Codec::H264)
                .size(Size::Height(180))
                .rate(RateControl::Crf(42))
                .preset(Preset::UltraFast),
        )
        .await
        .unwrap();
    let small = client
        .task::<Transcode>(small)
        .unwrap()
        .wait(Duration::from_secs(180))
        .await
        .unwrap();
    let analysis = client
        .enqueue(Analyze::new("clip.mp4", &small.output).per_frame(true))
        .await
        .unwrap();
    let report = client
        .task::<Analyze>(analysis)
        .unwrap()
        .wait(Duration::from_secs(180))
        .await
        .unwrap();
    let vmaf = report.vmaf.expect("VMAF was asked for");
    assert!(vmaf.mean < 99.0, "{vmaf:?}");

    let store_url = format!("sqlite://{}", env.dir.join("jobs.db").display());
    let dashboard = DashboardProcess::start(
        &redis_url(),
        &redis.prefix,
        &[
            "--store-url",
            &store_url,
            "--media-root",
            env.outputs.to_str().unwrap(),
        ],
    )
    .await;
    let browser = Browser::start(&driver).await;

    // DASH first (the default is the first format listed: HLS), then HLS:
    // each loads and plays, its currentTime advancing.
    browser
        .goto(&dashboard.url(&format!("/tasks/{package}")))
        .await;
    for format in ["hls", "dash"] {
        browser
            .eval(&format!(
                "const s = document.getElementById('format'); \
                 if (s.value !== '{format}') {{ s.value = '{format}'; \
                 s.dispatchEvent(new Event('change')); }} return true"
            ))
            .await;
        browser
            .wait_for(&format!(".player[data-loaded='{format}']"), PATIENCE)
            .await;
        let start = browser
            .eval("return document.getElementById('video').currentTime")
            .await
            .as_f64()
            .unwrap();
        wait(
            &format!("{format} playback to advance"),
            PATIENCE,
            || async {
                let now = browser
                    .eval("return document.getElementById('video').currentTime")
                    .await
                    .as_f64()
                    .unwrap_or(0.0);
                now > start + 0.5
            },
        )
        .await;
        assert!(!browser.has(".player[data-error]").await);
    }
    // The rendition switcher lists the ladder's three renditions after
    // "auto"; picking the smallest plays it.
    let options = browser
        .eval("return document.getElementById('rendition').options.length")
        .await;
    assert_eq!(options.as_u64(), Some(4), "auto and three renditions");
    browser
        .eval(
            "const s = document.getElementById('rendition'); \
             s.selectedIndex = s.options.length - 1; \
             s.dispatchEvent(new Event('change')); return true",
        )
        .await;
    browser
        .wait_for(".player[data-rendition='360']", PATIENCE)
        .await;
    wait("the 360p rendition on screen", PATIENCE, || async {
        browser
            .eval("return document.getElementById('video').videoHeight")
            .await
            .as_u64()
            == Some(360)
    })
    .await;
    browser
        .eval("document.getElementById('player').scrollIntoView(); return true")
        .await;
    browser.screenshot("package").await;

    // The analysis: pooled figures and per-frame charts.
    browser
        .goto(&dashboard.url(&format!("/tasks/{analysis}")))
        .await;
    browser
        .wait_for("#quality table.pooled tr[data-metric]", PATIENCE)
        .await;
    browser
        .wait_for("#quality figure.chart svg path.line", PATIENCE)
        .await;
    // The pooled figures are the report's own.
    let shown = browser
        .text("#quality tr[data-metric='VMAF'] td:nth-child(2)")
        .await;
    assert_eq!(shown, format!("{:.3}", vmaf.mean));
    let charts = browser
        .eval("return document.querySelectorAll('#quality figure.chart').length")
        .await;
    assert_eq!(charts.as_u64(), Some(3), "VMAF, PSNR and SSIM per frame");
    browser
        .eval("document.getElementById('quality').scrollIntoView(); return true")
        .await;
    browser.screenshot("analysis").await;

    browser.close().await;
    drop(dashboard);
    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_a_request_without_the_token_is_refused() {
    let Some(driver) = chromedriver_or_skip("off_loopback_a_request_without_the_token") else {
        return;
    };
    let redis = TestRedis::new().await;
    let scratch = Scratch::new().await;

    // A public address without credentials: the binary refuses to start.
    let refused = std::process::Command::new(spool_tests::bins::workspace_bin(
        "spool-dashboard",
        "spool-dashboard",
    ))
    .env("SPOOL_REDIS_URL", redis_url())
    .env("SPOOL_KEY_PREFIX", &redis.prefix)
    .args(["--listen", "0.0.0.0:0"])
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");

    let token = format!("{:032x}", fastrand::u128(..));
    let token_file = scratch.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = spool_tests::free_port();
    let listen = format!("0.0.0.0:{port}");
    let dashboard = DashboardProcess::start(
        &redis_url(),
        &redis.prefix,
        &[
            "--listen",
            &listen,
            "--token-file",
            token_file.to_str().unwrap(),
            "--store-url",
            &scratch.store_url,
        ],
    )
    .await;
    let addr = dashboard.addr;

    // Without the token: refused, pages and actions alike. The probes
    // stay open.
    assert_eq!(http(addr, "GET", "/", &[]).await.unwrap().0, 401);
    assert_eq!(http(addr, "GET", "/tasks", &[]).await.unwrap().0, 401);
    assert_eq!(
        http(addr, "POST", "/queues/default/pause", &[])
            .await
            .unwrap()
            .0,
        401
    );
    let wrong = format!("Bearer {}", "x".repeat(32));
    assert_eq!(
        http(addr, "GET", "/", &[("Authorization", &wrong)])
            .await
            .unwrap()
            .0,
        401
    );
    assert_eq!(http(addr, "GET", "/healthz", &[]).await.unwrap().0, 200);
    let bearer = format!("Bearer {token}");
    let (status, page) = http(addr, "GET", "/", &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!page.contains(&token), "the token must not be echoed");
    // A cross-site POST is refused even with the token, and so is one
    // without the form's CSRF token; nothing is paused.
    let (status, _) = http_with_body(
        addr,
        "POST",
        "/queues/default/pause",
        &[
            ("Authorization", &bearer),
            ("Origin", "http://evil.example"),
        ],
        "csrf=whatever",
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    let (status, _) = http_with_body(
        addr,
        "POST",
        "/queues/default/pause",
        &[("Authorization", &bearer), ("Sec-Fetch-Site", "cross-site")],
        "csrf=whatever",
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    let (status, _) = http_with_body(
        addr,
        "POST",
        "/queues/default/pause",
        &[("Authorization", &bearer)],
        "csrf=forged",
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    assert!(redis.broker.paused().await.unwrap().is_empty());

    // In the browser: refused without the token; the token once in the URL
    // sets the cookie, and the pages open from then on.
    let browser = Browser::start(&driver).await;
    browser.goto(&dashboard.url("/")).await;
    assert!(browser.text("body").await.contains("needs credentials"));
    browser
        .goto(&dashboard.url(&format!("/?token={token}")))
        .await;
    browser.wait_for("#queues", PATIENCE).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(&token), "{url}");
    browser.goto(&dashboard.url("/workers")).await;
    assert!(browser.text("h1").await.contains("Workers"));
    browser.close().await;
    drop(dashboard);

    // Read-only: the pages have no action buttons and a POST is refused.
    let dashboard = DashboardProcess::start(
        &redis_url(),
        &redis.prefix,
        &["--read-only", "--store-url", &scratch.store_url],
    )
    .await;
    let (status, page) = http(dashboard.addr, "GET", "/queues/default", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!page.contains("button"), "read-only pages have no buttons");
    let (status, _) = http_with_body(
        dashboard.addr,
        "POST",
        "/queues/default/pause",
        &[],
        "csrf=x",
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    assert!(redis.broker.paused().await.unwrap().is_empty());
    drop(dashboard);
    redis.cleanup().await;
}
