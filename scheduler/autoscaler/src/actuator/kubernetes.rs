//! The Kubernetes actuator: each pool is a Deployment, whose replicas are
//! read and set through the API's scale subresource:
//!
//! ```text
//! GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale
//! PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale
//!       Content-Type: application/merge-patch+json   {"spec":{"replicas":N}}
//! ```
//!
//! The service account needs `get` and `patch` on `deployments/scale`, no
//! more (see `ops/autoscaler.md`). Kubernetes chooses which pods to remove
//! on a scale-down; each gets SIGTERM, the worker's warm shutdown, so give
//! the pods a `terminationGracePeriodSeconds` longer than the longest task.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use spool_broker::WorkerRecord;
use tracing::{info, warn};

use super::Actuator;
use crate::config::{KubernetesConfig, PoolConfig};
use crate::error::{Error, Result};

/// Where a pod's service account credentials are mounted.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the requests authenticate.
#[derive(Clone)]
enum Auth {
    /// No header (`kubectl proxy`, say).
    None,
    /// A fixed bearer token.
    Token(String),
    /// A bearer token read from a file at each request (projected service
    /// account tokens are rotated by the kubelet).
    TokenFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(path) => write!(f, "TokenFile({})", path.display()),
        }
    }
}

/// The part of a `Scale` object the actuator reads.
#[derive(Debug, Default, Deserialize)]
struct Scale {
    #[serde(default)]
    spec: ScaleSpec,
}

#[derive(Debug, Default, Deserialize)]
struct ScaleSpec {
    /// Absent when zero: the API omits empty fields.
    #[serde(default)]
    replicas: u32,
}

/// A `Status` object, which the API returns with its errors.
#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
}

/// Sets the replicas of one Deployment per pool.
///
/// # Examples
///
/// ```no_run
/// use spool_autoscaler::{KubernetesActuator, KubernetesConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_autoscaler::Result<()> {
/// // In a pod: the service account's token, CA and namespace.
/// let k8s = KubernetesActuator::new(&KubernetesConfig::default())?;
/// let before = k8s.replicas("spool-worker-cpu").await?;
/// k8s.set_replicas("spool-worker-cpu", before + 1).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KubernetesActuator {
    http: reqwest::Client,
    api_url: String,
    namespace: String,
    auth: Auth,
    /// Each Deployment's replicas as last read or set.
    known: BTreeMap<String, u32>,
}

impl KubernetesActuator {
    /// An actuator configured by `config`, with the in-cluster defaults
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's token, CA
    /// and namespace) for what it leaves out.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is no API URL (not in a pod
    /// and none configured), an `https` URL without a CA, or an invalid
    /// namespace; [`Error::Io`] when a configured file cannot be
    /// read.
    pub fn new(config: &KubernetesConfig) -> Result<Self> {
        Self::with_service_account(config, Path::new(SERVICE_ACCOUNT_DIR), |name| {
            std::env::var(name).ok()
        })
    }

