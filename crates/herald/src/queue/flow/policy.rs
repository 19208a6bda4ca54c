//! A queue's flow policy as written (config, CLI, the store's table): the key path, the
//! limits, the rates, the weights; parsed and checked before anything is stored, each bad
//! value named.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::FlowError;
use super::rate::Rate;
use super::{key_text, FLOW_KEY};
use crate::message::event::Event;

/// Where a message's flow key is looked up when the sender did not set `metadata.flow_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPath {
    /// A JSON path into a worker step's `input_data`, then into `data` (`$.customer_id`).
    Data(String),
    /// A `metadata` entry (`meta.tenant`).
    Meta(String),
}

fn ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FromStr for KeyPath {
    type Err = FlowError;

    fn from_str(path: &str) -> Result<Self, FlowError> {
        let bad = |reason| FlowError::KeyPath {
            path: path.to_owned(),
            reason,
        };
        if let Some(name) = path.strip_prefix("meta.") {
            return if ident(name) {
                Ok(KeyPath::Meta(name.to_owned()))
            } else {
                Err(bad("a metadata name is letters, digits and _"))
            };
        }
        let Some(mut rest) = path.strip_prefix('$') else {
            return Err(bad("it must start with $ or meta."));
        };
        if rest.is_empty() {
            return Err(bad("$ alone is the whole payload, not a key"));
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                if !ident(&after[..end]) {
                    return Err(bad("a field name is letters, digits and _"));
                }
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').ok_or_else(|| bad("a [ is not closed"))?;
                if after[..end].is_empty() || !after[..end].bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("an index is digits: [0]"));
                }
                rest = &after[end + 1..];
            } else {
                return Err(bad("expected . or [ after a segment"));
            }
        }
        Ok(KeyPath::Data(path.to_owned()))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPath::Data(p) => f.write_str(p),
            KeyPath::Meta(n) => write!(f, "meta.{n}"),
        }
    }
}

impl Serialize for KeyPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl KeyPath {
    /// The envelope paths a store looks the key up at, in order, after `$.metadata.flow_key`:
    /// valid both as SQLite `json_extract` paths and as PostgreSQL `jsonpath`s (the segments
    /// are checked to be plain names and indexes).
    pub fn envelope_paths(&self) -> [String; 2] {
        match self {
            KeyPath::Data(p) => {
                let tail = &p[1..];
                [
                    format!("$.data.execution_event.input_data{tail}"),
                    format!("$.data{tail}"),
                ]
            }
            KeyPath::Meta(n) => {
                let p = format!("$.metadata.{n}");
                [p.clone(), p]
            }
        }
    }

    /// [`KeyPath::envelope_paths`] as segment lists (PostgreSQL's `#>>` takes these: an index
    /// is its digits).
    pub fn envelope_segments(&self) -> [Vec<String>; 2] {
        let tail: Vec<String> = match self {
            KeyPath::Data(p) => p[1..]
                .split(['.', '[', ']'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            KeyPath::Meta(n) => {
                return [
                    vec!["metadata".into(), n.clone()],
                    vec!["metadata".into(), n.clone()],
                ]
            }
        };
        let input = ["data", "execution_event", "input_data"]
            .into_iter()
            .map(str::to_owned)
            .chain(tail.iter().cloned())
            .collect();
        let data = std::iter::once("data".to_owned()).chain(tail).collect();
        [input, data]
    }

    /// The key of `event` by the same rules the stores apply in SQL.
    pub fn key_of(path: Option<&KeyPath>, event: &Event) -> String {
        if let Some(k) = event.metadata.get(FLOW_KEY).filter(|v| !v.is_null()) {
            return key_text(Some(k));
        }
        let Some(path) = path else {
            return key_text(None);
        };
        let envelope = Value::Object(event.metadata.clone());
        let data = Value::Object(event.data.clone());
        match path {
            KeyPath::Meta(n) => key_text(envelope.get(n)),
            KeyPath::Data(p) => {
                let input = data.pointer("/execution_event/input_data");
                let found = input
                    .and_then(|i| walk(i, p))
                    .or_else(|| walk(&data, p))
                    .filter(|v| !v.is_null());
                key_text(found)
            }
        }
    }
}

/// Follows `$.a[0].b` from `value`.
fn walk<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = value;
    let mut rest = &path[1..];
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            at = at.get(&after[..end])?;
            rest = &after[end..];
        } else {
            let after = rest.strip_prefix('[')?;
            let end = after.find(']')?;
            at = at.get(after[..end].parse::<usize>().ok()?)?;
            rest = &after[end + 1..];
        }
    }
    Some(at)
}

