//! The spans of a message's hops: `publish {destination}` (producer) and `process
//! {destination}` (consumer), as `tracing` spans with OpenTelemetry's messaging attributes,
//! tied to the envelope's trace context.
//!
//! The core has no OpenTelemetry dependency. It makes `tracing` spans (target
//! [`SPAN_TARGET`], level INFO) and, with no [`SpanBridge`] installed, the W3C contexts of its
//! hops itself ([`TraceContext::child`]). A surface that exports to OpenTelemetry (the CLI,
//! the Python package, through `herald-otel`) installs a bridge: it ties each span to its
//! remote parent or link and gives back the span's own context, which the envelope then
//! carries, so the ids in the envelopes are the exported spans' ids.
//!
//! The rules, after OpenTelemetry's messaging conventions:
//! - a publish of an event without a context of its own, inside a trace (a handler's, or a
//!   span of the caller's through the bridge), is a child of it, and the event carries the
//!   publish span's context; an event with its own context keeps it byte for byte;
//! - a first delivery is processed in a child of the context it carries;
//! - a redelivery (attempt 2 and later) and a replayed dead letter (which carries the
//!   original's context as [`TRACELINK`] instead of [`TRACEPARENT`]) start a new trace with a
//!   link to the original, so a poison message does not make one endless trace.
//!
//! Built with `RUSTFLAGS='--cfg herald_untraced'`, every hop's check is a constant "no"
//! ([`TRACED`]), so the compiler removes the traced branches: the build without the feature,
//! which the `herald bench` suites are compared against to measure what tracing costs when it
//! is off (docs/architecture.md, "Tracing"). Contexts in envelopes still pass through
//! untouched.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio_util::either::Either;
use tracing::Instrument;

use super::event::Event;
use super::trace::{self, TraceContext, TRACEPARENT, TRACESTATE};

/// Whether this build has the trace hooks: `false` under `--cfg herald_untraced` (see the
/// module's documentation).
pub const TRACED: bool = !cfg!(herald_untraced);

/// The `tracing` target of the hop spans (filter it off to keep them away from a log).
pub const SPAN_TARGET: &str = "herald::hop";

/// The `metadata` key of a replayed dead letter's original `traceparent`: it is processed in
/// a new trace linked to that one.
pub const TRACELINK: &str = "tracelink";

/// One hop of a message, as its span names it.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// `messaging.system`: `herald` (the bus, the event store), `nats`, `pgmq`, `sqlite`.
    pub system: &'static str,
    /// `messaging.destination.name`: the subject, queue or stream.
    pub destination: &'a str,
    /// `messaging.message.id`.
    pub message_id: MessageId<'a>,
    /// The delivery attempt, from 1 (0 for a publish).
    pub attempt: u32,
}

/// A message's id on its hop, as `messaging.message.id` gives it.
#[derive(Debug, Clone, Copy)]
pub enum MessageId<'a> {
    /// The hop has none (the bus).
    None,
    /// A text id (a NATS message id, an event id).
    Text(&'a str),
    /// A number (a queue's msg_id, a stream position).
    Number(i64),
}

impl std::fmt::Display for MessageId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageId::None => Ok(()),
            MessageId::Text(t) => f.write_str(t),
            MessageId::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Where a span's parent comes from.
#[derive(Debug, Clone, Copy)]
pub enum Parent<'a> {
    /// The `tracing` span current where it is made (a publish).
    Contextual,
    /// A context that came with the message (a first delivery).
    Remote(&'a TraceContext),
    /// None: a new trace (a redelivery or a replay, with a link).
    Root,
}

/// Ties Herald's hop spans to a tracing backend (OpenTelemetry): installed once per process
/// by the surface that exports ([`install_bridge`]).
pub trait SpanBridge: Send + Sync + 'static {
    /// Gives `span` its parent and link, and returns its own context (`None` when the span
    /// is not recorded by the backend: the hop then makes its context itself).
    fn connect(
        &self,
        span: &tracing::Span,
        parent: Parent<'_>,
        link: Option<&TraceContext>,
    ) -> Option<TraceContext>;
}

