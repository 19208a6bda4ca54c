//! `Event`: the eight-field JSON envelope, lenient on read where that is safe and strict where it is not.

use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::priority::{Priority, UnknownPriority};
use super::subject::{Subject, SubjectError};
use super::timestamp::{Timestamp, TimestampError};

/// A JSON object: the type of `data` and `metadata`.
pub type Object = Map<String, Value>;

/// The `metadata` key of Herald's event id.
pub const EVENT_ID: &str = "event_id";

/// The source written when the publisher names none.
pub const DEFAULT_SOURCE: &str = "herald";

/// The event envelope, identical on NATS, in durable queues and in-process.
///
/// Exactly eight top-level JSON fields: `subject`, `event_type`, `source`, `data`,
/// `timestamp`, `correlation_id`, `priority`, `metadata`. Herald's own extras (event id,
/// causation id, attempt, trace context) go into `metadata`, never beside it.
///
/// # Reading
///
/// [`Event::from_json`] is lenient where it is safe: a missing `metadata` is empty, a missing
/// `priority` is `normal`, a missing `event_type` is the subject's last token, a missing
/// `timestamp` is now and a missing `correlation_id` a new UUID (as seed 004's Python dataclass
/// defaults them). Unknown top-level fields are accepted and counted in
/// [`Decoded::unknown_fields`], never written back. It is strict where it is not safe: a
/// `data` that is not an object, an unknown priority, a malformed subject or timestamp is an
/// [`EnvelopeError`] that names the field.
///
/// # Examples
///
/// ```
/// use herald::{Event, Priority};
/// use serde_json::json;
///
/// let event = Event::try_new("trivia.started", json!({"round": 1}))
///     .unwrap()
///     .with_source("trivia")
///     .with_priority(Priority::High);
/// let bytes = event.to_json();
/// let back = Event::from_json(&bytes).unwrap().event;
/// assert_eq!(back, event);
/// assert_eq!(back.event_type, "started");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Where the event is published.
    pub subject: Subject,
    /// What kind of event this is; defaults to the subject's last token.
    pub event_type: String,
    /// The component that published it.
    pub source: String,
    /// The payload, always a JSON object.
    pub data: Object,
    /// When it was created (UTC).
    pub timestamp: Timestamp,
    /// Ties requests, replies and follow-up events together (a UUID unless given).
    pub correlation_id: String,
    /// Orders the fire-and-forget queue.
    pub priority: Priority,
    /// Free-form extras.
    pub metadata: Object,
}

