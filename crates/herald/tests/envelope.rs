//! The envelope and subject rules: round trips, lenient and strict reads, and no panics on any input.

use herald::{EnvelopeError, Event, Pattern, Priority, Subject, SubjectError};
use proptest::prelude::*;
use serde_json::{json, Value};

fn subject(s: &str) -> Subject {
    Subject::new(s).expect("valid subject")
}

#[test]
fn an_event_round_trips_through_json_with_exactly_eight_fields() {
    let event = Event::try_new("trivia.round.started", json!({"round": 3, "q": "why?"}))
        .expect("event")
        .with_source("trivia")
        .with_priority(Priority::Critical)
        .with_metadata("event_id", "e-1");
    let bytes = event.to_json();
    let value: Value = serde_json::from_slice(&bytes).expect("json");
    let mut keys: Vec<_> = value.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "correlation_id",
            "data",
            "event_type",
            "metadata",
            "priority",
            "source",
            "subject",
            "timestamp"
        ]
    );
    assert_eq!(value["priority"], "critical");
    assert_eq!(value["event_type"], "started");
    assert!(value["timestamp"]
        .as_str()
        .expect("timestamp")
        .ends_with('Z'));
    let decoded = Event::from_json(&bytes).expect("decode");
    assert_eq!(decoded.event, event);
    assert_eq!(decoded.unknown_fields, 0);
}

#[test]
fn a_python_seed_004_envelope_is_read_as_sent() {
    let python = br#"{"subject": "rosey.command.trivia.start", "event_type": "trivia.start", "source": "bot",
        "data": {"channel": "lobby"}, "timestamp": "2026-11-23T10:11:12.654321",
        "correlation_id": "5f1c2e1a-0000-4000-8000-000000000001", "priority": "high", "metadata": {}}"#;
    let event = Event::from_json(python).expect("decode").event;
    assert_eq!(event.event_type, "trivia.start");
    assert_eq!(event.priority, Priority::High);
    assert_eq!(event.timestamp.to_string(), "2026-11-23T10:11:12.654321Z");
    assert_eq!(event.correlation_id, "5f1c2e1a-0000-4000-8000-000000000001");
    let again = Event::from_json(&event.to_json())
        .expect("decode again")
        .event;
    assert_eq!(again, event);
}