fn ten() -> u32 {
    10
}

/// A queue's flow policy. Stored as this JSON in the store; see the module docs for the
/// rules each field turns on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Where the flow key is looked up (absent: only `metadata.flow_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyPath>,
    /// At most this many in flight per key, across every reader of the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most this many in flight in the whole queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// A token bucket per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// One token bucket for the whole queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_rate: Option<Rate>,
    /// Ordering keys: one at a time per key, in send order, a dead letter holding its key.
    #[serde(default)]
    pub ordered: bool,
    /// Seconds of waiting worth one priority step (default 10).
    #[serde(default = "ten")]
    pub aging_secs: u32,
    /// Messages per round for these keys (default 1 each).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            key: None,
            concurrency: None,
            max_in_flight: None,
            rate: None,
            queue_rate: None,
            ordered: false,
            aging_secs: 10,
            weights: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// Checks every value, naming the first bad one.
    ///
    /// # Errors
    ///
    /// [`FlowError`] naming the field.
    pub fn validate(&self) -> Result<(), FlowError> {
        let zero = |field: &str| FlowError::Zero {
            field: field.to_owned(),
        };
        if self.concurrency == Some(0) {
            return Err(zero("concurrency"));
        }
        if self.max_in_flight == Some(0) {
            return Err(zero("max_in_flight"));
        }
        for (name, rate) in [("rate", &self.rate), ("queue_rate", &self.queue_rate)] {
            if let Some(r) = rate {
                if r.count == 0 || r.per_secs == 0 {
                    return Err(FlowError::Rate {
                        rate: format!("{}/{}s", r.count, r.per_secs),
                        reason: "is 0",
                    });
                }
                if r.burst == 0 {
                    return Err(zero(&format!("{name}.burst")));
                }
            }
        }
        if self.aging_secs == 0 {
            return Err(zero("aging_secs"));
        }
        if let Some((k, _)) = self.weights.iter().find(|(_, w)| **w == 0) {
            return Err(zero(&format!("weight of key {k:?}")));
        }
        let says_something = self.concurrency.is_some()
            || self.max_in_flight.is_some()
            || self.rate.is_some()
            || self.queue_rate.is_some()
            || self.ordered
            || !self.weights.is_empty();
        if !says_something {
            return Err(FlowError::Empty);
        }
        Ok(())
    }

    /// The policy as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `queue`'s policy as a store keeps it (`text`); one that is not readable is a store
    /// error naming the queue.
    ///
    /// # Errors
    ///
    /// [`QueueError::Store`](crate::queue::QueueError::Store) when `text` is not a policy.
    pub fn stored(queue: &str, text: &str) -> Result<Policy, crate::queue::QueueError> {
        Policy::from_json(text).map_err(|e| {
            crate::queue::QueueError::store(
                "read policy",
                queue,
                false,
                format!("the stored policy is not readable: {e}"),
            )
        })
    }

    /// A stored policy.
    ///
    /// # Errors
    ///
    /// The parse error, as text, when the stored JSON is not a policy.
    pub fn from_json(text: &str) -> Result<Policy, String> {
        let p: Policy = serde_json::from_str(text).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// A key's weight (1 unless set).
    pub fn weight(&self, key: &str) -> u32 {
        self.weights.get(key).copied().unwrap_or(1)
    }

    /// The key's paths as segment lists (see [`KeyPath::envelope_segments`]);
    /// `metadata.flow_key` twice without a key path.
    pub fn key_segments(&self) -> [Vec<String>; 2] {
        self.key.as_ref().map_or_else(
            || {
                let p = vec!["metadata".to_owned(), FLOW_KEY.to_owned()];
                [p.clone(), p]
            },
            KeyPath::envelope_segments,
        )
    }

    /// The envelope paths of the key, after `$.metadata.flow_key` (see
    /// [`KeyPath::envelope_paths`]); `$.metadata.flow_key` twice without a key path.
    pub fn key_paths(&self) -> [String; 2] {
        self.key.as_ref().map_or_else(
            || {
                let p = format!("$.metadata.{FLOW_KEY}");
                [p.clone(), p]
            },
            KeyPath::envelope_paths,
        )
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![match &self.key {
            Some(k) => format!("key {k}"),
            None => "key metadata.flow_key".to_owned(),
        }];
        if let Some(c) = self.concurrency {
            parts.push(format!("concurrency {c} per key"));
        }
        if let Some(c) = self.max_in_flight {
            parts.push(format!("max in flight {c}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r} per key"));
        }
        if let Some(r) = self.queue_rate {
            parts.push(format!("queue rate {r}"));
        }
        if self.ordered {
            parts.push("ordered".into());
        }
        for (k, w) in &self.weights {
            parts.push(format!("weight {k}={w}"));
        }
        parts.push(format!("aging {}s", self.aging_secs));
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::subject::Subject;
    use serde_json::json;

    #[test]
    fn key_paths_parse_and_each_bad_one_is_named() {
        assert_eq!(
            "$.customer_id".parse::<KeyPath>().expect("a test value"),
            KeyPath::Data("$.customer_id".into())
        );
        assert!("$.a.b[0].c".parse::<KeyPath>().is_ok());
        assert_eq!(
            "meta.tenant".parse::<KeyPath>().expect("a test value"),
            KeyPath::Meta("tenant".into())
        );
        for bad in [
            "customer_id",
            "$",
            "$.",
            "$.a b",
            "$.a[x]",
            "$.a[0",
            "meta.",
            "$a",
        ] {
            let err = bad.parse::<KeyPath>().expect_err("an error");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn rates_parse_and_zero_is_refused() {
        let r: Rate = "10/min".parse().expect("a test value");
        assert_eq!((r.count, r.per_secs, r.burst), (10, 60, 1));
        assert_eq!(
            "20/s".parse::<Rate>().expect("a test value").to_string(),
            "20/s burst 1"
        );
        for bad in ["0/s", "10", "x/s", "10/week", "-1/s"] {
            let err = bad.parse::<Rate>().expect_err("an error");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(r.with_burst(0).is_err());
    }

    #[test]
    fn a_policy_names_its_first_bad_value() {
        let p = Policy {
            concurrency: Some(0),
            ..Policy::default()
        };
        assert_eq!(
            p.validate().expect_err("an error").to_string(),
            "concurrency must be at least 1, got 0"
        );
        assert_eq!(
            Policy::default().validate().expect_err("an error"),
            FlowError::Empty
        );
        let p = Policy {
            concurrency: Some(2),
            key: Some("$.customer_id".parse().expect("a test value")),
            ..Policy::default()
        };
        let back = Policy::from_json(&p.to_json()).expect("a test value");
        assert_eq!(back, p);
        assert!(Policy::from_json(r#"{"concurrency":2,"colour":1}"#).is_err());
        let p = Policy::from_json(
            r#"{"rate":"10/min","queue_rate":{"count":5,"per_secs":1,"burst":3}}"#,
        )
        .expect("a rate as text or as fields");
        assert_eq!(
            p.rate.map(|r| (r.count, r.per_secs, r.burst)),
            Some((10, 60, 1))
        );
        assert_eq!(p.queue_rate.map(|r| r.burst), Some(3));
        assert!(Policy::from_json(r#"{"rate":"0/min"}"#).is_err());
    }

    #[test]
    fn a_key_is_the_senders_then_the_steps_input_then_the_data_then_the_default() {
        let path: KeyPath = "$.customer_id".parse().expect("a test value");
        let mut e = Event::new(Subject::new("a.b").expect("a test value"));
        assert_eq!(KeyPath::key_of(Some(&path), &e), "");
        e.data = json!({"customer_id": 7})
            .as_object()
            .expect("a test value")
            .clone();
        assert_eq!(KeyPath::key_of(Some(&path), &e), "7");
        e.data =
            json!({"customer_id": "d", "execution_event": {"input_data": {"customer_id": "i"}}})
                .as_object()
                .expect("a test value")
                .clone();
        assert_eq!(KeyPath::key_of(Some(&path), &e), "i");
        let e = super::super::keyed(e, "s");
        assert_eq!(KeyPath::key_of(Some(&path), &e), "s");
        let p: KeyPath = "$.a[2].b".parse().expect("a test value");
        assert_eq!(
            p.envelope_segments()[1],
            vec!["data".to_owned(), "a".into(), "2".into(), "b".into()]
        );
        assert_eq!(
            path.envelope_paths(),
            [
                "$.data.execution_event.input_data.customer_id".to_owned(),
                "$.data.customer_id".to_owned()
            ]
        );
    }
}
