//! Seed 000's data: the step event (`FfiStepEvent` with its `execution_event`), the
//! `StepContext` a handler gets, the `StepHandlerResult` it returns, and the
//! `StepExecutionResult` (with its `StepError`) stored once per step.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// What the orchestrator asks for: which handler, with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecutionEvent {
    /// The handler to run (its registered name).
    pub handler_name: String,
    /// The step's input.
    #[serde(default)]
    pub input_data: Map<String, Value>,
    /// Results of the steps this one depends on.
    #[serde(default)]
    pub dependency_results: Map<String, Value>,
    /// The step's configuration.
    #[serde(default)]
    pub step_config: Map<String, Value>,
    /// Retries already made by the orchestrator.
    #[serde(default)]
    pub retry_count: u32,
    /// Retries allowed (default 3).
    #[serde(default = "three")]
    pub max_retries: u32,
}

fn three() -> u32 {
    3
}

/// A step, as the `data` of an event on `step.execution.received` (seed 000's
/// `FfiStepEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FfiStepEvent {
    /// This step event's id.
    pub event_id: Uuid,
    /// The task the step belongs to.
    pub task_uuid: Uuid,
    /// The step.
    pub step_uuid: Uuid,
    /// Carried through to the result.
    pub correlation_id: Uuid,
    /// What to run.
    pub execution_event: StepExecutionEvent,
}

impl FfiStepEvent {
    /// A new step for `handler_name` with `input_data`, fresh ids, the default retries.
    pub fn new(handler_name: impl Into<String>, input_data: Map<String, Value>) -> Self {
        FfiStepEvent {
            event_id: Uuid::now_v7(),
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            execution_event: StepExecutionEvent {
                handler_name: handler_name.into(),
                input_data,
                dependency_results: Map::new(),
                step_config: Map::new(),
                retry_count: 0,
                max_retries: 3,
            },
        }
    }

    /// Reads a step from an event's `data`.
    ///
    /// # Errors
    ///
    /// [`StepParseError`] naming the field that is missing or of the wrong type (for
    /// instance `execution_event.handler_name`).
    pub fn from_data(data: &Map<String, Value>) -> Result<Self, StepParseError> {
        let execution = data
            .get("execution_event")
            .ok_or(StepParseError::Missing("execution_event"))?;
        if !execution.is_object() {
            return Err(StepParseError::WrongType("execution_event", "an object"));
        }
        if execution
            .get("handler_name")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(if execution.get("handler_name").is_none() {
                StepParseError::Missing("execution_event.handler_name")
            } else {
                StepParseError::WrongType("execution_event.handler_name", "a string")
            });
        }
        serde_json::from_value(Value::Object(data.clone()))
            .map_err(|e| StepParseError::Invalid(e.to_string()))
    }

    /// The event's `data` for this step.
    pub fn to_data(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// Why an event's data is not a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepParseError {
    /// A required field is absent.
    #[error("step field `{0}` is missing")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("step field `{0}` must be {1}")]
    WrongType(&'static str, &'static str),
    /// Anything else (a malformed UUID, a negative count).
    #[error("not a step: {0}")]
    Invalid(String),
}

/// What a handler is given (seed 000's `StepContext`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepContext {
    /// The step event.
    pub event: FfiStepEvent,
    /// The task.
    pub task_uuid: Uuid,
    /// The step.
    pub step_uuid: Uuid,
    /// The correlation id.
    pub correlation_id: Uuid,
    /// The handler's name.
    pub handler_name: String,
    /// The step's input.
    pub input_data: Map<String, Value>,
    /// Results of the steps this one depends on.
    pub dependency_results: Map<String, Value>,
    /// The step's configuration.
    pub step_config: Map<String, Value>,
    /// Retries made so far (the orchestrator's, plus this worker's earlier attempts).
    pub retry_count: u32,
    /// Retries allowed.
    pub max_retries: u32,
}

impl StepContext {
    /// The context for `event`, `attempt` (1 for the first run here).
    pub fn new(event: FfiStepEvent, attempt: u32) -> Self {
        let e = &event.execution_event;
        StepContext {
            task_uuid: event.task_uuid,
            step_uuid: event.step_uuid,
            correlation_id: event.correlation_id,
            handler_name: e.handler_name.clone(),
            input_data: e.input_data.clone(),
            dependency_results: e.dependency_results.clone(),
            step_config: e.step_config.clone(),
            retry_count: e.retry_count + attempt.saturating_sub(1),
            max_retries: e.max_retries,
            event,
        }
    }
}

/// What a handler returns (seed 000's `StepHandlerResult`, same fields and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepHandlerResult {
    /// Whether the step succeeded.
    pub success: bool,
    /// Its output, on success.
    pub result: Option<Map<String, Value>>,
    /// What went wrong, on failure.
    pub error_message: Option<String>,
    /// The kind of failure (`handler_error` by default).
    pub error_type: Option<String>,
    /// Whether a retry may help (default true).
    pub retryable: bool,
    /// Free-form.
    pub metadata: Map<String, Value>,
    /// Domain events to publish once this step's result is committed, each when its
    /// condition holds (Herald's addition; empty by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_events: Vec<DeclaredEvent>,
}

/// When a declared domain event goes out, judged on the stored result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventCondition {
    /// The step succeeded.
    Success,
    /// The step failed (any failure).
    Failure,
    /// The step failed with a retryable error (stored once its retries ran out).
    RetryableFailure,
    /// The step failed with an error no retry can help.
    PermanentFailure,
    /// Whatever the outcome.
    Always,
}

