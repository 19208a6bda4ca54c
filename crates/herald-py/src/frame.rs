//! Python objects passed through Herald's bus without JSON: a publish pushes its arguments
//! as a frame on this thread, the Rust handler of a Python callback calls the callback with
//! the innermost frame's arguments, an awaitable result and a raised exception are kept in
//! the frame for the publisher, and the publish itself is polled in place (`publish_now`).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use herald::{Bus, DispatchReport, Event, PublishError, Subject, SubjectError};
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use rustc_hash::FxHashMap;

use crate::FailureRow;

/// The arguments of one publish in progress, the awaitables its handlers returned and the
/// exceptions they raised.
struct Frame {
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    pending: Vec<(Py<PyString>, PyObject)>,
    failures: Vec<FailureRow>,
    /// A `BaseException` that is not an `Exception` (`KeyboardInterrupt`, `SystemExit`)
    /// raised by a handler: not isolated, it ends the publish and is raised to its caller.
    interrupt: Option<PyErr>,
}

thread_local! {
    /// Innermost last: a handler that publishes pushes a frame above its own publish's.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// One publish's frame on this thread; dropping it (also while unwinding) pops it.
pub(crate) struct FrameGuard {
    below: usize,
}

/// Pushes the arguments of a publish about to start on this thread.
pub(crate) fn push(args: Py<PyTuple>, kwargs: Option<Py<PyDict>>) -> FrameGuard {
    FRAMES.with(|f| {
        let mut frames = f.borrow_mut();
        let below = frames.len();
        frames.push(Frame {
            args,
            kwargs,
            pending: Vec::new(),
            failures: Vec::new(),
            interrupt: None,
        });
        FrameGuard { below }
    })
}

impl FrameGuard {
    /// The `(owner, awaitable)` pairs the handlers of this publish returned, as a list (or
    /// `None` when there are none), taken out of the frame.
    pub(crate) fn take_pending<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let pending = FRAMES.with(|f| {
            f.borrow_mut()
                .get_mut(self.below)
                .map(|frame| std::mem::take(&mut frame.pending))
                .unwrap_or_default()
        });
        if pending.is_empty() {
            return Ok(None);
        }
        PyList::new(py, pending).map(Some)
    }

    /// The `KeyboardInterrupt` or `SystemExit` a handler of this publish raised, if any: the
    /// caller raises it instead of returning. The awaitables that handlers before it
    /// returned are closed, so none is left never awaited.
    pub(crate) fn take_interrupt(&self, py: Python<'_>) -> Option<PyErr> {
        let (interrupt, pending) = FRAMES.with(|f| {
            let mut frames = f.borrow_mut();
            let frame = frames.get_mut(self.below)?;
            let interrupt = frame.interrupt.take()?;
            Some((interrupt, std::mem::take(&mut frame.pending)))
        })?;
        for (_, awaitable) in pending {
            // Best effort: an awaitable without `close` is simply dropped.
            let _ = awaitable.call_method0(py, intern!(py, "close"));
        }
        Some(interrupt)
    }

    /// The `(owner, type, message, traceback)` of every handler of this publish that
    /// failed: the Python exceptions its handlers raised, then, from Herald's report, any
    /// failure that was not one (a panic).
    pub(crate) fn take_failures(&self, report: &DispatchReport) -> Vec<FailureRow> {
        if report.failures.is_empty() {
            return Vec::new();
        }
        let mut rows = FRAMES.with(|f| {
            f.borrow_mut()
                .get_mut(self.below)
                .map(|frame| std::mem::take(&mut frame.failures))
                .unwrap_or_default()
        });
        for f in report.failures.iter().skip(rows.len()) {
            rows.push((
                f.owner.to_string(),
                "HeraldError".to_owned(),
                f.failure.to_string(),
                String::new(),
            ));
        }
        rows
    }
}

/// Keeps a handler's `KeyboardInterrupt` or `SystemExit` in the innermost frame of this
/// thread: the publish's other handlers are skipped and its caller gets it raised.
pub(crate) fn record_interrupt(err: PyErr) {
    FRAMES.with(|f| {
        if let Some(frame) = f.borrow_mut().last_mut() {
            frame.interrupt.get_or_insert(err);
        }
    });
}

/// Whether a handler of the innermost publish of this thread was interrupted.
pub(crate) fn interrupted() -> bool {
    FRAMES.with(|f| {
        f.borrow()
            .last()
            .is_some_and(|frame| frame.interrupt.is_some())
    })
}

