//! `herald demo`: the seed 002 scenario on the in-process bus (trivia, stats, quote and search
//! plugins, a failing handler isolated, a plugin reloaded), then the worker part
//! (`worker.rs`) on the embedded SQLite store, the processing runtime (`runtime.rs`) and the
//! operating part (`operate.rs`: a schedule firing, a dead letter replayed), with progress and
//! a summary.

mod operate;
mod runtime;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use herald::plugin::{Plugin, PluginContext, PluginManager};
use herald::{handler_fn, sync_handler, BoxError, Bus, Event, Priority, Subject};
use parking_lot::Mutex;
use serde_json::json;

use crate::cli::DemoArgs;
use crate::output::out;
use crate::CliError;

/// Counts trivia activity per event type and per player.
struct Stats {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Plugin for Stats {
    fn name(&self) -> &str {
        "stats"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let counts = self.counts.clone();
        ctx.subscribe_with_priority(
            "trivia.*",
            Priority::High,
            sync_handler(move |e: &Event| {
                let mut c = counts.lock();
                *c.entry(format!("trivia.{}", e.event_type)).or_default() += 1;
                if let Some(player) = e.data.get("player").and_then(|p| p.as_str()) {
                    *c.entry(format!("player.{player}")).or_default() += 1;
                }
            }),
        )?;
        Ok(())
    }
}

/// Turns `!quote` chat messages into `quote.added` events.
struct Quotes;

impl Plugin for Quotes {
    fn name(&self) -> &str {
        "quote"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let c = ctx.clone();
        ctx.subscribe(
            "chat.message",
            handler_fn(move |e: Arc<Event>| {
                let c = c.clone();
                async move {
                    let text = e
                        .data
                        .get("text")
                        .and_then(|t| t.as_str())
                        .unwrap_or_default();
                    if let Some(quote) = text.strip_prefix("!quote ") {
                        let event = c.event(
                            "quote.added",
                            json!({"text": quote, "by": e.data.get("user")}),
                        )?;
                        c.publish(event).await?;
                    }
                    Ok::<(), BoxError>(())
                }
            }),
        )?;
        Ok(())
    }
}

/// Indexes quotes by word and answers `search.query` with `search.result`.
struct Search {
    index: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
}

impl Plugin for Search {
    fn name(&self) -> &str {
        "search"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let index = self.index.clone();
        ctx.subscribe(
            "quote.added",
            sync_handler(move |e: &Event| {
                let text = e
                    .data
                    .get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default();
                let mut idx = index.lock();
                for word in text.split_whitespace() {
                    let word = word
                        .trim_matches(|c: char| !c.is_alphanumeric())
                        .to_lowercase();
                    if !word.is_empty() {
                        idx.entry(word).or_default().insert(text.to_owned());
                    }
                }
            }),
        )?;
        let (index, c) = (self.index.clone(), ctx.clone());
        ctx.subscribe(
            "search.query",
            sync_handler(move |e: &Event| -> Result<(), BoxError> {
                let word = e
                    .data
                    .get("q")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_lowercase();
                let hits: Vec<String> = index
                    .lock()
                    .get(&word)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                c.emit(c.event("search.result", json!({"q": word, "hits": hits}))?)?;
                Ok(())
            }),
        )?;
        Ok(())
    }
}

/// A handler with a bug: it errors on some answers and panics on others. Isolated.
struct Flaky;

impl Plugin for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.subscribe(
            "trivia.answered",
            sync_handler(|e: &Event| -> Result<(), BoxError> {
                match e.data.get("answer").and_then(|a| a.as_str()) {
                    Some("42") => panic!(
                        "flaky plugin cannot handle the answer 42 (a deliberate panic: the bus isolates it)"
                    ),
                    Some("") => Err("flaky plugin: empty answer".into()),
                    _ => Ok(()),
                }
            }),
        )?;
        Ok(())
    }
}

/// A directory of the demo part's own under the temp dir, and the SQLite URL in it.
pub(crate) fn scratch(part: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "herald-demo-{part}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let url = format!("sqlite://{}", dir.join("herald.db").display());
    (dir, url)
}

fn event(subject: &str, source: &str, data: serde_json::Value) -> Result<Event, CliError> {
    Ok(Event::try_new(subject, data)?.with_source(source))
}

/// What the bus part of the demo sets up and its steps read: the bus, its plugins, what the
/// monitor saw, and the plugins' state the summary prints.
struct Scene {
    bus: Bus,
    plugins: PluginManager,
    progress: Arc<Mutex<Vec<String>>>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    index: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    _monitor: herald::Subscription,
}

