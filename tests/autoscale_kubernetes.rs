//! The autoscaler's Kubernetes actuator against a small fake API server
//! (a raw HTTP/1.1 listener written here) that keeps Deployments' replicas
//! and records every request; the daemon test reads a real backlog from
//! Redis.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use spool_autoscaler::{
    ActuatorKind, Autoscaler, AutoscalerConfig, Direction, GpuCount, KubernetesActuator,
    KubernetesConfig, Policy, PoolConfig, SignalReader,
};
use spool_broker::{Broker, QueueName};
use spool_sdk::Client;
use spool_tests::{TestRedis, redis_url};
use spool_worker::builtin::Sleep;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "secret-token";
const NAMESPACE: &str = "video";

/// One request as the fake API server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

#[derive(Debug, Default)]
struct State {
    replicas: BTreeMap<String, u32>,
    seen: Vec<Seen>,
}

/// A fake Kubernetes API: the scale subresource of the Deployments it
/// knows, bearer-token authentication, `forbidden` refused with 403.
struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    async fn start(deployments: &[(&str, u32)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            replicas: deployments
                .iter()
                .map(|(name, n)| ((*name).to_owned(), *n))
                .collect(),
            seen: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move { serve(stream, &state).await });
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn patches(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "PATCH")
            .collect()
    }

    fn replicas(&self, deployment: &str) -> Option<u32> {
        self.state.lock().unwrap().replicas.get(deployment).copied()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn scale_object(name: &str, replicas: u32) -> Value {
    // Like the API, leave zero replicas out.
    let spec = if replicas == 0 {
        json!({})
    } else {
        json!({ "replicas": replicas })
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": spec,
        "status": { "replicas": replicas, "selector": "app=spool-worker" },
    })
}

fn status_object(code: u16, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code })
}

/// Answers one request and closes the connection.
async fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        content_type: headers.get("content-type").cloned(),
        authorization: headers.get("authorization").cloned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (code, answer) = respond(state, &seen);
    state.lock().unwrap().seen.push(seen);
    let text = answer.to_string();
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        415 => "Unsupported Media Type",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn respond(state: &Mutex<State>, seen: &Seen) -> (u16, Value) {
    if seen.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return (401, status_object(401, "Unauthorized"));
    }
    let prefix = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/");
    let Some(name) = seen
        .path
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("/scale"))
    else {
        return (
            404,
            status_object(404, "the server could not find the requested resource"),
        );
    };
    if name == "forbidden" {
        return (
            403,
            status_object(
                403,
                "deployments.apps \"forbidden\" is forbidden: User \"system:serviceaccount:video:spool-autoscaler\" cannot patch resource \"deployments/scale\"",
            ),
        );
    }
    let mut state = state.lock().unwrap();
    let Some(current) = state.replicas.get(name).copied() else {
        return (
            404,
            status_object(404, &format!("deployments.apps \"{name}\" not found")),
        );
    };
    match seen.method.as_str() {
        "GET" => (200, scale_object(name, current)),
        "PATCH" => {
            if seen.content_type.as_deref() != Some("application/merge-patch+json") {
                return (415, status_object(415, "unsupported patch type"));
            }
            let Some(replicas) = serde_json::from_str::<Value>(&seen.body)
                .ok()
                .and_then(|v| v["spec"]["replicas"].as_u64())
                .and_then(|n| u32::try_from(n).ok())
            else {
                return (400, status_object(400, "bad patch"));
            };
            state.replicas.insert(name.to_owned(), replicas);
            (200, scale_object(name, replicas))
        }
        _ => (400, status_object(400, "method not allowed")),
    }
}

fn kubernetes_config(api: &FakeApi) -> KubernetesConfig {
    KubernetesConfig {
        api_url: Some(api.url()),
        namespace: Some(NAMESPACE.to_owned()),
        token: Some(TOKEN.to_owned()),
        ..KubernetesConfig::default()
    }
}

#[tokio::test]
async fn the_actuator_reads_and_patches_the_scale_subresource() {
    let api = FakeApi::start(&[("spool-cpu", 2)]).await;
    let k8s = KubernetesActuator::new(&kubernetes_config(&api)).unwrap();
    assert_eq!(k8s.replicas("spool-cpu").await.unwrap(), 2);
    assert_eq!(k8s.set_replicas("spool-cpu", 5).await.unwrap(), 5);
    assert_eq!(api.replicas("spool-cpu"), Some(5));
    // Zero replicas: the API leaves the field out.
    assert_eq!(k8s.set_replicas("spool-cpu", 0).await.unwrap(), 0);
    assert_eq!(k8s.replicas("spool-cpu").await.unwrap(), 0);

    let seen = api.seen();
    let path = "/apis/apps/v1/namespaces/video/deployments/spool-cpu/scale";
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.path == path), "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer secret-token"))
    );
    let patches = api.patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let bodies: Vec<Value> = patches
        .iter()
        .map(|p| serde_json::from_str(&p.body).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({ "spec": { "replicas": 5 } }),
            json!({ "spec": { "replicas": 0 } })
        ]
    );
}

