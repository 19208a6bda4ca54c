//! Dead-letter places as an operator sees them: list them, show their letters, replay a
//! letter back to the queue it died on (its original body) or abandon it, each in one
//! transaction with an audit event on the event store's `herald-audit` stream. The rules are
//! here; each backend runs them inside its own transaction ([`DeadLetterStore`]).

use std::future::Future;

pub mod stream;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::dead_letter::DeadLetter;
use crate::message::event::Event;
use crate::message::subject::Subject;
use crate::message::timestamp::Timestamp;
use crate::queue::{QueueError, QueueName};
use crate::store::StoreError;

/// The event store stream every replay and abandon is recorded on.
pub const AUDIT_STREAM: &str = "herald-audit";

/// How many times a letter may be replayed before a replay must be forced.
pub const DEFAULT_MAX_REPLAYS: u32 = 3;

/// The suffix of a dead-letter queue: `{queue}_dlq` keeps `{queue}`'s dead letters.
pub const DLQ_SUFFIX: &str = "_dlq";

/// Letters settled per transaction by a replay or abandon of a whole place.
pub const BATCH: usize = 500;

/// Why a dead-letter operation did not run. Nothing was moved when it is returned.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The name is not a dead-letter place (`{queue}_dlq`).
    #[error("{name:?} is not a dead-letter place: a queue's is {name}{DLQ_SUFFIX}, a runtime consumer's is deadletter-CONSUMER.SOURCE (herald dlq ls lists them)")]
    NotAPlace {
        /// The name given.
        name: String,
    },
    /// The place does not exist in this store.
    #[error("no dead-letter place {place} in this store (herald dlq ls lists them)")]
    NoSuchPlace {
        /// The place.
        place: String,
    },
    /// Ids asked for that are not in the place (or that another operator holds right now).
    #[error("no letter {} in {place} (herald dlq show {place} lists them; another operator may be replaying it); nothing moved", list(.ids))]
    NoSuchLetter {
        /// The place.
        place: String,
        /// The ids not found.
        ids: Vec<i64>,
    },
    /// `--max-replays 0` would refuse every replay.
    #[error("--max-replays must be at least 1 (use --force to replay past it)")]
    ZeroMaxReplays,
    /// A letter's queue is gone: it has nowhere to go back to.
    #[error("letter {id} of {place} goes back to {queue}, which does not exist (create it first); nothing moved")]
    TargetGone {
        /// The place.
        place: String,
        /// The letter.
        id: i64,
        /// Its queue.
        queue: String,
    },
    /// The queue backend failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The event store (the audit append) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dead-letter place: a `{queue}_dlq` queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// Its name (`orders_dlq`).
    pub name: String,
    /// The queue its letters came from (`orders`).
    pub origin: String,
    /// Letters in it.
    pub count: u64,
    /// How long its oldest letter has been dead (ms; none when empty).
    pub oldest_age_ms: Option<u64>,
}

/// One dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Letter {
    /// Its id in the place.
    pub id: i64,
    /// The queue it goes back to on a replay.
    pub origin: String,
    /// Why it died.
    pub reason: String,
    /// Attempts it had.
    pub attempts: u64,
    /// When it died (RFC 3339), as its record says.
    pub died_at: String,
    /// How many times it was replayed before.
    pub replays: u32,
    /// The original body, as the queue stored it.
    #[serde(serialize_with = "lossy")]
    pub body: Vec<u8>,
    /// Its msg_id in the queue it died on, when it came from a queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_msg_id: Option<i64>,
}

fn lossy<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

impl Letter {
    /// The letter stored as `raw` under `id` in `place`, replayed `replays` times so far. A
    /// body that is not a dead letter's envelope (a message sent to the place by other code)
    /// goes back as it is, with its reason unknown.
    pub fn parse(place: &QueueName, id: i64, raw: &[u8], replays: u32) -> Letter {
        let envelope = Event::from_json(raw).ok().map(|d| d.event);
        let record = envelope.as_ref().and_then(DeadLetter::record);
        let text = |k: &str| record.and_then(|r| r.get(k)).and_then(Value::as_str);
        let origin = text("queue")
            .map(str::to_owned)
            .unwrap_or_else(|| origin_of(place).to_owned());
        Letter {
            id,
            origin,
            reason: text("reason").unwrap_or("unknown").to_owned(),
            attempts: record
                .and_then(|r| r.get("attempts"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            died_at: text("died_at").unwrap_or("").to_owned(),
            replays,
            body: match &envelope {
                Some(e) if record.is_some() => DeadLetter::original_body(e),
                _ => raw.to_vec(),
            },
            origin_msg_id: record.and_then(|r| r.get("msg_id")).and_then(Value::as_i64),
        }
    }

    /// A stable fingerprint of its body (see [`fingerprint`]): a replayed body is the same
    /// message, so a letter that dies again is known by it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.body)
    }

    /// The body a replay sends back: the original, its trace context moved to
    /// [`TRACELINK`](crate::hop::TRACELINK) so that it is processed in a new trace linked to
    /// the original one (see [`crate::hop`]).
    pub fn replay_body(&self) -> String {
        String::from_utf8_lossy(&crate::hop::replay_body(&self.body)).into_owned()
    }
}

/// FNV-1a (64 bits) and length of `body`, `"{hash:016x}-{len}"`; of its canonical encoding
/// when it is an envelope (a store that keeps JSON as `jsonb`, as PGMQ does, gives back the
/// same event in other bytes), without its trace keys (a replay moves its context).
pub fn fingerprint(body: &[u8]) -> String {
    let canonical = Event::from_json(body).ok().map(|d| {
        let mut event = d.event;
        crate::message::hop::untraced(&mut event);
        event.to_json()
    });
    let bytes = canonical.as_deref().unwrap_or(body);
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}-{}", bytes.len())
}

