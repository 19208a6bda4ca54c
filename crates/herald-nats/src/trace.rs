//! The envelope's W3C trace context as NATS headers: `traceparent` and `tracestate` are set
//! on every publish of an event that carries them (so clients that do not read Herald's
//! envelope see them), and taken from a received message's headers when its envelope has
//! none (a plain NATS publisher's context); a malformed one is dropped and counted.

use async_nats::HeaderMap;
use herald::{Event, TRACEPARENT, TRACESTATE};

/// `event` with the context of its `publish` span (see [`herald::hop::continued`]).
pub(crate) fn continued(event: &Event) -> (Option<Event>, tracing::Span) {
    herald::hop::continued("nats", event.subject.as_str(), event)
}

/// The hop of `event` on NATS: its subject.
pub(crate) fn hop(event: &Event, attempt: u32) -> herald::hop::Hop<'_> {
    herald::hop::Hop {
        system: "nats",
        destination: event.subject.as_str(),
        message_id: herald::hop::MessageId::None,
        attempt,
    }
}

/// The headers carrying `event`'s trace context; `None` when it has none.
pub(crate) fn headers(event: &Event) -> Option<HeaderMap> {
    let ctx = event.trace_context()?;
    let mut h = HeaderMap::new();
    insert(&mut h, &ctx);
    Some(h)
}

/// Adds `ctx` to `h`.
pub(crate) fn insert(h: &mut HeaderMap, ctx: &herald::TraceContext) {
    h.insert(TRACEPARENT, ctx.traceparent());
    if let Some(ts) = ctx.tracestate() {
        h.insert(TRACESTATE, ts);
    }
}

/// Takes the trace context of a received message's headers into `event` when its envelope
/// has none.
pub(crate) fn adopt(event: &mut Event, headers: Option<&HeaderMap>) {
    let Some(h) = headers else { return };
    let tp = h.get(TRACEPARENT).map(|v| v.as_str());
    let ts = h.get(TRACESTATE).map(|v| v.as_str());
    event.adopt_trace_context(tp, ts);
}
