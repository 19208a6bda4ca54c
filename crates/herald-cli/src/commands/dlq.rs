//! `herald dlq`: the dead-letter places of `--store` (`ls`, `show`): queues' `{queue}_dlq` and
//! runtime consumers' `deadletter-{consumer}.{source}` streams; and `replay` / `abandon` of
//! their letters, each letter in one transaction with its audit event on `herald-audit`.

use clap::{Args, Subcommand};
use herald::dlq::{self, Operator, Report, Selection, DEFAULT_MAX_REPLAYS};
use herald::queue::QueueName;
use serde_json::json;

use crate::connect::{open_existing_store, with_store};
use crate::opts::{ConfigOpt, StoreOpt};
use crate::output::{out, warn_line};
use crate::CliError;

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    #[command(subcommand)]
    pub(crate) command: DlqCommand,
}

/// Which letters: `--id ID...` or `--all`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Which {
    /// A letter's id (as `herald dlq show` lists it); repeat for more.
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Every letter of the place, in batches of 500, one transaction each.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else {
            Selection::Ids(self.ids.clone())
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Every dead-letter place ({queue}_dlq) with its count and its oldest letter's age.
    Ls {
        /// One JSON object per place.
        #[arg(long)]
        json: bool,
    },
    /// A place's letters: id, reason, attempts, replays, when it died, the original body.
    Show {
        /// The place, as `herald dlq ls` lists it (orders_dlq).
        place: String,
        /// Letters shown at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per letter.
        #[arg(long)]
        json: bool,
    },
    /// Send letters back to the queue they died on, with their original body; a letter
    /// replayed --max-replays times already is refused unless --force.
    Replay {
        /// The place (orders_dlq).
        place: String,
        #[command(flatten)]
        which: Which,
        /// Replays allowed per letter before one must be forced (at least 1).
        #[arg(long, default_value_t = DEFAULT_MAX_REPLAYS)]
        max_replays: u32,
        /// Replay letters past --max-replays too.
        #[arg(long)]
        force: bool,
        /// Who replays, for the audit event (default: $USER).
        #[arg(long)]
        who: Option<String>,
        /// Why, for the audit event.
        #[arg(long)]
        reason: Option<String>,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Give letters up: archived out of the place, recorded with your reason.
    Abandon {
        /// The place (orders_dlq).
        place: String,
        #[command(flatten)]
        which: Which,
        /// Why (required: it goes into the audit event).
        #[arg(long)]
        reason: String,
        /// Who abandons, for the audit event (default: $USER).
        #[arg(long)]
        who: Option<String>,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn operator(who: Option<String>, why: Option<String>) -> Operator {
    let mut op = Operator::current(why);
    if let Some(who) = who {
        op.who = who;
    }
    op
}

/// A place of either kind: a queue's `{queue}_dlq`, or a runtime consumer's
/// `deadletter-{consumer}.{source}` stream.
#[derive(Debug, Clone)]
enum PlaceName {
    Queue(QueueName),
    Stream(herald::store::StreamName),
}

impl std::fmt::Display for PlaceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaceName::Queue(q) => q.fmt(f),
            PlaceName::Stream(s) => s.fmt(f),
        }
    }
}

fn place_of(command: &DlqCommand) -> Result<Option<PlaceName>, CliError> {
    let name = match command {
        DlqCommand::Ls { .. } => return Ok(None),
        DlqCommand::Show { place, .. }
        | DlqCommand::Replay { place, .. }
        | DlqCommand::Abandon { place, .. } => place,
    };
    let place = if dlq::stream::is_place(name) {
        dlq::stream::place(name).map(PlaceName::Stream)
    } else {
        dlq::place(name).map(PlaceName::Queue)
    };
    place.map(Some).map_err(|e| CliError::Usage(e.to_string()))
}

