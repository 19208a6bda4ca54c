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

/// A free TCP port on 127.0.0.1 (bound, then released).
///
/// # Panics
///
/// When the OS gives no port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
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
    use super::host_port;

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