static BRIDGE: OnceLock<Box<dyn SpanBridge>> = OnceLock::new();

/// Installs the process's [`SpanBridge`]; `false` when one already is (the first stays).
pub fn install_bridge(bridge: impl SpanBridge) -> bool {
    BRIDGE.set(Box::new(bridge)).is_ok()
}

/// Whether a [`SpanBridge`] is installed: every publish then opens a span.
#[inline]
pub fn bridged() -> bool {
    TRACED && BRIDGE.get().is_some()
}

fn connect(
    span: &tracing::Span,
    parent: Parent<'_>,
    link: Option<&TraceContext>,
) -> Option<TraceContext> {
    if let Some(link) = link {
        span.record("herald.link", link.traceparent());
    }
    if let Some(bridge) = BRIDGE.get() {
        if !span.is_disabled() {
            if let Some(ctx) = bridge.connect(span, parent, link) {
                return Some(ctx);
            }
        }
    }
    match parent {
        Parent::Remote(p) => Some(p.child()),
        Parent::Root => Some(TraceContext::new_root()),
        Parent::Contextual => trace::current().map(|c| c.child()),
    }
}

/// A delivery's processing: the context its handler runs in and its `process` span. One
/// pointer, null when nothing is traced (it sits in every dispatch's future).
#[derive(Debug)]
pub struct Processing(Option<Box<Traced>>);

#[derive(Debug)]
pub(crate) struct Traced {
    pub(crate) context: Arc<TraceContext>,
    pub(crate) span: tracing::Span,
}

impl Processing {
    /// No trace: the handler runs as it is.
    #[inline]
    pub fn none() -> Self {
        Processing(None)
    }

    /// Whether nothing is traced.
    #[inline]
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// The context the handler runs in (the process span's).
    pub fn context(&self) -> Option<&TraceContext> {
        self.0.as_ref().map(|t| &*t.context)
    }

    /// The `process` span (`None` when nothing is traced).
    pub fn span(&self) -> Option<&tracing::Span> {
        self.0.as_ref().map(|t| &t.span)
    }

    /// `fut` in the process span, with its context as the current trace context. Untraced,
    /// `fut` itself (no wrapper to poll through); traced, a boxed wrapper.
    #[inline]
    pub fn run<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        match self.0 {
            None => Either::Left(fut),
            Some(t) => Either::Right(Box::pin(run_traced(*t, fut))),
        }
    }

    /// Runs `f` in the process span, with its context as the current trace context.
    #[inline]
    pub fn run_sync<R>(self, f: impl FnOnce() -> R) -> R {
        match self.0 {
            None => f(),
            Some(t) => trace::with_current(&t.context, || t.span.in_scope(f)),
        }
    }

    /// The context and span, for a caller that sets them itself (the bus's dispatch).
    pub(crate) fn into_traced(self) -> Option<Box<Traced>> {
        self.0
    }
}

/// [`Processing::run`] of a traced delivery.
async fn run_traced<F: Future>(t: Traced, fut: F) -> F::Output {
    let Traced { context, span } = t;
    let mut fut = std::pin::pin!(fut.instrument(span));
    std::future::poll_fn(|cx| trace::with_current(&context, || fut.as_mut().poll(cx))).await
}

/// The processing of `event` on `hop`: a child of the event's context on a first delivery, a
/// new trace linked to it on a redelivery or a replay; no span for an untraced event unless
/// a bridge is installed (then it is a new trace). Cheap for an event without metadata.
#[inline]
pub fn process(hop: &Hop<'_>, event: &Event) -> Processing {
    if !TRACED || (event.metadata.is_empty() && !bridged()) {
        return Processing::none();
    }
    process_traced(hop, event)
}

