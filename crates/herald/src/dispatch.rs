//! Stage 3, DISPATCH: run the matched handlers of one event in order, isolate and log each
//! failure, and hand back the report the bus counts from.

use std::sync::Arc;

use crate::handler::{run_async, Failure, Start};
use crate::message::event::Event;
use crate::route::{Entry, Matched, SubscriptionId};

/// What one publish did: how many handlers ran and which failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Handlers called (failed ones included).
    pub handlers_run: usize,
    /// Handlers that returned an error or panicked.
    pub failures: Vec<HandlerFailure>,
}

impl DispatchReport {
    /// How many handlers failed.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Whether every handler that ran succeeded.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One failed handler call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerFailure {
    /// The subscription whose handler failed.
    pub subscription: SubscriptionId,
    /// Its owner.
    pub owner: Arc<str>,
    /// The error or panic.
    pub failure: Failure,
}

#[inline]
fn record(report: &mut DispatchReport, entry: &Entry, event: &Event, result: Result<(), Failure>) {
    report.handlers_run += 1;
    if let Err(failure) = result {
        record_failure(report, entry, event, failure);
    }
}

/// Logs one failure and adds it to the report: the rare path, kept out of the loop's code.
#[cold]
#[inline(never)]
fn record_failure(report: &mut DispatchReport, entry: &Entry, event: &Event, failure: Failure) {
    tracing::warn!(
        owner = &*entry.owner,
        subject = event.subject.as_str(),
        pattern = entry.pattern.as_str(),
        "{failure}"
    );
    report.failures.push(HandlerFailure {
        subscription: SubscriptionId(entry.id),
        owner: entry.owner.clone(),
        failure,
    });
}

/// Runs every handler of a list made only of synchronous handlers, inline.
pub(crate) fn dispatch_sync(matched: &Matched, event: &Event) -> DispatchReport {
    let mut report = DispatchReport::default();
    for entry in matched.entries.iter() {
        // Every handler here is synchronous (`Matched::all_sync`): each is done at once.
        if let Start::Done(result) = entry.handler.start(event) {
            record(&mut report, entry, event, result);
        }
    }
    report
}

/// Runs every handler, in order, awaiting each async one before the next starts.
pub(crate) async fn dispatch(matched: &Matched, event: &Arc<Event>) -> DispatchReport {
    let mut report = DispatchReport::default();
    for entry in matched.entries.iter() {
        let result = match entry.handler.start(event) {
            Start::Done(result) => result,
            Start::Async(f) => run_async(f, event.clone()).await,
        };
        record(&mut report, entry, event, result);
    }
    report
}
