//! `DeadLetter`: the one builder of a dead letter for every engine (a queue, the worker, the
//! runtime's consumers, JetStream): where it came from, why it died, after how many attempts,
//! and the original body, recoverable byte for byte from the envelope it is stored as.

use serde_json::{Map, Value};

use crate::message::event::Event;
use crate::message::subject::Subject;
use crate::message::timestamp::Timestamp;

/// The subject of a dead letter whose body was not an envelope.
pub const DEAD_LETTER_SUBJECT: &str = "herald.dead_letter";

/// The metadata key a dead letter's record is kept under.
pub const DEAD_LETTER_KEY: &str = "dead_letter";

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A durable queue's message.
    Queue {
        /// The queue.
        queue: String,
        /// The message's id in it.
        msg_id: i64,
    },
    /// An event of the event store, as a runtime consumer read it.
    Stream {
        /// The consumer (its checkpoint group).
        consumer: String,
        /// The source (category) it read.
        source: String,
        /// The event's stream.
        stream: String,
        /// Its place in the stream.
        position: i64,
        /// Its place in the whole log.
        global_position: i64,
    },
    /// A JetStream message, as a durable consumer read it.
    JetStream {
        /// The stream.
        stream: String,
        /// The durable consumer.
        consumer: String,
        /// Its stream sequence.
        sequence: u64,
    },
}

impl Origin {
    /// `queue`, `stream` or `jetstream`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Queue { .. } => "queue",
            Origin::Stream { .. } => "stream",
            Origin::JetStream { .. } => "jetstream",
        }
    }

    fn write(&self, record: &mut Map<String, Value>) {
        record.insert("origin".into(), self.kind().into());
        match self {
            Origin::Queue { queue, msg_id } => {
                record.insert("queue".into(), queue.as_str().into());
                record.insert("msg_id".into(), (*msg_id).into());
            }
            Origin::Stream {
                consumer,
                source,
                stream,
                position,
                global_position,
            } => {
                record.insert("consumer".into(), consumer.as_str().into());
                record.insert("source".into(), source.as_str().into());
                record.insert("stream".into(), stream.as_str().into());
                record.insert("position".into(), (*position).into());
                record.insert("global_position".into(), (*global_position).into());
            }
            Origin::JetStream {
                stream,
                consumer,
                sequence,
            } => {
                record.insert("stream".into(), stream.as_str().into());
                record.insert("consumer".into(), consumer.as_str().into());
                record.insert("sequence".into(), (*sequence).into());
            }
        }
    }
}

/// A dead letter: built by every engine the same way, stored as an envelope.
///
/// The envelope is the original event when the body was one (so that tools which read
/// events read it), with `metadata.dead_letter` saying `origin` and its place, `reason`,
/// `attempts` (also as `read_ct` for a queue), `died_at` and `replays`; a body that was not an
/// envelope is kept on [`DEAD_LETTER_SUBJECT`] as `data.body`. When the envelope would not
/// give the original bytes back exactly, they are kept in the record too (`body`, or
/// `body_hex` when not UTF-8), so [`DeadLetter::original_body`] is exact either way.
///
/// # Examples
///
/// ```
/// use herald::dead_letter::{DeadLetter, Origin};
/// use herald::{Event, Subject};
///
/// let body = Event::new(Subject::new("orders.placed").unwrap()).to_json();
/// let origin = Origin::Queue { queue: "orders".into(), msg_id: 7 };
/// let letter = DeadLetter::new(origin, body.clone(), "no such product").attempts(3);
/// let envelope = letter.to_event();
/// assert_eq!(envelope.subject.as_str(), "orders.placed");
/// assert_eq!(envelope.metadata["dead_letter"]["reason"], "no such product");
/// assert_eq!(DeadLetter::original_body(&envelope), body);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    origin: Origin,
    body: Vec<u8>,
    reason: String,
    attempts: u32,
    died_at: Timestamp,
    subject: Option<Subject>,
}

impl DeadLetter {
    /// A dead letter of `body` from `origin`, dead now for `reason`, after 1 attempt.
    pub fn new(origin: Origin, body: impl Into<Vec<u8>>, reason: impl Into<String>) -> Self {
        DeadLetter {
            origin,
            body: body.into(),
            reason: reason.into(),
            attempts: 1,
            died_at: Timestamp::now(),
            subject: None,
        }
    }

