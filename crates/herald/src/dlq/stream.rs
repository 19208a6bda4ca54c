//! Dead-letter places of the event store: a runtime consumer's `deadletter-{consumer}.{source}`
//! stream. A letter is an event of it (its id is its position); a replay or abandon appends a
//! marker naming the letter to the same stream, and a replay also appends the original event,
//! with where it came from, to `replay-{consumer}.{source}`, which the consumer processes
//! through its processor (its checkpoint on the source untouched). Marker, replay and audit
//! event go in one `append_all`, conditioned on the place's last position, so two operators
//! never settle one letter twice. Generic over `EventStore`: every backend has it.

use serde_json::{Map, Value};

use super::{decide, Action, DlqError, Letter, Operator, Place, Report, Selection, Step, BATCH};
use crate::dead_letter::DeadLetter;
use crate::message::event::Event;
use crate::message::subject::Subject;
use crate::message::timestamp::Timestamp;
use crate::store::{EventStore, StoreError, StoredEvent, StreamName, StreamWrite, WriteCondition};

/// The category of a runtime consumer's dead-letter streams.
pub const CATEGORY: &str = "deadletter";

/// The category of the streams a replay sends letters back on.
pub const REPLAY_CATEGORY: &str = "replay";

/// The metadata key a replayed event carries its origin under (`stream`, `position`,
/// `global_position`); the consumer strips it before its processor sees the event.
pub const REPLAY_KEY: &str = "herald_replay";

const MARKER_KEY: &str = "dead_letter_settled";