/// What was wrong with an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes are not JSON, or the JSON is not an object.
    #[error("envelope is not a JSON object: {0}")]
    NotAnObject(String),
    /// A required field is absent.
    #[error("envelope field `{0}` is missing")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("envelope field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// The subject is malformed.
    #[error("envelope field `subject`: {0}")]
    Subject(#[from] SubjectError),
    /// The priority is not one of the four names.
    #[error("envelope field `priority`: {0}")]
    Priority(#[from] UnknownPriority),
    /// The timestamp cannot be read.
    #[error("envelope field `timestamp`: {0}")]
    Timestamp(#[from] TimestampError),
    /// An object inside `data` or `metadata` has the key serde_json reserves for raw values
    /// (`$serde_json::private::RawValue`): a reader built with its `raw_value` feature (as
    /// Herald's dependencies are) reads such an object as something else, or not at all, so
    /// the event could not be read back as sent (found by fuzzing).
    #[error("envelope field `{0}` holds the reserved key `$serde_json::private::RawValue`")]
    ReservedKey(&'static str),
}

/// The key serde_json's `raw_value` feature treats as a raw value marker in any object.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Refuses `object` (the field `field`) when it, or any object nested in it, has the key
/// serde_json reserves for raw values.
fn refuse_reserved_key(field: &'static str, object: &Object) -> Result<(), EnvelopeError> {
    fn holds(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.contains_key(RAW_VALUE_KEY) || m.values().any(holds),
            Value::Array(items) => items.iter().any(holds),
            _ => false,
        }
    }
    if object.contains_key(RAW_VALUE_KEY) || object.values().any(holds) {
        return Err(EnvelopeError::ReservedKey(field));
    }
    Ok(())
}

/// An envelope read from JSON, with what the reader noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The event, with the fields and values that were sent.
    pub event: Event,
    /// How many top-level fields were not among the eight (accepted, never written).
    pub unknown_fields: usize,
}

/// A new correlation id: a UUIDv7 (RFC 9562) from `at`'s milliseconds and 74 bits of the
/// thread's random generator (seeded from the OS once, not a system call per id), written
/// as hyphenated lowercase hex.
fn new_correlation_id(at: &Timestamp) -> String {
    let at = at.as_datetime();
    let millis = u64::try_from(at.unix_timestamp()).unwrap_or(0) * 1_000
        + u64::from(at.nanosecond() / 1_000_000);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

impl Event {
    /// A new event on `subject` with empty data, source [`DEFAULT_SOURCE`], priority normal,
    /// the timestamp now, a new correlation id and the subject's last token as type.
    pub fn new(subject: Subject) -> Self {
        let timestamp = Timestamp::now();
        Event {
            event_type: subject.last_token().to_owned(),
            subject,
            source: DEFAULT_SOURCE.to_owned(),
            data: Object::new(),
            correlation_id: new_correlation_id(&timestamp),
            timestamp,
            priority: Priority::Normal,
            metadata: Object::new(),
        }
    }

    /// A new event from a subject string and a JSON value that must be an object.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::Subject`] for a malformed subject, [`EnvelopeError::WrongType`] when
    /// `data` is not an object.
    pub fn try_new(subject: &str, data: Value) -> Result<Self, EnvelopeError> {
        let subject = Subject::new(subject)?;
        match data {
            Value::Object(data) => {
                refuse_reserved_key("data", &data)?;
                Ok(Event::new(subject).with_data(data))
            }
            _ => Err(EnvelopeError::WrongType {
                field: "data",
                expected: "an object",
            }),
        }
    }

    /// Replaces the payload.
    pub fn with_data(mut self, data: Object) -> Self {
        self.data = data;
        self
    }

    /// Sets the source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the event type.
    pub fn with_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Herald's event id (`metadata.event_id`), if the event carries one.
    pub fn event_id(&self) -> Option<&str> {
        self.metadata.get(EVENT_ID).and_then(Value::as_str)
    }

    /// Adds an event id (a new UUID v7) to `metadata.event_id` unless there is one already.
    /// Durable paths use it as the deduplication id, so a retried publish is stored once.
    pub fn ensure_event_id(mut self) -> Self {
        if self.event_id().is_none() {
            self.metadata.insert(
                EVENT_ID.to_owned(),
                Value::String(uuid::Uuid::now_v7().to_string()),
            );
        }
        self
    }

    /// The envelope as JSON bytes (exactly the eight fields).
    pub fn to_json(&self) -> Vec<u8> {
        // Sized for a typical envelope up front (serde_json starts at 128 bytes and doubles).
        let mut out = Vec::with_capacity(384);
        // Serializing a struct of strings and JSON maps into a Vec cannot fail.
        if serde_json::to_writer(&mut out, self).is_err() {
            out.clear();
        }
        out
    }

    /// The envelope as a JSON string (exactly the eight fields), for stores that keep text.
    pub fn to_json_string(&self) -> String {
        // Serializing a struct of strings and JSON maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an envelope from JSON bytes.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] naming the field at fault; see the type-level docs for what is
    /// lenient and what is strict.
    pub fn from_json(bytes: &[u8]) -> Result<Decoded, EnvelopeError> {
        // Straight into the eight slots, without building an intermediate map.
        let fields: Fields =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotAnObject(e.to_string()))?;
        fields.build()
    }

    /// Reads an envelope from a parsed JSON value.
    ///
    /// # Errors
    ///
    /// As [`Event::from_json`].
    pub fn from_value(value: Value) -> Result<Decoded, EnvelopeError> {
        let Value::Object(map) = value else {
            return Err(EnvelopeError::NotAnObject(format!(
                "found {}",
                json_type(&value)
            )));
        };
        let mut fields = Fields::default();
        for (key, value) in map {
            fields.put(&key, value);
        }
        fields.build()
    }
}

/// A top-level string field as read: borrowed from the input when it has no escapes.
enum Text<'a> {
    Str(Cow<'a, str>),
    /// Present, but not a string (the type error is reported by `build`).
    NotString,
}

/// The top-level fields of an envelope as read, before validation.
#[derive(Default)]
struct Fields<'a> {
    subject: Option<Text<'a>>,
    event_type: Option<Text<'a>>,
    source: Option<Text<'a>>,
    data: Option<Value>,
    timestamp: Option<Text<'a>>,
    correlation_id: Option<Text<'a>>,
    priority: Option<Text<'a>>,
    metadata: Option<Value>,
    unknown: usize,
}

impl Fields<'static> {
    fn put(&mut self, key: &str, value: Value) {
        let text = |v: Value| match v {
            Value::Null => None,
            Value::String(s) => Some(Text::Str(Cow::Owned(s))),
            _ => Some(Text::NotString),
        };
        match key {
            "subject" => self.subject = text(value),
            "event_type" => self.event_type = text(value),
            "source" => self.source = text(value),
            "timestamp" => self.timestamp = text(value),
            "correlation_id" => self.correlation_id = text(value),
            "priority" => self.priority = text(value),
            "data" => self.data = Some(value),
            "metadata" => self.metadata = Some(value),
            _ => self.unknown += 1,
        }
    }
}

