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
                std::fs::create_dir_all(&store).expect("create the store directory");
                Node {
                    name: format!("{cluster}_n{i}"),
                    port: crate::env::free_port(),
                    route_port: crate::env::free_port(),
                    store,
                    child: None,
                }
            })
            .collect();
        let mut c = NatsCluster { nodes, cluster };
        for i in 0..n {
            c.restart(i);
        }
        Some(c)
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

    /// Starts node `i` (again: same ports, same store) and waits until it accepts clients.
    ///
    /// # Panics
    ///
    /// When it is running already or does not come up within 10 s.
    pub fn restart(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route_port))
            .collect();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is already running");
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
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(Instant::now() < deadline, "cluster node {i} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
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
        }
    }
}