/// Whether `name` is a stream place (`deadletter-...`).
pub fn is_place(name: &str) -> bool {
    name.strip_prefix(CATEGORY)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// `name` as a stream place.
///
/// # Errors
///
/// [`DlqError::NotAPlace`] for a name outside `deadletter-`, or the stream name's error.
pub fn place(name: &str) -> Result<StreamName, DlqError> {
    if !is_place(name) {
        return Err(DlqError::NotAPlace { name: name.into() });
    }
    Ok(StreamName::new(name)?)
}

/// The stream a replay of `place`'s letters goes to: `replay-{consumer}.{source}`.
pub fn replay_stream(place: &StreamName) -> Result<StreamName, StoreError> {
    let id = place
        .as_str()
        .strip_prefix(CATEGORY)
        .and_then(|r| r.strip_prefix('-'))
        .unwrap_or(place.as_str());
    StreamName::new(&format!("{REPLAY_CATEGORY}-{id}"))
}

/// The place's events: its letters (not settled) and how many times each fingerprint was
/// replayed.
struct Contents {
    letters: Vec<(StoredEvent, Letter)>,
    last: Option<i64>,
}

async fn contents<S: EventStore>(s: &S, place: &StreamName) -> Result<Contents, DlqError> {
    let mut events = Vec::new();
    let mut from = 0;
    loop {
        let page = s.read_stream(place, from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        events.extend(page);
    }
    let last = events.last().map(|e| e.position);
    let mut settled = std::collections::HashSet::new();
    let mut replays: std::collections::HashMap<String, u32> = Default::default();
    for e in &events {
        let Ok(event) = e.event() else { continue };
        if let Some(m) = event.metadata.get(MARKER_KEY) {
            if let Some(id) = m.get("id").and_then(Value::as_i64) {
                settled.insert(id);
            }
            if m.get("action").and_then(Value::as_str) == Some("replayed") {
                if let Some(f) = m.get("fingerprint").and_then(Value::as_str) {
                    *replays.entry(f.to_owned()).or_default() += 1;
                }
            }
        }
    }
    let mut letters = Vec::new();
    for e in events {
        if settled.contains(&e.position) {
            continue;
        }
        let Ok(event) = e.event() else { continue };
        let Some(record) = DeadLetter::record(&event) else {
            continue;
        };
        let text = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("");
        let mut letter = Letter {
            id: e.position,
            origin: format!("{}.{}", text("consumer"), text("source")),
            reason: text("reason").to_owned(),
            attempts: record.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            died_at: text("died_at").to_owned(),
            replays: 0,
            body: DeadLetter::original_body(&event),
            origin_msg_id: None,
        };
        letter.replays = replays.get(&letter.fingerprint()).copied().unwrap_or(0);
        letters.push((e, letter));
    }
    Ok(Contents { letters, last })
}

/// Every stream place of `s`, with its letters and its oldest letter's age.
///
/// # Errors
///
/// The store's.
pub async fn places<S: EventStore>(s: &S) -> Result<Vec<Place>, DlqError> {
    let mut out = Vec::new();
    for (name, _) in s.streams().await? {
        if !is_place(&name) {
            continue;
        }
        let stream = StreamName::new(&name)?;
        let c = contents(s, &stream).await?;
        let now = Timestamp::now().as_datetime();
        let oldest = c.letters.first().map(|(e, _)| {
            u64::try_from(
                (now - e.recorded_at.as_datetime())
                    .whole_milliseconds()
                    .max(0),
            )
            .unwrap_or(0)
        });
        out.push(Place {
            origin: c
                .letters
                .first()
                .map_or_else(|| name.clone(), |(_, l)| l.origin.clone()),
            count: c.letters.len() as u64,
            oldest_age_ms: oldest,
            name,
        });
    }
    Ok(out)
}

/// Up to `limit` letters of `place`, oldest first.
///
/// # Errors
///
/// [`DlqError::NoSuchPlace`]; the store's.
pub async fn letters<S: EventStore>(
    s: &S,
    place: &StreamName,
    limit: usize,
) -> Result<Vec<Letter>, DlqError> {
    let c = contents(s, place).await?;
    if c.last.is_none() {
        return Err(DlqError::NoSuchPlace {
            place: place.to_string(),
        });
    }
    Ok(c.letters.into_iter().take(limit).map(|(_, l)| l).collect())
}

/// Replays `selection` of `place`: each letter's original event goes to the consumer's
/// replay stream, in batches of [`BATCH`], each one transaction with its markers and audit
/// events.
///
/// # Errors
///
/// [`DlqError::ZeroMaxReplays`], [`DlqError::NoSuchPlace`], [`DlqError::NoSuchLetter`]
/// (nothing moved); the store's.
pub async fn replay<S: EventStore>(
    s: &S,
    place: &StreamName,
    selection: Selection,
    max_replays: u32,
    force: bool,
    operator: &Operator,
) -> Result<Report, DlqError> {
    if max_replays == 0 {
        return Err(DlqError::ZeroMaxReplays);
    }
    settle(
        s,
        place,
        selection,
        &Action::Replay { max_replays, force },
        operator,
    )
    .await
}

/// Abandons `selection` of `place` (marked, recorded with the operator's reason).
///
/// # Errors
///
/// As [`replay`].
pub async fn abandon<S: EventStore>(
    s: &S,
    place: &StreamName,
    selection: Selection,
    operator: &Operator,
) -> Result<Report, DlqError> {
    settle(s, place, selection, &Action::Abandon, operator).await
}

async fn settle<S: EventStore>(
    s: &S,
    place: &StreamName,
    selection: Selection,
    action: &Action,
    operator: &Operator,
) -> Result<Report, DlqError> {
    let mut report = Report::default();
    let mut refused = std::collections::HashSet::new();
    // Another operator's write moves the place on: read again and retry (bounded).
    for _ in 0..100 {
        let c = contents(s, place).await?;
        let Some(last) = c.last else {
            return Err(DlqError::NoSuchPlace {
                place: place.to_string(),
            });
        };
        let picked: Vec<(StoredEvent, Letter)> = match &selection {
            Selection::Ids(ids) => {
                let missing: Vec<i64> = ids
                    .iter()
                    .filter(|id| !c.letters.iter().any(|(_, l)| l.id == **id))
                    .filter(|id| !report.done.contains(id))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    return Err(DlqError::NoSuchLetter {
                        place: place.to_string(),
                        ids: missing,
                    });
                }
                c.letters
                    .into_iter()
                    .filter(|(_, l)| ids.contains(&l.id) && !report.done.contains(&l.id))
                    .collect()
            }
            Selection::All => c
                .letters
                .into_iter()
                .filter(|(_, l)| !refused.contains(&l.id))
                .take(BATCH)
                .collect(),
        };
        if picked.is_empty() {
            return Ok(report);
        }
        let (writes, done, refusals) = plan(place, picked, action, operator, last)?;
        match s.append_all(&writes).await {
            Ok(_) => {
                report.done.extend(done);
                for r in refusals {
                    refused.insert(r.id);
                    report.refused.push(r);
                }
                if matches!(selection, Selection::Ids(_)) {
                    return Ok(report);
                }
            }
            Err(StoreError::WrongPosition { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

type Plan = (Vec<StreamWrite>, Vec<i64>, Vec<super::Refusal>);

/// The writes of one batch: the markers on the place (conditioned on its last position), the
/// originals on the replay stream, the audit events.
fn plan(
    place: &StreamName,
    picked: Vec<(StoredEvent, Letter)>,
    action: &Action,
    operator: &Operator,
    last: i64,
) -> Result<Plan, DlqError> {
    let (mut markers, mut replays, mut audits) = (Vec::new(), Vec::new(), Vec::new());
    let (mut done, mut refusals) = (Vec::new(), Vec::new());
    let marker_subject = |verb: &str| {
        Subject::new(&format!("herald.dead_letter.{verb}")).unwrap_or_else(|_| unreachable!())
    };
    for (stored, letter) in picked {
        let (letter, audit, original) = match decide(place.as_str(), letter, action, operator) {
            Step::Refuse(r) => {
                refusals.push(r);
                continue;
            }
            Step::Replay { letter, audit } => (letter, audit, Some(stored)),
            Step::Abandon { letter, audit } => (letter, audit, None),
        };
        let mut m = Map::new();
        m.insert("id".into(), letter.id.into());
        m.insert("action".into(), action.verb().into());
        m.insert("fingerprint".into(), letter.fingerprint().into());
        m.insert("who".into(), operator.who.as_str().into());
        markers.push(
            Event::new(marker_subject(action.verb()))
                .with_source("herald-dlq")
                .with_metadata(MARKER_KEY, Value::Object(m)),
        );
        if let Some(stored) = original {
            replays.push(replayed(&stored, &letter)?);
        }
        audits.push(audit);
        done.push(letter.id);
    }
    let mut writes = vec![StreamWrite {
        stream: place.clone(),
        events: markers,
        condition: WriteCondition::ExpectedPosition(last),
    }];
    if !replays.is_empty() {
        writes.push(StreamWrite {
            stream: replay_stream(place)?,
            events: replays,
            condition: WriteCondition::Any,
        });
    }
    writes.push(StreamWrite {
        stream: StreamName::new(super::AUDIT_STREAM)?,
        events: audits,
        condition: WriteCondition::Any,
    });
    Ok((writes, done, refusals))
}

/// The event a replay sends back: the original, with where it came from under
/// [`REPLAY_KEY`].
fn replayed(letter_event: &StoredEvent, letter: &Letter) -> Result<Event, DlqError> {
    let stored = letter_event.event().map_err(|e| StoreError::Backend {
        operation: "dlq replay",
        transient: false,
        source: Box::new(e),
    })?;
    let record = DeadLetter::record(&stored).cloned().unwrap_or(Value::Null);
    let original = Event::from_json(&letter.body)
        .map(|d| d.event)
        .map_err(|e| StoreError::Backend {
            operation: "dlq replay (the letter's body is not an envelope)",
            transient: false,
            source: Box::new(e),
        })?;
    let mut from = Map::new();
    for k in ["stream", "position", "global_position"] {
        from.insert(k.into(), record.get(k).cloned().unwrap_or(Value::Null));
    }
    from.insert("letter".into(), letter.id.into());
    Ok(original.with_metadata(REPLAY_KEY, Value::Object(from)))
}

/// A replayed event as its consumer's processor must see it: the original stream, position
/// and global position, and the body without [`REPLAY_KEY`]; none for an event that is not a
/// replay.
pub fn as_original(replayed: &StoredEvent) -> Option<StoredEvent> {
    let mut event = replayed.event().ok()?;
    let from = event.metadata.remove(REPLAY_KEY)?;
    Some(StoredEvent {
        global_position: from.get("global_position").and_then(Value::as_i64)?,
        stream: from.get("stream").and_then(Value::as_str)?.to_owned(),
        position: from.get("position").and_then(Value::as_i64)?,
        recorded_at: replayed.recorded_at,
        body: event.to_json(),
    })
}
