//! Unit tests of the configuration.

use super::*;

fn parse(text: &str) -> Result<AutoscalerConfig> {
    AutoscalerConfig::from_toml(text)?.validated()
}

#[test]
fn a_full_file_parses() {
    let config = parse(
        r#"
        redis_url = "redis://redis:6379/"
        key_prefix = "prod"
        interval = "2s"
        metrics_addr = "0.0.0.0:9466"
        actuator = "kubernetes"
        gpus = 2
        [local]
        worker_bin = "/usr/bin/spool-worker"
        [kubernetes]
        namespace = "video"
        [[pools]]
        name = "cpu"
        queues = ["default", "analysis"]
        concurrency = 8
        [pools.policy]
        min_workers = 1
        max_workers = 20
        target_backlog_per_worker = 40
        scale_down_cooldown = "5m"
        max_wait = "30s"
        [[pools]]
        name = "gpu"
        queues = ["gpu"]
        deployment = "spool-gpu"
        worker_name = "gpu-workers"
        "#,
    )
    .unwrap();
    assert_eq!(config.interval, Duration::from_secs(2));
    assert_eq!(config.actuator, ActuatorKind::Kubernetes);
    assert_eq!(config.metrics_addr, Some("0.0.0.0:9466".parse().unwrap()));
    let cpu = config.pool("cpu").unwrap();
    assert_eq!(cpu.policy.scale_down_cooldown, Duration::from_secs(300));
    assert_eq!(cpu.policy.max_wait, Some(Duration::from_secs(30)));
    assert_eq!(cpu.policy.gpus_per_worker, Some(0));
    let gpu = config.pool("gpu").unwrap();
    assert_eq!(gpu.policy.gpus_per_worker, Some(1));
    assert_eq!(
        (gpu.deployment(), gpu.worker_name()),
        ("spool-gpu", "gpu-workers")
    );
    assert_eq!(cpu.deployment(), "cpu");
    assert!(config.needs_gpus());
    let e = config.pool("nope").unwrap_err().to_string();
    assert!(e.contains("pools: cpu, gpu"), "{e}");
}

#[test]
fn metrics_can_be_turned_off() {
    let config =
        parse("metrics_addr = \"none\"\n[[pools]]\nname = \"a\"\nqueues = [\"q\"]").unwrap();
    assert_eq!(config.metrics_addr, None);
}

#[test]
fn bad_files_get_clear_errors() {
    let cases = [
        ("", "no pool configured"),
        ("intervl = \"1s\"", "unknown field `intervl`"),
        ("[[pools]]\nname = \"a\"\nqueues = []", "at least one queue"),
        (
            "[[pools]]\nname = \"a b\"\nqueues = [\"q\"]",
            "pool name \"a b\"",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\", \"q\"]",
            "listed twice",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\n[[pools]]\nname = \"a\"\nqueues = [\"r\"]",
            "two pools are named",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\n[[pools]]\nname = \"b\"\nqueues = [\"q\"]",
            "in two pools",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\n[pools.policy]\nmin_workers = 3\nmax_workers = 2",
            "min_workers (3) is above max_workers (2)",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\nworker_args = [\"--queues=x\"]",
            "may not set --queues=x",
        ),
        (
            "interval = \"soon\"\n[[pools]]\nname = \"a\"\nqueues = [\"q\"]",
            "soon",
        ),
        (
            "interval = \"0s\"\n[[pools]]\nname = \"a\"\nqueues = [\"q\"]",
            "interval must be positive",
        ),
        (
            "metrics_addr = \"localhost\"\n[[pools]]\nname = \"a\"\nqueues = [\"q\"]",
            "not an address",
        ),
        (
            "actuator = \"docker\"\n[[pools]]\nname = \"a\"\nqueues = [\"q\"]",
            "unknown variant",
        ),
        ("[[pools]]\nname = \"a\"\nqueues = [\"no spaces\"]", "queue"),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\nconcurrency = 0",
            "concurrency must be at least 1",
        ),
        (
            "[[pools]]\nname = \"a\"\nqueues = [\"q\"]\n[pools.policy]\ncooldown = \"1s\"",
            "unknown field `cooldown`",
        ),
    ];
    for (text, expected) in cases {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn actuator_kinds_parse_from_flags() {
    assert_eq!(
        "Local".parse::<ActuatorKind>().unwrap(),
        ActuatorKind::Local
    );
    assert_eq!(
        "k8s".parse::<ActuatorKind>().unwrap(),
        ActuatorKind::Kubernetes
    );
    assert!("ssh".parse::<ActuatorKind>().is_err());
}

#[test]
fn the_example_is_valid_and_round_trips() {
    let config = AutoscalerConfig::example().validated().unwrap();
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<AutoscalerConfig>(&text).unwrap(),
        config
    );
}
