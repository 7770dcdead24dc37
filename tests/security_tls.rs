//! TLS (`rediss://`): a `redis-server` with a TLS port and a certificate
//! from a throw-away CA (made with `openssl` per test), and the real
//! `spool-worker` and `spoolctl` trusting that CA through `SSL_CERT_FILE`,
//! as a deployment would. The harness watches through the server's plain
//! port; every Spool process speaks TLS only. The same holds for a
//! three-master Redis Cluster whose nodes also talk TLS among themselves
//! (`rediss+cluster://`), and for a server that demands client
//! certificates (mutual TLS), given with the `--tls-*-file` flags.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use spool_broker::QueueName;
use spool_tests::{RedisCluster, RedisServer, TestRedis, bins, wait_until};

const PASSWORD: &str = "tls-pw-31c5";

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1,
/// and a client certificate.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("spool-tls-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes", "-days", "1"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.crt"],
                &["-subj", "/CN=Spool test CA"],
            ],
        );
        openssl(
            &dir,
            &[
                &["req", "-nodes"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
                &["-subj", "/CN=localhost"],
            ],
        );
        // Cluster nodes are reached at the IP address they announce.
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                &["x509", "-req", "-days", "1", "-in", "server.csr"],
                &["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"],
                &["-extfile", "san.ext", "-out", "server.crt"],
            ],
        );
        // A client certificate from the same CA, for servers that demand
        // one (tls-auth-clients yes).
        openssl(
            &dir,
            &[
                &["req", "-nodes"],
                &ec[..],
                &["-keyout", "client.key", "-out", "client.csr"],
                &["-subj", "/CN=spool-worker"],
            ],
        );
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            &dir,
            &[
                &["x509", "-req", "-days", "1", "-in", "client.csr"],
                &["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"],
                &["-extfile", "client.ext", "-out", "client.crt"],
            ],
        );
        // A second CA that signed nothing here: trusting it alone must fail.
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes", "-days", "1"],
                &ec[..],
                &["-keyout", "other.key", "-out", "other.crt"],
                &["-subj", "/CN=Someone else"],
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&[&str]]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.concat())
        .output()
        .expect("openssl must be installed: run `bash ops/scripts/setup.sh`");
    assert!(
        out.status.success(),
        "openssl {:?}: {}",
        args.concat(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A password-protected redis-server with a TLS port beside its plain one.
struct TlsRedis {
    certs: Certificates,
    server: RedisServer,
    tls_port: u16,
}

impl TlsRedis {
    fn start() -> Self {
        Self::start_with("no")
    }

    /// `tls-auth-clients`: `yes` demands a client certificate.
    fn start_with(auth_clients: &str) -> Self {
        let certs = Certificates::new();
        let (cert, key, ca) = (
            certs.path("server.crt"),
            certs.path("server.key"),
            certs.path("ca.crt"),
        );
        let server = RedisServer::start_with_ports(1, |ports| {
            [
                "--requirepass",
                PASSWORD,
                "--tls-port",
                &ports[0].to_string(),
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                auth_clients,
            ]
            .map(str::to_owned)
            .to_vec()
        });
        Self {
            tls_port: server.extra_ports[0],
            certs,
            server,
        }
    }

    /// The URL Spool's processes get.
    fn tls_url(&self) -> String {
        format!("rediss://:{PASSWORD}@localhost:{}/", self.tls_port)
    }

    /// The harness' own door: the plain port.
    fn plain_url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/", self.server.port)
    }

    /// `spoolctl` over TLS, trusting `ca` (a file in the certificate dir).
    fn spoolctl(&self, ca: &str, url: &str, prefix: &str, args: &[&str]) -> Output {
        Command::new(bins::spoolctl())
            .env("SSL_CERT_FILE", self.certs.path(ca))
            .env("SPOOL_REDIS_URL", url)
            .args(["--key-prefix", prefix])
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout_of(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_spoolctl_speak_tls() {
    let tls = TlsRedis::start();
    let harness = TestRedis::at(&tls.plain_url()).await;
    let prefix = harness.prefix.clone();
    let worker = Command::new(bins::spool_worker())
        .env("SSL_CERT_FILE", tls.certs.path("ca.crt"))
        .env("SPOOL_REDIS_URL", tls.tls_url())
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_QUEUES", "default")
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let url = tls.tls_url();
    stdout_of(
        "spoolctl call",
        &tls.spoolctl(
            "ca.crt",
            &url,
            &prefix,
            &["call", "--force", "spool.echo", "--count", "4"],
        ),
    );
    wait_until(
        "the TLS worker to run 4 tasks",
        Duration::from_secs(20),
        || async { harness.stats(&QueueName::DEFAULT).await.completed_total == 4 },
    )
    .await;
    let queues: serde_json::Value = serde_json::from_str(&stdout_of(
        "spoolctl queues",
        &tls.spoolctl("ca.crt", &url, &prefix, &["queues", "--json"]),
    ))
    .unwrap();
    let default = queues
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["queue"] == "default"))
        .unwrap_or_else(|| panic!("no default row: {queues}"));
    assert_eq!(default["completed_total"], 4, "{queues}");
    let workers = stdout_of(
        "spoolctl workers",
        &tls.spoolctl("ca.crt", &url, &prefix, &["workers", "--json"]),
    );
    assert!(workers.contains("\"default\""), "{workers}");

    let stderr = bins::stop_warm(worker);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_or_a_plain_client_is_refused() {
    let tls = TlsRedis::start();
    let prefix = format!("spool-test-{:016x}", fastrand::u64(..));

    // Trusting only another CA: the server's certificate does not verify.
    let out = tls.spoolctl("other.crt", &tls.tls_url(), &prefix, &["queues"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "connected to an unverified server");
    assert!(
        stderr.contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // Plain text to the TLS port gets nowhere either.
    let plain_to_tls = format!("redis://:{PASSWORD}@localhost:{}/", tls.tls_port);
    let out = tls.spoolctl("ca.crt", &plain_to_tls, &prefix, &["queues"]);
    assert!(!out.status.success(), "a plain client reached the TLS port");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(PASSWORD),
        "the password leaked"
    );

    // And with the right CA the same command works.
    let out = tls.spoolctl("ca.crt", &tls.tls_url(), &prefix, &["queues", "--json"]);
    stdout_of("spoolctl queues", &out);
}

/// A cluster whose nodes speak TLS to clients and to each other
/// (`tls-cluster yes`): Spool reaches the seeds over TLS and every node it
/// discovers (`CLUSTER SLOTS` gives a TLS client the TLS ports) the same
/// way. Each node keeps a plain port for the harness and `redis-cli`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_and_spoolctl_speak_tls_to_a_cluster() {
    let certs = Certificates::new();
    let cluster = RedisCluster::start_each(1, |ports| {
        [
            "--tls-port",
            &ports[0].to_string(),
            "--tls-cluster",
            "yes",
            "--tls-cert-file",
            &certs.path("server.crt"),
            "--tls-key-file",
            &certs.path("server.key"),
            "--tls-ca-cert-file",
            &certs.path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    });
    let harness = TestRedis::at(&cluster.url()).await;
    let prefix = harness.prefix.clone();
    let seeds: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.extra_ports[0]))
        .collect();
    let url = format!("rediss+cluster://{}/", seeds.join(","));

    let worker = Command::new(bins::spool_worker())
        .env("SSL_CERT_FILE", certs.path("ca.crt"))
        .env("SPOOL_REDIS_URL", &url)
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_QUEUES", "default,analysis,streaming")
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let spoolctl = |args: &[&str]| {
        Command::new(bins::spoolctl())
            .env("SSL_CERT_FILE", certs.path("ca.crt"))
            .env("SPOOL_REDIS_URL", &url)
            .args(["--key-prefix", &prefix])
            .args(args)
            .output()
            .unwrap()
    };
    // Three queues, so the tasks land on more than one node.
    for queue in ["default", "analysis", "streaming"] {
        let args = [
            "call",
            "--force",
            "spool.echo",
            "--queue",
            queue,
            "--count",
            "3",
        ];
        stdout_of("spoolctl call", &spoolctl(&args));
    }
    wait_until(
        "the TLS worker to run 3 tasks on each queue",
        Duration::from_secs(30),
        || async {
            let mut done = true;
            for queue in ["default", "analysis", "streaming"] {
                let queue = QueueName::new(queue).unwrap();
                done &= harness.stats(&queue).await.completed_total == 3;
            }
            done
        },
    )
    .await;
    let queues = stdout_of("spoolctl queues", &spoolctl(&["queues", "--json"]));
    let queues: serde_json::Value = serde_json::from_str(&queues).unwrap();
    for queue in ["default", "analysis", "streaming"] {
        let row = queues
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["queue"] == queue))
            .unwrap_or_else(|| panic!("no {queue} row: {queues}"));
        assert_eq!(row["completed_total"], 3, "{queues}");
    }

    bins::stop_warm(worker);
    harness.cleanup().await;
}

