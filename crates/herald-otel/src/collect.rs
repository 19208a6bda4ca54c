//! Spans kept in memory and printed as a tree (or dropped, [`Discard`]): how `herald demo --trace` shows one piece of
//! work's hops, with the time spent in each, without a collector.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use parking_lot::Mutex;

/// An exporter that keeps every span it is given.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

impl SpanExporter for Collector {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.lock().extend(batch);
        Ok(())
    }
}

/// An exporter that drops every span (what the SDK and the hops cost without the wire).
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

impl Collector {
    /// A new, empty collector.
    pub fn new() -> Self {
        Collector::default()
    }

    /// The spans collected so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().clone()
    }

    /// The tree ([`render`]) of the trace with the most spans among those holding a span
    /// named `name` (the step whose work went furthest); `None` when no span has the name.
    pub fn busiest_tree(&self, name: &str) -> Option<String> {
        let spans = self.spans();
        let count = |t: TraceId| {
            spans
                .iter()
                .filter(|s| s.span_context.trace_id() == t)
                .count()
        };
        let trace = spans
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.span_context.trace_id())
            .max_by_key(|t| count(*t))?;
        Some(render(&spans, trace))
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn micros(from: SystemTime, to: SystemTime) -> u128 {
    to.duration_since(from).map(|d| d.as_micros()).unwrap_or(0)
}

/// The spans of `trace`, as a tree: each line a span (its name, kind, system, when it started
/// after the trace's first span and how long it took), its children indented under it; a
/// span's links to other traces after it.
pub fn render(spans: &[SpanData], trace: TraceId) -> String {
    let mut mine: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    mine.sort_by_key(|s| s.start_time);
    let Some(start) = mine.first().map(|s| s.start_time) else {
        return String::new();
    };
    let ids: Vec<SpanId> = mine.iter().map(|s| s.span_context.span_id()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "trace {trace:032x}");
    fn walk(
        out: &mut String,
        mine: &[&SpanData],
        parent: Option<SpanId>,
        ids: &[SpanId],
        start: SystemTime,
        depth: usize,
    ) {
        for s in mine {
            let is_child = match parent {
                Some(p) => s.parent_span_id == p,
                None => !ids.contains(&s.parent_span_id),
            };
            if !is_child {
                continue;
            }
            let kind = match s.span_kind {
                SpanKind::Producer => "producer",
                SpanKind::Consumer => "consumer",
                SpanKind::Client => "client",
                SpanKind::Server => "server",
                SpanKind::Internal => "internal",
            };
            let system = attribute(s, "messaging.system")
                .map(|v| v.as_str().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:indent$}{} [{kind}{}{system}] +{:.2} ms, {:.2} ms",
                "",
                s.name,
                if system.is_empty() { "" } else { ", " },
                micros(start, s.start_time) as f64 / 1000.0,
                micros(s.start_time, s.end_time) as f64 / 1000.0,
                indent = 2 + depth * 2,
            );
            for link in s.links.iter() {
                let _ = writeln!(
                    out,
                    "{:indent$}linked to trace {:032x}",
                    "",
                    link.span_context.trace_id(),
                    indent = 6 + depth * 2,
                );
            }
            walk(
                out,
                mine,
                Some(s.span_context.span_id()),
                ids,
                start,
                depth + 1,
            );
        }
    }
    walk(&mut out, &mine, None, &ids, start, 0);
    out
}