/// The queue a place's letters came from: its name without [`DLQ_SUFFIX`].
pub fn origin_of(place: &QueueName) -> &str {
    place
        .as_str()
        .strip_suffix(DLQ_SUFFIX)
        .unwrap_or(place.as_str())
}

/// `name` as a dead-letter place.
///
/// # Errors
///
/// [`DlqError::NotAPlace`], or the queue name's own error.
pub fn place(name: &str) -> Result<QueueName, DlqError> {
    if !name.ends_with(DLQ_SUFFIX) || name.len() == DLQ_SUFFIX.len() {
        return Err(DlqError::NotAPlace { name: name.into() });
    }
    Ok(QueueName::new(name)?)
}

/// Which letters of a place an operation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids; one not in the place fails the whole operation, nothing moved.
    Ids(Vec<i64>),
    /// All of them, in batches of [`BATCH`], one transaction each.
    All,
}

/// One transaction's worth of letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// These ids.
    Ids(Vec<i64>),
    /// The first `limit` letters with an id above `after`.
    After {
        /// Ids at or below it are skipped.
        after: i64,
        /// At most this many.
        limit: usize,
    },
}

/// Who does it and why: the audit event's `who` and `why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// Who (the OS user, unless given).
    pub who: String,
    /// Why (required for an abandon).
    pub why: Option<String>,
}

impl Operator {
    /// The current OS user (`$USER`, `$LOGNAME`, else the process's uid as `/etc/passwd`
    /// names it, else `uid N`), for `why`.
    pub fn current(why: Option<String>) -> Operator {
        let who = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(os_user)
            .unwrap_or_else(|| "unknown".into());
        Operator { who, why }
    }
}

/// The user of this process's real uid, read from `/proc/self/status` and `/etc/passwd`.
fn os_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// What to do with the letters taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send each back to its queue, unless it was replayed `max_replays` times already and
    /// the replay is not forced.
    Replay {
        /// Replays allowed before one must be forced (at least 1).
        max_replays: u32,
        /// Replay past it.
        force: bool,
    },
    /// Give each up: archived, out of the place, recorded with the operator's reason.
    Abandon,
}

impl Action {
    /// `replayed` or `abandoned`.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Replay { .. } => "replayed",
            Action::Abandon => "abandoned",
        }
    }
}

/// A letter left where it was, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The letter.
    pub id: i64,
    /// Why.
    pub reason: String,
}

/// What an operation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Letters replayed or abandoned (each with its audit event).
    pub done: Vec<i64>,
    /// Letters left in the place, with the reason.
    pub refused: Vec<Refusal>,
    /// The highest id this batch looked at (for the next batch of a whole place).
    #[serde(skip)]
    pub seen: Option<i64>,
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.done.extend(other.done);
        self.refused.extend(other.refused);
    }
}

/// The report a batch starts from, given the ids of the letters a backend took for `pick`
/// (`seen`: the highest); an id of [`Pick::Ids`] not among them is
/// [`DlqError::NoSuchLetter`], and the backend moves nothing.
///
/// # Errors
///
/// [`DlqError::NoSuchLetter`].
pub fn taken(place: &str, pick: &Pick, ids: &[i64]) -> Result<Report, DlqError> {
    if let Pick::Ids(asked) = pick {
        let missing: Vec<i64> = asked
            .iter()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(DlqError::NoSuchLetter {
                place: place.into(),
                ids: missing,
            });
        }
    }
    Ok(Report {
        seen: ids.iter().copied().max(),
        ..Report::default()
    })
}

/// What a backend does for one letter, decided by [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send `letter.body` to `letter.origin`, remove the letter, count one more replay of its
    /// fingerprint, append `audit`.
    Replay {
        /// The letter.
        letter: Letter,
        /// Its audit event.
        audit: Event,
    },
    /// Archive the letter, append `audit`.
    Abandon {
        /// The letter.
        letter: Letter,
        /// Its audit event.
        audit: Event,
    },
    /// Leave it.
    Refuse(Refusal),
}