/// Mutual TLS: the server demands a client certificate. The worker gets
/// its certificate, key and CA by flags and spoolctl by environment, with
/// no `SSL_CERT_FILE`; without a client certificate the server refuses,
/// and a certificate without its key is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_reach_a_server_that_demands_them() {
    let tls = TlsRedis::start_with("yes");
    let harness = TestRedis::at(&tls.plain_url()).await;
    let prefix = harness.prefix.clone();
    let url = tls.tls_url();
    let (ca, cert, key) = (
        tls.certs.path("ca.crt"),
        tls.certs.path("client.crt"),
        tls.certs.path("client.key"),
    );
    // At trace level, so the check below covers every log line; into a
    // file, which never fills up as a pipe would.
    let log_path = tls.certs.dir.join("worker.log");
    let mut worker = Command::new(bins::spool_worker())
        .env_remove("SSL_CERT_FILE")
        .env("SPOOL_REDIS_URL", &url)
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_LOG", "trace")
        .args(["--tls-ca-cert-file", &ca, "--tls-cert-file", &cert])
        .args(["--tls-key-file", &key])
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let spoolctl = |with_client_cert: bool, args: &[&str]| {
        let mut command = Command::new(bins::spoolctl());
        command
            .env_remove("SSL_CERT_FILE")
            .env("SPOOL_REDIS_URL", &url)
            .env("SPOOL_TLS_CA_CERT_FILE", &ca)
            .args(["--key-prefix", &prefix])
            .args(args);
        if with_client_cert {
            command
                .env("SPOOL_TLS_CERT_FILE", &cert)
                .env("SPOOL_TLS_KEY_FILE", &key);
        }
        command.output().unwrap()
    };

    stdout_of(
        "spoolctl call",
        &spoolctl(true, &["call", "--force", "spool.echo", "--count", "3"]),
    );
    wait_until(
        "the worker to run 3 tasks over mutual TLS",
        Duration::from_secs(20),
        || async { harness.stats(&QueueName::DEFAULT).await.completed_total == 3 },
    )
    .await;

    let refused = spoolctl(false, &["queues"]);
    assert!(
        !refused.status.success(),
        "connected without a client certificate"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot connect to Redis"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    let half = Command::new(bins::spoolctl())
        .args(["queues", "--tls-cert-file", &cert])
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(stderr.contains("--tls-key-file"), "{stderr}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(worker.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(worker.wait().unwrap().success(), "a warm shutdown");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("TRACE"), "the worker logged at trace level");
    let private_key = std::fs::read_to_string(&key).unwrap();
    for line in private_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
    {
        assert!(!log.contains(line), "the client key leaked into the log");
    }
    harness.cleanup().await;
}

/// The autoscaler, given the TLS files by flags only, reaches a server
/// that demands client certificates, and so do the workers it starts: it
/// hands them the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaled_workers_get_the_autoscalers_client_certificate() {
    let tls = TlsRedis::start_with("yes");
    let harness = TestRedis::at(&tls.plain_url()).await;
    let config = tls.certs.dir.join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "key_prefix = \"{}\"\nmetrics_addr = \"none\"\ninterval = \"200ms\"\n\
             [local]\nworker_bin = \"{}\"\n\
             [[pools]]\nname = \"mtls\"\nqueues = [\"default\"]\nconcurrency = 2\n\
             worker_args = [\"--no-video\", \"--no-probe\"]\n\
             [pools.policy]\nmin_workers = 1\nmax_workers = 1\n",
            harness.prefix,
            bins::spool_worker().display()
        ),
    )
    .unwrap();
    let mut autoscaler = Command::new(bins::spool_autoscaler());
    for var in [
        "SSL_CERT_FILE",
        "SPOOL_TLS_CA_CERT_FILE",
        "SPOOL_TLS_CERT_FILE",
    ] {
        autoscaler.env_remove(var);
    }
    let autoscaler = autoscaler
        .env_remove("SPOOL_TLS_KEY_FILE")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--redis-url",
            &tls.tls_url(),
        ])
        .args(["--tls-ca-cert-file", &tls.certs.path("ca.crt")])
        .args(["--tls-cert-file", &tls.certs.path("client.crt")])
        .args(["--tls-key-file", &tls.certs.path("client.key")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tls.certs.dir.join("autoscaler.log")).unwrap())
        .spawn()
        .unwrap();
    let mut autoscaler = KillOnDrop(autoscaler);

    harness
        .client()
        .enqueue_many((0..3).map(|_| spool_worker::builtin::Sleep { ms: 1 }))
        .await
        .unwrap();
    wait_until(
        "the autoscaled worker to run 3 tasks over mutual TLS",
        Duration::from_secs(30),
        || async { harness.stats(&QueueName::DEFAULT).await.completed_total == 3 },
    )
    .await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(autoscaler.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = autoscaler.0.wait().unwrap();
    let log = std::fs::read_to_string(tls.certs.dir.join("autoscaler.log")).unwrap();
    assert!(status.success(), "{status}\n{log}");
    harness.cleanup().await;
}

/// A process killed (with the workers it started, which die with it) if
/// the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