#[test]
fn reading_is_lenient_about_metadata_priority_and_type_and_counts_extra_fields() {
    let d = Event::from_json(br#"{"subject":"a.b","source":"s","data":{},"extra":1,"more":[]}"#)
        .expect("decode");
    assert_eq!(d.event.priority, Priority::Normal);
    assert!(d.event.metadata.is_empty());
    assert_eq!(d.event.event_type, "b");
    assert_eq!(d.unknown_fields, 2);
    let written: Value = serde_json::from_slice(&d.event.to_json()).expect("json");
    assert!(
        written.get("extra").is_none(),
        "extra fields are never written"
    );
}

#[test]
fn reading_is_strict_about_data_priority_subject_and_timestamp() {
    type Expect = fn(&EnvelopeError) -> bool;
    let cases: [(&[u8], Expect); 9] = [
        (br#"{"subject":"a.b","source":"s","data":[1]}"#, |e| {
            matches!(e, EnvelopeError::WrongType { field: "data", .. })
        }),
        (
            br#"{"subject":"a.b","source":"s","data":{},"priority":"urgent"}"#,
            |e| matches!(e, EnvelopeError::Priority(_)),
        ),
        (br#"{"subject":"a..b","source":"s","data":{}}"#, |e| {
            matches!(e, EnvelopeError::Subject(_))
        }),
        (
            br#"{"subject":"a.b","source":"s","data":{},"timestamp":"soon"}"#,
            |e| matches!(e, EnvelopeError::Timestamp(_)),
        ),
        (br#"{"source":"s","data":{}}"#, |e| {
            matches!(e, EnvelopeError::MissingField("subject"))
        }),
        // serde_json's raw-value marker, not first in its object here, would come first once
        // written (keys are sorted) and the envelope would not read back (found by fuzzing).
        // (First in its object, it is read differently depending on whether the build has
        // serde_json's `raw_value` feature, so these cases keep it second.)
        (
            br#"{"subject":"a.b","source":"s","data":{"k":{"z":1,"$serde_json::private::RawValue":2}}}"#,
            |e| matches!(e, EnvelopeError::ReservedKey("data")),
        ),
        (
            br#"{"subject":"a.b","source":"s","data":{},"metadata":{"a":[{"b":1,"$serde_json::private::RawValue":"1"}]}}"#,
            |e| matches!(e, EnvelopeError::ReservedKey("metadata")),
        ),
        (br#"[1,2]"#, |e| matches!(e, EnvelopeError::NotAnObject(_))),
        (b"\xff\xfe", |e| matches!(e, EnvelopeError::NotAnObject(_))),
    ];
    for (input, expected) in cases {
        let err = Event::from_json(input).expect_err("must be refused");
        assert!(
            expected(&err),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn subjects_follow_the_nats_token_rules() {
    for ok in ["a", "a.b", "trivia.started", "a-b_c.d?"] {
        assert!(Subject::new(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", ".a", "a.", "a..b", "a b", "a.*", "a.>", "a\r\nb", "a\tb",
    ] {
        assert!(Subject::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn star_matches_one_token_and_gt_matches_the_rest() {
    let star = Pattern::new("trivia.*").expect("pattern");
    assert!(star.matches(&subject("trivia.started")));
    assert!(!star.matches(&subject("trivia")));
    assert!(!star.matches(&subject("trivia.round.started")));
    let gt = Pattern::new("rosey.>").expect("pattern");
    assert!(gt.matches(&subject("rosey.a")));
    assert!(gt.matches(&subject("rosey.a.b")));
    assert!(!gt.matches(&subject("rosey")));
    assert!(Pattern::new("*.b.*")
        .expect("pattern")
        .matches(&subject("a.b.c")));
}

#[test]
fn glob_syntax_is_refused_unless_asked_for_explicitly() {
    for bad in ["a?", "a.[bc]", "a*", "a.>.b", "trivia*"] {
        assert!(
            matches!(Pattern::new(bad), Err(SubjectError::Wildcard { .. })),
            "{bad}"
        );
    }
    let seed_002_everything = Pattern::glob("*").expect("glob");
    assert!(seed_002_everything.matches(&subject("any.thing.at.all")));
    assert!(Pattern::glob("trivia.*")
        .expect("glob")
        .matches(&subject("trivia.round.started")));
}

proptest! {
    #[test]
    fn no_string_makes_a_subject_or_pattern_parser_panic(s in ".*") {
        let _ = Subject::new(&s);
        let _ = Pattern::new(&s);
        let _ = Pattern::glob(&s);
        if let Ok(p) = Pattern::glob(&s) {
            let _ = p.matches(&subject("a.b.c"));
        }
    }

    #[test]
    fn no_byte_sequence_makes_the_envelope_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::from_json(&bytes);
    }

    #[test]
    fn no_field_values_make_the_envelope_reader_panic(
        subject in ".{0,20}", source in ".{0,8}", ts in ".{0,30}", prio in ".{0,8}"
    ) {
        let v = json!({"subject": subject, "source": source, "data": {}, "timestamp": ts, "priority": prio});
        let _ = Event::from_value(v);
    }

    #[test]
    fn valid_subjects_round_trip_and_match_themselves(tokens in proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 1..6)) {
        let s = tokens.join(".");
        let subj = Subject::new(&s).expect("generated subject is valid");
        prop_assert!(Pattern::new(&s).expect("as pattern").matches(&subj));
        prop_assert!(Pattern::new(">").expect("gt").matches(&subj));
        let event = Event::new(subj.clone());
        prop_assert_eq!(Event::from_json(&event.to_json()).expect("round trip").event, event);
    }
}

#[test]
fn a_non_string_where_a_string_belongs_is_a_typed_error_naming_the_field() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"subject":7,"source":"s","data":{}}"#, "subject"),
        (br#"{"subject":"a.b","source":["s"],"data":{}}"#, "source"),
        (
            br#"{"subject":"a.b","source":"s","data":{},"timestamp":{"t":1}}"#,
            "timestamp",
        ),
        (
            br#"{"subject":"a.b","source":"s","data":{},"correlation_id":true}"#,
            "correlation_id",
        ),
        (
            br#"{"subject":"a.b","source":"s","data":{},"event_type":1.5}"#,
            "event_type",
        ),
    ];
    for (input, field) in cases {
        match Event::from_json(input) {
            Err(EnvelopeError::WrongType { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
        let value: Value = serde_json::from_slice(input).expect("json");
        assert!(matches!(
            Event::from_value(value),
            Err(EnvelopeError::WrongType { .. })
        ));
    }
}

#[test]
fn escaped_strings_and_duplicate_keys_read_like_serde_json_does() {
    let d = Event::from_json(br#"{"subject":"a.b","subject":"c.d","source":"s\u00e9","data":{}}"#)
        .expect("decode");
    assert_eq!(d.event.subject.as_str(), "c.d", "the last duplicate wins");
    assert_eq!(d.event.source, "s\u{e9}");
}

#[test]
fn a_new_event_has_a_distinct_uuid_v7_correlation_id_from_its_own_timestamp() {
    let ids: std::collections::BTreeSet<String> = (0..10_000)
        .map(|_| {
            let e = Event::new(subject("a.b"));
            let id: uuid::Uuid = e.correlation_id.parse().expect("a UUID");
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(
                e.correlation_id,
                id.hyphenated().to_string(),
                "lowercase, hyphenated"
            );
            let (secs, nanos) = id.get_timestamp().expect("v7 time").to_unix();
            let at = e.timestamp.as_datetime();
            assert_eq!(
                (secs as i64, nanos / 1_000_000),
                (at.unix_timestamp(), at.nanosecond() / 1_000_000),
                "the id's milliseconds are the event's"
            );
            e.correlation_id
        })
        .collect();
    assert_eq!(ids.len(), 10_000, "no two ids alike");
}
