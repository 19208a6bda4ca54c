//! Small fixtures the tests share: events tagged with a test id, reading the id back, and
//! handlers that log or count what they see.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use herald::{sync_handler, Event, Handler, Subject};

/// The metadata key a test id travels under.
pub const TEST_ID: &str = "test_id";

/// An event on `subject`.
///
/// # Panics
///
/// When `subject` is not a valid subject (a test's own typo).
pub fn event(subject: &str) -> Event {
    Event::new(Subject::new(subject).expect("valid subject"))
}

/// An event on `subject` tagged with `id` (in `metadata.test_id`).
pub fn tagged(subject: &str, id: &str) -> Event {
    event(subject).with_metadata(TEST_ID, id)
}

/// The id an event was tagged with: `metadata.test_id`, else its event id, else `?`.
pub fn id_of(e: &Event) -> String {
    e.metadata
        .get(TEST_ID)
        .and_then(|v| v.as_str())
        .or_else(|| e.event_id())
        .unwrap_or("?")
        .to_owned()
}

/// A shared log of strings, written by handlers and read by the test (`parking_lot`, so a
/// panicking handler cannot poison it).
pub type Log = Arc<Mutex<Vec<String>>>;

/// A sync handler that appends `tag` to `log` for each event.
pub fn logger(log: &Log, tag: &str) -> Handler {
    let (log, tag) = (log.clone(), tag.to_owned());
    sync_handler(move |_: &Event| log.lock().push(tag.clone()))
}

/// A sync handler that counts events, and its count.
pub fn counter() -> (Arc<AtomicUsize>, Handler) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    (
        n,
        sync_handler(move |_: &Event| {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    )
}
