//! The Kubernetes manifests: containers, pods, configs in the real binaries, autoscaler, beat.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use spool_broker::QueueName;
use spool_broker::store::{JobStatus, JobStore};
use spool_tests::{TestRedis, bins};

use crate::binaries::{binary, check_command_line, clean_command, has_env, help, workspace_bins};
use crate::dockerfile::{dockerfile_instructions, dockerfile_stages};
use crate::files::{
    Object, files_under, find, k8s_objects, read, relative, repo, seq, text, yaml_docs,
};

/// A container of a Deployment, resolved: its argv (entrypoint, command,
/// args), its environment, and where its volumes are mounted.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) deployment: String,
    file: String,
    pub(crate) argv: Vec<String>,
    /// Literal values; `None` for those from a Secret.
    env: BTreeMap<String, Option<String>>,
    /// Secret (name, key) per variable taken from one.
    secret_env: BTreeMap<String, (String, String)>,
    /// Mount path to (kind, name): `configMap` or `secret` and its name.
    mounts: Vec<(String, String, String)>,
    spec: Yaml,
    pub(crate) pod: Yaml,
}

/// The image's entrypoint, from the Dockerfile.
pub(crate) fn entrypoint() -> Vec<String> {
    let line = dockerfile_instructions()
        .into_iter()
        .rfind(|(op, _)| op == "ENTRYPOINT")
        .unwrap()
        .1;
    serde_json::from_str(&line).expect("ENTRYPOINT in exec form")
}

pub(crate) fn containers(objects: &[Object]) -> Vec<Container> {
    let image_entrypoint = entrypoint();
    let mut out = Vec::new();
    for object in objects.iter().filter(|o| o.kind() == "Deployment") {
        let pod = &object.doc["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, (String, String)> = seq(&pod["volumes"])
            .iter()
            .filter_map(|v| {
                let name = v["name"].as_str()?.to_owned();
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    Some((name, ("configMap".to_owned(), cm.to_owned())))
                } else {
                    v["secret"]["secretName"]
                        .as_str()
                        .map(|s| (name, ("secret".to_owned(), s.to_owned())))
                }
            })
            .collect();
        for spec in seq(&pod["containers"]) {
            let mut argv: Vec<String> = match spec["command"].as_sequence() {
                Some(command) => command.iter().map(text).collect(),
                None => image_entrypoint.clone(),
            };
            argv.extend(seq(&spec["args"]).iter().map(text));
            let mut env = BTreeMap::new();
            let mut secret_env = BTreeMap::new();
            for var in seq(&spec["env"]) {
                let name = var["name"].as_str().unwrap().to_owned();
                if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_mapping() {
                    let get = |k: &str| secret[k].as_str().unwrap().to_owned();
                    secret_env.insert(name.clone(), (get("name"), get("key")));
                    env.insert(name, None);
                } else {
                    env.insert(name, Some(text(&var["value"])));
                }
            }
            let mounts = seq(&spec["volumeMounts"])
                .iter()
                .filter_map(|m| {
                    let (kind, name) = volumes.get(m["name"].as_str()?)?;
                    Some((
                        m["mountPath"].as_str()?.to_owned(),
                        kind.clone(),
                        name.clone(),
                    ))
                })
                .collect();
            out.push(Container {
                deployment: object.name().to_owned(),
                file: object.file.clone(),
                argv,
                env,
                secret_env,
                mounts,
                spec: spec.clone(),
                pod: pod.clone(),
            });
        }
    }
    out
}

impl Container {
    fn bin(&self) -> &str {
        Path::new(&self.argv[0])
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    }

    pub(crate) fn env_value(&self, name: &str) -> Option<&str> {
        self.env.get(name).and_then(|v| v.as_deref())
    }

    /// Runs the container's command line with `extra` (`--print-config`,
    /// `--check`) against the real binary: ConfigMaps it mounts become
    /// files, a Secret's files a valid signing key, Secret variables
    /// placeholders. Returns stdout; fails the test if the binary refuses.
    pub(crate) fn run(&self, objects: &[Object], extra: &str) -> String {
        self.run_with(objects, extra, &[])
    }

