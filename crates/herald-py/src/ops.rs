//! `NativeOperations`: the operator's verbs of `herald dlq` and `herald schedule` for Python,
//! on a store URL: dead-letter places (queues' and runtime consumers'), letters, replay and
//! abandon (each letter in one
//! transaction with its audit event), and schedules (add, list with the next fire times,
//! remove, pause, resume). Results cross as JSON text; `herald/operations.py` parses them.

use herald::dlq::{self, DeadLetterStore, Operator, Selection};
use herald::queue::QueueName;
use herald::schedule::{check_name, Missed, ScheduleSpec, ScheduleStore};
use herald_postgres::PgStore;
use herald_schedule::{parse_every, Cadence};
use herald_sqlite::SqliteStore;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde_json::{json, Map, Value};

enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! on {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

/// The operator's verbs on one store.
#[pyclass(module = "herald._native")]
pub(crate) struct NativeOperations {
    runtime: tokio::runtime::Runtime,
    store: Store,
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn runtime_error(e: &dyn std::error::Error) -> PyErr {
    PyRuntimeError::new_err(herald::report(e))
}

/// A `DlqError` as Python sees it: what the caller gave wrong is a `ValueError`, the store
/// failing a `RuntimeError`.
fn dlq_error(e: dlq::DlqError) -> PyErr {
    match e {
        dlq::DlqError::Queue(_) | dlq::DlqError::Store(_) => runtime_error(&e),
        other => value_error(other),
    }
}

fn schedule_error(e: herald::schedule::ScheduleError) -> PyErr {
    match e {
        herald::schedule::ScheduleError::Queue(_) => runtime_error(&e),
        other => value_error(other),
    }
}

/// A place of either kind, by its name.
enum Place {
    Queue(QueueName),
    Stream(herald::store::StreamName),
}

impl Place {
    fn of(name: &str) -> PyResult<Place> {
        if dlq::stream::is_place(name) {
            dlq::stream::place(name)
                .map(Place::Stream)
                .map_err(dlq_error)
        } else {
            dlq::place(name).map(Place::Queue).map_err(dlq_error)
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn rfc3339(ms: i64) -> String {
    herald::Timestamp::from_unix_ms(ms).map_or_else(String::new, |t| t.to_string())
}

fn selection(ids: Option<Vec<i64>>, all: bool) -> PyResult<Selection> {
    match (ids, all) {
        (Some(ids), false) if !ids.is_empty() => Ok(Selection::Ids(ids)),
        (None, true) => Ok(Selection::All),
        _ => Err(value_error(
            "give either ids (a non-empty list) or all=True",
        )),
    }
}

fn operator(who: Option<String>, why: Option<String>) -> Operator {
    let mut op = Operator::current(why);
    if let Some(who) = who {
        op.who = who;
    }
    op
}

impl NativeOperations {
    fn block<T>(&self, py: Python<'_>, f: impl std::future::Future<Output = T> + Send) -> T
    where
        T: Send,
    {
        py.allow_threads(|| self.runtime.block_on(f))
    }
}

#[pymethods]
impl NativeOperations {
    #[new]
    fn new(store_url: &str) -> PyResult<Self> {
        let runtime = crate::runtime(1)?;
        let store = runtime.block_on(async {
            if store_url.starts_with("sqlite:") {
                SqliteStore::open(store_url)
                    .await
                    .map(Store::Sqlite)
                    .map_err(|e| herald::report(&e))
            } else if store_url.starts_with("postgres") {
                PgStore::connect(store_url)
                    .await
                    .map(Store::Postgres)
                    .map_err(|e| herald::report(&e))
            } else {
                Err(format!(
                    "store {store_url:?}: expected sqlite://PATH or postgres://..."
                ))
            }
        });
        Ok(NativeOperations {
            store: store.map_err(PyValueError::new_err)?,
            runtime,
        })
    }

    /// Every dead-letter place, as JSON.
    fn dlq_places(&self, py: Python<'_>) -> PyResult<String> {
        let places = self.block(py, async {
            on!(&self.store, s => {
                let mut all = s.places().await?;
                all.extend(dlq::stream::places(s).await?);
                Ok::<_, dlq::DlqError>(all)
            })
        });
        Ok(json!(places.map_err(dlq_error)?).to_string())
    }

    /// Up to `limit` letters of `place`, as JSON.
    #[pyo3(signature = (place, limit = 20))]
    fn dlq_letters(&self, py: Python<'_>, place: &str, limit: usize) -> PyResult<String> {
        let place = dlq::place(place).map_err(dlq_error)?;
        let letters = self.block(py, async {
            on!(&self.store, s => s.letters(&place, 0, limit).await)
        });
        Ok(json!(letters.map_err(dlq_error)?).to_string())
    }

    /// Replays letters of `place` back to their queue; the report as JSON.
    #[pyo3(signature = (place, ids = None, all = false, max_replays = 3, force = false, who = None, why = None))]
    #[allow(clippy::too_many_arguments)]
    fn dlq_replay(
        &self,
        py: Python<'_>,
        place: &str,
        ids: Option<Vec<i64>>,
        all: bool,
        max_replays: u32,
        force: bool,
        who: Option<String>,
        why: Option<String>,
    ) -> PyResult<String> {
        let which = selection(ids, all)?;
        let op = operator(who, why);
        let report = match Place::of(place)? {
            Place::Queue(q) => self.block(py, async {
                on!(&self.store, s => dlq::replay(s, &q, which, max_replays, force, &op).await)
            }),
            Place::Stream(p) => self.block(py, async {
                on!(&self.store, s => dlq::stream::replay(s, &p, which, max_replays, force, &op).await)
            }),
        };
        Ok(json!(report.map_err(dlq_error)?).to_string())
    }

    /// Abandons letters of `place` (archived, recorded with `reason`); the report as JSON.
    #[pyo3(signature = (place, reason, ids = None, all = false, who = None))]
    fn dlq_abandon(
        &self,
        py: Python<'_>,
        place: &str,
        reason: &str,
        ids: Option<Vec<i64>>,
        all: bool,
        who: Option<String>,
    ) -> PyResult<String> {
        if reason.trim().is_empty() {
            return Err(value_error("reason must say why the letters are abandoned"));
        }
        let place = dlq::place(place).map_err(dlq_error)?;
        let which = selection(ids, all)?;
        let op = operator(who, Some(reason.to_owned()));
        let report = self.block(py, async {
            on!(&self.store, s => dlq::abandon(s, &place, which, &op).await)
        });
        Ok(json!(report.map_err(dlq_error)?).to_string())
    }

    /// Stores a schedule: `cron` or `every` ("30s"), ticks to `queue` with `data` (JSON text).
    #[pyo3(signature = (name, queue, cron = None, every = None, data = None, subject = None, tz = "UTC", missed = "skip"))]
    #[allow(clippy::too_many_arguments)]
    fn schedule_add(
        &self,
        py: Python<'_>,
        name: &str,
        queue: &str,
        cron: Option<String>,
        every: Option<&str>,
        data: Option<&str>,
        subject: Option<String>,
        tz: &str,
        missed: &str,
    ) -> PyResult<()> {
        check_name(name).map_err(schedule_error)?;
        QueueName::new(queue).map_err(value_error)?;
        let every_ms = match every {
            Some(e) => Some(
                u64::try_from(parse_every(e).map_err(value_error)?.as_millis()).unwrap_or(u64::MAX),
            ),
            None => None,
        };
        let data: Map<String, Value> = match data {
            None => Map::new(),
            Some(text) => match serde_json::from_str(text) {
                Ok(Value::Object(m)) => m,
                _ => return Err(value_error(format!("data {text:?} is not a JSON object"))),
            },
        };
        let subject = subject.unwrap_or_else(|| format!("herald.schedule.{name}"));
        herald::Subject::new(&subject).map_err(value_error)?;
        let spec = ScheduleSpec {
            name: name.to_owned(),
            cron,
            every_ms,
            tz: tz.to_owned(),
            queue: queue.to_owned(),
            subject,
            data,
            missed: missed.parse::<Missed>().map_err(value_error)?,
        };
        Cadence::of(&spec).map_err(value_error)?;
        let added = self.block(py, async {
            on!(&self.store, s => s.add_schedule(&spec, now_ms()).await)
        });
        added.map_err(schedule_error)
    }

    /// Every schedule with its next five fire times, as JSON.
    fn schedules(&self, py: Python<'_>) -> PyResult<String> {
        let listed = self.block(py, async { on!(&self.store, s => s.schedules().await) });
        let now = now_ms();
        let out: Vec<Value> = listed
            .map_err(schedule_error)?
            .into_iter()
            .map(|s| {
                let next: Vec<String> = Cadence::of(&s.spec)
                    .map(|c| {
                        c.upcoming(now.max(s.last_tick_ms), 5)
                            .into_iter()
                            .map(rfc3339)
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"spec": s.spec, "paused": s.paused, "last_tick": rfc3339(s.last_tick_ms), "next": next})
            })
            .collect();
        Ok(Value::Array(out).to_string())
    }

    /// Removes a schedule.
    fn schedule_remove(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let done = self.block(py, async {
            on!(&self.store, s => s.remove_schedule(name).await)
        });
        done.map_err(schedule_error)
    }

    /// Pauses (`paused=True`) or resumes a schedule.
    fn schedule_pause(&self, py: Python<'_>, name: &str, paused: bool) -> PyResult<()> {
        let done = self.block(py, async {
            on!(&self.store, s => s.pause_schedule(name, paused).await)
        });
        done.map_err(schedule_error)
    }
}
