//! Health against real failures: the test's own NATS server stopped -> the `nats` component
//! unhealthy and the service degraded within two checks, healthy again after a restart; the
//! test's own PostgreSQL stopped -> `/health` is 503 with a message naming the store.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald_testkit::env::{free_port, unique};
use herald_testkit::http::request;
use herald_testkit::nats_server::OwnNatsServer;
use herald_testkit::postgres_server::OwnPostgres;
use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(store: &str, addr: &str, extra: &[&str]) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--store", store, "serve", "--http", addr, "--quiet"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald serve"),
    )
}

fn health(addr: &str) -> (u16, Value) {
    let (code, body) = request(addr, "GET", "/health");
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Checks `/health` once a second until `want` holds, at most `checks` times.
fn within(addr: &str, checks: usize, want: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..checks {
        last = health(addr);
        if want(last.0, &last.1) {
            return last;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("not reached within {checks} checks: {last:?}");
}

#[test]
fn a_stopped_nats_server_degrades_the_service_and_its_restart_heals_it() {
    let Some(mut nats) = OwnNatsServer::start("health_nats") else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("hn"));
    let store = format!("sqlite://{}", dir.join("h.db").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = serve(&store, &addr, &["--nats", "--bus", &nats.url()]);
    let (code, h) = within(&addr, 10, |_, h| {
        h["components"]["nats"]["status"] == "healthy"
    });
    assert_eq!((code, h["status"].as_str()), (200, Some("healthy")));
    nats.stop();
    let (code, h) = within(&addr, 2, |_, h| {
        h["components"]["nats"]["status"] == "unhealthy"
    });
    assert_eq!(code, 200, "degraded still serves 200");
    assert_eq!(h["status"], "degraded", "{h}");
    nats.restart();
    let (_, h) = within(&addr, 15, |_, h| h["status"] == "healthy");
    assert_eq!(h["components"]["nats"]["status"], "healthy");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_store_that_is_down_makes_health_503_naming_it() {
    let Some(pg) = OwnPostgres::start("health_store_down") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = serve(&pg.url(), &addr, &[]);
    let (code, _) = within(&addr, 15, |c, _| c == 200);
    assert_eq!(code, 200);
    pg.stop();
    let (code, h) = within(&addr, 5, |c, _| c == 503);
    assert_eq!(code, 503);
    assert_eq!(h["status"], "unhealthy");
    let message = h["components"]["store"]["message"].as_str().unwrap_or("");
    assert!(message.contains("postgres store"), "{h}");
}
