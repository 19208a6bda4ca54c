//! W3C trace context in the envelope: `traceparent` (and `tracestate`) kept in `metadata`,
//! validated where an envelope comes in, carried byte for byte through every hop.
//!
//! The core has no OpenTelemetry dependency: it parses, validates and carries the two
//! strings, and makes the child context a new hop starts from. A malformed `traceparent`
//! that arrives from outside (an envelope read, a NATS header) is dropped with its
//! `tracestate` and counted ([`malformed_dropped`]), never an error.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::event::{Event, Object};

/// The `metadata` key (and NATS header) of the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The `metadata` key (and NATS header) of the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// Whether any handler ever ran in a trace context in this process: until then, publishes
/// skip the thread-local (an untraced program pays one relaxed load per publish).
static EVER: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The trace context of the delivery being processed here (set during each poll).
    static CURRENT: RefCell<Option<Arc<TraceContext>>> = const { RefCell::new(None) };
}

/// The trace context of the delivery whose handler is running here: an event published now
/// without a context of its own continues it ([`Event::continue_current`]).
#[inline]
pub fn current() -> Option<Arc<TraceContext>> {
    if !super::hop::TRACED || !EVER.load(Ordering::Relaxed) {
        return None;
    }
    current_here()
}

/// Whether a trace context is current here (no clone; one relaxed load in an untraced
/// program).
#[inline]
pub(crate) fn is_current() -> bool {
    super::hop::TRACED && EVER.load(Ordering::Relaxed) && CURRENT.with(|c| c.borrow().is_some())
}

#[cold]
fn current_here() -> Option<Arc<TraceContext>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Awaits `fut` with `ctx` as the [`current`] trace context during each of its polls (the
/// previous one restored after each, also if a poll unwinds). `None` runs `fut` as it is.
pub async fn in_context<F: Future>(ctx: Option<TraceContext>, fut: F) -> F::Output {
    let Some(ctx) = ctx else {
        return fut.await;
    };
    let ctx = shared(ctx);
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| with_current(&ctx, || fut.as_mut().poll(cx))).await
}

/// `fut`, carried into a task of its own: it runs in the trace context and the `tracing` span
/// current where this is called, as the handler's own code does (a spawned task starts with
/// neither). For a task a handler spawns: `tokio::spawn(herald::traced(async move { .. }))`,
/// as `tracing`'s `in_current_span`. Nothing current: `fut` as it is, in the current span.
pub fn traced<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use tracing::Instrument;
    let ctx = current();
    let fut = fut.instrument(tracing::Span::current());
    async move {
        let Some(ctx) = ctx else {
            return fut.await;
        };
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| with_current(&ctx, || fut.as_mut().poll(cx))).await
    }
}

/// `ctx`, shared, for [`with_current`]; marks that a trace context was seen in this process.
pub(crate) fn shared(ctx: TraceContext) -> Arc<TraceContext> {
    EVER.store(true, Ordering::Relaxed);
    Arc::new(ctx)
}

/// Runs `f` with the shared `ctx` as the [`current`] trace context (restored afterwards, also
/// if `f` unwinds): one poll of a traced dispatch.
pub(crate) fn with_current<R>(ctx: &Arc<TraceContext>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<TraceContext>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(ctx.clone())));
    f()
}

/// Malformed `traceparent` values dropped in this process since it started.
pub fn malformed_dropped() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

