//! The properties the fuzz targets (`fuzz/`) check, kept here so the crash inputs they find
//! replay as ordinary tests (`tests/fuzz_replay.rs`) against the same code.

use crate::message::event::Event;
use crate::message::pattern::Pattern;
use crate::message::subject::Subject;

/// Any bytes decode or are refused without a panic; an accepted envelope writes back to one
/// that decodes to the same event.
pub fn envelope(data: &[u8]) {
    if let Ok(decoded) = Event::from_json(data) {
        let again = Event::from_json(&decoded.event.to_json())
            .unwrap_or_else(|e| panic!("a written envelope does not read back: {e}"));
        assert_eq!(
            again.event, decoded.event,
            "an envelope changed on a round trip"
        );
    }
}

/// Any string is a subject or refused without a panic; a subject's text is kept as given, and
/// it matches itself as a pattern, except a subject holding `?`, `[`, `]`, or `*`/`>` inside a
/// longer token: NATS allows those in subjects, but Herald's token patterns refuse them as
/// glob syntax or misplaced wildcards (DESIGN.md), so such a subject is subscribed to through
/// a wildcard (found by this target: `s?2)rted`, `s*t))rted`).
pub fn subject(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Subject::new(text) {
        assert_eq!(s.as_str(), text);
        match Pattern::new(text) {
            Ok(p) => assert!(p.matches(&s), "a subject does not match itself"),
            Err(e) => assert!(
                text.contains(['?', '[', ']', '*', '>']),
                "subject {text:?} is not a pattern: {e}"
            ),
        }
        let parent = text
            .rsplit_once('.')
            .map_or(">".to_owned(), |(head, _)| format!("{head}.*"));
        let wildcard = Pattern::new(&parent).or_else(|_| Pattern::new(">"));
        assert!(
            wildcard.is_ok_and(|p| p.matches(&s)),
            "no wildcard reaches {text:?}"
        );
    }
}

/// Any string is a pattern (token or glob) or refused without a panic; matching it against
/// subjects made from the same bytes does not panic, and `>` matches every subject.
pub fn pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, rest) = text.split_once('\n').unwrap_or((text, "a.b"));
    let token = Pattern::new(pattern);
    let glob = Pattern::glob(pattern);
    for candidate in rest.split('\n') {
        if let Ok(s) = Subject::new(candidate) {
            if let Ok(p) = &token {
                let _ = p.matches(&s);
            }
            if let Ok(g) = &glob {
                let _ = g.matches(&s);
            }
            let all = Pattern::new(">").unwrap_or_else(|e| panic!("`>` is a pattern: {e}"));
            assert!(all.matches(&s), "`>` does not match {candidate}");
        }
    }
}