impl Fields<'_> {
    fn build(self) -> Result<Decoded, EnvelopeError> {
        let subject = Subject::new(
            &string(self.subject, "subject")?.ok_or(EnvelopeError::MissingField("subject"))?,
        )?;
        let event_type = string(self.event_type, "event_type")?
            .map_or_else(|| subject.last_token().to_owned(), Cow::into_owned);
        let source = string(self.source, "source")?
            .ok_or(EnvelopeError::MissingField("source"))?
            .into_owned();
        let data = match self.data {
            Some(Value::Object(data)) => data,
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "data",
                    expected: "an object",
                })
            }
            None => return Err(EnvelopeError::MissingField("data")),
        };
        let timestamp = match string(self.timestamp, "timestamp")? {
            Some(t) => Timestamp::parse(&t)?,
            None => Timestamp::now(),
        };
        let correlation_id = string(self.correlation_id, "correlation_id")?
            .map_or_else(|| new_correlation_id(&Timestamp::now()), Cow::into_owned);
        let priority = match string(self.priority, "priority")? {
            Some(p) => p.parse()?,
            None => Priority::Normal,
        };
        let mut metadata = match self.metadata {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Object::new(),
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "metadata",
                    expected: "an object",
                })
            }
        };
        refuse_reserved_key("data", &data)?;
        refuse_reserved_key("metadata", &metadata)?;
        // A malformed trace context from outside is dropped and counted, never an error.
        super::trace::sanitize(&mut metadata);
        Ok(Decoded {
            event: Event {
                subject,
                event_type,
                source,
                data,
                timestamp,
                correlation_id,
                priority,
                metadata,
            },
            unknown_fields: self.unknown,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text::NotString)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text::NotString)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text::NotString)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text::NotString)
            }
            fn visit_unit<E>(self) -> Result<Text<'de>, E> {
                Ok(Text::NotString)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text::NotString)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text::NotString)
            }
        }
        d.deserialize_any(Visit)
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut f = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "subject" => f.subject = map.next_value()?,
                        "event_type" => f.event_type = map.next_value()?,
                        "source" => f.source = map.next_value()?,
                        "timestamp" => f.timestamp = map.next_value()?,
                        "correlation_id" => f.correlation_id = map.next_value()?,
                        "priority" => f.priority = map.next_value()?,
                        "data" => f.data = Some(map.next_value()?),
                        "metadata" => f.metadata = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            f.unknown += 1;
                        }
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(Visit)
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string<'a>(
    text: Option<Text<'a>>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
    match text {
        None => Ok(None),
        Some(Text::Str(s)) => Ok(Some(s)),
        Some(Text::NotString) => Err(EnvelopeError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("subject", &self.subject)?;
        m.serialize_entry("event_type", &self.event_type)?;
        m.serialize_entry("source", &self.source)?;
        m.serialize_entry("data", &self.data)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        m.serialize_entry("correlation_id", &self.correlation_id)?;
        m.serialize_entry("priority", &self.priority)?;
        m.serialize_entry("metadata", &self.metadata)?;
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Event::from_value(value)
            .map(|decoded| decoded.event)
            .map_err(serde::de::Error::custom)
    }
}