/// [`process`] past its fast path.
fn process_traced(hop: &Hop<'_>, event: &Event) -> Processing {
    let own = if event.metadata.is_empty() {
        None
    } else {
        event.trace_context()
    };
    let replayed = || {
        let tp = event.metadata.get(TRACELINK)?.as_str()?;
        TraceContext::parse(tp, None).ok()
    };
    let (parent, link) = match own {
        Some(ctx) if hop.attempt > 1 => (None, Some(ctx)),
        Some(ctx) => (Some(ctx), None),
        None if event.metadata.is_empty() => (None, None),
        None => (None, replayed()),
    };
    if parent.is_none() && link.is_none() && !bridged() {
        return Processing::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "process",
        otel.name = %format_args!("process {}", hop.destination),
        otel.kind = "consumer",
        messaging.system = hop.system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = hop.destination,
        messaging.message.id = %hop.message_id,
        herald.attempt = hop.attempt,
        herald.link = tracing::field::Empty,
    );
    let parent = match (&parent, &link) {
        (Some(p), _) => Parent::Remote(p),
        _ => Parent::Root,
    };
    match connect(&span, parent, link.as_ref()) {
        Some(ctx) => Processing(Some(Box::new(Traced {
            context: trace::shared(ctx),
            span,
        }))),
        None => Processing::none(),
    }
}

/// Opens the `publish` span of `event` on `hop` and gives the event the span's context, when
/// the event has none of its own and a trace is current (a handler's; with a bridge, also a
/// span of the caller's, or else a new trace). Keep the span until the send is acknowledged:
/// it ends when dropped. `Span::none()` when nothing is traced.
pub fn publish(hop: &Hop<'_>, event: &mut Event) -> tracing::Span {
    if !publishes(event) {
        return tracing::Span::none();
    }
    let span = publish_span(hop);
    if let Some(ctx) = connect(&span, Parent::Contextual, None) {
        event.set_trace_context(Some(&ctx));
    }
    span
}

/// [`publish`] for a transport that sends a borrowed event: a copy of `event` carrying its
/// publish span's context (`None`: send `event` as it is), and the span, to keep until the
/// send is acknowledged.
pub fn continued(
    system: &'static str,
    destination: &str,
    event: &Event,
) -> (Option<Event>, tracing::Span) {
    if !publishes(event) {
        return (None, tracing::Span::none());
    }
    let mut published = event.clone();
    let hop = Hop {
        system,
        destination,
        message_id: MessageId::None,
        attempt: 0,
    };
    let span = publish(&hop, &mut published);
    (Some(published), span)
}

/// The envelopes of `events` as sent to `destination` on `system`, each continuing the
/// current trace (see [`continued`]), and their publish spans (empty when nothing is traced):
/// keep them until the send commits.
pub fn sent_bodies(
    system: &'static str,
    destination: &str,
    events: &[Event],
) -> (Vec<String>, Vec<tracing::Span>) {
    let mut spans = Vec::new();
    let bodies = events
        .iter()
        .map(|e| {
            let (continued, span) = continued(system, destination, e);
            if !span.is_none() {
                spans.push(span);
            }
            continued.as_ref().unwrap_or(e).to_json_string()
        })
        .collect();
    (bodies, spans)
}

/// One event's envelope as sent to `destination` on `system`, continuing the current trace
/// (see [`continued`]), and its publish span (none when nothing is traced): keep it until the
/// send commits.
pub fn sent_body(
    system: &'static str,
    destination: &str,
    event: &Event,
) -> (String, tracing::Span) {
    let (continued, span) = continued(system, destination, event);
    (continued.as_ref().unwrap_or(event).to_json_string(), span)
}

/// `events` as sent to `destination` on `system`, each continuing the current trace (a copy
/// when any does; `None`: send them as they are), and their publish spans: for a store that
/// keeps events rather than envelopes.
pub fn sent_events(
    system: &'static str,
    destination: &str,
    events: &[Event],
) -> (Option<Vec<Event>>, Vec<tracing::Span>) {
    let mut spans = Vec::new();
    let mut copies: Option<Vec<Event>> = None;
    for (i, e) in events.iter().enumerate() {
        let (continued, span) = continued(system, destination, e);
        if !span.is_none() {
            spans.push(span);
        }
        if let Some(c) = continued {
            copies.get_or_insert_with(|| events.to_vec())[i] = c;
        }
    }
    (copies, spans)
}

