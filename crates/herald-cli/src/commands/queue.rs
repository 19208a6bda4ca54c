//! `herald queue`: the durable queue verbs on `--store` (create, ls, send, read, archive,
//! delete, purge, metrics, dlq, consume). Names are validated before the store is touched.

use std::time::Duration;

use herald::queue::{Message, Queue, QueueName};
use herald::{Event, Subject};
use serde_json::{json, Value};

use crate::cli::{QueueArgs, QueueCommand};
use crate::commands::nats::parse_data;
use crate::connect::{open_store, with_store};
use crate::output::out;
use crate::CliError;

fn name(n: &str) -> Result<QueueName, CliError> {
    Ok(QueueName::new(n)?)
}

/// One message as a JSON line: its ids, times, and the message (parsed when it is JSON).
pub(crate) fn message_json(m: &Message) -> Value {
    let message = serde_json::from_slice::<Value>(&m.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&m.body).into_owned()));
    json!({
        "msg_id": m.msg_id,
        "read_ct": m.read_ct,
        "enqueued_at": m.enqueued_at.to_string(),
        "vt": m.vt.to_string(),
        "message": message,
    })
}

pub(crate) async fn run(args: QueueArgs, store_url: &str) -> Result<(), CliError> {
    // Validate what can be validated before opening anything.
    let queue = match &args.command {
        QueueCommand::Ls => None,
        QueueCommand::Create { name: n }
        | QueueCommand::Read { name: n, .. }
        | QueueCommand::Consume { name: n, .. }
        | QueueCommand::Archive { name: n, .. }
        | QueueCommand::Delete { name: n, .. }
        | QueueCommand::Purge { name: n }
        | QueueCommand::Metrics { name: n }
        | QueueCommand::Dlq { name: n, .. } => Some(name(n)?),
        QueueCommand::Send(a) => Some(name(&a.name)?),
    };
    let event = match &args.command {
        QueueCommand::Send(a) => {
            let subject = Subject::new(&a.subject)?;
            let data = parse_data(a.data.as_deref(), "queue send")?;
            Some(
                Event::new(subject)
                    .with_data(data)
                    .with_source("herald-cli"),
            )
        }
        _ => None,
    };
    let store = open_store(store_url).await?;
    with_store!(store, s => command(&s, args.command, queue, event).await)
}

async fn command<Q: Queue>(
    store: &Q,
    command: QueueCommand,
    queue: Option<QueueName>,
    event: Option<Event>,
) -> Result<(), CliError> {
    let q = || {
        queue
            .clone()
            .ok_or_else(|| CliError::Usage("a queue name is needed".into()))
    };
    match command {
        QueueCommand::Create { .. } => {
            store.create(&q()?).await?;
            eprintln!("queue {} ready", q()?);
        }
        QueueCommand::Ls => {
            for n in store.list().await? {
                out!("{n}");
            }
        }
        QueueCommand::Send(a) => {
            let event = event.ok_or_else(|| CliError::Usage("nothing to send".into()))?;
            let id = store
                .send(&q()?, &event, Duration::from_secs(a.delay))
                .await?;
            out!("{id}");
        }
        QueueCommand::Read { vt, qty, .. } => {
            for m in store.read(&q()?, Duration::from_secs(vt), qty).await? {
                out!("{}", message_json(&m));
            }
        }
        QueueCommand::Consume {
            vt,
            batch,
            until_empty,
            ..
        } => consume(store, &q()?, Duration::from_secs(vt), batch, until_empty).await?,
        QueueCommand::Archive { ids, .. } => {
            let done = store.archive(&q()?, &ids).await?;
            report_missing("archived", &ids, &done)?;
        }
        QueueCommand::Delete { ids, .. } => {
            let done = store.delete(&q()?, &ids).await?;
            report_missing("deleted", &ids, &done)?;
        }
        QueueCommand::Purge { .. } => {
            let n = store.purge(&q()?).await?;
            eprintln!("purged {n} message(s) from {}", q()?);
        }
        QueueCommand::Metrics { .. } => {
            let m = store.metrics(&q()?).await?;
            out!("{}", serde_json::to_string(&m).unwrap_or_default());
        }
        QueueCommand::Dlq { limit, .. } => {
            let dlq = q()?.with_suffix("_dlq")?;
            store.create(&dlq).await?;
            // Read with a zero visibility timeout: listed, not hidden.
            for m in store.read(&dlq, Duration::ZERO, limit).await? {
                out!("{}", message_json(&m));
            }
        }
    }
    Ok(())
}

/// `queue consume`: read, print, archive, in batches. The print comes before the archive, so a
/// message is printed at least once and archived only once printed.
async fn consume<Q: Queue>(
    store: &Q,
    queue: &QueueName,
    vt: Duration,
    batch: usize,
    until_empty: bool,
) -> Result<(), CliError> {
    let batch = batch.max(1);
    loop {
        let messages = store.read(queue, vt, batch).await?;
        if messages.is_empty() {
            if until_empty && store.metrics(queue).await?.queue_length == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for m in &messages {
            if !crate::output::print_line(&message_json(m).to_string())? {
                // The reader has gone: what was not printed stays unarchived.
                return Ok(());
            }
            ids.push(m.msg_id);
        }
        store.archive(queue, &ids).await?;
    }
}

fn report_missing(verb: &str, asked: &[i64], done: &[i64]) -> Result<(), CliError> {
    let missing: Vec<String> = asked
        .iter()
        .filter(|id| !done.contains(id))
        .map(ToString::to_string)
        .collect();
    eprintln!("{verb} {} message(s)", done.len());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "no such message(s): {}",
            missing.join(", ")
        )))
    }
}