/// Keeps a handler's exception in the innermost frame of this thread, for its publisher.
pub(crate) fn record_failure(row: FailureRow) {
    FRAMES.with(|f| {
        if let Some(frame) = f.borrow_mut().last_mut() {
            frame.failures.push(row);
        }
    });
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        FRAMES.with(|f| f.borrow_mut().truncate(self.below));
    }
}

/// Calls `callback` with the innermost frame's arguments. A result that can be awaited is
/// kept in the frame, under `owner`, for the publisher to await on its own event loop.
///
/// # Errors
///
/// The callback's exception, or a `RuntimeError` when no publish of this thread is in
/// progress (the callback was reached some other way).
pub(crate) fn call_in_frame(
    py: Python<'_>,
    owner: &Py<PyString>,
    callback: &PyObject,
) -> PyResult<()> {
    let Some((args, kwargs)) = FRAMES.with(|f| {
        f.borrow().last().map(|frame| {
            (
                frame.args.clone_ref(py),
                frame.kwargs.as_ref().map(|k| k.clone_ref(py)),
            )
        })
    }) else {
        return Err(PyRuntimeError::new_err(
            "a handler of Python objects was called outside a publish of this thread",
        ));
    };
    let result = callback
        .bind(py)
        .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))?;
    if !result.is_none() && awaitable(py, &result)? {
        let owner = owner.clone_ref(py);
        FRAMES.with(|f| {
            if let Some(frame) = f.borrow_mut().last_mut() {
                frame.pending.push((owner, result.unbind()));
            }
        });
    }
    Ok(())
}

/// Whether a handler's result is to be awaited: a coroutine (what an `async def` returns,
/// told by its type at once) or anything else with `__await__`.
fn awaitable(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<bool> {
    static COROUTINE: GILOnceCell<Py<PyType>> = GILOnceCell::new();
    if result
        .get_type()
        .is(COROUTINE.import(py, "types", "CoroutineType")?)
    {
        return Ok(true);
    }
    result.hasattr(intern!(py, "__await__"))
}

/// Publishes and waits for every handler. Every handler of the buses this module makes is
/// a synchronous Python callback, so a publish is done at its first poll: it is polled here,
/// in place, with the GIL held (releasing it for the few hundred nanoseconds Herald routes
/// would cost two hand-offs of the GIL per handler). Should a publish ever wait, the GIL is
/// released while the runtime drives it to the end.
///
/// # Errors
///
/// As [`Bus::publish`].
pub(crate) fn publish_now(
    py: Python<'_>,
    bus: &Bus,
    runtime: &tokio::runtime::Runtime,
    event: Arc<Event>,
) -> Result<DispatchReport, PublishError> {
    // Inside a trace (telemetry on, or a traced handler), `publish` stamps the event with its
    // publish span's context; otherwise the shared event goes as it is.
    if herald::hop::publishes(&event) {
        return drive(py, runtime, bus.publish(Event::clone(&event)));
    }
    drive(py, runtime, bus.publish_shared(event))
}

/// Polls `publish` in place with the GIL held; releases it only if it must wait.
fn drive<F: Future<Output = Result<DispatchReport, PublishError>> + Send>(
    py: Python<'_>,
    runtime: &tokio::runtime::Runtime,
    publish: F,
) -> Result<DispatchReport, PublishError> {
    let mut publish = std::pin::pin!(publish);
    let mut cx = Context::from_waker(Waker::noop());
    match publish.as_mut().poll(&mut cx) {
        Poll::Ready(report) => report,
        Poll::Pending => py.allow_threads(|| runtime.block_on(publish)),
    }
}

/// What a publish made from a name, kept by that name: a publish of a name seen before skips
/// parsing it. Bounded: past `CAP` names, new ones are made each time and not kept.
pub(crate) struct ByName<T>(Mutex<FxHashMap<Box<str>, T>>);

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName(Mutex::default())
    }
}

impl<T: Clone> ByName<T> {
    const CAP: usize = 4096;

    /// The value for `name`, made once by `make` from its parsed subject.
    ///
    /// # Errors
    ///
    /// [`SubjectError`] naming what is wrong with `name`.
    pub(crate) fn get(
        &self,
        name: &str,
        make: impl FnOnce(Subject) -> T,
    ) -> Result<T, SubjectError> {
        if let Some(v) = self.0.lock().get(name) {
            return Ok(v.clone());
        }
        let value = make(Subject::new(name)?);
        let mut known = self.0.lock();
        if known.len() < Self::CAP {
            known.insert(name.into(), value.clone());
        }
        Ok(value)
    }
}
