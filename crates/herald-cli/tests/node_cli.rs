//! `herald node` as a user runs it, on SQLite (no server): bad input is one line naming the
//! value (an unknown role by flag or config, a bad category, no sources, an unreachable
//! store), and two node processes on one SQLite file share the work (a coordinator and an
//! observer, the way PostgreSQL serves several machines).

use std::process::{Command, Output};
use std::time::Duration;

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("run herald")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(herald_testkit::env::unique(name));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn bad_input_is_one_line_naming_the_value() {
    let dir = temp("nodecli");
    let store = format!("sqlite://{}", dir.join("h.db").display());
    let o = herald(&[
        "node",
        "--store",
        &store,
        "--role",
        "leader",
        "--sources",
        "a",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown broker role \"leader\""),
        "{}",
        stderr(&o)
    );
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[node]\nrole = \"boss\"\n").expect("write");
    let o = herald(&[
        "--config",
        cfg.to_str().expect("path"),
        "node",
        "--store",
        &store,
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("node.role") && stderr(&o).contains("boss"),
        "{}",
        stderr(&o)
    );
    let o = herald(&["node", "--store", &store, "--sources", "Bad-Cat"]);
    assert!(
        !o.status.success() && stderr(&o).contains("Bad-Cat"),
        "{}",
        stderr(&o)
    );
    let o = herald(&["node", "--store", &store]);
    assert!(
        !o.status.success() && stderr(&o).contains("--sources"),
        "{}",
        stderr(&o)
    );
    let o = herald(&["node", "--store", "mysql://x/y", "--sources", "a"]);
    assert!(
        !o.status.success() && stderr(&o).contains("mysql://x/y"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_coordinator_and_an_observer_process_share_one_sqlite_file() {
    let dir = temp("nodesqlite");
    let store = format!("sqlite://{}", dir.join("h.db").display());
    for i in 0..10 {
        let o = herald(&[
            "store",
            "append",
            &format!("orders-{i}"),
            "{}",
            "--store",
            &store,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let status = herald(&["node", "status", "--store", &store]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("nobody has coordinated yet"));
    let common = [
        "--store",
        &store,
        "--heartbeat-ms",
        "50",
        "--poll-ms",
        "20",
        "--for",
        "4",
    ];
    let observer = std::thread::spawn({
        let store = store.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args([
                    "node",
                    "--role",
                    "observer",
                    "--id",
                    "o",
                    "--sources",
                    "orders",
                    "--log-processed",
                ])
                .args([
                    "--store",
                    &store,
                    "--heartbeat-ms",
                    "50",
                    "--poll-ms",
                    "20",
                    "--for",
                    "4",
                ])
                .output()
                .expect("observer")
        }
    });
    let coordinator = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["node", "--role", "coordinator", "--id", "c"])
        .args(common)
        .output();
    let coordinator = coordinator.expect("coordinator");
    let observer = observer.join().expect("join");
    assert!(coordinator.status.success(), "{}", stderr(&coordinator));
    assert!(observer.status.success(), "{}", stderr(&observer));
    let processed = String::from_utf8_lossy(&observer.stdout)
        .lines()
        .filter(|l| l.starts_with("processed o orders-"))
        .count();
    assert_eq!(
        processed,
        10,
        "{}",
        String::from_utf8_lossy(&observer.stdout)
    );
    std::thread::sleep(Duration::from_millis(10));
    let status = herald(&["node", "status", "--json", "--store", &store]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["lease"]["holder"], "c");
    assert_eq!(v["allocations"][0]["node_id"], "o");
    assert_eq!(v["allocations"][0]["checkpoint"]["position"], 10);
    assert_eq!(v["counts"]["counts"][0]["category"], "orders");
    assert_eq!(
        v["counts"]["counts"][0]["count"], 10,
        "the projection counted each event once"
    );
    let _ = std::fs::remove_dir_all(dir);
}