    /// As [`new`](Self::new), with the service account mounted at `dir`
    /// and the environment read through `env`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_service_account(
        config: &KubernetesConfig,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let api_url = match &config.api_url {
            Some(url) => url.trim().trim_end_matches('/').to_owned(),
            None => in_cluster_url(&env)?,
        };
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(Error::Config(format!(
                "kubernetes.api_url {api_url:?} must start with https:// or http://"
            )));
        }
        let namespace = match &config.namespace {
            Some(ns) => ns.trim().to_owned(),
            None => std::fs::read_to_string(dir.join("namespace"))
                .map(|ns| ns.trim().to_owned())
                .unwrap_or_else(|_| "default".to_owned()),
        };
        check_dns_name("namespace", &namespace, 63, false)?;
        let auth = if let Some(token) = &config.token {
            Auth::Token(token.trim().to_owned())
        } else if let Some(file) = &config.token_file {
            read_token(file)?;
            Auth::TokenFile(file.clone())
        } else if dir.join("token").is_file() {
            Auth::TokenFile(dir.join("token"))
        } else {
            Auth::None
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("spool-autoscaler/", env!("CARGO_PKG_VERSION")));
        if api_url.starts_with("https://") {
            if config.insecure_skip_tls_verify {
                warn!(
                    "kubernetes.insecure_skip_tls_verify is set: the API server's certificate is \
                     not checked, so anyone on the path can impersonate it and read the token"
                );
                builder = builder.danger_accept_invalid_certs(true);
            } else {
                let ca_file = config.ca_file.clone().unwrap_or_else(|| dir.join("ca.crt"));
                let pem = std::fs::read(&ca_file).map_err(|source| Error::Io {
                    context: format!(
                        "cannot read the API server's CA {} (set kubernetes.ca_file)",
                        ca_file.display()
                    ),
                    source,
                })?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    Error::Config(format!(
                        "{} is not a PEM certificate bundle: {e}",
                        ca_file.display()
                    ))
                })? {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Kubernetes(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            api_url,
            namespace,
            auth,
            known: BTreeMap::new(),
        })
    }

    /// The API server's URL in use.
    #[must_use]
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The namespace of the Deployments.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn scale_url(&self, deployment: &str) -> String {
        format!(
            "{}/apis/apps/v1/namespaces/{}/deployments/{deployment}/scale",
            self.api_url, self.namespace
        )
    }

    /// The replicas `deployment` asks for (`spec.replicas` of its scale).
    ///
    /// # Errors
    ///
    /// [`Error::Kubernetes`] when the API cannot be reached or refuses
    /// (with a hint for 401, 403 and 404).
    pub async fn replicas(&self, deployment: &str) -> Result<u32> {
        self.request(Method::GET, deployment, None).await
    }

    /// Sets `deployment`'s replicas; returns them as the API stored them.
    ///
    /// # Errors
    ///
    /// As [`replicas`](Self::replicas).
    pub async fn set_replicas(&self, deployment: &str, replicas: u32) -> Result<u32> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.request(Method::PATCH, deployment, Some(patch.to_string()))
            .await
    }

    async fn request(&self, method: Method, deployment: &str, body: Option<String>) -> Result<u32> {
        check_dns_name("deployment", deployment, 253, true)?;
        let url = self.scale_url(deployment);
        let what = format!("{method} {url}");
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(ACCEPT, "application/json");
        match &self.auth {
            Auth::None => {}
            Auth::Token(token) => {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"))
            }
            Auth::TokenFile(file) => {
                request = request.header(AUTHORIZATION, format!("Bearer {}", read_token(file)?));
            }
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Kubernetes(format!("{what}: {}", error_chain(&e))))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Kubernetes(format!("{what}: reading the answer: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Status>(&bytes)
                .map(|s| s.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            let hint = match status {
                StatusCode::UNAUTHORIZED => "; the token was refused",
                StatusCode::FORBIDDEN => {
                    "; the service account needs get and patch on deployments/scale (see ops/autoscaler.md)"
                }
                StatusCode::NOT_FOUND => "; is the Deployment's name and namespace right?",
                _ => "",
            };
            return Err(Error::Kubernetes(format!(
                "{what}: {status}: {message}{hint}"
            )));
        }
        let scale: Scale = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Kubernetes(format!("{what}: the answer is not a Scale: {e}")))?;
        Ok(scale.spec.replicas)
    }
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
fn in_cluster_url(env: &impl Fn(&str) -> Option<String>) -> Result<String> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
    let Some(host) = host else {
        return Err(Error::Config(
            "no Kubernetes API: KUBERNETES_SERVICE_HOST is not set (not in a pod); set \
             kubernetes.api_url"
                .to_owned(),
        ));
    };
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".to_owned());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

fn read_token(file: &Path) -> Result<String> {
    std::fs::read_to_string(file)
        .map(|t| t.trim().to_owned())
        .map_err(|source| Error::Io {
            context: format!("cannot read the Kubernetes token {}", file.display()),
            source,
        })
}

/// Checks a name Kubernetes would accept (and that is safe in a URL path):
/// lowercase letters, digits and `-` (and `.` where `dots`), at most `max`
/// characters, starting and ending with a letter or digit.
fn check_dns_name(what: &str, name: &str, max: usize, dots: bool) -> Result<()> {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = !name.is_empty()
        && name.len() <= max
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {name:?} is not a valid Kubernetes name (lowercase letters, digits, '-'{}; at \
             most {max} characters)",
            if dots { ", '.'" } else { "" }
        )))
    }
}