/// What to do with `letter` under `action`.
pub fn decide(place: &str, letter: Letter, action: &Action, operator: &Operator) -> Step {
    match action {
        Action::Replay { max_replays, force } => {
            if letter.replays >= *max_replays && !force {
                return Step::Refuse(Refusal {
                    id: letter.id,
                    reason: format!(
                        "replayed {} time(s) already (--max-replays {max_replays}); --force replays it again",
                        letter.replays
                    ),
                });
            }
            let audit = audit_event(place, &letter, action, operator);
            Step::Replay { letter, audit }
        }
        Action::Abandon => {
            let audit = audit_event(place, &letter, action, operator);
            Step::Abandon { letter, audit }
        }
    }
}

/// The audit event of `action` on `letter`: `herald.audit.{verb}`, with who, when, what
/// (place, id, origin, reason it died, replays) and why.
pub fn audit_event(place: &str, letter: &Letter, action: &Action, op: &Operator) -> Event {
    let verb = action.verb();
    let subject = Subject::new(&format!("herald.audit.{verb}")).unwrap_or_else(|_| unreachable!());
    let mut data = Map::new();
    data.insert("action".into(), verb.into());
    data.insert("who".into(), op.who.as_str().into());
    data.insert("at".into(), Timestamp::now().to_string().into());
    data.insert("place".into(), place.into());
    data.insert("id".into(), letter.id.into());
    data.insert("origin".into(), letter.origin.as_str().into());
    data.insert("died_because".into(), letter.reason.as_str().into());
    data.insert("fingerprint".into(), letter.fingerprint().into());
    let replays = match action {
        Action::Replay { .. } => letter.replays + 1,
        Action::Abandon => letter.replays,
    };
    data.insert("replays".into(), replays.into());
    if let Some(why) = &op.why {
        data.insert("why".into(), why.as_str().into());
    }
    Event::new(subject)
        .with_data(data)
        .with_source("herald-dlq")
}

/// A store that keeps dead-letter places and can settle their letters atomically with the
/// audit events (SQLite and PostgreSQL: the queues and the event store share one database).
pub trait DeadLetterStore: Clone + Send + Sync + 'static {
    /// Every place of the store, by name.
    fn places(&self) -> impl Future<Output = Result<Vec<Place>, DlqError>> + Send;

    /// Up to `limit` letters of `place` with an id above `after`, in id order.
    fn letters(
        &self,
        place: &QueueName,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Letter>, DlqError>> + Send;

    /// Takes `pick`'s letters of `place` and settles each as [`decide`] says, in one
    /// transaction with every audit event: all of it commits or none. A letter another
    /// transaction holds is skipped, never taken twice; an id of [`Pick::Ids`] not found
    /// (or so held) is [`DlqError::NoSuchLetter`], with nothing moved.
    fn settle_letters(
        &self,
        place: &QueueName,
        pick: Pick,
        action: &Action,
        operator: &Operator,
    ) -> impl Future<Output = Result<Report, DlqError>> + Send;
}

/// Replays `selection` of `place` (see [`Action::Replay`]); a whole place goes in batches of
/// [`BATCH`], each one transaction, so a crash leaves every letter replayed once or still
/// dead.
///
/// # Errors
///
/// [`DlqError::ZeroMaxReplays`]; the backend's errors (nothing of the failed batch moved).
pub async fn replay<S: DeadLetterStore>(
    store: &S,
    place: &QueueName,
    selection: Selection,
    max_replays: u32,
    force: bool,
    operator: &Operator,
) -> Result<Report, DlqError> {
    if max_replays == 0 {
        return Err(DlqError::ZeroMaxReplays);
    }
    let action = Action::Replay { max_replays, force };
    settle(store, place, selection, &action, operator).await
}

/// Abandons `selection` of `place` (see [`Action::Abandon`]), as [`replay`] does.
///
/// # Errors
///
/// The backend's errors (nothing of the failed batch moved).
pub async fn abandon<S: DeadLetterStore>(
    store: &S,
    place: &QueueName,
    selection: Selection,
    operator: &Operator,
) -> Result<Report, DlqError> {
    settle(store, place, selection, &Action::Abandon, operator).await
}

async fn settle<S: DeadLetterStore>(
    store: &S,
    place: &QueueName,
    selection: Selection,
    action: &Action,
    operator: &Operator,
) -> Result<Report, DlqError> {
    if let Selection::Ids(ids) = selection {
        return store
            .settle_letters(place, Pick::Ids(ids), action, operator)
            .await;
    }
    let mut report = Report::default();
    let mut after = 0;
    loop {
        let pick = Pick::After {
            after,
            limit: BATCH,
        };
        let batch = store.settle_letters(place, pick, action, operator).await?;
        let Some(seen) = batch.seen else {
            return Ok(report);
        };
        after = seen;
        report.absorb(batch);
    }
}