pub(crate) async fn run(args: DlqArgs, store_url: &str) -> Result<(), CliError> {
    // What can be refused is refused before the store is opened.
    let place = place_of(&args.command)?;
    match &args.command {
        DlqCommand::Replay { max_replays: 0, .. } => {
            return Err(CliError::Usage(dlq::DlqError::ZeroMaxReplays.to_string()))
        }
        DlqCommand::Abandon { reason, .. } if reason.trim().is_empty() => {
            return Err(CliError::Usage(
                "--reason must say why the letters are abandoned".into(),
            ))
        }
        _ => {}
    }
    let store = open_existing_store(store_url).await?;
    with_store!(store, s => command(&s, args.command, place).await)
}

async fn command<S: crate::connect::CliStore>(
    store: &S,
    command: DlqCommand,
    place: Option<PlaceName>,
) -> Result<(), CliError> {
    let place = || {
        place
            .clone()
            .ok_or_else(|| CliError::Usage("a place is needed".into()))
    };
    match command {
        DlqCommand::Ls { json } => {
            let mut places = store.places().await.map_err(dlq_error)?;
            places.extend(dlq::stream::places(store).await.map_err(dlq_error)?);
            if json {
                for p in &places {
                    out!("{}", json!(p));
                }
            } else {
                out!(
                    "{:<40} {:<36} {:>8} {:>12}",
                    "PLACE",
                    "ORIGIN",
                    "LETTERS",
                    "OLDEST"
                );
                for p in &places {
                    let oldest = p.oldest_age_ms.map_or("-".into(), age);
                    out!(
                        "{:<40} {:<36} {:>8} {:>12}",
                        p.name,
                        p.origin,
                        p.count,
                        oldest
                    );
                }
            }
        }
        DlqCommand::Show { limit, json, .. } => {
            let place = place()?;
            let letters = match &place {
                PlaceName::Queue(q) => store.letters(q, 0, limit).await,
                PlaceName::Stream(s) => dlq::stream::letters(store, s, limit).await,
            }
            .map_err(dlq_error)?;
            for l in &letters {
                if json {
                    out!("{}", json!(l));
                } else {
                    out!(
                        "{}  {}  attempts={} replays={} died_at={} -> {}\n    {}",
                        l.id,
                        l.reason,
                        l.attempts,
                        l.replays,
                        l.died_at,
                        l.origin,
                        String::from_utf8_lossy(&l.body)
                    );
                }
            }
            if !json {
                warn_line!("{} letter(s) shown from {place}", letters.len());
            }
        }
        DlqCommand::Replay {
            which,
            max_replays,
            force,
            who,
            reason,
            json,
            ..
        } => {
            let place = place()?;
            let op = operator(who, reason);
            let report = match &place {
                PlaceName::Queue(q) => {
                    dlq::replay(store, q, which.selection(), max_replays, force, &op).await
                }
                PlaceName::Stream(s) => {
                    dlq::stream::replay(store, s, which.selection(), max_replays, force, &op).await
                }
            }
            .map_err(dlq_error)?;
            return finish(&place, "replayed", &report, json);
        }
        DlqCommand::Abandon {
            which,
            reason,
            who,
            json,
            ..
        } => {
            let place = place()?;
            let op = operator(who, Some(reason));
            let report = match &place {
                PlaceName::Queue(q) => dlq::abandon(store, q, which.selection(), &op).await,
                PlaceName::Stream(s) => {
                    dlq::stream::abandon(store, s, which.selection(), &op).await
                }
            }
            .map_err(dlq_error)?;
            return finish(&place, "abandoned", &report, json);
        }
    }
    Ok(())
}

/// Prints what was done; refused letters make the exit non-zero, each named with its reason.
fn finish(place: &PlaceName, verb: &str, report: &Report, json: bool) -> Result<(), CliError> {
    if json {
        out!("{}", json!(report));
    }
    warn_line!("{verb} {} letter(s) of {place}", report.done.len());
    if report.refused.is_empty() {
        return Ok(());
    }
    for r in &report.refused {
        warn_line!("letter {} refused: {}", r.id, r.reason);
    }
    Err(CliError::Other(format!(
        "{} letter(s) of {place} refused and left where they were",
        report.refused.len()
    )))
}

fn dlq_error(e: dlq::DlqError) -> CliError {
    CliError::Other(herald::report(&e))
}

fn age(ms: u64) -> String {
    match ms / 1000 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
