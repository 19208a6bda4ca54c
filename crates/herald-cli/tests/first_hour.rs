//! A new user's first hour (issue 18), one test per finding: `herald sub '>'` receives an
//! event; clap's errors keep what clap says; health and metrics ask the configured address;
//! `queue dlq` of a missing queue creates nothing and `queue drop` exists; the demo refuses
//! flags it cannot honour and its `--quiet` is quiet; flags, variables and the file pass one
//! validation that blames the right source; connection errors say their cause once; numbers
//! are checked; a read-only verb creates no store; a stopped NATS server is unhealthy.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::env::{free_port, nats_url, unique};
use herald_testkit::nats_server::OwnNatsServer;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args(args)
        .env_remove("HERALD_STORE")
        .env_remove("HERALD_BUS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run herald")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("h.db").display());
    (dir, url)
}

#[test]
fn sub_to_everything_receives_an_event() {
    let Some(url) = nats_url("first_hour_sub_all") else {
        return;
    };
    let subject = format!("{}.hello", unique("fh"));
    let mut sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["sub", ">", "--timeout", "20", "--bus", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald sub '>'");
    let stdout = sub.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Publish until the subscription (live once `sub` subscribed) prints our event.
    let started = Instant::now();
    let mut seen = false;
    while !seen && started.elapsed() < Duration::from_secs(15) {
        let p = run(&["pub", &subject, r#"{"hi": 1}"#, "--bus", &url], &[]);
        assert!(p.status.success(), "{}", err(&p));
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("an envelope per line");
            if v["subject"] == subject.as_str() {
                seen = true;
                break;
            }
        }
    }
    let _ = sub.kill();
    let o = sub.wait_with_output().expect("sub");
    assert!(seen, "herald sub '>' printed our event: {}", err(&o));
}

#[test]
fn usage_errors_keep_what_clap_says_on_one_line() {
    for (args, expect) in [
        (&["queue", "send"][..], "<NAME>"),
        (&["pub"], "<SUBJECT>"),
        (&["store", "append"], "<STREAM>"),
        (&["queu", "ls"], "a similar subcommand exists: 'queue'"),
        (&["bench", "bogus"], "[possible values: bus, nats, queue"),
        (
            &["chaos", "--scale", "medium"],
            "[possible values: small, full]",
        ),
        (
            &["queue", "read", "q", "--qty", "-1"],
            "-1 must not be negative",
        ),
    ] {
        let o = run(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        let e = err(&o);
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: one line: {e}");
        assert!(e.contains(expect), "{args:?}: names {expect:?}: {e}");
        assert!(
            e.contains("Usage:") || e.contains("--help"),
            "{args:?}: {e}"
        );
    }
    // A bare verb with sub-verbs prints its help (exit 2), not its about text as an error.
    for args in [&[][..], &["queue"], &["store"], &["streams"]] {
        let o = run(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let text = out(&o) + &err(&o);
        assert!(text.contains("Commands:"), "{args:?}: its help: {text}");
        assert!(!text.starts_with("herald: "), "{args:?}: {text}");
    }
    // Every verb's help has examples.
    for verb in [
        "demo", "bench", "chaos", "pub", "sub", "request", "reply", "streams", "queue", "worker",
        "serve", "health", "metrics", "config", "store", "node",
    ] {
        let o = run(&[verb, "--help"], &[]);
        assert!(out(&o).contains("Examples:\n  herald"), "{verb} --help");
    }
}

#[test]
fn health_and_metrics_ask_the_configured_address() {
    let (dir, _) = scratch("fh_http");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.join("herald.toml");
    std::fs::write(&cfg, format!("[http]\naddr = \"{addr}\"\n")).expect("write");
    let cfg = cfg.to_str().expect("path");
    // Nothing listens there: the error names the configured address, not 8081.
    for (args, env) in [
        (vec!["--config", cfg, "health"], vec![]),
        (vec!["--config", cfg, "metrics"], vec![]),
        (vec!["health"], vec![("HERALD_HTTP_ADDR", addr.as_str())]),
        (
            vec!["metrics", "--prometheus"],
            vec![("HERALD_HTTP_ADDR", addr.as_str())],
        ),
    ] {
        let o = run(&args, &env);
        assert!(!o.status.success());
        assert!(
            err(&o).contains(&format!("cannot reach {addr}")),
            "{args:?}: {}",
            err(&o)
        );
    }
    let url = format!("http://{addr}");
    let o = run(&["health", "--http", &url], &[]);
    assert!(
        err(&o).contains(&format!("cannot reach {addr}")),
        "{}",
        err(&o)
    );
    let o = run(&["health", "--prometheus"], &[]);
    assert_eq!(o.status.code(), Some(2), "--prometheus is metrics only");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dlq_of_a_missing_queue_creates_nothing_and_queues_can_be_dropped() {
    let (dir, store) = scratch("fh_dlq");
    assert!(run(&["--store", &store, "queue", "create", "jobs"], &[])
        .status
        .success());
    let o = run(&["--store", &store, "queue", "dlq", "ghost"], &[]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no queue named ghost"), "{}", err(&o));
    let ls = out(&run(&["--store", &store, "queue", "ls"], &[]));
    assert_eq!(ls.trim(), "jobs", "ghost_dlq not created: {ls}");
    // The dead-letter queue's name is checked at create.
    let long = "a".repeat(47);
    let o = run(&["--store", &store, "queue", "create", &long], &[]);
    assert!(!o.status.success());
    assert!(err(&o).contains(&format!("{long}_dlq")), "{}", err(&o));
    // Drop: the queue goes; a missing one is refused.
    assert!(run(&["--store", &store, "queue", "drop", "jobs"], &[])
        .status
        .success());
    assert_eq!(
        out(&run(&["--store", &store, "queue", "ls"], &[])).trim(),
        ""
    );
    let o = run(&["--store", &store, "queue", "drop", "jobs"], &[]);
    assert!(err(&o).contains("no queue named jobs"), "{}", err(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_demo_refuses_flags_it_cannot_honour_and_quiet_is_quiet() {
    for flag in [["--store", "mysql://x"], ["--bus", "nats://127.0.0.1:1"]] {
        // Before the verb: accepted by the parser, refused by the demo.
        let o = run(&[flag[0], flag[1], "demo"], &[]);
        assert!(!o.status.success(), "{flag:?}");
        assert!(err(&o).contains("not used"), "{}", err(&o));
        // After it: the demo does not take them at all, and its help does not list them.
        let o = run(&["demo", flag[0], flag[1]], &[]);
        assert_eq!(o.status.code(), Some(2), "{flag:?}");
        assert!(err(&o).contains("unexpected argument"), "{}", err(&o));
        assert!(!out(&run(&["demo", "--help"], &[])).contains(flag[0]));
    }
    for (verb, absent) in [
        ("health", "--store"),
        ("pub", "--store"),
        ("queue", "--bus"),
    ] {
        let help = out(&run(&[verb, "--help"], &[]));
        assert!(!help.contains(absent), "{verb} --help lists no {absent}");
    }
    let o = run(&["demo", "--quiet"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(err(&o), "", "no warnings or panic lines under --quiet");
    let text = out(&o);
    assert!(!text.contains("{\""), "no JSON under --quiet: {text}");
    let runtime = text
        .lines()
        .filter(|l| l.starts_with("runtime: node"))
        .count();
    assert_eq!(runtime, 1, "the runtime line once: {text}");
    // stdout and stderr both closed early: the process ends quietly, no abort.
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert!(
        status.code().is_some_and(|c| c == 0),
        "ended quietly, not by a signal or a panic: {status:?}"
    );
}

#[test]
fn flags_variables_and_the_file_pass_one_validation_that_blames_the_right_source() {
    let (dir, store) = scratch("fh_cfg");
    let cfg = dir.join("herald.toml");
    std::fs::write(&cfg, "[node]\ncheckpoint_every = 5\n").expect("write");
    let cfg = cfg.to_str().expect("path");
    for (flag, value, key) in [
        ("--heartbeat-ms", "0", "node.heartbeat_ms"),
        ("--checkpoint-every", "0", "node.checkpoint_every"),
        ("--poll-ms", "0", "node.poll_ms"),
        ("--id", "", "node.id"),
        ("--id", "bad id", "node.id"),
        ("--group", "bad group", "node.group"),
        ("--sources", "order,order", "node.sources"),
    ] {
        let o = run(
            &[
                "--config",
                cfg,
                "--store",
                &store,
                "node",
                "--sources",
                "order",
                flag,
                value,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(78), "{flag} {value:?}: {}", err(&o));
        assert!(
            err(&o).contains(&format!("`{key}` in flag {flag}")),
            "{flag}: {}",
            err(&o)
        );
    }
    let o = run(
        &["--config", cfg, "config"],
        &[("HERALD_STORE", "mysql://x")],
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(
        err(&o).contains("in environment $HERALD_STORE"),
        "{}",
        err(&o)
    );
    let o = run(&["config"], &[("HERALD_HTTP_ADDR", "bad")]);
    assert!(
        err(&o).contains("`http.addr` in environment $HERALD_HTTP_ADDR"),
        "{}",
        err(&o)
    );
    let o = run(&["config"], &[("HERALD_WORKER_BOGUS", "1")]);
    assert_eq!(o.status.code(), Some(78), "{}", err(&o));
    assert!(err(&o).contains("HERALD_WORKER_BOGUS"), "{}", err(&o));
    let o = run(&["--store", &store, "config", "--json"], &[]);
    assert!(o.status.success(), "{}", err(&o));
    let shown: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(
        shown["store"],
        store.as_str(),
        "config shows the --store it was given"
    );
    let bad_bus = dir.join("bus.toml");
    std::fs::write(&bad_bus, "bus = \"http://x\"\n").expect("write");
    let o = run(&["config", "--check", bad_bus.to_str().expect("path")], &[]);
    assert_eq!(o.status.code(), Some(78), "{}", err(&o));
    assert!(err(&o).contains("`bus`"), "{}", err(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn connection_errors_come_at_once_with_their_cause_once() {
    let port = free_port();
    for args in [
        vec![
            "--store".to_owned(),
            format!("postgres://postgres@127.0.0.1:{port}/test"),
            "queue".to_owned(),
            "ls".to_owned(),
        ],
        vec![
            "--bus".to_owned(),
            format!("nats://127.0.0.1:{port}"),
            "pub".to_owned(),
            "a.b".to_owned(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args, &[]);
        let e = err(&o);
        assert!(!o.status.success());
        assert!(e.contains("cannot connect to"), "{e}");
        assert!(
            !e.contains("pool timed out"),
            "the cause, not a pool timeout: {e}"
        );
        assert!(!e.contains("queue *"), "a connection is not a queue: {e}");
        assert_eq!(
            e.matches("Connection refused").count(),
            1,
            "the cause once: {e}"
        );
    }
}

#[test]
fn numbers_are_checked() {
    let (dir, store) = scratch("fh_num");
    assert!(run(&["--store", &store, "queue", "create", "q"], &[])
        .status
        .success());
    for (args, says) in [
        (
            vec!["queue", "send", "q", "{}", "--delay", "99999999999"],
            "more than a year",
        ),
        (vec!["queue", "consume", "q", "--batch", "0"], "at least 1"),
        (vec!["queue", "read", "q", "--qty", "0"], "at least 1"),
        (vec!["queue", "dlq", "q", "--limit", "0"], "at least 1"),
        (vec!["store", "read", "--max", "0"], "at least 1"),
        (
            vec!["queue", "consume", "q", "--batch", "-1"],
            "must not be negative",
        ),
    ] {
        let mut full = vec!["--store", store.as_str()];
        full.extend(&args);
        let o = run(&full, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    for (args, says) in [
        (vec!["sub", "a.b", "--count", "0"], "at least 1"),
        (
            vec!["streams", "add", "S", "--max-bytes=-7"],
            "the only negative value is -1",
        ),
        (
            vec!["streams", "add", "S", "--max-bytes", "0"],
            "-1 for unlimited",
        ),
    ] {
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    // `store read` says when it stopped at --max with more to read.
    for i in 0..3 {
        let data = format!("{{\"i\": {i}}}");
        assert!(run(
            &["--store", &store, "store", "append", "order-1", &data],
            &[]
        )
        .status
        .success());
    }
    let o = run(
        &["--store", &store, "store", "read", "order-1", "--max", "2"],
        &[],
    );
    assert_eq!(out(&o).lines().count(), 2);
    assert!(err(&o).contains("there is more (--from 2"), "{}", err(&o));
    // consume --until-empty says what it waits for.
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--store", &store, "queue", "send", "q", "{}", "--delay", "3",
        ])
        .output()
        .expect("send");
    assert!(c.status.success(), "{}", err(&c));
    c = run(
        &["--store", &store, "queue", "consume", "q", "--until-empty"],
        &[],
    );
    assert!(c.status.success(), "{}", err(&c));
    assert!(
        err(&c).contains("waiting for 1 hidden"),
        "says it waits: {}",
        err(&c)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stdin_data_a_bom_and_read_only_verbs() {
    let (dir, store) = scratch("fh_stdin");
    assert!(run(&["--store", &store, "queue", "create", "q"], &[])
        .status
        .success());
    let big = format!("\u{feff}{{\"blob\": \"{}\"}}", "x".repeat(300_000));
    let mut send = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--store", &store, "queue", "send", "q", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send -");
    send.stdin
        .take()
        .expect("stdin")
        .write_all(big.as_bytes())
        .expect("write");
    let o = send.wait_with_output().expect("send");
    assert!(o.status.success(), "{}", err(&o));
    let read = run(&["--store", &store, "queue", "read", "q"], &[]);
    let v: serde_json::Value = serde_json::from_str(out(&read).trim()).expect("a line");
    assert_eq!(
        v["message"]["data"]["blob"].as_str().map(str::len),
        Some(300_000)
    );
    // A typo in a read-only verb's store path creates nothing.
    let typo = std::env::temp_dir().join(unique("fh_typo"));
    let url = format!("sqlite://{}", typo.join("dir/x.db").display());
    for args in [
        vec!["queue", "ls"],
        vec!["store", "read"],
        vec!["node", "status"],
    ] {
        let mut full = vec!["--store", url.as_str()];
        full.extend(&args);
        let o = run(&full, &[]);
        assert!(!o.status.success(), "{args:?}");
        assert!(err(&o).contains("no store at"), "{}", err(&o));
    }
    assert!(!typo.exists(), "no directories created");
    // The worker refuses a handler it does not have, naming the ones it has.
    let o = run(
        &[
            "--store",
            &store,
            "worker",
            "--handler",
            "nosuch",
            "--enqueue",
            "1",
            "--until-empty",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("demo.noop"), "{}", err(&o));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_stopped_nats_server_is_unhealthy_and_serve_starts_without_one() {
    let Some(nats) = OwnNatsServer::start("first_hour_sigstop") else {
        return;
    };
    let (dir, store) = scratch("fh_stop");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--store",
            &store,
            "--bus",
            &nats.url(),
            "serve",
            "--http",
            &addr,
            "--nats",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let nats_status = |addr: &str| -> Option<String> {
        let o = run(&["health", "--http", addr], &[]);
        let v: serde_json::Value = serde_json::from_str(out(&o).trim()).ok()?;
        v["components"]["nats"]["status"]
            .as_str()
            .map(str::to_owned)
    };
    let wait_for = |want: &str| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if nats_status(&addr).as_deref() == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(wait_for("healthy"), "healthy first");
    let pid = nats.pid().expect("pid").to_string();
    let stop = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(stop.is_ok_and(|s| s.success()));
    let unhealthy = wait_for("unhealthy");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert!(unhealthy, "a SIGSTOPped server is unhealthy");
    let _ = serve.kill();
    let _ = serve.wait();
    // serve --nats with no server at all starts, degraded.
    let addr2 = format!("127.0.0.1:{}", free_port());
    let down = format!("nats://127.0.0.1:{}", free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--store", &store, "--bus", &down, "serve", "--http", &addr2, "--nats", "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < Duration::from_secs(20) && status.is_none() {
        let o = run(&["health", "--http", &addr2], &[]);
        status = serde_json::from_str::<serde_json::Value>(out(&o).trim())
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(status.as_deref(), Some("degraded"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn node_status_judges_each_node_by_its_own_ttl() {
    let (dir, store) = scratch("fh_ttl");
    assert!(run(
        &["--store", &store, "store", "append", "order-1", "{}"],
        &[]
    )
    .status
    .success());
    // A node with a 100 ms heartbeat: its TTL is 4 heartbeats, 400 ms (the seed's 60 s
    // is for a node that heartbeats every 10 s).
    let mut node = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--store",
            &store,
            "node",
            "--role",
            "full",
            "--sources",
            "order",
            "--id",
            "brief",
            "--heartbeat-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald node");
    let live = |store: &str| -> Option<bool> {
        let o = run(&["--store", store, "node", "status", "--json"], &[]);
        let v: serde_json::Value = serde_json::from_str(out(&o).trim()).ok()?;
        v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"] == "brief")
            .and_then(|n| n["live"].as_bool())
    };
    let started = Instant::now();
    while live(&store) != Some(true) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = node.kill();
    let _ = node.wait();
    let killed = Instant::now();
    while live(&store) != Some(false) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "a killed node shows dead after its own TTL, not the seed's 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // --ttl-ms still overrides it.
    let o = run(
        &[
            "--store", &store, "node", "status", "--json", "--ttl-ms", "3600000",
        ],
        &[],
    );
    assert!(out(&o).contains("\"live\":true"), "{}", out(&o));
    let _ = std::fs::remove_dir_all(dir);
}