/// What is wrong with a `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("traceparent {value:?}: {reason}")]
pub struct TraceContextError {
    /// The value as given (at most 64 characters of it).
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// A W3C trace context: `traceparent` = `{version}-{trace id}-{parent id}-{flags}` (2, 32, 16
/// and 2 lowercase hex digits), and the vendors' `tracestate`, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `N` random bytes as lowercase hex, never all zero.
fn random_hex<const N: usize>() -> String {
    loop {
        let buf: [u8; N] = rand::random();
        if buf.iter().any(|b| *b != 0) {
            return buf.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

impl TraceContext {
    /// Validates `traceparent` (version `00` exactly as W3C Trace Context level 1 gives it; a
    /// later version is read by its first four fields) and keeps both values as given.
    ///
    /// # Errors
    ///
    /// [`TraceContextError`] naming the value and what is wrong: the shape, a version of
    /// `ff`, an all-zero trace or parent id.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceContextError> {
        let bad = |reason| TraceContextError {
            value: traceparent.chars().take(64).collect(),
            reason,
        };
        let mut parts = traceparent.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not version-traceid-parentid-flags"));
        };
        if !hex(version, 2) || version == "ff" {
            return Err(bad("the version is not two hex digits other than ff"));
        }
        if version == "00" && (parts.next().is_some() || traceparent.len() != 55) {
            return Err(bad("version 00 has exactly four fields, 55 characters"));
        }
        if !hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
            return Err(bad("the trace id is not 32 hex digits, not all zero"));
        }
        if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
            return Err(bad("the parent id is not 16 hex digits, not all zero"));
        }
        if !hex(flags, 2) {
            return Err(bad("the flags are not two hex digits"));
        }
        Ok(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.filter(|s| !s.is_empty()).map(str::to_owned),
        })
    }

    /// A new trace: random trace and parent ids, sampled.
    pub fn new_root() -> Self {
        TraceContext {
            traceparent: format!("00-{}-{}-01", random_hex::<16>(), random_hex::<8>()),
            tracestate: None,
        }
    }

    /// The same trace with a new parent id (the span of the next hop), the flags and the
    /// `tracestate` kept.
    pub fn child(&self) -> Self {
        TraceContext {
            traceparent: format!(
                "00-{}-{}-{}",
                self.trace_id(),
                random_hex::<8>(),
                self.flags()
            ),
            tracestate: self.tracestate.clone(),
        }
    }

    /// The `traceparent`, as given.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate`, as given.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id: 32 hex digits.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The parent (span) id: 16 hex digits.
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// The trace flags: 2 hex digits (`01`: sampled).
    pub fn flags(&self) -> &str {
        &self.traceparent[53..55]
    }

    /// The trace context in a serialized envelope's `metadata`, read without building the
    /// event (the relays and PGMQ's headers column take it from stored bodies); `None` when
    /// it has none, or a malformed one. A body without the key is not parsed at all.
    pub fn of_body(body: &[u8]) -> Option<TraceContext> {
        memchr::memmem::find(body, TRACEPARENT.as_bytes())?;
        #[derive(serde::Deserialize)]
        struct Trace {
            traceparent: Option<String>,
            tracestate: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Envelope {
            metadata: Option<Trace>,
        }
        let meta = serde_json::from_slice::<Envelope>(body).ok()?.metadata?;
        TraceContext::parse(meta.traceparent.as_deref()?, meta.tracestate.as_deref()).ok()
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(self.flags(), 16).is_ok_and(|f| f & 1 == 1)
    }
}

/// Drops a malformed `traceparent` (and its `tracestate`) from `metadata`, counting it;
/// whether one was dropped. A valid one is left byte for byte.
pub(crate) fn sanitize(metadata: &mut Object) -> bool {
    let valid = match metadata.get(TRACEPARENT) {
        None => return false,
        Some(Value::String(tp)) => {
            let ts = match metadata.get(TRACESTATE) {
                Some(Value::String(s)) => Some(s.as_str()),
                _ => None,
            };
            TraceContext::parse(tp, ts).is_ok()
        }
        Some(_) => false,
    };
    if valid {
        if metadata.get(TRACESTATE).is_some_and(|v| !v.is_string()) {
            metadata.remove(TRACESTATE);
        }
        return false;
    }
    metadata.remove(TRACEPARENT);
    metadata.remove(TRACESTATE);
    MALFORMED.fetch_add(1, Ordering::Relaxed);
    true
}

impl Event {
    /// The event's trace context, when its `metadata` holds a valid `traceparent`.
    pub fn trace_context(&self) -> Option<TraceContext> {
        let tp = self.metadata.get(TRACEPARENT)?.as_str()?;
        let ts = self.metadata.get(TRACESTATE).and_then(Value::as_str);
        TraceContext::parse(tp, ts).ok()
    }

    /// The event with `ctx` as its trace context (`traceparent`, and `tracestate` when set).
    #[must_use]
    pub fn with_trace_context(mut self, ctx: &TraceContext) -> Self {
        self.set_trace_context(Some(ctx));
        self
    }

    /// Sets (or with `None` removes) the event's trace context.
    pub fn set_trace_context(&mut self, ctx: Option<&TraceContext>) {
        self.metadata.remove(TRACESTATE);
        match ctx {
            Some(ctx) => {
                self.metadata
                    .insert(TRACEPARENT.into(), Value::from(ctx.traceparent()));
                if let Some(ts) = ctx.tracestate() {
                    self.metadata.insert(TRACESTATE.into(), Value::from(ts));
                }
            }
            None => {
                self.metadata.remove(TRACEPARENT);
            }
        }
    }