/// A line of progress, unless `--quiet`.
type Say<'a> = &'a dyn Fn(String) -> Result<(), CliError>;

pub(crate) async fn run(args: DemoArgs, global: &crate::cli::Global) -> Result<(), CliError> {
    if global.store.is_some() || global.bus.is_some() {
        return Err(CliError::Usage(
            "herald demo runs on an embedded SQLite store of its own and the in-process bus: --store and --bus are not used (run `herald worker --store URL` or `herald pub --bus URL` against yours)".into(),
        ));
    }
    if args.quiet {
        // Its panics are deliberate, isolated and counted in the summary.
        crate::output::quiet_panics();
    }
    let quiet = args.quiet;
    let say = move |line: String| -> Result<(), CliError> {
        if !quiet {
            crate::output::print_line(&line)?;
        }
        Ok(())
    };
    let scene = set_up(&say)?;
    let failures = play_trivia(&scene, args.rounds, &say).await?;
    chat_and_runaway(&scene, &say).await?;
    emit_backlog(&scene, &say).await?;
    let worker = worker::run(&scene.bus, &say).await?;
    let mut processing = runtime::run(&say).await?;
    // The operating part (a schedule, a dead letter replayed) closes the durable story.
    let operating = operate::run(&say).await?;
    processing.lines.extend(operating.lines);
    processing.ok &= operating.ok;
    summary(&scene, failures, &worker, &processing, args.quiet)?;
    check(scene, &worker, &processing).await
}

/// The bus with a monitor that sees everything, last, and the four plugins loaded.
fn set_up(say: Say<'_>) -> Result<Scene, CliError> {
    let bus = Bus::builder().history(100).build();
    let progress = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = progress.clone();
    let monitor = bus.subscribe_with(
        ">",
        herald::SubscribeOptions::owner("monitor").priority(Priority::Low),
        sync_handler(move |e: &Event| {
            p.lock().push(format!(
                "  [{}] {} from {}",
                e.priority, e.subject, e.source
            ))
        }),
    )?;
    let plugins = PluginManager::new(bus.clone());
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let index = Arc::new(Mutex::new(BTreeMap::new()));
    plugins.load(Stats {
        counts: counts.clone(),
    })?;
    plugins.load(Quotes)?;
    plugins.load(Search {
        index: index.clone(),
    })?;
    plugins.load(Flaky)?;
    say(format!("loaded plugins: {}", plugins.loaded().join(", ")))?;
    Ok(Scene {
        bus,
        plugins,
        progress,
        counts,
        index,
        _monitor: monitor,
    })
}

/// The trivia rounds: the failures the publisher saw (isolated), the stats plugin reloaded
/// after round 2.
async fn play_trivia(scene: &Scene, rounds: u32, say: Say<'_>) -> Result<usize, CliError> {
    let trivia = PluginContext::new(scene.bus.clone(), "trivia");
    let players = ["ada", "grace", "linus"];
    let answers = ["paris", "42", "", "blue", "7"];
    let mut failures = 0usize;
    for round in 1..=rounds {
        say(format!("round {round}: trivia.started"))?;
        trivia
            .publish(event("trivia.started", "trivia", json!({"round": round}))?)
            .await?;
        for (i, player) in players.iter().enumerate() {
            let answer = answers[(round as usize + i) % answers.len()];
            let report = trivia
                .publish(event(
                    "trivia.answered",
                    "trivia",
                    json!({"round": round, "player": player, "answer": answer}),
                )?)
                .await?;
            for f in &report.failures {
                failures += 1;
                say(format!("  isolated failure in {}: {}", f.owner, f.failure))?;
            }
        }
        trivia
            .publish(event("trivia.ended", "trivia", json!({"round": round}))?)
            .await?;
        for line in scene.progress.lock().drain(..) {
            say(line)?;
        }
        if round == 2 {
            scene.plugins.reload("stats")?;
            say(
                "reloaded plugin stats (its counts go on; it hears each later event once)"
                    .to_owned(),
            )?;
        }
    }
    Ok(failures)
}

