//! The NATS verbs: `pub`, `sub`, `request`, `reply` and `streams`, each one connection to the
//! server named by `--bus`.

use std::io::BufRead;
use std::time::Duration;

use herald::{Event, Priority, Subject};
use herald_nats::{Nats, NatsError, StreamSpec};
use serde_json::Value;

use crate::cli::{PubArgs, ReplyArgs, RequestArgs, StreamsArgs, StreamsCommand, SubArgs};
use crate::connect::connect_nats as connect;
use crate::output::print_line;
use crate::CliError;

pub(crate) use crate::data::parse_data;

fn parse_timeout(secs: f64, flag: &str) -> Result<Duration, CliError> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(CliError::Usage(format!(
            "{flag} must be a positive number of seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How long `pub --js` keeps retrying one event through a server outage.
const JS_RETRY_FOR: Duration = Duration::from_secs(60);

pub(crate) async fn publish(args: PubArgs, bus: &str) -> Result<(), CliError> {
    // The subject, priority and a single DATA are validated before anything is sent; lines on
    // stdin are streamed: each is checked as it arrives, and a bad one is named, counted and
    // skipped (what was published before it stays published).
    let subject = Subject::new(&args.subject)?;
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e: herald::UnknownPriority| CliError::Usage(e.to_string()))?;
    if args.count == 0 {
        return Err(CliError::Usage("--count must be at least 1".into()));
    }
    let from_stdin = args.data.as_deref() == Some("-");
    let single = if from_stdin {
        None
    } else {
        Some(parse_data(args.data.as_deref(), "pub")?)
    };
    // Events are made one at a time (a large --count costs no memory). Each carries an event
    // id, so a JetStream retry is recognised as the same event.
    let make = |data: &serde_json::Map<String, Value>| {
        let mut e = Event::new(subject.clone())
            .with_data(data.clone())
            .with_source(&args.source)
            .with_priority(priority);
        if let Some(t) = &args.event_type {
            e = e.with_type(t);
        }
        if args.js {
            e = e.ensure_event_id();
        }
        e
    };
    let nats = connect(bus).await?;
    let max = nats.max_payload();
    let js = nats.jetstream();
    if args.js {
        // Refused before anything is sent.
        js.stream_for(subject.as_str()).await?;
    }
    let (mut published, mut bad, mut retried) = (0u64, 0u64, 0u64);
    let mut rx = data_lines(single).await;
    'all: while let Some((line, item)) = rx.recv().await {
        let data = match item {
            Ok(d) => d,
            Err(e @ CliError::Other(_)) => return Err(e),
            Err(e) => {
                bad += 1;
                crate::output::warn_line!("herald pub: skipped: {e}");
                continue;
            }
        };
        let size = make(&data).to_json().len();
        if size > max {
            let e: CliError = NatsError::PayloadTooLarge {
                subject: subject.to_string(),
                size,
                max,
            }
            .into();
            if !from_stdin {
                return Err(e);
            }
            bad += 1;
            crate::output::warn_line!("herald pub: skipped stdin line {line}: {e}");
            continue;
        }
        for _ in 0..args.count {
            let e = make(&data);
            if args.js {
                let (printed, retries) = publish_acked(&js, &e).await?;
                retried += u64::from(retries);
                if !printed {
                    break 'all;
                }
            } else {
                nats.publish(&e).await?;
            }
            published += 1;
        }
    }
    flush_within(&nats, published).await?;
    crate::output::warn_line!("{}", summary(published, &subject, args.js, retried, bad));
    if bad > 0 {
        return Err(CliError::Usage(format!(
            "{bad} input line(s) were not published (named above)"
        )));
    }
    Ok(())
}

/// Flushes, but gives up after 10 s (a server that went away mid-command) instead of waiting
/// for a reconnect that may never come.
async fn flush_within(nats: &Nats, sent: u64) -> Result<(), CliError> {
    match tokio::time::timeout(Duration::from_secs(10), nats.flush()).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CliError::Other(format!(
            "the server did not take the last of {sent} message(s) within 10 s (disconnected?); they may be lost"
        ))),
    }
}

