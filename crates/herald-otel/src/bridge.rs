//! The [`SpanBridge`] to OpenTelemetry: gives a hop's `tracing` span its remote parent or
//! link through `tracing-opentelemetry`, and reads back the span's own W3C context, which
//! the envelope then carries.

use herald::hop::{Parent, SpanBridge};
use herald::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Ties Herald's hop spans to the OpenTelemetry layer of the `tracing` subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

/// `ctx` as OpenTelemetry's remote span context.
pub(crate) fn span_context(ctx: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(ctx.trace_id()).ok()?;
    let span_id = SpanId::from_hex(ctx.parent_id()).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(ctx.flags(), 16).ok()?);
    let state = ctx
        .tracestate()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// OpenTelemetry's span context as a W3C `TraceContext`.
pub(crate) fn trace_context(sc: &SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{:032x}-{:016x}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let state = sc.trace_state().header();
    TraceContext::parse(&traceparent, Some(state.as_str()).filter(|s| !s.is_empty())).ok()
}

impl SpanBridge for Bridge {
    fn connect(
        &self,
        span: &tracing::Span,
        parent: Parent<'_>,
        link: Option<&TraceContext>,
    ) -> Option<TraceContext> {
        // A span the OpenTelemetry layer does not record (none in the subscriber, or filtered
        // out) gives an error here and an invalid context below: the hop then makes its
        // context itself.
        match parent {
            Parent::Contextual => {}
            Parent::Remote(p) => {
                if let Some(sc) = span_context(p) {
                    let _ = span.set_parent(Context::new().with_remote_span_context(sc));
                }
            }
            Parent::Root => {
                let _ = span.set_parent(Context::new());
            }
        }
        if let Some(sc) = link.and_then(span_context) {
            span.add_link(sc);
        }
        trace_context(span.context().span().span_context())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_goes_to_opentelemetry_and_back_byte_for_byte() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(tp, Some("congo=t61rcWkgMzE")).expect("valid");
        let sc = span_context(&ctx).expect("converts");
        let back = trace_context(&sc).expect("valid");
        assert_eq!(back, ctx);
    }
}
