//! A 3-node NATS cluster of the test's own: nats-server processes on loopback with free client
//! and route ports, a store directory each, routes between them and JetStream on each; nodes
//! are stopped, killed and restarted by their own pids only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node {
    name: String,
    port: u16,
    route_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A cluster of nats-server processes of the test's own.
pub struct NatsCluster {
    nodes: Vec<Node>,
    cluster: String,
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .finish()
    }
}

fn binary() -> Option<&'static str> {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "nats-server")
}

impl NatsCluster {
    /// Starts `n` routed nodes with JetStream; `None` (said loudly) when nats-server is not
    /// installed and services are not required.
    ///
    /// # Panics
    ///
    /// When the binary is missing and services are required, or a node does not start.
    pub fn start(test: &str, n: usize) -> Option<Self> {
        if binary().is_none() {
            if crate::env::services_required() {
                panic!("{test}: nats-server is not installed and HERALD_REQUIRE_SERVICES=1; run scripts/services.sh");
            }
            eprintln!("SKIPPED {test}: nats-server is not installed (run scripts/services.sh)");
            return None;
        }
        let cluster = crate::env::unique("hc").replace(['-', '.'], "_");
        let nodes = (0..n)
            .map(|i| {
                let store =
                    std::env::temp_dir().join(crate::env::unique(&format!("herald-cluster-{i}-")));
                Node {
                    name: format!("{cluster}_n{i}"),
                    port: 0,
                    route_port: 0,
                    store,
                    child: None,
                }
            })
            .collect();
        let mut c = NatsCluster { nodes, cluster };
        // A port can still be taken between its check and the server's bind: then the whole
        // cluster starts again on fresh ports (its routes name every node's port).
        let mut failures = Vec::new();
        for _ in 0..3 {
            for node in &mut c.nodes {
                let _ = std::fs::remove_dir_all(&node.store);
                std::fs::create_dir_all(&node.store).expect("create the store directory");
                node.port = crate::env::free_port();
                node.route_port = crate::env::free_port();
            }
            match (0..n).try_for_each(|i| c.try_start(i)) {
                Ok(()) => return Some(c),
                Err(e) => {
                    for i in 0..n {
                        c.kill9(i);
                    }
                    failures.push(e);
                }
            }
        }
        panic!("the cluster did not start: {}", failures.join("; "));
    }

    /// The client URLs, `nats://127.0.0.1:PORT` each.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The pid of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Starts node `i` again (same ports, same store) and waits until it accepts clients.
    ///
    /// # Panics
    ///
    /// When it is running already, exits, or does not come up within 20 s.
    pub fn restart(&mut self, i: usize) {
        if let Err(e) = self.try_start(i) {
            panic!("{e}");
        }
    }

    /// Starts node `i` on its ports; the error says why not, with the end of its log.
    fn try_start(&mut self, i: usize) -> Result<(), String> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route_port))
            .collect();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is already running");
        let log_path = node.store.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("node {i}'s log: {e}"))?;
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &node.port.to_string(),
                "-n",
                &node.name,
                "-js",
                "-sd",
            ])
            .arg(&node.store)
            .args([
                "--cluster_name",
                &self.cluster,
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route_port),
                "--routes",
                &routes.join(","),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn nats-server: {e}"))?;
        let child = node.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let why = loop {
            if std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                break format!("exited ({status})");
            }
            if Instant::now() >= deadline {
                break "did not accept clients within 20 s".to_owned();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "cluster node {i} (client port {}, route port {}) {why}; its log ends: {}",
            node.port,
            node.route_port,
            tail.join(" | ")
        ))
    }

    /// SIGKILLs node `i` and waits for it to exit. Only that pid is signalled.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&node.store);
            let _ = std::fs::remove_file(node.store.with_extension("log"));
        }
    }
}
