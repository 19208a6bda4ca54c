//! A PostgreSQL server of the test's own: `initdb` into a fresh directory, `pg_ctl` on a free
//! loopback port, restarted (`-m immediate`, a crash) or stopped only by its own data
//! directory. The machine's own server is never touched. PostgreSQL refuses to run as root,
//! so under root the server runs as the `postgres` user (`runuser`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A PostgreSQL server started by a test.
#[derive(Debug)]
pub struct OwnPostgres {
    bin: PathBuf,
    /// Its data directory (removed when dropped).
    pub data: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    as_postgres: bool,
}

fn bindir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl OwnPostgres {
    /// Initialises and starts a server on a free port. `None` (with a loud SKIP line) when
    /// PostgreSQL's binaries are missing; a panic instead under `HERALD_REQUIRE_SERVICES=1`.
    ///
    /// # Panics
    ///
    /// When the binaries are missing and services are required, or the server does not start.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = bindir() else {
            if crate::env::services_required() {
                panic!("{test}: PostgreSQL is not installed and HERALD_REQUIRE_SERVICES=1; run scripts/services.sh");
            }
            eprintln!("SKIPPED {test}: PostgreSQL is not installed (run scripts/services.sh)");
            return None;
        };
        let data = std::env::temp_dir().join(crate::env::unique("pgdata"));
        std::fs::create_dir_all(&data).expect("create the data directory");
        let as_postgres = is_root();
        let server = OwnPostgres {
            bin,
            data,
            port: crate::env::free_port(),
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.data)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        server.pg_ctl(&["start", "-w"]);
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on",
            self.port, data
        );
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-o", opts.as_str()];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    /// Crashes and restarts the server (`pg_ctl restart -m immediate`): no clean shutdown,
    /// the WAL is replayed on start. Waits until it accepts connections again.
    pub fn restart_immediate(&self) {
        self.pg_ctl(&["restart", "-m", "immediate", "-w"]);
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
    }

    /// Starts it again after [`OwnPostgres::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "stop", "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
