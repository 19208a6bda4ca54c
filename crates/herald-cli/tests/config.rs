//! The config as a user meets it: each bad file is one line naming the key path and the file
//! with exit code 78; secrets planted in the file and the environment appear in no output of
//! `herald config`, `/config`, or the trace-level logs of a running `herald serve`.

use std::process::{Command, Output, Stdio};

use herald_testkit::env::{free_port, unique};
use herald_testkit::http::get;

fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args(args)
        .env_remove("HERALD_STORE")
        .env_remove("HERALD_BUS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run herald")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn each_bad_file_is_one_line_naming_the_key_and_the_file_with_exit_78() {
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        ("unknown.toml", "[worker]\nbogus = 1\n", "worker.bogus"),
        (
            "type.toml",
            "[worker]\npolling_interval_ms = \"fast\"\n",
            "worker.polling_interval_ms",
        ),
        (
            "zero.toml",
            "[worker]\nmax_concurrent_handlers = 0\n",
            "worker.max_concurrent_handlers",
        ),
        (
            "negative.toml",
            "[worker]\nhandler_timeout_ms = -5\n",
            "worker.handler_timeout_ms",
        ),
        (
            "zero_size.toml",
            "[worker]\ndispatch_buffer_size = 0\n",
            "worker.dispatch_buffer_size",
        ),
        ("top.toml", "colour = \"blue\"\n", "colour"),
    ];
    for (name, body, key) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write");
        let p = path.display().to_string();
        for args in [
            vec!["config", "--check", &p],
            vec!["--config", &p, "worker", "--until-empty"],
        ] {
            let out = herald(&args, &[]);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{name} {args:?}: {}",
                text(&out.stderr)
            );
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(&format!("`{key}`")), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
    }
    let out = herald(&["config"], &[("HERALD_WORKER_HANDLER_TIMEOUT_MS", "0")]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("HERALD_WORKER_HANDLER_TIMEOUT_MS"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn planted_secrets_appear_in_no_output() {
    let dir = std::env::temp_dir().join(unique("secret"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("herald.toml");
    let store = format!("sqlite://{}", dir.join("h.db").display());
    std::fs::write(
        &file,
        "store = \"postgres://app:STORE-SECRET-3@127.0.0.1:1/db\"\nbus = \"nats://agent:FILE-SECRET-7@127.0.0.1:4222\"\n[worker]\nnamespace = \"sec\"\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let env = [
        ("HERALD_BUS", "nats://agent:ENV-SECRET-9@127.0.0.1:4222"),
        ("HERALD_LOG", "trace"),
    ];
    let mut seen = String::new();
    for args in [
        vec!["--config", &f, "config"],
        vec!["--config", &f, "config", "--json"],
    ] {
        let out = herald(&args, &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        seen.push_str(&text(&out.stdout));
        seen.push_str(&text(&out.stderr));
    }
    assert!(
        seen.contains("agent:***@"),
        "the bus is shown, redacted: {seen}"
    );
    assert!(
        seen.contains("app:***@"),
        "the store is shown, redacted: {seen}"
    );
    // A worker whose handler panics (the panic hook prints each panic), at trace level.
    let out = herald(
        &[
            "--config",
            &f,
            "--store",
            &store,
            "worker",
            "--enqueue",
            "1",
            "--handler",
            "demo.panic",
            "--until-empty",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&out.stderr);
    assert!(
        logs.contains("demo.panic always panics"),
        "the panic was printed: {logs}"
    );
    seen.push_str(&logs);
    // A running server with a store URL holding a password-like part, at trace level.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--config",
            &f,
            "--store",
            &store,
            "serve",
            "--http",
            &addr,
            "--enqueue",
            "5",
        ])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    seen.push_str(&get(&addr, "/config"));
    seen.push_str(&get(&addr, "/health"));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    seen.push_str(&text(&out.stdout));
    seen.push_str(&text(&out.stderr));
    for secret in ["FILE-SECRET-7", "ENV-SECRET-9", "STORE-SECRET-3"] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_verbose_says_where_each_value_came_from() {
    let dir = std::env::temp_dir().join(unique("verbose"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("herald.toml");
    std::fs::write(&file, "[worker]\nhandler_timeout_ms = 1234\n").expect("write");
    let store = format!("sqlite://{}", dir.join("h.db").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let f = file.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--config",
            &f,
            "--store",
            &store,
            "serve",
            "--http",
            &addr,
            "--namespace",
            "vv",
            "--quiet",
        ])
        .env("HERALD_WORKER_ENVIRONMENT", "staging")
        .env_remove("HERALD_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let body = get(&addr, "/config?verbose");
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let source = |k: &str| v[k]["source"].as_str().unwrap_or("?").to_owned();
    assert_eq!(v["worker.handler_timeout_ms"]["value"], 1234);
    assert!(
        source("worker.handler_timeout_ms").starts_with("file "),
        "{v}"
    );
    assert_eq!(
        source("worker.environment"),
        "environment $HERALD_WORKER_ENVIRONMENT"
    );
    assert_eq!(source("worker.namespace"), "flag --namespace");
    assert_eq!(source("http.addr"), "flag --http");
    assert_eq!(source("worker.polling_interval_ms"), "default");
    let _ = std::fs::remove_dir_all(dir);
}