    /// Stores it on `subject` rather than the original's (where the subject is the address,
    /// as on NATS); the original body stays recoverable.
    pub fn on_subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// After `n` attempts.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// Its origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Why it died.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The envelope it is stored as.
    pub fn to_event(&self) -> Event {
        let parsed = Event::from_json(&self.body).ok().map(|d| d.event);
        // A letter replayed and dead again keeps its replay count.
        let replays = parsed
            .as_ref()
            .and_then(|e| e.metadata.get(DEAD_LETTER_KEY))
            .and_then(|r| r.get("replays"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut record = Map::new();
        record.insert("reason".into(), self.reason.as_str().into());
        self.origin.write(&mut record);
        record.insert("attempts".into(), self.attempts.into());
        if matches!(self.origin, Origin::Queue { .. }) {
            record.insert("read_ct".into(), self.attempts.into());
        }
        record.insert("died_at".into(), self.died_at.to_string().into());
        record.insert("replays".into(), replays.into());
        let envelope = match parsed {
            Some(event) => event,
            None => {
                let subject = Subject::new(DEAD_LETTER_SUBJECT).unwrap_or_else(|_| unreachable!());
                let mut data = Map::new();
                data.insert(
                    "body".into(),
                    Value::String(String::from_utf8_lossy(&self.body).into_owned()),
                );
                Event::new(subject).with_data(data).with_source("herald")
            }
        };
        let mut letter = envelope.with_metadata(DEAD_LETTER_KEY, Value::Object(record.clone()));
        if let Some(subject) = &self.subject {
            letter.subject = subject.clone();
        }
        if DeadLetter::original_body(&letter) == self.body {
            return letter;
        }
        match std::str::from_utf8(&self.body) {
            Ok(s) => record.insert("body".into(), s.into()),
            Err(_) => record.insert("body_hex".into(), hex(&self.body).into()),
        };
        letter.with_metadata(DEAD_LETTER_KEY, Value::Object(record))
    }

    /// The original body of a dead letter's envelope, byte for byte (the envelope itself,
    /// re-encoded, when it is not a dead letter).
    pub fn original_body(letter: &Event) -> Vec<u8> {
        let record = letter.metadata.get(DEAD_LETTER_KEY);
        if let Some(body) = record.and_then(|r| r.get("body")).and_then(Value::as_str) {
            return body.as_bytes().to_vec();
        }
        if let Some(bytes) = record
            .and_then(|r| r.get("body_hex"))
            .and_then(Value::as_str)
            .and_then(unhex)
        {
            return bytes;
        }
        if record.is_some() && letter.subject.as_str() == DEAD_LETTER_SUBJECT {
            if let Some(body) = letter.data.get("body").and_then(Value::as_str) {
                return body.as_bytes().to_vec();
            }
        }
        let mut original = letter.clone();
        original.metadata.remove(DEAD_LETTER_KEY);
        original.to_json()
    }

    /// The record of a dead letter's envelope (`metadata.dead_letter`), if it is one.
    pub fn record(letter: &Event) -> Option<&Value> {
        letter.metadata.get(DEAD_LETTER_KEY)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue() -> Origin {
        Origin::Queue {
            queue: "orders".into(),
            msg_id: 3,
        }
    }

    #[test]
    fn an_envelope_is_kept_as_itself_and_given_back_byte_for_byte() {
        let event = Event::new(Subject::new("orders.placed").expect("subject"))
            .with_data(json!({"n": 1}).as_object().expect("object").clone());
        let body = event.to_json();
        let letter = DeadLetter::new(queue(), body.clone(), "bad")
            .attempts(4)
            .to_event();
        assert_eq!(letter.timestamp, event.timestamp);
        let record = &letter.metadata["dead_letter"];
        assert_eq!(record["origin"], "queue");
        assert_eq!(record["queue"], "orders");
        assert_eq!(record["msg_id"], 3);
        assert_eq!(record["attempts"], 4);
        assert_eq!(record["read_ct"], 4);
        assert_eq!(record["replays"], 0);
        assert!(
            record.get("body").is_none(),
            "the envelope gives the body back"
        );
        assert_eq!(DeadLetter::original_body(&letter), body);
    }

    #[test]
    fn bodies_the_envelope_would_change_are_kept_exactly() {
        // Extra spaces: the same event, other bytes.
        let event = Event::new(Subject::new("a.b").expect("subject"));
        let spaced = format!(" {} ", event.to_json_string()).into_bytes();
        let letter = DeadLetter::new(queue(), spaced.clone(), "x").to_event();
        assert_eq!(DeadLetter::original_body(&letter), spaced);
        // Not an envelope, not UTF-8.
        let raw = vec![0xff, 0x00, b'{'];
        let letter = DeadLetter::new(queue(), raw.clone(), "malformed").to_event();
        assert_eq!(letter.subject.as_str(), DEAD_LETTER_SUBJECT);
        assert_eq!(DeadLetter::original_body(&letter), raw);
        // Not an envelope, plain text.
        let text = b"hello".to_vec();
        let letter = DeadLetter::new(queue(), text.clone(), "malformed").to_event();
        assert_eq!(letter.data["body"], "hello");
        assert_eq!(DeadLetter::original_body(&letter), text);
    }

    #[test]
    fn a_letter_that_dies_again_keeps_its_replay_count_and_origins_name_their_place() {
        let first = DeadLetter::new(
            queue(),
            Event::new(Subject::new("a.b").expect("subject")).to_json(),
            "x",
        )
        .to_event();
        let mut replayed = first.clone();
        replayed
            .metadata
            .insert(DEAD_LETTER_KEY.into(), json!({"replays": 2, "reason": "x"}));
        let origin = Origin::Stream {
            consumer: "c".into(),
            source: "orders".into(),
            stream: "orders-1".into(),
            position: 0,
            global_position: 9,
        };
        let again = DeadLetter::new(origin, replayed.to_json(), "y").to_event();
        let record = &again.metadata["dead_letter"];
        assert_eq!(record["replays"], 2);
        assert_eq!(record["origin"], "stream");
        assert_eq!(record["global_position"], 9);
        assert_eq!(DeadLetter::original_body(&again), replayed.to_json());
        let js = Origin::JetStream {
            stream: "S".into(),
            consumer: "d".into(),
            sequence: 5,
        };
        let letter = DeadLetter::new(js, b"{}".to_vec(), "z").to_event();
        assert_eq!(letter.metadata["dead_letter"]["sequence"], 5);
        let moved = DeadLetter::new(queue(), replayed.to_json(), "z")
            .on_subject(Subject::new("dlq.orders").expect("subject"))
            .to_event();
        assert_eq!(moved.subject.as_str(), "dlq.orders");
        assert_eq!(DeadLetter::original_body(&moved), replayed.to_json());
        assert_eq!(unhex(&hex(&[1, 2, 255])), Some(vec![1, 2, 255]));
    }
}