    /// [`Container::run`] with some variables set to real values instead
    /// (a real Redis, say).
    pub(crate) fn run_with(
        &self,
        objects: &[Object],
        extra: &str,
        overrides: &[(&str, &str)],
    ) -> String {
        let dir = std::env::temp_dir().join(format!(
            "spool-ops-{}-{:016x}",
            self.deployment,
            fastrand::u64(..)
        ));
        // Longest mount paths first, so /etc/spool/beat wins over /etc/spool.
        let mut mounts = self.mounts.clone();
        mounts.sort_by_key(|(path, _, _)| std::cmp::Reverse(path.len()));
        let mut rewrites = Vec::new();
        for (i, (path, kind, name)) in mounts.iter().enumerate() {
            let local = dir.join(format!("mount{i}"));
            std::fs::create_dir_all(&local).unwrap();
            if kind == "configMap" {
                let cm = find(objects, "ConfigMap", name);
                for (key, value) in cm.doc["data"].as_mapping().unwrap() {
                    std::fs::write(local.join(text(key)), text(value)).unwrap();
                }
            }
            rewrites.push((path.clone(), local.display().to_string()));
        }
        let rewrite = |value: &str| -> String {
            for (path, local) in &rewrites {
                if let Some(rest) = value.strip_prefix(path.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{local}{rest}");
                }
                if let Some((flag, v)) = value.split_once('=')
                    && flag.starts_with("--")
                    && let Some(rest) = v.strip_prefix(path.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    return format!("{flag}={local}{rest}");
                }
            }
            value.to_owned()
        };
        let mut command = clean_command(&binary(self.bin()));
        command.args(self.argv[1..].iter().map(|a| rewrite(a)));
        command.arg(extra);
        for (name, value) in &self.env {
            let value = match value {
                Some(v) => rewrite(v),
                None if name.ends_with("_URL") && name.contains("REDIS") => {
                    "redis://spool-user:placeholder@127.0.0.1:6379/".to_owned()
                }
                None if name.ends_with("_URL") => {
                    "postgres://spool:placeholder@127.0.0.1/spool".to_owned()
                }
                None => "placeholder".to_owned(),
            };
            // A secret file a variable points to holds a valid key.
            let in_secret = mounts
                .iter()
                .zip(&rewrites)
                .any(|((_, kind, _), (_, local))| {
                    kind == "secret" && value.starts_with(local.as_str())
                });
            if in_secret {
                std::fs::write(&value, format!("{}\n", "ab".repeat(32))).unwrap();
            }
            command.env(name, value);
        }
        for (name, value) in overrides {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "{} ({}): `{} {extra}` refused its configuration:\n{}",
            self.deployment,
            self.file,
            self.argv.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

pub(crate) fn worker_containers(objects: &[Object]) -> Vec<Container> {
    containers(objects)
        .into_iter()
        .filter(|c| c.bin() == "spool-worker")
        .collect()
}

/// A humantime duration, or a Go-style one such as `90s` or `5m`.
pub(crate) fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn every_manifest_parses_as_a_named_kubernetes_object() {
    let objects = k8s_objects();
    let kinds: BTreeSet<&str> = objects.iter().map(Object::kind).collect();
    for kind in [
        "Deployment",
        "ConfigMap",
        "ScaledObject",
        "TriggerAuthentication",
        "Role",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    let mut seen = BTreeSet::new();
    for object in &objects {
        let what = format!("{} in {}", object.kind(), object.file);
        assert!(
            object.doc["apiVersion"].as_str().is_some(),
            "{what}: no apiVersion"
        );
        assert!(!object.name().is_empty(), "{what}: no metadata.name");
        assert_eq!(
            object.doc["metadata"]["namespace"].as_str(),
            Some("video"),
            "{what}"
        );
        assert!(
            seen.insert((object.kind().to_owned(), object.name().to_owned())),
            "{what}: {} defined twice",
            object.name()
        );
        // Secrets are created with kubectl, never shipped with values.
        assert_ne!(
            object.kind(),
            "Secret",
            "{what}: secrets do not belong in ops/"
        );
        if object.kind() == "Deployment" {
            let selector = object.doc["spec"]["selector"]["matchLabels"]
                .as_mapping()
                .unwrap();
            let labels = &object.doc["spec"]["template"]["metadata"]["labels"];
            for (key, value) in selector {
                assert_eq!(
                    &labels[key.as_str().unwrap()],
                    value,
                    "{what}: selector misses the pod"
                );
            }
        }
    }
    // The JSON and the other YAML under ops/ parse too.
    for path in files_under("ops") {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_str::<Json>(&std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
            }
            Some("yaml" | "yml") => {
                assert!(!yaml_docs(&path).is_empty(), "{} is empty", relative(&path));
            }
            _ => {}
        }
    }
}

#[test]
fn containers_use_real_flags_variables_and_images() {
    let objects = k8s_objects();
    let containers = containers(&objects);
    assert!(containers.len() >= 5, "{containers:#?}");
    let bins = workspace_bins();
    let mut problems = Vec::new();
    for c in &containers {
        let context = format!("{} ({})", c.deployment, c.file);
        assert!(
            bins.contains(c.bin()),
            "{context}: {} is no workspace binary",
            c.bin()
        );
        let words: Vec<&str> = c.argv.iter().map(String::as_str).collect();
        problems.extend(check_command_line(&words, &context));
        let top = help(c.bin(), &[]);
        for name in c.env.keys().filter(|n| n.starts_with("SPOOL_")) {
            if !has_env(&top, name) {
                problems.push(format!("{context}: {} reads no {name}", c.bin()));
            }
        }
        let image = c.spec["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{context}: image {image} is not pinned to a tag"
        );
        let security = &c.pod["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{context}");
        assert_eq!(
            c.spec["securityContext"]["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{context}"
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn secrets_come_from_secrets() {
    let objects = k8s_objects();
    for c in containers(&objects) {
        let context = format!("{} ({})", c.deployment, c.file);
        for (name, value) in &c.env {
            if name.contains("URL") || name.contains("PASSWORD") || name.contains("TOKEN") {
                assert!(
                    c.secret_env.contains_key(name),
                    "{context}: {name} must come from a Secret"
                );
            }
            if let Some(value) = value {
                assert!(
                    !(value.contains("://") && value.contains('@')),
                    "{context}: {name} carries credentials"
                );
            }
        }
        // The signing keys are a file from a Secret volume.
        if let Some(path) = c.env_value("SPOOL_SIGNING_KEY_FILE") {
            let mounted = c
                .mounts
                .iter()
                .any(|(mount, kind, _)| kind == "secret" && path.starts_with(&format!("{mount}/")));
            assert!(mounted, "{context}: {path} is not in a Secret volume");
        } else {
            assert_ne!(
                c.bin(),
                "spool-worker",
                "{context}: workers verify signatures: mount the keys"
            );
        }
    }
    // ConfigMaps hold no credentials and no Redis URL.
    for cm in objects.iter().filter(|o| o.kind() == "ConfigMap") {
        for (key, value) in cm.doc["data"].as_mapping().unwrap() {
            let value = text(value);
            assert!(
                !(value.contains("redis_url") || value.contains("://") && value.contains('@')),
                "ConfigMap {} ({}) key {}: no credentials or Redis URL here",
                cm.name(),
                cm.file,
                text(key)
            );
        }
    }
}

#[test]
fn every_container_configuration_loads_in_the_real_binary() {
    let objects = k8s_objects();
    let mut ran = BTreeSet::new();
    for c in containers(&objects) {
        match c.bin() {
            "spool-worker" => {
                let settings: Json =
                    serde_json::from_str(&c.run(&objects, "--print-config")).unwrap();
                let queues: Vec<&str> = c.env_value("SPOOL_QUEUES").unwrap().split(',').collect();
                assert_eq!(
                    settings["queues"],
                    serde_json::json!(queues),
                    "{}",
                    c.deployment
                );
                assert_eq!(
                    settings["name"],
                    c.env_value("SPOOL_NAME").unwrap(),
                    "{}",
                    c.deployment
                );
                // Long tasks: hold no more than can run (docs/operations.md).
                assert!(
                    settings["prefetch"].as_u64() <= settings["concurrency"].as_u64(),
                    "{}: prefetch above concurrency: {settings}",
                    c.deployment
                );
                assert_ne!(
                    settings["metrics_addr"], "127.0.0.1:9464",
                    "{}: unscrapable",
                    c.deployment
                );
                assert!(
                    !settings.to_string().contains("placeholder"),
                    "{}: a password shows",
                    c.deployment
                );
            }
            "spool-autoscaler" => {
                let config: Json =
                    serde_json::from_str(&c.run(&objects, "--print-config")).unwrap();
                assert!(
                    !config["pools"].as_array().unwrap().is_empty(),
                    "{}",
                    c.deployment
                );
            }
            "spool-beat" => {
                let out = c.run(&objects, "--check");
                assert!(out.contains("canary-default"), "{out}");
            }
            other => panic!("{}: unexpected binary {other}", c.deployment),
        }
        ran.insert(c.bin().to_owned());
    }
    assert_eq!(ran.len(), 3, "{ran:?}");
}

#[test]
fn workers_shut_down_warmly_within_their_grace_period() {
    let objects = k8s_objects();
    let workers = worker_containers(&objects);
    assert!(workers.len() >= 2, "{workers:#?}");
    let runtime = dockerfile_stages().pop().unwrap();
    for c in &workers {
        let context = format!("{} ({})", c.deployment, c.file);
        // The worker is PID 1: the image's entrypoint, not a shell.
        assert!(
            c.spec["command"].is_null(),
            "{context}: keep the image's entrypoint"
        );
        let grace = c.pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let hook: Vec<String> = seq(&c.spec["lifecycle"]["preStop"]["exec"]["command"])
            .iter()
            .map(text)
            .collect();
        assert_eq!(hook[..2], ["/bin/sh", "-c"], "{context}: {hook:?}");
        assert!(
            runtime.base.starts_with("debian:"),
            "the preStop hook needs the runtime image's /bin/sh"
        );
        let script = &hook[2];
        assert!(script.starts_with("kill -TERM 1;"), "{context}: {script}");
        assert!(
            script.contains("kill -0 1"),
            "{context}: the hook must wait: {script}"
        );
        let bound: u64 = script
            .split("-lt ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{context}: the wait is unbounded: {script}"));
        let settings: Json = serde_json::from_str(&c.run(&objects, "--print-config")).unwrap();
        let limit = duration(settings["time_limit"].as_str().expect("a time limit"));
        assert!(
            limit.as_secs() < bound && bound < grace,
            "{context}: need time limit ({limit:?}) < preStop wait ({bound}s) < grace ({grace}s)"
        );
        // The hook's script is valid shell.
        let status = Command::new("sh")
            .args(["-n", "-c", script])
            .status()
            .unwrap();
        assert!(status.success(), "{context}: {script}");
        // Rolling updates add a pod before one drains.
        let strategy = &objects
            .iter()
            .find(|o| o.kind() == "Deployment" && o.name() == c.deployment)
            .unwrap()
            .doc["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(text(&strategy["maxUnavailable"]), "0", "{context}");
    }
}

/// The preStop script itself, against a real `spool-worker` running a task
/// (the script's PID 1 replaced by the worker's pid): the worker finishes
/// the task and exits 0, a warm shutdown, and the hook returns only once
/// it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prestop_hook_stops_a_real_worker_warmly_and_waits() {
    let objects = k8s_objects();
    let c = &worker_containers(&objects)[0];
    let script = text(&seq(&c.spec["lifecycle"]["preStop"]["exec"]["command"])[2]);
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    // The worker's job store tells when the task has started: a task only
    // fetched (pending) goes back unstarted in a warm shutdown instead.
    let store_dir = std::env::temp_dir().join(format!("spool-prestop-{}", redis.prefix));
    std::fs::create_dir_all(&store_dir).unwrap();
    let store_url = format!("sqlite://{}", store_dir.join("jobs.db").display());
    let store = JobStore::create(&store_url).await.unwrap();
    let id = redis
        .client()
        .enqueue(spool_worker::builtin::Sleep { ms: 1500 })
        .queue(queue.clone())
        .await
        .unwrap();
    let mut worker = clean_command(&bins::spool_worker())
        .args([
            "--processes=1",
            "--no-probe",
            "--no-video",
            "--metrics-addr=none",
        ])
        .args(["--store-url", &store_url])
        .args(["--poll-interval=100ms", "--queues", queue.as_str()])
        .args([
            "--key-prefix",
            &redis.prefix,
            "--redis-url",
            &spool_tests::redis_url(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = worker.id().to_string();
    let store_ref = &store;
    spool_tests::wait_until(
        "the worker to start the task",
        Duration::from_secs(20),
        || async move { store_ref.status(id).await.unwrap() == Some(JobStatus::Running) },
    )
    .await;
    let script = script
        .replace("kill -TERM 1;", &format!("kill -TERM {pid};"))
        .replace("kill -0 1 ", &format!("kill -0 {pid} "));
    assert!(script.contains(&format!("kill -TERM {pid};")), "{script}");
    // Reap the worker as soon as it exits: a zombie still answers kill -0.
    let reaper = std::thread::spawn(move || {
        let status = worker.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut log).unwrap();
        (status, std::time::Instant::now(), log)
    });
    let started = std::time::Instant::now();
    let mut hook = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let deadline = started + Duration::from_secs(30);
    let hook_status = loop {
        if let Some(status) = hook.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = hook.kill();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let reaped = reaper.is_finished();
            let log = if reaped {
                reaper.join().unwrap().2
            } else {
                String::new()
            };
            panic!(
                "the hook did not return within 30 s (worker reaped: {reaped})\n{script}\n{log}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let hook_done = std::time::Instant::now();
    let (status, exited, log) = reaper.join().unwrap();
    assert!(hook_status.success());
    assert!(status.success(), "not a warm shutdown: {status}\n{log}");
    assert!(log.contains("warm shutdown"), "{log}");
    assert!(
        exited <= hook_done,
        "the hook returned before the worker exited"
    );
    // The task ran to its end and was acknowledged, nothing requeued.
    let stats = redis.stats(&queue).await;
    assert!(stats.is_drained() && stats.dead == 0, "{stats:?}");
    assert_eq!(store.status(id).await.unwrap(), Some(JobStatus::Succeeded));
    assert!(
        hook_done - started >= Duration::from_millis(500),
        "the worker cannot have finished a 1.5 s task already"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&store_dir);
    redis.cleanup().await;
}

#[test]
fn gpu_pools_ask_for_gpus_and_video_capabilities() {
    let objects = k8s_objects();
    let mut gpu_pools = 0;
    for c in worker_containers(&objects) {
        let context = format!("{} ({})", c.deployment, c.file);
        let serves_gpu = c
            .env_value("SPOOL_QUEUES")
            .unwrap()
            .split(',')
            .any(|q| q == "gpu");
        let gpus = &c.spec["resources"]["limits"]["nvidia.com/gpu"];
        if serves_gpu {
            gpu_pools += 1;
            assert!(
                gpus.as_u64().unwrap_or(0) >= 1,
                "{context}: no nvidia.com/gpu limit"
            );
            let caps: BTreeSet<&str> = c
                .env_value("NVIDIA_DRIVER_CAPABILITIES")
                .unwrap_or_else(|| panic!("{context}: no NVIDIA_DRIVER_CAPABILITIES"))
                .split(',')
                .collect();
            // compute: CUDA; video: NVENC/NVDEC; utility: NVML (probe, metrics).
            for cap in ["compute", "video", "utility"] {
                assert!(caps.contains(cap), "{context}: {cap} missing from {caps:?}");
            }
        } else {
            assert!(gpus.is_null(), "{context}: a CPU pool holds a GPU");
        }
    }
    assert_eq!(gpu_pools, 1);
}

#[test]
fn the_autoscaler_drives_the_worker_deployments() {
    let objects = k8s_objects();
    let autoscaler = containers(&objects)
        .into_iter()
        .find(|c| c.deployment == "spool-autoscaler")
        .unwrap();
    let config: Json = serde_json::from_str(&autoscaler.run(&objects, "--print-config")).unwrap();
    assert_eq!(config["actuator"], "kubernetes");
    assert_eq!(
        find(&objects, "Deployment", "spool-autoscaler").doc["spec"]["replicas"].as_u64(),
        Some(1)
    );
    let workers = worker_containers(&objects);
    for pool in config["pools"].as_array().unwrap() {
        let deployment = pool["deployment"].as_str().unwrap();
        let worker_name = pool["worker_name"]
            .as_str()
            .or(pool["name"].as_str())
            .unwrap();
        let worker = workers
            .iter()
            .find(|c| c.deployment == deployment)
            .unwrap_or_else(|| panic!("pool {pool}: no Deployment {deployment} in ops/k8s"));
        assert_eq!(
            worker.env_value("SPOOL_NAME"),
            Some(worker_name),
            "{deployment}"
        );
        let queues: BTreeSet<&str> = worker
            .env_value("SPOOL_QUEUES")
            .unwrap()
            .split(',')
            .collect();
        let wanted: BTreeSet<&str> = pool["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        assert_eq!(queues, wanted, "{deployment}");
    }
    // And it may scale them: get and patch on deployments/scale.
    let role = find(&objects, "Role", "spool-autoscaler");
    let rule = &seq(&role.doc["rules"])[0];
    assert_eq!(text(&seq(&rule["resources"])[0]), "deployments/scale");
    let verbs: BTreeSet<String> = seq(&rule["verbs"]).iter().map(text).collect();
    assert_eq!(
        verbs,
        BTreeSet::from(["get".to_owned(), "patch".to_owned()])
    );
    assert_eq!(
        find(&objects, "RoleBinding", "spool-autoscaler").doc["subjects"][0]["name"].as_str(),
        autoscaler.pod["serviceAccountName"].as_str()
    );
}

#[test]
fn the_beat_entries_agree_between_kubernetes_and_systemd() {
    let objects = k8s_objects();
    let configmap = text(&find(&objects, "ConfigMap", "spool-beat").doc["data"]["beat.toml"]);
    let file = read("ops/beat/beat.toml");
    let parse = |t: &str| toml::from_str::<toml::Value>(t).unwrap();
    assert_eq!(parse(&configmap), parse(&file));
    let output = clean_command(&binary("spool-beat"))
        .args([
            "--config",
            &repo().join("ops/beat/beat.toml").display().to_string(),
            "--check",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every daemon that serves metrics is probed on the same port: liveness
/// on `/healthz`, readiness on `/readyz` (the endpoints
/// `spool_cli_common::serve_with_readiness` answers).
#[test]
fn daemons_are_probed_for_health_and_readiness_on_their_metrics_port() {
    let objects = k8s_objects();
    let mut probed = 0;
    for container in containers(&objects) {
        let what = format!("{} in {}", container.deployment, container.file);
        let serves_metrics = seq(&container.spec["ports"])
            .iter()
            .any(|port| port["name"].as_str() == Some("metrics"));
        if !serves_metrics {
            continue;
        }
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container.spec[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
            assert_eq!(get["port"].as_str(), Some("metrics"), "{what}: {probe}");
        }
        probed += 1;
    }
    // Two worker pools, the beat, the autoscaler and the KEDA exporter.
    assert!(probed >= 5, "only {probed} daemons probed");
}
