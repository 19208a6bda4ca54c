//! The relay's `herald chaos` scenarios at small scale, as the test command runs them:
//! `relay-kill` (relays and the NATS server SIGKILLed under appends), `relay-failover` (the
//! standby takes over within two lease periods), `inbox-kill` and `relay-pg-restart`, each on
//! servers of its own. Each scenario compares id sets and exits non-zero on a difference; the
//! full scale is `herald chaos --scale full --scenario NAME`.

use std::process::Command;

use herald_testkit::env::{database_url, nats_url};

/// Runs one scenario and returns its figures line.
fn chaos(scenario: &str, store: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args([
        "chaos",
        "--scenario",
        scenario,
        "--messages",
        "1500",
        "--kills",
        "3",
    ]);
    if let Some(url) = store {
        c.args(["--store", url]);
    }
    let out = c.output().expect("run herald chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "herald chaos --scenario {scenario}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("chaos {scenario} ")))
        .unwrap_or_else(|| panic!("no figures line in {stdout}"))
        .to_owned();
    for zero in ["missing=0", "duplicates=0", "unexpected=0"] {
        assert!(line.contains(zero), "{line}");
    }
    line
}

#[test]
fn relay_kill_with_nats_kills_on_sqlite() {
    // Starts NATS of its own; needs the binary only.
    if nats_url("relay_kill_with_nats_kills").is_none() {
        return;
    }
    let line = chaos("relay-kill", None);
    assert!(
        line.contains("out_of_order=0") && line.contains("nats_kills=1"),
        "{line}"
    );
}

#[test]
fn relay_kill_with_nats_kills_on_postgres() {
    let (Some(_), Some(db)) = (nats_url("relay_kill_pg"), database_url("relay_kill_pg")) else {
        return;
    };
    let line = chaos("relay-kill", Some(&db));
    assert!(line.contains("out_of_order=0"), "{line}");
}

#[test]
fn relay_failover_standby_takes_over() {
    if nats_url("relay_failover").is_none() {
        return;
    }
    let line = chaos("relay-failover", None);
    assert!(line.contains("out_of_order=0"), "{line}");
}

#[test]
fn inbox_kill_appends_each_once() {
    if nats_url("inbox_kill_chaos").is_none() {
        return;
    }
    chaos("inbox-kill", None);
}

#[test]
fn relay_survives_postgres_restarts() {
    if nats_url("relay_pg_restart").is_none() {
        return;
    }
    let line = chaos("relay-pg-restart", None);
    assert!(line.contains("out_of_order=0"), "{line}");
}
