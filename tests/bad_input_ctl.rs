//! Bad input aimed at the control plane: what `spoolctl` shows of a Redis
//! holding keys it did not write.
#![allow(clippy::unwrap_used)]

use redis::AsyncCommands as _;
use spool_broker::{Priority, QueueName};
use spool_tests::{TestRedis, bins, redis_url};

/// Runs `spoolctl` with `args` under the test's prefix.
fn spoolctl(redis: &TestRedis, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A queue key of the wrong type spoils that queue's row only: the error
/// is in its row (text and JSON) and the other queues are listed.
#[tokio::test]
async fn one_bad_queue_key_does_not_hide_the_other_queues() {
    let redis = TestRedis::new().await;
    let gpu = QueueName::GPU;
    let _: () = redis
        .raw()
        .set(
            redis.stream_key(&gpu, Priority::Normal.as_str()),
            "not a stream",
        )
        .await
        .unwrap();
    spool_broker::Broker::enqueue(
        &redis.broker,
        &[spool_broker::Envelope::new("x", QueueName::DEFAULT, vec![])],
    )
    .await
    .unwrap();

    let (code, stdout, stderr) = spoolctl(&redis, &["queues", "--json", "--sample", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["queue"] == name).unwrap().clone();
    assert!(
        row("gpu")["error"].as_str().unwrap().contains("WRONGTYPE"),
        "{stdout}"
    );
    assert_eq!(row("default")["backlog"], 1, "{stdout}");
    assert!(row("default").get("error").is_none(), "{stdout}");

    let (code, stdout, stderr) = spoolctl(&redis, &["queues", "--sample", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("default ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("queue gpu: ") && stdout.contains("WRONGTYPE"),
        "{stdout}"
    );
    redis.cleanup().await;
}

/// `spoolctl call --args` takes arguments larger than the shell passes in
/// one word (a Linux argument is at most 128 KiB) from a file (`@FILE`)
/// or from standard input (`-`); a file that cannot be read is named.
#[tokio::test]
async fn call_reads_large_args_from_a_file_or_stdin() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let big = "x".repeat(300 * 1024);
    let json = format!("{{\"notes\": \"{big}\"}}");
    let path = std::env::temp_dir().join(format!("spool-args-{:08x}.json", fastrand::u32(..)));
    std::fs::write(&path, &json).unwrap();
    let at = format!("@{}", path.display());
    let (code, stdout, stderr) = spoolctl(&redis, &["call", "--force", "test.args", "--args", &at]);
    assert_eq!(code, Some(0), "{stderr}");
    let from_file: spool_broker::TaskId = stdout.trim().parse().unwrap();

    let mut child = std::process::Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["call", "--force", "test.args", "--args", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let json = json.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, json.as_bytes()))
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_stdin: spool_broker::TaskId =
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let queued = redis.stream_envelopes(&queue, Priority::Normal).await;
    let ids: Vec<_> = queued.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids, [from_file, from_stdin]);
    for (_, envelope) in &queued {
        let args: serde_json::Value = spool_broker::decode_payload(&envelope.payload).unwrap();
        assert_eq!(args["notes"].as_str().map(str::len), Some(big.len()));
    }

    std::fs::remove_file(&path).unwrap();
    let (code, _, stderr) = spoolctl(&redis, &["call", "--force", "test.args", "--args", &at]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("cannot read --args"),
        "{stderr}"
    );
    redis.cleanup().await;
}

/// `spoolctl revoke` of an id no task has says so and exits non-zero,
/// revoking nothing; `--force` revokes it ahead of time; a task that is
/// there (delayed here) is found and revoked, saying where it was.
#[tokio::test]
async fn revoke_of_an_unknown_id_fails_unless_forced() {
    let redis = TestRedis::new().await;
    let unknown = spool_broker::TaskId::new();
    let (code, stdout, stderr) = spoolctl(&redis, &["revoke", &unknown.to_string()]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "no task {unknown} in the queues default, analysis"
        )) && stderr.contains("nothing revoked")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        !spool_broker::Broker::revoked(&redis.broker)
            .await
            .unwrap()
            .contains(&unknown)
    );

    let (code, stdout, stderr) = spoolctl(&redis, &["revoke", &unknown.to_string(), "--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ahead of time"), "{stdout}");
    assert!(
        spool_broker::Broker::revoked(&redis.broker)
            .await
            .unwrap()
            .contains(&unknown)
    );

    let (code, stdout, stderr) = spoolctl(
        &redis,
        &["call", "--force", "test.later", "--countdown", "1h"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let delayed = stdout.trim().to_owned();
    let (code, stdout, stderr) = spoolctl(&redis, &["revoke", &delayed]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("revoked {delayed} (delayed in default)\n"));
    redis.cleanup().await;
}
