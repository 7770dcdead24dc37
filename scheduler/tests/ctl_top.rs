//! `spoolctl top` against the real Redis under a test prefix: frames in
//! text (not a terminal: one after another, as wide as --width) and in
//! JSON, one per line.

mod ctl_support;

use serde_json::{Value, json};

use self::ctl_support::{Ctl, queue};

#[test]
fn top_refreshes_in_text_and_json() {
    let ctl = Ctl::new();
    ctl.ok(&["call", "--force", "spool.ping", "--count", "2"]);
    let text = ctl.ok(&[
        "top",
        "--iterations",
        "2",
        "--interval",
        "100ms",
        "--width",
        "200",
    ]);
    // Not a terminal: frames follow each other instead of clearing it.
    assert!(!text.contains('\x1b'), "{text}");
    let headers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("spoolctl top  "))
        .collect();
    assert_eq!(headers.len(), 2, "{text}");
    assert!(headers[0].contains("every 100ms"), "{text}");
    assert_eq!(text.matches("\nQUEUE ").count(), 2, "{text}");
    assert_eq!(
        text.matches("no workers in the registry").count(),
        2,
        "{text}"
    );
    let default_rows: Vec<&str> = text.lines().filter(|l| l.starts_with("default ")).collect();
    assert_eq!(default_rows.len(), 2, "{text}");
    let first: Vec<&str> = default_rows[0].split_whitespace().collect();
    let second: Vec<&str> = default_rows[1].split_whitespace().collect();
    assert_eq!(first[1], "2", "{text}");
    // Rates in, out: none before a second frame, then with a sparkline
    // each between them.
    assert_eq!(
        first[7..9],
        ["-", "-"],
        "no rates before a second frame: {text}"
    );
    assert_eq!(second[7..10], ["0.0", "▁", "0.0"], "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 200), "{text}");

    let json = ctl.ok(&["top", "--iterations", "2", "--interval", "100ms", "--json"]);
    let frames: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(frames.len(), 2, "{json}");
    for frame in &frames {
        assert!(frame["at"].is_string(), "{frame}");
        assert_eq!(frame["interval_seconds"], 0.1, "{frame}");
        assert_eq!(queue(&frame["queues"], "default")["backlog"], 2, "{frame}");
        assert_eq!(frame["workers"], json!([]), "{frame}");
    }
    assert!(frames[0]["queues"][0]["rate_in"].is_null());
    assert_eq!(frames[1]["queues"][0]["rate_in"], 0.0);

    for (args, expected) in [
        (&["top", "--iterations", "0"][..], "--iterations"),
        (&["top", "--interval", "1ms"], "at least 10ms"),
        (&["top", "--interval", "often"], "--interval"),
        (&["top", "--width", "10"], "--width"),
        (&["top", "--once", "--iterations", "2"], "--iterations"),
    ] {
        let stderr = ctl.fails(args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