#[tokio::test]
async fn refusals_come_back_as_clear_errors() {
    let api = FakeApi::start(&[("spool-cpu", 1)]).await;
    let k8s = KubernetesActuator::new(&kubernetes_config(&api)).unwrap();
    let e = k8s
        .set_replicas("forbidden", 3)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("403") && e.contains("get and patch on deployments/scale"),
        "{e}"
    );
    let e = k8s.replicas("missing").await.unwrap_err().to_string();
    assert!(
        e.contains("404") && e.contains("\"missing\" not found"),
        "{e}"
    );
    let e = k8s.replicas("Not_A_Name").await.unwrap_err().to_string();
    assert!(e.contains("not a valid Kubernetes name"), "{e}");

    let wrong_token = KubernetesConfig {
        token: Some("stale".into()),
        ..kubernetes_config(&api)
    };
    let e = KubernetesActuator::new(&wrong_token)
        .unwrap()
        .replicas("spool-cpu")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("token was refused"), "{e}");

    // Nothing listens there.
    let closed_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed = KubernetesConfig {
        api_url: Some(format!("http://{closed_addr}")),
        namespace: Some(NAMESPACE.into()),
        ..KubernetesConfig::default()
    };
    let e = KubernetesActuator::new(&closed)
        .unwrap()
        .replicas("spool-cpu")
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("Kubernetes API: GET"), "{e}");
}

#[tokio::test]
async fn the_daemon_sets_replicas_from_a_real_backlog() {
    let test = TestRedis::new().await;
    let queue = QueueName::new("encode").unwrap();
    let api = FakeApi::start(&[("spool-encode", 1)]).await;
    let token_file =
        std::env::temp_dir().join(format!("spool-k8s-token-{:016x}", fastrand::u64(..)));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let mut pool = PoolConfig::new("encode", vec![queue.clone()]);
    pool.deployment = Some("spool-encode".into());
    pool.policy = Policy {
        min_workers: 1,
        max_workers: 8,
        target_backlog_per_worker: 10,
        scale_down_cooldown: Duration::from_secs(3600),
        ..Policy::default()
    };
    let config = AutoscalerConfig {
        redis_url: redis_url(),
        key_prefix: test.prefix.clone(),
        metrics_addr: None,
        actuator: ActuatorKind::Kubernetes,
        kubernetes: KubernetesConfig {
            token: None,
            token_file: Some(token_file.clone()),
            ..kubernetes_config(&api)
        },
        pools: vec![pool],
        ..AutoscalerConfig::default()
    }
    .validated()
    .unwrap();
    let k8s = KubernetesActuator::new(&config.kubernetes).unwrap();
    let reader = SignalReader::new(test.broker.clone());

    // No worker runs: 45 ready tasks want 5 workers.
    Client::new(test.broker.clone())
        .enqueue_many((0..45).map(|_| Sleep { ms: 1 }))
        .queue(queue.clone())
        .await
        .unwrap();

    // A dry run reads the Deployment but patches nothing.
    let mut dry = Autoscaler::new(
        config.clone(),
        reader.clone(),
        k8s.clone(),
        GpuCount::configured(0),
    )
    .unwrap()
    .dry_run(true);
    let report = dry.tick().await.unwrap();
    assert_eq!(report.pools[0].decision.desired, 5);
    assert!(api.patches().is_empty());
    assert_eq!(api.seen().len(), 1);

    let mut autoscaler = Autoscaler::new(config, reader, k8s, GpuCount::configured(0)).unwrap();
    let report = autoscaler.tick().await.unwrap();
    let pool = &report.pools[0];
    assert_eq!((pool.backlog, pool.decision.current), (45, 1));
    assert_eq!(
        (pool.decision.direction, pool.decision.desired, pool.workers),
        (Direction::Up, 5, 5)
    );
    assert_eq!(api.replicas("spool-encode"), Some(5));
    let patches = api.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&patches[0].body).unwrap(),
        json!({ "spec": { "replicas": 5 } })
    );
    let metrics = autoscaler.metrics().render();
    assert!(
        metrics.contains("spool_autoscaler_desired_workers{pool=\"encode\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("spool_autoscaler_queue_backlog{queue=\"encode\"} 45"));

    // The backlog is gone, but the cooldown holds the replicas: no patch.
    test.broker.purge(&queue).await.unwrap();
    let report = autoscaler.tick().await.unwrap();
    assert_eq!(report.pools[0].decision.direction, Direction::Hold);
    assert_eq!(api.patches().len(), 1);
    // An operator scaled the Deployment by hand: the autoscaler reads it.
    api.state
        .lock()
        .unwrap()
        .replicas
        .insert("spool-encode".into(), 7);
    let report = autoscaler.tick().await.unwrap();
    assert_eq!(report.pools[0].decision.current, 7);

    let _ = std::fs::remove_file(&token_file);
    test.cleanup().await;
}
