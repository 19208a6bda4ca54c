//! The dispatch depth (how deeply publishes are nested inside handlers), kept in a
//! thread-local that is set only while handlers run: around a sync dispatch, and around each
//! poll of an async dispatch's future.
//!
//! A handler's code runs only inside those calls and polls, and nothing else runs on the
//! thread meanwhile, so the value read there is exact; outside any handler it is 0. This costs
//! two `Cell` writes per call or poll, where a tokio task-local scope cost a scope future and
//! a `RefCell` swap per poll. Like a task-local, it does not follow a task the handler spawns.

use std::cell::Cell;
use std::future::{poll_fn, Future};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// The depth of the handler running here: 0 outside any handler.
pub(crate) fn here() -> u32 {
    DEPTH.with(Cell::get)
}

/// Runs `f` with the depth set to `depth`, restored afterwards (also if `f` unwinds).
pub(crate) fn with_depth<R>(depth: u32, f: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEPTH.with(|d| d.replace(depth)));
    f()
}

/// Awaits `fut` with the depth set to `depth` during each of its polls.
pub(crate) async fn at_depth<F: Future>(depth: u32, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| with_depth(depth, || fut.as_mut().poll(cx))).await
}

/// [`at_depth`] for a traced delivery: its process context is the current trace context and
/// its process span is entered during each poll (as `tracing::Instrument` does).
pub(crate) async fn traced_at_depth<F: Future>(
    depth: u32,
    processing: crate::hop::Processing,
    fut: F,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let traced = processing.into_traced();
    poll_fn(|cx| {
        with_depth(depth, || match &traced {
            None => fut.as_mut().poll(cx),
            Some(t) => {
                let _entered = t.span.enter();
                crate::message::trace::with_current(&t.context, || fut.as_mut().poll(cx))
            }
        })
    })
    .await
}
