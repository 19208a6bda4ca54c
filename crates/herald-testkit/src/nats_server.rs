//! A nats-server of the test's own: a free port, its own store directory, stopped and
//! restarted by its pid only. The machine's own server is never touched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server process started by a test.
#[derive(Debug)]
pub struct OwnNatsServer {
    child: Option<Child>,
    extra: Vec<String>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its JetStream store directory.
    pub store: PathBuf,
}

fn binary() -> Option<PathBuf> {
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(p).exists() {
            return Some(p.into());
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.exists())
    })
}

impl OwnNatsServer {
    /// Starts nats-server with JetStream on a free loopback port. `None` (with a loud SKIP
    /// line) when no nats-server binary is installed; a panic instead under
    /// `HERALD_REQUIRE_SERVICES=1`.
    ///
    /// # Panics
    ///
    /// When the binary is missing and services are required, or the server does not start.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// [`OwnNatsServer::start`] with extra nats-server arguments (`--auth TOKEN`, `--user U`).
    ///
    /// # Panics
    ///
    /// As [`OwnNatsServer::start`].
    pub fn start_with(test: &str, extra: &[&str]) -> Option<Self> {
        let Some(_) = binary() else {
            if crate::env::services_required() {
                panic!("{test}: nats-server is not installed and HERALD_REQUIRE_SERVICES=1; run scripts/services.sh");
            }
            eprintln!("SKIPPED {test}: nats-server is not installed (run scripts/services.sh)");
            return None;
        };
        let store = std::env::temp_dir().join(crate::env::unique("herald-nats-store-"));
        std::fs::create_dir_all(&store).expect("create the store directory");
        let mut server = OwnNatsServer {
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            port: crate::env::free_port(),
            store,
        };
        server.restart();
        Some(server)
    }

    /// A stand-in that runs nothing (to move the real one into another task meanwhile).
    pub fn placeholder() -> Self {
        OwnNatsServer {
            child: None,
            extra: Vec::new(),
            port: 0,
            store: PathBuf::new(),
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The pid of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server again (same port, same store) and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When it does not come up within 10 s.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server is already running");
        let bin = binary().expect("nats-server binary");
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "own nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no clean shutdown) and waits for it to exit. Only this
    /// server's pid is signalled.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (a clean shutdown that writes its stores out) and waits
    /// for the process to exit. Only this server's pid is signalled.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for OwnNatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.store.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}
