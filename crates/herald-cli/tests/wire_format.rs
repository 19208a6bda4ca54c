//! The worker's wire format from outside Herald: docs/worker.md's psql example run as written
//! (a step sent with `pgmq.send`, `herald worker --until-empty`, its result read with
//! `pgmq.read`), and an outside `pgmq.send` waking a waiting worker whose poll interval is
//! 30 s (PGMQ's insert channel, notified by Herald's trigger).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::env::{database_url, psql, services_required, unique};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding the `herald` binary under test, for the `PATH`.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_herald"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

fn psql_available() -> bool {
    let found = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !services_required(),
            "psql is needed (HERALD_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED: psql is not installed");
    }
    found
}

fn herald(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--store")
        .arg(url)
        .args(args)
        .output()
        .expect("run herald")
}

/// The example between the markers in docs/worker.md, as written.
fn example() -> String {
    let doc = std::fs::read_to_string(root().join("docs/worker.md")).expect("docs/worker.md");
    let start = doc
        .find("<!-- wire-format-example -->")
        .expect("the example's start marker");
    let end = doc
        .find("<!-- /wire-format-example -->")
        .expect("the example's end marker");
    let block = &doc[start..end];
    let body = block
        .split_once("```sh\n")
        .expect("a sh block")
        .1
        .rsplit_once("```")
        .expect("the block's end")
        .0;
    body.to_owned()
}

#[test]
fn the_documented_psql_example_runs_as_written() {
    let Some(url) = database_url("wire_format_example") else {
        return;
    };
    if !psql_available() {
        return;
    }
    let script = example();
    let documented = "postgres://postgres@127.0.0.1:5432/test";
    assert!(
        script.contains(documented),
        "the example names the store it runs on"
    );
    // The same script; only the store URL follows the test's database when it differs.
    let script = script.replace(documented, &url);
    for q in [
        "orders_steps",
        "orders_step_results",
        "orders_domain_events",
    ] {
        let _ = herald(&url, &["queue", "drop", q]);
    }
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a msg_id, then the result: {stdout}");
    assert!(
        lines[0].parse::<i64>().is_ok(),
        "the send's msg_id: {stdout}"
    );
    assert_eq!(lines[1], "true|6.0", "the documented result: {stdout}");
}

#[test]
fn an_outside_pgmq_send_wakes_a_worker_long_before_its_poll_interval() {
    let Some(url) = database_url("wire_format_wake") else {
        return;
    };
    if !psql_available() {
        return;
    }
    let ns = unique("wake").replace('-', "_");
    // The channel a queue's inserts notify, heard by a LISTEN of the test's own.
    let created = herald(&url, &["queue", "create", &format!("{ns}_probe")]);
    assert!(created.status.success(), "{created:?}");
    let mut listen = Command::new("psql")
        .args([&url, "-At"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    {
        use std::io::Write;
        let stdin = listen.stdin.as_mut().expect("stdin");
        writeln!(stdin, "LISTEN \"pgmq.q_{ns}_probe.INSERT\";").expect("listen");
        writeln!(stdin, "SELECT pg_sleep(2);").expect("sleep");
    }
    std::thread::sleep(Duration::from_millis(500));
    psql(&url, &format!("SELECT pgmq.send('{ns}_probe', '{{}}')"));
    drop(listen.stdin.take());
    let heard = listen.wait_with_output().expect("psql output");
    let said = String::from_utf8_lossy(&heard.stdout).into_owned()
        + &String::from_utf8_lossy(&heard.stderr);
    assert!(
        said.contains(&format!("pgmq.q_{ns}_probe.INSERT")),
        "an outside pgmq.send notifies the queue's channel: {said}"
    );

    // A worker waiting with a 30 s poll interval runs a step sent from psql at once.
    let mut worker = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--store", &url, "worker", "--namespace", &ns, "--quiet"])
        .env("HERALD_WORKER_POLLING_INTERVAL_MS", "30000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    // Until its queues exist and it waits.
    let ready = Instant::now();
    while !psql(
        &url,
        &format!("SELECT count(*) FROM pgmq.list_queues() WHERE queue_name = '{ns}_steps'"),
    )
    .eq("1")
    {
        assert!(ready.elapsed() < Duration::from_secs(20), "worker not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let sent = Instant::now();
    psql(
        &url,
        &format!(
            r#"SELECT pgmq.send('{ns}_steps', '{{"subject": "step.execution.received", "source": "psql",
              "data": {{"event_id": "0192f0c0-0000-7000-8000-000000000001",
                       "task_uuid": "0192f0c0-0000-7000-8000-000000000002",
                       "step_uuid": "0192f0c0-0000-7000-8000-000000000003",
                       "correlation_id": "0192f0c0-0000-7000-8000-000000000004",
                       "execution_event": {{"handler_name": "demo.noop"}}}}}}')"#
        ),
    );
    let mut took = None;
    while sent.elapsed() < Duration::from_secs(25) {
        if psql(
            &url,
            &format!("SELECT count(*) FROM pgmq.q_{ns}_step_results"),
        ) == "1"
        {
            took = Some(sent.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let took = took.expect("the step ran before the worker's 30 s poll");
    eprintln!(
        "wire_format: psql send to stored result {} ms (worker poll interval 30,000 ms)",
        took.as_millis()
    );
    // Functional, not a speed threshold: without the wake-up it would wait for the poll.
    assert!(
        took < Duration::from_secs(15),
        "woken, not polled: {took:?}"
    );
    for q in ["steps", "step_results", "domain_events", "probe"] {
        let _ = herald(&url, &["queue", "drop", &format!("{ns}_{q}")]);
    }
}
