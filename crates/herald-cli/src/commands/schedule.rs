//! `herald schedule`: schedules on `--store` (`add`, `ls` with the next five fire times,
//! `rm`, `pause`, `resume`) and `run`, a scheduler that enqueues each tick exactly once
//! beside any others (`herald worker --scheduler` and `herald node --scheduler` run one too).

use clap::{Args, Subcommand};
use herald::schedule::{check_name, Missed, ScheduleError, ScheduleSpec, ScheduleStore};
use herald_schedule::{parse_every, Cadence, Scheduler, SchedulerConfig};
use serde_json::json;

use crate::connect::{open_existing_store, open_store, with_store};
use crate::data::parse_data;
use crate::opts::{ConfigOpt, StoreOpt};
use crate::output::{out, warn_line};
use crate::CliError;

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    #[command(subcommand)]
    pub(crate) command: ScheduleCommand,
}

/// When: `--cron EXPR` or `--every DURATION`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct When {
    /// A cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first;
    /// @hourly, @daily, ... too.
    #[arg(long)]
    cron: Option<String>,
    /// A fixed interval: 500ms, 30s, 5m, 2h, 1d (ticks on its multiples since the epoch).
    #[arg(long)]
    every: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Store a schedule: each tick sends an event (SUBJECT, DATA) to QUEUE.
    Add {
        /// Its name: letters, digits, _, - and . (at most 64).
        name: String,
        #[command(flatten)]
        when: When,
        /// The queue each tick is sent to (created when missing).
        #[arg(long)]
        queue: String,
        /// The event's data, a JSON object (default {}).
        #[arg(long)]
        data: Option<String>,
        /// The event's subject (default herald.schedule.NAME).
        #[arg(long)]
        subject: Option<String>,
        /// The IANA time zone the cron expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// A tick missed while no scheduler ran: skip it, or catch-up (send one at once).
        #[arg(long, default_value = "skip")]
        missed: Missed,
    },
    /// Every schedule: cadence, queue, state, and its next five fire times.
    Ls {
        /// One JSON object per schedule.
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (its ticks already sent stay in their queue).
    Rm {
        /// The schedule.
        name: String,
    },
    /// Pause a schedule: no tick is sent until it is resumed.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Resume a paused schedule (ticks missed meanwhile follow its --missed policy).
    Resume {
        /// The schedule.
        name: String,
    },
    /// Run a scheduler until SIGINT or SIGTERM; any number may run at once.
    Run,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The spec `add` stores, every value checked before the store is opened.
fn spec_of(command: &ScheduleCommand) -> Result<Option<ScheduleSpec>, CliError> {
    let ScheduleCommand::Add {
        name,
        when,
        queue,
        data,
        subject,
        tz,
        missed,
    } = command
    else {
        return Ok(None);
    };
    check_name(name).map_err(usage)?;
    let every_ms = match &when.every {
        Some(e) => {
            Some(u64::try_from(parse_every(e).map_err(usage)?.as_millis()).unwrap_or(u64::MAX))
        }
        None => None,
    };
    let subject = subject
        .clone()
        .unwrap_or_else(|| format!("herald.schedule.{name}"));
    herald::Subject::new(&subject)?;
    herald::queue::QueueName::new(queue)?;
    let spec = ScheduleSpec {
        name: name.clone(),
        cron: when.cron.clone(),
        every_ms,
        tz: tz.clone(),
        queue: queue.clone(),
        subject,
        data: parse_data(data.as_deref(), "schedule add")?,
        missed: *missed,
    };
    Cadence::of(&spec).map_err(usage)?;
    Ok(Some(spec))
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

fn schedule_error(e: ScheduleError) -> CliError {
    CliError::Other(herald::report(&e))
}

pub(crate) async fn run(args: ScheduleArgs, store_url: &str) -> Result<(), CliError> {
    let spec = spec_of(&args.command)?;
    if let ScheduleCommand::Rm { name }
    | ScheduleCommand::Pause { name }
    | ScheduleCommand::Resume { name } = &args.command
    {
        check_name(name).map_err(usage)?;
    }
    let store = match args.command {
        ScheduleCommand::Add { .. } | ScheduleCommand::Run => open_store(store_url).await?,
        _ => open_existing_store(store_url).await?,
    };
    with_store!(store, s => command(&s, args.command, spec).await)
}

async fn command<S: ScheduleStore>(
    store: &S,
    command: ScheduleCommand,
    spec: Option<ScheduleSpec>,
) -> Result<(), CliError> {
    match command {
        ScheduleCommand::Add { .. } => {
            let spec = spec.ok_or_else(|| CliError::Usage("nothing to add".into()))?;
            store
                .add_schedule(&spec, now_ms())
                .await
                .map_err(schedule_error)?;
            warn_line!("schedule {} added: ticks go to {}", spec.name, spec.queue);
        }
        ScheduleCommand::Ls { json } => list(store, json).await?,
        ScheduleCommand::Rm { name } => {
            store.remove_schedule(&name).await.map_err(schedule_error)?;
            warn_line!("schedule {name} removed");
        }
        ScheduleCommand::Pause { name } => {
            store
                .pause_schedule(&name, true)
                .await
                .map_err(schedule_error)?;
            warn_line!("schedule {name} paused");
        }
        ScheduleCommand::Resume { name } => {
            store
                .pause_schedule(&name, false)
                .await
                .map_err(schedule_error)?;
            warn_line!("schedule {name} resumed");
        }
        ScheduleCommand::Run => {
            let scheduler = Scheduler::new(store.clone(), SchedulerConfig::default());
            warn_line!("herald schedule run: firing the store's schedules until SIGINT or SIGTERM");
            let signal = crate::signal::terminated();
            let report = scheduler
                .run(async move {
                    signal.await;
                })
                .await;
            warn_line!(
                "scheduler stopped: {} fired, {} skipped, {} taken by another scheduler, {} error(s)",
                report.fired,
                report.skipped,
                report.taken_elsewhere,
                report.errors
            );
        }
    }
    Ok(())
}

/// Runs a scheduler of `store` until `stop` is triggered (`herald worker --scheduler`,
/// `herald node --scheduler`).
pub(crate) fn spawn_scheduler<S: ScheduleStore>(store: S, stop: &herald::Shutdown) {
    let scheduler = Scheduler::new(store, SchedulerConfig::default());
    let until = stop.cancelled_owned();
    stop.spawn(async move {
        let report = scheduler.run(until).await;
        tracing::info!(
            fired = report.fired,
            skipped = report.skipped,
            taken_elsewhere = report.taken_elsewhere,
            errors = report.errors,
            "scheduler stopped"
        );
    });
}

fn rfc3339(ms: i64) -> String {
    herald::Timestamp::from_unix_ms(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn list<S: ScheduleStore>(store: &S, json: bool) -> Result<(), CliError> {
    let now = now_ms();
    for s in store.schedules().await.map_err(schedule_error)? {
        let spec = &s.spec;
        let cadence = spec
            .cron
            .clone()
            .unwrap_or_else(|| format!("every {}ms", spec.every_ms.unwrap_or(0)));
        let next: Vec<String> = match Cadence::of(spec) {
            Ok(c) => c
                .upcoming(now.max(s.last_tick_ms), 5)
                .into_iter()
                .map(rfc3339)
                .collect(),
            Err(e) => vec![format!("unreadable: {e}")],
        };
        if json {
            out!(
                "{}",
                json!({
                    "name": spec.name, "cron": spec.cron, "every_ms": spec.every_ms, "tz": spec.tz,
                    "queue": spec.queue, "subject": spec.subject, "missed": spec.missed,
                    "paused": s.paused, "last_tick": rfc3339(s.last_tick_ms), "next": next,
                })
            );
        } else {
            let state = if s.paused { "paused" } else { "active" };
            out!(
                "{}  {} ({})  -> {}  {state}  last {}",
                spec.name,
                cadence,
                spec.tz,
                spec.queue,
                rfc3339(s.last_tick_ms)
            );
            for n in next {
                out!("    next {n}");
            }
        }
    }
    Ok(())
}
