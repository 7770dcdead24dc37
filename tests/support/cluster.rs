//! A three-master Redis Cluster owned by one test: three `redis-server`s
//! on free loopback ports, joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::RedisServer;

/// A running cluster, its nodes killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters (no replicas), assigns the 16384 slots and
    /// waits until every node reports `cluster_state:ok`. `args` go to
    /// every `redis-server`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_each(|_| args.iter().map(|arg| (*arg).to_owned()).collect())
    }

    /// Like [`RedisCluster::start`], with each node's own arguments (such
    /// as a TLS port), given its index 0, 1 or 2.
    pub fn start_each(args: impl Fn(usize) -> Vec<String>) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|node| {
                let mut node_args = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-config-file".to_owned(),
                    "nodes.conf".to_owned(),
                    "--cluster-node-timeout".to_owned(),
                    "5000".to_owned(),
                ];
                node_args.extend(args(node));
                let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
                RedisServer::start(&node_args)
            })
            .collect();
        let cluster = Self { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create
            .output()
            .expect("redis-cli must be installed: run `bash ops/scripts/setup.sh`");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// The seed URL Spool takes: `redis+cluster://host:port,host:port/`.
    pub fn url(&self) -> String {
        self.url_as("")
    }

    /// Like [`RedisCluster::url`], with `user:password@` (or nothing).
    pub fn url_as(&self, userinfo: &str) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{userinfo}{}/", seeds.join(","))
    }

    /// The URL of each node on its own.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            let mut info = Command::new("redis-cli");
            info.args(["-p", &node.port.to_string()]);
            info.args(["cluster", "info"]);
            loop {
                let out = info.output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster on port {} did not reach cluster_state:ok",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