/// Chat lines for the quote plugin, then a runaway handler that answers every ping with
/// another ping: the dispatch depth limit stops the chain at 16 and the publisher of the
/// 17th gets an error; the process lives.
async fn chat_and_runaway(scene: &Scene, say: Say<'_>) -> Result<(), CliError> {
    let bus = &scene.bus;
    let chat = [
        ("ada", "!quote simplicity is prerequisite for reliability"),
        ("grace", "hello all"),
        ("linus", "!quote talk is cheap, show me the code"),
        (
            "grace",
            "!quote the most dangerous phrase is we have always done it this way",
        ),
    ];
    for (user, text) in chat {
        bus.publish(event(
            "chat.message",
            "chat",
            json!({"user": user, "text": text}),
        )?)
        .await?;
    }
    let (b, pings) = (bus.clone(), Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let p = pings.clone();
    let runaway = bus.subscribe_with(
        "loop.ping",
        herald::SubscribeOptions::owner("runaway"),
        handler_fn(move |e: Arc<Event>| {
            let (b, p) = (b.clone(), p.clone());
            async move {
                p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                b.publish((*e).clone()).await.map(drop)
            }
        }),
    )?;
    bus.publish(event("loop.ping", "demo", json!({}))?).await?;
    drop(runaway);
    say(format!(
        "runaway loop stopped after {} nested publishes (depth limit 16)",
        pings.load(std::sync::atomic::Ordering::Relaxed)
    ))?;
    scene.progress.lock().clear();
    Ok(())
}

/// The fire-and-forget path: a backlog drains critical first.
async fn emit_backlog(scene: &Scene, say: Say<'_>) -> Result<(), CliError> {
    for (q, prio) in [
        ("code", Priority::Low),
        ("cheap", Priority::Critical),
        ("way", Priority::Normal),
    ] {
        scene
            .bus
            .emit(event("search.query", "demo", json!({"q": q}))?.with_priority(prio))
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    scene.bus.flush().await;
    for line in scene.progress.lock().drain(..) {
        say(line)?;
    }
    Ok(())
}

/// The summary on stdout (with `--quiet`, without the JSON and the history).
fn summary(
    scene: &Scene,
    failures: usize,
    worker: &worker::WorkerSummary,
    processing: &worker::WorkerSummary,
    quiet: bool,
) -> Result<(), CliError> {
    let bus = &scene.bus;
    let stats = bus.stats();
    let results: Vec<String> = bus
        .history_matching("search.result", None)?
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{}={}",
                e.data["q"].as_str().unwrap_or_default(),
                e.data["hits"].as_array().map_or(0, Vec::len)
            )
        })
        .collect();
    out!("== herald demo summary ==");
    out!(
        "events published {}, handler calls {}, handler errors {} (panics {}; all isolated; {} seen by the trivia publisher)",
        stats.events_published, stats.events_dispatched, stats.handler_errors, stats.handler_panics, failures
    );
    out!(
        "emitted {}, emit refused {}, publishes refused {} (depth limit {}, stopped bus {})",
        stats.emitted,
        stats.emit_rejected,
        stats.refused_stopped + stats.refused_depth,
        stats.refused_depth,
        stats.refused_stopped
    );
    out!(
        "plugins loaded: {}; subscriptions: {}",
        scene.plugins.loaded().join(", "),
        stats.subscriptions
    );
    out!(
        "stats plugin: {}",
        scene
            .counts
            .lock()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    out!(
        "search index: {} words; search results in drain order: {}",
        scene.index.lock().len(),
        results.join(" ")
    );
    for line in worker.lines.iter().chain(&processing.lines) {
        out!("{line}");
    }
    if !quiet {
        for line in &worker.detail {
            out!("{line}");
        }
        out!("history (newest first, last 5):");
        for e in bus.history(Some(5)) {
            out!(
                "  {} {} {}",
                e.timestamp,
                e.subject,
                serde_json::Value::Object(e.data.clone())
            );
        }
    }
    Ok(())
}

/// Stops the bus and unloads the plugins, then fails the demo if a part did not show what it
/// is there to show.
async fn check(
    scene: Scene,
    worker: &worker::WorkerSummary,
    processing: &worker::WorkerSummary,
) -> Result<(), CliError> {
    let stats = scene.bus.stats();
    scene.bus.stop().await;
    scene.plugins.unload_all();
    let expected_subject = Subject::new("trivia.answered")?;
    let heard = scene
        .bus
        .history(None)
        .iter()
        .filter(|e| e.subject == expected_subject)
        .count();
    if stats.handler_errors == 0 || heard == 0 || stats.refused_depth != 1 {
        return Err(CliError::Other(
            "demo did not exercise isolation as expected".into(),
        ));
    }
    if !processing.ok {
        return Err(CliError::Other(
            "demo's runtime did not process, checkpoint and dead-letter, or its schedule and replay did not run, as expected".into(),
        ));
    }
    if !worker.ok {
        return Err(CliError::Other(
            "demo's worker did not store one result per step as expected".into(),
        ));
    }
    Ok(())
}