impl EventCondition {
    /// Whether the condition holds for a stored result.
    pub fn holds(self, success: bool, retryable: bool) -> bool {
        match self {
            EventCondition::Success => success,
            EventCondition::Failure => !success,
            EventCondition::RetryableFailure => !success && retryable,
            EventCondition::PermanentFailure => !success && !retryable,
            EventCondition::Always => true,
        }
    }
}

/// Which path a domain event takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// The durable queue: acknowledged after commit, read at least once.
    Durable,
    /// The in-process broadcast: best effort, each miss counted.
    Fast,
    /// Both.
    Broadcast,
}

/// A domain event a handler declares with its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredEvent {
    /// What happened, e.g. `order.created`.
    pub event_type: String,
    /// Its data.
    pub payload: Map<String, Value>,
    /// When it goes out.
    pub condition: EventCondition,
    /// Which path it takes.
    pub mode: DeliveryMode,
}

impl StepHandlerResult {
    /// Declares a domain event, published after the result is committed if `condition`
    /// holds.
    pub fn with_event(
        mut self,
        event_type: impl Into<String>,
        payload: Map<String, Value>,
        condition: EventCondition,
        mode: DeliveryMode,
    ) -> Self {
        self.domain_events.push(DeclaredEvent {
            event_type: event_type.into(),
            payload,
            condition,
            mode,
        });
        self
    }

    /// A success with `result`.
    pub fn success(result: Map<String, Value>) -> Self {
        StepHandlerResult {
            success: true,
            result: Some(result),
            error_message: None,
            error_type: None,
            retryable: true,
            metadata: Map::new(),
            domain_events: Vec::new(),
        }
    }

    /// A failure, type `handler_error`, retryable.
    pub fn failure(message: impl Into<String>) -> Self {
        StepHandlerResult {
            success: false,
            result: None,
            error_message: Some(message.into()),
            error_type: Some("handler_error".into()),
            retryable: true,
            metadata: Map::new(),
            domain_events: Vec::new(),
        }
    }

    /// Sets the error type.
    pub fn error_type(mut self, t: impl Into<String>) -> Self {
        self.error_type = Some(t.into());
        self
    }

    /// Sets whether a retry may help.
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A failure, as stored in a result (seed 000's `StepError`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    /// `handler_error`, `handler_not_found`, `timeout`, or the handler's own.
    pub error_type: String,
    /// What went wrong.
    pub message: String,
    /// Whether a retry may help.
    pub retryable: bool,
    /// Free-form.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The one stored result of a step (seed 000's `StepExecutionResult`), the `data` of an
/// event on `step.completion.sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExecutionResult {
    /// The step event's id.
    pub event_id: Uuid,
    /// The task.
    pub task_uuid: Uuid,
    /// The step.
    pub step_uuid: Uuid,
    /// The correlation id.
    pub correlation_id: Uuid,
    /// Whether it succeeded.
    pub success: bool,
    /// The handler's output (empty on failure).
    #[serde(default)]
    pub output: Map<String, Value>,
    /// The failure, when it failed.
    #[serde(default)]
    pub error: Option<StepError>,
    /// How long the handler ran.
    pub execution_time_ms: u64,
    /// Which worker ran it.
    pub worker_id: String,
    /// Free-form (Herald adds `attempt`, the read count it ran at).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl StepExecutionResult {
    /// A success for `event`.
    pub fn success_result(
        event: &FfiStepEvent,
        output: Map<String, Value>,
        execution_time_ms: u64,
        worker_id: &str,
        metadata: Map<String, Value>,
    ) -> Self {
        StepExecutionResult {
            event_id: event.event_id,
            task_uuid: event.task_uuid,
            step_uuid: event.step_uuid,
            correlation_id: event.correlation_id,
            success: true,
            output,
            error: None,
            execution_time_ms,
            worker_id: worker_id.to_owned(),
            metadata,
        }
    }

    /// A failure for `event`.
    pub fn failure_result(
        event: &FfiStepEvent,
        error: StepError,
        execution_time_ms: u64,
        worker_id: &str,
    ) -> Self {
        StepExecutionResult {
            event_id: event.event_id,
            task_uuid: event.task_uuid,
            step_uuid: event.step_uuid,
            correlation_id: event.correlation_id,
            success: false,
            output: Map::new(),
            error: Some(error),
            execution_time_ms,
            worker_id: worker_id.to_owned(),
            metadata: Map::new(),
        }
    }

    /// The result as an event's `data`.
    pub fn to_data(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_step_round_trips_and_a_missing_handler_name_is_named() {
        let step = FfiStepEvent::new("noop", Map::new());
        assert_eq!(FfiStepEvent::from_data(&step.to_data()), Ok(step));
        let mut data = FfiStepEvent::new("x", Map::new()).to_data();
        data["execution_event"]
            .as_object_mut()
            .expect("object")
            .remove("handler_name");
        assert_eq!(
            FfiStepEvent::from_data(&data),
            Err(StepParseError::Missing("execution_event.handler_name"))
        );
        let Value::Object(bad) = json!({"execution_event": {"handler_name": 7}}) else {
            unreachable!()
        };
        assert_eq!(
            FfiStepEvent::from_data(&bad),
            Err(StepParseError::WrongType(
                "execution_event.handler_name",
                "a string"
            ))
        );
    }
}