/// An error with its causes, which reqwest keeps apart.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Actuator for KubernetesActuator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn current(&mut self, pool: &PoolConfig) -> Result<u32> {
        let replicas = self.replicas(pool.deployment()).await?;
        self.known.insert(pool.deployment().to_owned(), replicas);
        Ok(replicas)
    }

    async fn scale(
        &mut self,
        pool: &PoolConfig,
        desired: u32,
        _workers: &[WorkerRecord],
    ) -> Result<u32> {
        let deployment = pool.deployment();
        if self.known.get(deployment) == Some(&desired) {
            return Ok(desired);
        }
        let stored = self.set_replicas(deployment, desired).await?;
        info!(pool = %pool.name, deployment, replicas = stored, "Deployment scaled");
        self.known.insert(deployment.to_owned(), stored);
        Ok(stored)
    }

    async fn shutdown(&mut self, _hurry: impl Future<Output = ()> + Send) -> Result<()> {
        // The Deployments keep their replicas: the fleet outlives the
        // autoscaler, which picks it up again when it restarts.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> KubernetesConfig {
        KubernetesConfig {
            api_url: Some(url.to_owned()),
            namespace: Some("video".to_owned()),
            token: Some("t0ken".to_owned()),
            ..KubernetesConfig::default()
        }
    }

    #[test]
    fn the_scale_url_names_namespace_and_deployment() {
        let k8s = KubernetesActuator::new(&config("http://127.0.0.1:8001/")).unwrap();
        assert_eq!(
            k8s.scale_url("spool-cpu"),
            "http://127.0.0.1:8001/apis/apps/v1/namespaces/video/deployments/spool-cpu/scale"
        );
        assert!(!format!("{k8s:?}").contains("t0ken"));
    }

    #[test]
    fn in_cluster_settings_come_from_the_environment_and_the_service_account() {
        let dir = std::env::temp_dir().join(format!("spool-sa-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("namespace"), "media\n").unwrap();
        std::fs::write(dir.join("token"), "abc\n").unwrap();
        let env = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("6443".to_owned()),
            _ => None,
        };
        // An https API needs the CA.
        let e = KubernetesActuator::with_service_account(&KubernetesConfig::default(), &dir, env)
            .unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
        let insecure = KubernetesConfig {
            insecure_skip_tls_verify: true,
            ..KubernetesConfig::default()
        };
        let k8s = KubernetesActuator::with_service_account(&insecure, &dir, env).unwrap();
        assert_eq!(k8s.api_url(), "https://[fd00::1]:6443");
        assert_eq!(k8s.namespace(), "media");
        assert!(matches!(k8s.auth, Auth::TokenFile(_)));
        std::fs::remove_dir_all(&dir).unwrap();
        let e = KubernetesActuator::with_service_account(&insecure, &dir, |_| None).unwrap_err();
        assert!(e.to_string().contains("KUBERNETES_SERVICE_HOST"), "{e}");
    }

    #[test]
    fn names_that_kubernetes_would_refuse_are_refused_early() {
        assert!(check_dns_name("deployment", "spool-worker.cpu", 253, true).is_ok());
        for bad in ["", "Spool", "a/b", "-a", "a-", "x/../y", "a b", "a?b"] {
            assert!(
                check_dns_name("deployment", bad, 253, true).is_err(),
                "{bad}"
            );
        }
        assert!(check_dns_name("namespace", "a.b", 63, false).is_err());
        let bad_ns = KubernetesConfig {
            namespace: Some("Video".into()),
            ..config("http://x")
        };
        assert!(KubernetesActuator::new(&bad_ns).is_err());
        let bad_url = config("ftp://x");
        assert!(KubernetesActuator::new(&bad_url).is_err());
    }
}