pub(crate) async fn subscribe(args: SubArgs, bus: &str) -> Result<(), CliError> {
    let pattern = herald::Pattern::new(&args.pattern)?;
    let timeout = args
        .timeout
        .map(|t| parse_timeout(t, "--timeout"))
        .transpose()?;
    // --timeout bounds the whole command, connecting and subscribing included.
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let subscribed = async {
        let nats = connect(bus).await?;
        let stream = nats.subscribe(pattern, args.queue.as_deref()).await?;
        Ok::<_, CliError>((nats, stream))
    };
    let (nats, mut stream) = match deadline {
        Some(d) => tokio::time::timeout_at(d, subscribed)
            .await
            .map_err(|_| CliError::Other("timed out before the subscription was live".into()))??,
        None => subscribed.await?,
    };
    let mut seen = 0u64;
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    if let Some(c) = args.count {
                        return Err(CliError::Other(format!(
                            "timed out after {} of {c} events",
                            seen
                        )));
                    }
                    break;
                }
            },
            None => stream.next().await,
        };
        let Some(incoming) = next else {
            return Err(CliError::Other("subscription closed by the server".into()));
        };
        seen += 1;
        let json = serde_json::to_string(&incoming.event).unwrap_or_default();
        let line = if args.trace {
            let trace = incoming.event.trace_context();
            let id = trace.as_ref().map_or("-", |c| c.trace_id());
            format!("{id} {json}")
        } else {
            json
        };
        if !print_line(&line)? {
            break;
        }
    }
    let slow = nats.stats().slow_consumers;
    if slow > 0 {
        crate::output::warn_line!(
            "herald sub: {seen} event(s) printed; {slow} dropped by the client as a slow consumer (stdout was read more slowly than events arrived)"
        );
    }
    Ok(())
}

pub(crate) async fn request(args: RequestArgs, bus: &str) -> Result<(), CliError> {
    let subject = Subject::new(&args.subject)?;
    let data = parse_data(args.data.as_deref(), "request")?;
    let timeout = parse_timeout(args.timeout, "--timeout")?;
    let nats = connect(bus).await?;
    let request = Event::new(subject)
        .with_data(data)
        .with_type("request")
        .with_source("herald-cli");
    let response = nats.request(&request, timeout).await?;
    print_line(&serde_json::to_string(&response).unwrap_or_default())?;
    Ok(())
}

pub(crate) async fn reply(args: ReplyArgs, bus: &str) -> Result<(), CliError> {
    let pattern = herald::Pattern::new(&args.subject)?;
    if args.count == Some(0) {
        return Err(CliError::Usage("--count must be at least 1".into()));
    }
    let nats = connect(bus).await?;
    let mut stream = nats.subscribe(pattern, args.queue.as_deref()).await?;
    let mut answered = 0u64;
    while let Some(request) = stream.next().await {
        if request.reply.is_none() {
            crate::output::warn_line!(
                "skipped a message on {} without a reply subject",
                request.event.subject
            );
            continue;
        }
        let data = request.event.data.clone();
        nats.respond_to(&request, data).await?;
        answered += 1;
        crate::output::warn_line!(
            "answered {} ({})",
            request.event.subject,
            request.event.correlation_id
        );
        if args.count.is_some_and(|c| answered >= c) {
            break;
        }
    }
    // Let the last response leave before the connection closes.
    flush_within(&nats, answered).await?;
    Ok(())
}

