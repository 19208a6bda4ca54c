//! `herald chaos --scenario inbox-kill`: envelopes published to a stream of a NATS server of
//! its own, taken into the store by `herald inbox` processes SIGKILLed while they work; the
//! store must hold each message once (id sets).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::store::EventStore;
use herald::{Event, Subject};
use herald_nats::StreamSpec;
use herald_testkit::DeliveryCheck;

use super::chaos_relay::{
    connect, drop_stream, kill9, log_ids, nats_server, on_store, other, Names, PREFIX,
};
use crate::output::out;
use crate::CliError;

/// `inbox-kill`: `n` envelopes published to a stream, taken into the store by `herald inbox`
/// processes SIGKILLed `kills` times, then a last one until idle: the store must hold each
/// once.
pub(crate) async fn inbox_kill(store: Option<String>, n: u64, kills: u32) -> Result<(), CliError> {
    on_store!(store, "inbox-kill", |s, url| inbox_kill_on(
        s, url, n, kills
    )
    .await)
}

fn spawn_inbox(
    names: &Names,
    store: &str,
    nats: &str,
    until_idle: bool,
) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(other)?;
    let mut c = Command::new(exe);
    c.args([
        "inbox",
        "--store",
        store,
        "--bus",
        nats,
        "--from",
        &names.stream,
    ])
    .args(["--consumer", "chaos-inbox", "--ack-wait", "2"]);
    if until_idle {
        c.arg("--until-idle");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(other)
}

async fn inbox_kill_on<S: EventStore>(
    store: S,
    url: &str,
    n: u64,
    kills: u32,
) -> Result<(), CliError> {
    let names = Names::new();
    let server = nats_server()?;
    let nats = connect(&server.url()).await?;
    let js = nats.jetstream();
    drop_stream(&names, &js).await;
    js.ensure_stream(&StreamSpec::new(&names.stream, [format!("{PREFIX}.>")]))
        .await
        .map_err(|e| other(herald::report(&e)))?;
    let began = Instant::now();
    let mut ids = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let id = format!("r{i}");
        let subject = Subject::new(&format!("{PREFIX}.{}.{}", names.category, i % 16))?;
        let event = Event::new(subject).with_metadata(herald::EVENT_ID, id.as_str());
        let ack = js
            .publish_async(&event)
            .await
            .map_err(|e| other(herald::report(&e)))?;
        pending.push_back(ack);
        if pending.len() >= 256 {
            if let Some(p) = pending.pop_front() {
                p.ack().await.map_err(|e| other(herald::report(&e)))?;
            }
        }
        ids.push(id);
    }
    while let Some(p) = pending.pop_front() {
        p.ack().await.map_err(|e| other(herald::report(&e)))?;
    }
    let published = Instant::now();
    let mut mid_way = 0;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let per_kill = (n / 4000).clamp(1, 8);
    for _ in 0..kills {
        let mut child = spawn_inbox(&names, url, &server.url(), false)?;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(300 * per_kill + x % 400)).await;
        if child.try_wait().map_err(other)?.is_none() {
            mid_way += 1;
        }
        kill9(child);
    }
    let status = tokio::task::block_in_place(|| {
        spawn_inbox(&names, url, &server.url(), true).and_then(|mut c| c.wait().map_err(other))
    })?;
    if !status.success() {
        return Err(other(format!(
            "inbox-kill: the last inbox exited with {status}"
        )));
    }
    let got: Vec<String> = log_ids(&store, &names.category)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let in_store = got.len();
    let check = DeliveryCheck::compare(ids, got);
    let duplicates: usize = check.duplicated.values().map(|c| c - 1).sum();
    let (missing, unexpected) = (check.missing.len(), check.unexpected.len());
    out!(
        "chaos inbox-kill messages={n} kills={kills} kills_while_running={mid_way} in_store={in_store} missing={missing} duplicates={duplicates} unexpected={unexpected} seconds={:.1} take_in_seconds={:.1} store={}",
        began.elapsed().as_secs_f64(),
        published.elapsed().as_secs_f64(),
        url.split(':').next().unwrap_or("?"),
    );
    drop_stream(&names, &js).await;
    if missing + duplicates + unexpected > 0 {
        return Err(other(format!(
            "inbox-kill: {missing} missing, {duplicates} duplicates, {unexpected} unexpected"
        )));
    }
    Ok(())
}