/// Whether [`publish`] would open a span for `event` (a caller that must copy its hop's
/// names out of the event asks first).
#[inline]
pub fn publishes(event: &Event) -> bool {
    TRACED && (bridged() || trace::is_current()) && !event.metadata.contains_key(TRACEPARENT)
}

/// The `publish {destination}` producer span of `hop`, not connected.
fn publish_span(hop: &Hop<'_>) -> tracing::Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "publish",
        otel.name = %format_args!("publish {}", hop.destination),
        otel.kind = "producer",
        messaging.system = hop.system,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = hop.destination,
        messaging.message.id = %hop.message_id,
        herald.link = tracing::field::Empty,
    )
}

/// `body` (an envelope) for a dead letter's replay (see [`replayed`]). A body that is not an
/// envelope is returned as it is.
pub fn replay_body(body: &[u8]) -> Vec<u8> {
    match Event::from_json(body) {
        Ok(decoded) if decoded.event.metadata.contains_key(TRACEPARENT) => {
            replayed(decoded.event).to_json()
        }
        _ => body.to_vec(),
    }
}

/// `event` as a dead letter's replay: its context moves to [`TRACELINK`], so the replay is
/// processed in a new trace linked to the original. An event without one is left as it is.
pub fn replayed(mut event: Event) -> Event {
    if let Some(Value::String(tp)) = event.metadata.remove(TRACEPARENT) {
        event.metadata.remove(TRACESTATE);
        event.metadata.insert(TRACELINK.into(), Value::String(tp));
    }
    event
}

/// `event` without its trace keys: what a fingerprint of the message is taken over (a
/// replay's new trace does not make it another message).
pub(crate) fn untraced(event: &mut Event) {
    // `flow_seq` too: a replay into an ordering key carries it, and is the same message.
    for key in [
        TRACEPARENT,
        TRACESTATE,
        TRACELINK,
        crate::queue::flow::FLOW_SEQ,
    ] {
        event.metadata.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Subject;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traced() -> Event {
        Event::new(Subject::new("a.b").expect("subject"))
            .with_trace_context(&TraceContext::parse(TP, None).expect("valid"))
    }

    fn hop(attempt: u32) -> Hop<'static> {
        Hop {
            system: "herald",
            destination: "a.b",
            message_id: MessageId::Number(1),
            attempt,
        }
    }

    #[test]
    fn a_first_delivery_is_a_child_and_a_redelivery_a_new_trace() {
        let first = process(&hop(1), &traced());
        let ctx = first.context().expect("traced");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.parent_id(), "00f067aa0ba902b7");
        let again = process(&hop(2), &traced());
        let ctx = again.context().expect("a new trace");
        assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let plain = Event::new(Subject::new("a.b").expect("subject"));
        assert!(process(&hop(1), &plain).context().is_none(), "untraced");
    }

    #[test]
    fn a_replayed_body_links_to_its_original_and_keeps_its_fingerprint() {
        let body = traced().to_json();
        let replayed = replay_body(&body);
        let event = Event::from_json(&replayed).expect("envelope").event;
        assert!(event.trace_context().is_none());
        assert_eq!(event.metadata[TRACELINK], TP);
        let ctx = process(&hop(1), &event)
            .context()
            .cloned()
            .expect("new trace");
        assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            crate::dlq::fingerprint(&body),
            crate::dlq::fingerprint(&replayed)
        );
        assert_eq!(replay_body(b"not json"), b"not json");
    }

    #[tokio::test]
    async fn a_publish_in_a_handler_is_a_child_of_its_process_context() {
        let processing = process(&hop(1), &traced());
        let parent = processing.context().cloned().expect("traced");
        let mut e = Event::new(Subject::new("a.c").expect("subject"));
        let published = processing
            .run(async move {
                let _span = publish(&hop(0), &mut e);
                e
            })
            .await;
        let ctx = published.trace_context().expect("continued");
        assert_eq!(ctx.trace_id(), parent.trace_id());
        assert_ne!(ctx.parent_id(), parent.parent_id());
        let mut outside = Event::new(Subject::new("a.c").expect("subject"));
        let _ = publish(&hop(0), &mut outside);
        assert!(outside.trace_context().is_none(), "nothing traced outside");
    }
}