pub(crate) async fn streams(args: StreamsArgs, bus: &str) -> Result<(), CliError> {
    let nats = connect(bus).await?;
    let js = nats.jetstream();
    let json = |v: &dyn erased::Json| v.line();
    match args.command {
        StreamsCommand::Ls => {
            for name in js.stream_names().await? {
                print_line(&name)?;
            }
        }
        StreamsCommand::Add(add) => {
            let specs = match add.name {
                None => {
                    if !add.subjects.is_empty() {
                        return Err(CliError::Usage("--subjects needs a stream NAME".into()));
                    }
                    herald_nats::default_streams()
                }
                Some(name) => vec![StreamSpec {
                    max_age_secs: add.max_age,
                    max_bytes: add.max_bytes,
                    replicas: add.replicas,
                    ..StreamSpec::new(name, add.subjects)
                }],
            };
            for spec in &specs {
                spec.validate()?;
            }
            for spec in &specs {
                let summary = js.ensure_stream(spec).await?;
                print_line(&json(&summary))?;
            }
        }
        StreamsCommand::Info { name } => {
            let summary = js.stream_info(&name).await?;
            print_line(&json(&summary))?;
        }
        StreamsCommand::Rm { name } => {
            js.delete_stream(&name).await?;
            crate::output::warn_line!("deleted stream {name}");
        }
    }
    Ok(())
}

mod erased {
    //! One-line JSON for anything serializable.
    pub(super) trait Json {
        fn line(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn line(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// One DATA item per line number: the single DATA (line 0), or each line of stdin as it
/// arrives, read on a thread of its own (a bad line is an error item; a read error ends it).
async fn data_lines(single: Option<serde_json::Map<String, Value>>) -> DataLines {
    let (tx, rx) =
        tokio::sync::mpsc::channel::<(usize, Result<serde_json::Map<String, Value>, CliError>)>(64);
    match single {
        Some(data) => {
            let _ = tx.send((0, Ok(data))).await;
            drop(tx);
        }
        None => {
            // stdin is read on a thread of its own, one line at a time, as it arrives.
            std::thread::spawn(move || {
                for (n, line) in std::io::stdin().lock().lines().enumerate() {
                    let item = match line {
                        Ok(l) if l.trim().is_empty() => continue,
                        Ok(l) if l == "-" => Err(CliError::Usage(format!(
                            "stdin line {}: DATA is not valid JSON: `-`",
                            n + 1
                        ))),
                        Ok(l) => parse_data(Some(&l), &format!("stdin line {}", n + 1)),
                        Err(e) => Err(CliError::Other(format!("reading stdin: {e}"))),
                    };
                    let stop = matches!(item, Err(CliError::Other(_)));
                    if tx.blocking_send((n + 1, item)).is_err() || stop {
                        break;
                    }
                }
            });
        }
    }
    rx
}

/// What `data_lines` yields: a line number and its DATA, or why it is not DATA.
type DataLines =
    tokio::sync::mpsc::Receiver<(usize, Result<serde_json::Map<String, Value>, CliError>)>;

/// Publishes `e` to JetStream until acknowledged (retrying with the same id) and prints its
/// ack; whether the ack was printed (false: stdout is closed) and the retries it took.
async fn publish_acked(js: &herald_nats::JetStream, e: &Event) -> Result<(bool, u32), CliError> {
    let (ack, retries) = js.publish_retrying(e, JS_RETRY_FOR).await?;
    if retries > 0 {
        crate::output::warn_line!(
            "herald pub: {} acknowledged after {retries} retry(ies) with the same id",
            e.event_id().unwrap_or("?")
        );
    }
    let mut v = serde_json::to_value(&ack).unwrap_or_default();
    v["event_id"] = Value::from(e.event_id().unwrap_or_default());
    Ok((print_line(&v.to_string())?, retries))
}

/// The closing line of `herald pub`.
fn summary(published: u64, subject: &Subject, js: bool, retried: u64, bad: u64) -> String {
    format!(
        "published {} event(s) to {subject}{}{}{}",
        published,
        if js { " (JetStream, acknowledged)" } else { "" },
        if retried > 0 {
            format!("; {retried} retry(ies) with the same id")
        } else {
            String::new()
        },
        if bad > 0 {
            format!("; {bad} bad line(s) skipped")
        } else {
            String::new()
        }
    )
}
