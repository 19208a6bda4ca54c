//! Service URLs for tests: read from the environment, checked for reachability, skipped
//! loudly when absent, and a failure instead of a skip under `HERALD_REQUIRE_SERVICES=1`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Whether absent services fail the run (`HERALD_REQUIRE_SERVICES=1`, set by CI).
pub fn services_required() -> bool {
    std::env::var("HERALD_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// `host:port` of a `scheme://[user@]host:port[/...]` URL.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hp = rest.split(['/', '?']).next()?;
    Some(hp.to_owned())
}

fn reachable(url: &str) -> bool {
    let Some(hp) = host_port(url) else {
        return false;
    };
    let Ok(addrs) = hp.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// The URL of a service for a test named `test`: from `var`, else `default`. Returns `None`
/// (after printing a loud SKIP line on stderr) when it is unreachable, and panics instead
/// under `HERALD_REQUIRE_SERVICES=1`.
///
/// # Panics
///
/// When the service is unreachable and services are required.
pub fn service_url(test: &str, var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if reachable(&url) {
        return Some(url);
    }
    if services_required() {
        panic!("{test}: service at {url} ({var}) is unreachable and HERALD_REQUIRE_SERVICES=1; run scripts/services.sh");
    }
    eprintln!("SKIPPED {test}: no service at {url} (set {var}, or run scripts/services.sh)");
    None
}

/// The NATS URL for tests (`HERALD_TEST_NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn nats_url(test: &str) -> Option<String> {
    service_url(test, "HERALD_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

/// The PostgreSQL URL for tests (`HERALD_TEST_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`).
pub fn database_url(test: &str) -> Option<String> {
    service_url(
        test,
        "HERALD_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

/// A free TCP port on 127.0.0.1 (bound, then released), never the same twice in a process;
/// below the kernel's ephemeral range where that can be read.
///
/// # Panics
///
/// When the OS gives no port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TRIES: AtomicU32 = AtomicU32::new(0);
    // Below the kernel's ephemeral range, where no outgoing connection (a client, a NATS route
    // retrying a node that is down) can take the port between this check and the server's bind.
    let low = ephemeral_low().unwrap_or(0);
    if low > 12_000 {
        let span = u32::from(low) - 10_000;
        for _ in 0..64 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                ^ std::process::id().rotate_left(16)
                ^ TRIES
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(2_654_435_761);
            let port = 10_000 + u16::try_from(seed.wrapping_mul(2_246_822_519) % span).unwrap_or(0);
            if handed_out(port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if !handed_out(port) {
            return port;
        }
    }
}

/// Records `port` as handed out by this process; true when it was already.
fn handed_out(port: u16) -> bool {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if given.contains(&port) {
        return true;
    }
    given.push(port);
    false
}

/// The first port of the kernel's ephemeral range (Linux), when it can be read.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A prefix unique to this process and call, for subjects and stream names on a shared server.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{name}{}x{nanos}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::{ephemeral_low, free_port, host_port};

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        if let Some(low) = ephemeral_low().filter(|l| *l > 12_000) {
            assert!(ports.iter().all(|p| *p < low), "{ports:?} vs {low}");
        }
        assert!(std::net::TcpListener::bind(("127.0.0.1", free_port())).is_ok());
    }

    #[test]
    fn host_port_strips_scheme_credentials_and_path() {
        assert_eq!(
            host_port("nats://127.0.0.1:4222").as_deref(),
            Some("127.0.0.1:4222")
        );
        assert_eq!(
            host_port("postgres://u:p@localhost:5432/test?x=1").as_deref(),
            Some("localhost:5432")
        );
    }
}

/// Runs one SQL command with `psql` on `url` and returns its unaligned, tuples-only output,
/// trimmed.
///
/// # Panics
///
/// When psql is missing or the command fails (the message has psql's stderr).
pub fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("psql runs (installed with PostgreSQL by scripts/services.sh)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A database of the test's own on the PostgreSQL server at `url` (created with `psql`,
/// dropped when this is dropped), for tests whose state is global to a database (the broker's
/// lease and nodes).
#[derive(Debug)]
pub struct FreshDatabase {
    server: String,
    name: String,
}

impl FreshDatabase {
    /// Creates `herald_<unique>` on the server `url` points to.
    ///
    /// # Panics
    ///
    /// When `psql` cannot create it.
    pub fn create(url: &str) -> Self {
        let name = unique("herald").replace(['-', '.'], "_").to_lowercase();
        let server = match url.rfind('/') {
            Some(i) if i > "postgres://".len() => url[..i].to_owned(),
            _ => url.to_owned(),
        };
        let db = FreshDatabase { server, name };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn psql(&self, sql: &str) {
        let out = std::process::Command::new("psql")
            .args([
                &format!("{}/postgres", self.server),
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                &format!("{}/postgres", self.server),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
