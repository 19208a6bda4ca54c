//! `herald store`: the event store verbs on `--store` (append with a write condition, read a
//! stream, a category or the log, ls). Names and data are validated before the store opens.

use clap::{Args, Subcommand};
use herald::store::{EventStore, StoredEvent, StreamName, WriteCondition};
use herald::{Event, Subject};
use serde_json::{json, Value};

use crate::connect::{open_existing_store, open_store, with_store};
use crate::data::parse_data;
use crate::opts::{at_least_one_usize, position, ConfigOpt, StoreOpt};
use crate::output::out;
use crate::CliError;

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    pub(crate) store: StoreOpt,
    #[command(flatten)]
    pub(crate) config: ConfigOpt,
    #[command(subcommand)]
    pub(crate) command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Append an event (DATA is a JSON object) to STREAM (category-id); prints its positions.
    Append {
        /// The stream, e.g. order-42.
        stream: String,
        /// The event's data.
        data: Option<String>,
        /// The event type (its subject is `CATEGORY.TYPE`).
        #[arg(long = "type", default_value = "appended")]
        event_type: String,
        /// Only if the stream's last position is this.
        #[arg(long, conflicts_with = "no_stream")]
        expected: Option<i64>,
        /// Only if the stream has no event yet.
        #[arg(long)]
        no_stream: bool,
    },
    /// Read a stream (STREAM), a category (--category), or the whole log (neither), one JSON
    /// line per event.
    Read {
        /// The stream.
        stream: Option<String>,
        /// A category instead.
        #[arg(long, conflicts_with = "stream")]
        category: Option<String>,
        /// From this position (stream) or global position (category, log).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = position)]
        from: i64,
        /// At most this many (stderr says when there are more).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = at_least_one_usize)]
        max: usize,
    },
    /// List streams and their last positions.
    Ls,
}

fn line(e: &StoredEvent) -> Value {
    let event = serde_json::from_slice::<Value>(&e.body).unwrap_or(Value::Null);
    json!({
        "global_position": e.global_position,
        "stream": e.stream,
        "position": e.position,
        "recorded_at": e.recorded_at.to_string(),
        "event": event,
    })
}

pub(crate) async fn run(args: StoreArgs, store_url: &str) -> Result<(), CliError> {
    // Everything checkable is checked before the store is opened.
    let append = match &args.command {
        StoreCommand::Append {
            stream,
            data,
            event_type,
            expected,
            no_stream,
        } => {
            let name = StreamName::new(stream)?;
            let subject = Subject::new(&format!("{}.{event_type}", name.category()))?;
            let data = parse_data(data.as_deref(), "store append")?;
            let condition = match (expected, no_stream) {
                (Some(p), _) => WriteCondition::ExpectedPosition(*p),
                (None, true) => WriteCondition::NoStream,
                (None, false) => WriteCondition::Any,
            };
            let event = Event::new(subject)
                .with_type(event_type)
                .with_data(data)
                .with_source("herald-cli");
            Some((name, event, condition))
        }
        StoreCommand::Read {
            stream: Some(s), ..
        } => {
            StreamName::new(s)?;
            None
        }
        StoreCommand::Read {
            category: Some(c), ..
        } => {
            StreamName::category_name(c)?;
            None
        }
        _ => None,
    };
    let store = if append.is_some() {
        open_store(store_url).await?
    } else {
        open_existing_store(store_url).await?
    };
    with_store!(store, s => command(&s, args.command, append).await)
}

async fn command<S: EventStore>(
    s: &S,
    command: StoreCommand,
    append: Option<(StreamName, Event, WriteCondition)>,
) -> Result<(), CliError> {
    match command {
        StoreCommand::Append { .. } => {
            let (name, event, condition) =
                append.ok_or_else(|| CliError::Usage("nothing to append".into()))?;
            let a = s.append(&name, &[event], condition).await?;
            out!(
                "{}",
                json!({"stream": name.as_str(), "position": a.position, "global_position": a.global_position})
            );
        }
        StoreCommand::Read {
            stream,
            category,
            from,
            max,
        } => {
            // One more than asked, to say whether there is more.
            let ask = max.saturating_add(1);
            let (events, by_global) = match (stream, category) {
                (Some(st), _) => (
                    s.read_stream(&StreamName::new(&st)?, from, ask).await?,
                    false,
                ),
                (None, Some(c)) => (s.read_category(&c, from, ask).await?, true),
                (None, None) => (s.read_all(from, ask).await?, true),
            };
            for e in events.iter().take(max) {
                out!("{}", line(e));
            }
            if let Some(next) = events.get(max) {
                let from = if by_global {
                    next.global_position
                } else {
                    next.position
                };
                crate::output::warn_line!(
                    "herald store read: stopped at --max {max}; there is more (--from {from} reads on)"
                );
            }
        }
        StoreCommand::Ls => {
            for (stream, last) in s.streams().await? {
                out!("{stream} {last}");
            }
        }
    }
    Ok(())
}