    /// Gives an event without a trace context the [`current`] one, one hop on (the publish
    /// of a handler's follow-up event); whether it did. An event with its own is left as is.
    pub fn continue_current(&mut self) -> bool {
        if !EVER.load(Ordering::Relaxed) || self.metadata.contains_key(TRACEPARENT) {
            return false;
        }
        match current() {
            Some(ctx) => {
                self.set_trace_context(Some(&ctx.child()));
                true
            }
            None => false,
        }
    }

    /// Takes a trace context a transport carried beside the envelope (NATS headers), for an
    /// event whose envelope has none: a valid one is set, a malformed one dropped and counted.
    /// An envelope's own context wins. Whether the headers' context was taken.
    pub fn adopt_trace_context(
        &mut self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> bool {
        let Some(tp) = traceparent else {
            return false;
        };
        if self.metadata.contains_key(TRACEPARENT) {
            return false;
        }
        match TraceContext::parse(tp, tracestate) {
            Ok(ctx) => {
                self.set_trace_context(Some(&ctx));
                true
            }
            Err(_) => {
                MALFORMED.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn traced_carries_the_current_context_into_a_spawned_task() {
        let ctx = TraceContext::new_root();
        let want = ctx.trace_id().to_owned();
        let id = || current().map(|c| c.trace_id().to_owned());
        let (with, without) = in_context(Some(ctx), async move {
            let with = tokio::spawn(traced(async move { id() })).await;
            let without = tokio::spawn(async move { id() }).await;
            (with.expect("joined"), without.expect("joined"))
        })
        .await;
        assert_eq!(
            with,
            Some(want),
            "a task spawned with `traced` is in the trace"
        );
        assert_eq!(without, None, "a task spawned without it starts with none");
    }

    #[tokio::test]
    async fn a_follow_up_published_in_a_handler_continues_its_trace() {
        let ctx = TraceContext::new_root();
        let mut outside = Event::new(crate::Subject::new("a.b").expect("subject"));
        assert!(!outside.continue_current(), "no current context outside");
        let inner = in_context(Some(ctx.clone()), async {
            tokio::task::yield_now().await;
            let mut e = Event::new(crate::Subject::new("a.c").expect("subject"));
            assert!(e.continue_current());
            e
        })
        .await;
        let got = inner.trace_context().expect("continued");
        assert_eq!(got.trace_id(), ctx.trace_id());
        assert_ne!(got.parent_id(), ctx.parent_id());
        assert!(current().is_none(), "restored after the scope");
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example_and_names_what_is_wrong() {
        let ctx = TraceContext::parse(TP, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id(), "00f067aa0ba902b7");
        assert!(ctx.sampled());
        for (bad, why) in [
            ("", "not version"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "not version",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                "flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "55 characters",
            ),
        ] {
            let e = TraceContext::parse(bad, None).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future";
        assert!(
            TraceContext::parse(later, None).is_ok(),
            "a later version's extra fields"
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let ctx = TraceContext::parse(TP, Some("a=b")).expect("valid");
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.parent_id(), ctx.parent_id());
        assert_eq!((child.flags(), child.tracestate()), ("01", Some("a=b")));
        let root = TraceContext::new_root();
        assert!(TraceContext::parse(root.traceparent(), None).is_ok());
    }

    #[test]
    fn a_malformed_traceparent_is_dropped_and_counted_a_valid_one_kept_byte_for_byte() {
        let before = malformed_dropped();
        let json = format!(
            r#"{{"subject":"a.b","source":"t","data":{{}},"metadata":{{"traceparent":"{TP}","tracestate":"x=1"}}}}"#
        );
        let e = Event::from_json(json.as_bytes()).expect("envelope").event;
        assert_eq!(e.metadata[TRACEPARENT], TP);
        assert_eq!(e.metadata[TRACESTATE], "x=1");
        let bad = r#"{"subject":"a.b","source":"t","data":{},"metadata":{"traceparent":"nope","tracestate":"x=1","k":1}}"#;
        let e = Event::from_json(bad.as_bytes())
            .expect("still an envelope")
            .event;
        assert!(!e.metadata.contains_key(TRACEPARENT) && !e.metadata.contains_key(TRACESTATE));
        assert_eq!(e.metadata["k"], 1);
        let mut e = e;
        assert!(!e.adopt_trace_context(Some("00-zz"), None));
        assert!(e.trace_context().is_none());
        assert!(malformed_dropped() >= before + 2);
        assert!(e.adopt_trace_context(Some(TP), None));
        assert_eq!(
            e.trace_context()
                .map(|c| c.trace_id().to_owned())
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let other = "00-11111111111111111111111111111111-2222222222222222-00";
        assert!(
            !e.adopt_trace_context(Some(other), None),
            "the envelope's own wins"
        );
    }
}
