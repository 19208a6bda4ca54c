//! The `herald` binary as a new user runs it: demo, the NATS verbs against a live server,
//! one-line errors with a non-zero exit, and `herald sub` riding out a server restart.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herald_testkit::env::{nats_url, unique};
use herald_testkit::nats_server::OwnNatsServer;

fn herald(args: &[&str], bus: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_BUS", bus)
        .output()
        .expect("run herald")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn demo_runs_on_the_embedded_default_and_prints_a_summary() {
    let out = herald(&["demo", "--quiet"], "nats://127.0.0.1:1");
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("== herald demo summary =="));
    assert!(stdout.contains("handler errors"));
}

#[test]
fn bad_input_is_one_line_on_stderr_and_a_non_zero_exit() {
    let bus = "nats://127.0.0.1:1"; // validation happens before any connection
    for args in [
        &["pub", "a b", "{}"][..],
        &["pub", "a..b"],
        &["pub", "a.b", "[1,2]"],
        &["pub", "a.b", "{oops"],
        &["pub", "a.b", "--priority", "urgent"],
        &["sub", "a.>.b"],
        &["sub", "a?"],
        &["request", "a.b", "--timeout=-1"],
        &["pub", "a.b", "--no-such-flag"],
        &["nonsense"],
        &["bench", "bus", "--scale", "0"],
    ] {
        let out = herald(args, bus);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("herald: "), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_server_fails_within_seconds() {
    let port = herald_testkit::env::free_port();
    let start = std::time::Instant::now();
    let out = herald(&["pub", "a.b", "{}"], &format!("nats://127.0.0.1:{port}"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn pub_and_sub_round_trip_the_envelope() {
    let Some(url) = nats_url("cli_pub_sub") else {
        return;
    };
    let prefix = unique("cli");
    let sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "sub",
            &format!("{prefix}.>"),
            "--count",
            "3",
            "--timeout",
            "10",
            "--bus",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sub");
    std::thread::sleep(Duration::from_millis(500));
    let out = herald(
        &[
            "pub",
            &format!("{prefix}.started"),
            r#"{"round": 1}"#,
            "--source",
            "trivia",
            "--priority",
            "high",
            "--type",
            "begun",
        ],
        &url,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut stdin_pub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["pub", &format!("{prefix}.lines"), "-"])
        .env("HERALD_BUS", &url)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn pub -");
    stdin_pub
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"n\": 1}\n{\"n\": 2}\n")
        .expect("write");
    assert!(stdin_pub.wait().expect("wait").success());
    let out = sub.wait_with_output().expect("sub output");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is an envelope"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["source"], "trivia");
    assert_eq!(lines[0]["priority"], "high");
    assert_eq!(lines[0]["event_type"], "begun");
    assert_eq!(lines[0]["data"]["round"], 1);
    assert_eq!(lines[0].as_object().expect("object").len(), 8);
    assert_eq!(lines[2]["data"]["n"], 2);
}

#[test]
fn request_and_reply_answer_with_the_request_data() {
    let Some(url) = nats_url("cli_request_reply") else {
        return;
    };
    let subject = format!("{}.echo", unique("cli"));
    let mut reply = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["reply", &subject, "--count", "1", "--bus", &url])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reply");
    std::thread::sleep(Duration::from_millis(500));
    let out = herald(&["request", &subject, r#"{"ping": true}"#], &url);
    assert!(out.status.success(), "{}", stderr(&out));
    let response: serde_json::Value = serde_json::from_slice(&out.stdout).expect("envelope");
    assert_eq!(response["data"]["ping"], true);
    assert_eq!(response["event_type"], "response");
    assert!(reply.wait().expect("reply exits").success());
    let out = herald(&["request", &format!("{subject}.nobody"), "{}"], &url);
    assert!(stderr(&out).contains("no responders"), "{}", stderr(&out));
}

#[test]
fn streams_and_js_publish_work_and_a_js_publish_without_a_stream_is_refused() {
    let Some(url) = nats_url("cli_streams") else {
        return;
    };
    let name = unique("CLI").to_uppercase();
    let prefix = name.to_lowercase();
    let out = herald(
        &[
            "streams",
            "add",
            &name,
            "--subjects",
            &format!("{prefix}.>"),
            "--max-age",
            "60",
        ],
        &url,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = herald(
        &["pub", &format!("{prefix}.x"), "{}", "--js", "--count", "2"],
        &url,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let acks: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ack"))
        .collect();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[1]["sequence"], 2);
    let out = herald(&["streams", "info", &name], &url);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info");
    assert_eq!(info["messages"], 2);
    assert!(String::from_utf8_lossy(&herald(&["streams", "ls"], &url).stdout).contains(&name));
    assert!(herald(&["streams", "rm", &name], &url).status.success());
    let out = herald(&["pub", &format!("{prefix}.x"), "{}", "--js"], &url);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no JetStream stream captures"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_running_sub_rides_out_a_server_restart() {
    let Some(mut server) = OwnNatsServer::start("cli_sub_restart") else {
        return;
    };
    let url = server.url();
    let mut sub = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "sub",
            "ride.>",
            "--count",
            "2",
            "--timeout",
            "30",
            "--bus",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let mut errors = sub.stderr.take().expect("stderr");
    // The sub's subscription is live some time after it starts (slower under load): publish
    // until it hears the first event, rather than once after a fixed sleep.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(line) = lines.next() {
            let _ = tx.send((line, lines));
        }
    });
    let mut heard = None;
    for _ in 0..40 {
        assert!(herald(&["pub", "ride.before", "{}"], &url).status.success());
        if let Ok(got) = rx.recv_timeout(Duration::from_millis(1000)) {
            heard = Some(got);
            break;
        }
    }
    let Some((first, mut lines)) = heard else {
        let _ = sub.kill();
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut errors, &mut why);
        panic!("herald sub heard nothing before the restart; its stderr: {why}");
    };
    let first = first.expect("read");
    assert!(first.contains("ride.before"));
    server.stop();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    // The sub reconnects (about 2 s apart) and restores its subscription; publish until it hears.
    let mut delivered = false;
    for _ in 0..40 {
        let _ = herald(&["pub", "ride.after", "{}"], &url);
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(Some(_)) = sub.try_wait() {
            delivered = true;
            break;
        }
    }
    assert!(
        delivered,
        "herald sub did not hear a publish after the restart"
    );
    let second = lines.next().expect("a second line").expect("read");
    assert!(second.contains("ride.after"));
    assert!(sub.wait().expect("exit").success());
}
