//! `WorkerSettings`: the worker's config section (seed 001's `WorkerConfig` fields), read
//! from a file with unknown keys refused, validated in one place that the file, environment
//! variables and flags all pass through, and turned into the running `WorkerConfig`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::step_run::StepQueues;
use crate::worker::WorkerConfig;

/// The `[worker]` section: seed 001's `WorkerConfig`, also what `/config` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// The worker.
    pub worker_id: String,
    /// Its namespace (queue prefix).
    pub namespace: String,
    /// `development`, `production`, ...
    pub environment: String,
    /// How long a read waits for a step.
    pub polling_interval_ms: u64,
    /// A worker idle this long while steps wait is starved.
    pub starvation_threshold_ms: u64,
    /// Handlers at once.
    pub max_concurrent_handlers: u64,
    /// A handler's time limit.
    pub handler_timeout_ms: u64,
    /// Steps read at once.
    pub dispatch_buffer_size: u64,
    /// Results committed at once at most (the store's group commit).
    pub completion_buffer_size: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_id: format!("herald-worker-{}", std::process::id()),
            namespace: "default".into(),
            environment: "development".into(),
            polling_interval_ms: 1000,
            starvation_threshold_ms: 30_000,
            max_concurrent_handlers: 10,
            handler_timeout_ms: 30_000,
            dispatch_buffer_size: 10,
            completion_buffer_size: 512,
        }
    }
}

/// A setting that is not valid: its key (in the section, as `worker.KEY`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("worker.{key}: {reason}")]
pub struct SettingsError {
    /// The key, without the section.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl WorkerSettings {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the first key that is not valid: a count or duration of 0,
    /// a namespace that makes an invalid queue name, an empty worker id.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, v) in [
            ("polling_interval_ms", self.polling_interval_ms),
            ("starvation_threshold_ms", self.starvation_threshold_ms),
            ("max_concurrent_handlers", self.max_concurrent_handlers),
            ("handler_timeout_ms", self.handler_timeout_ms),
            ("dispatch_buffer_size", self.dispatch_buffer_size),
            ("completion_buffer_size", self.completion_buffer_size),
        ] {
            if v == 0 {
                return Err(SettingsError {
                    key,
                    reason: "must be at least 1".into(),
                });
            }
        }
        StepQueues::of(&self.namespace).map_err(|e| SettingsError {
            key: "namespace",
            reason: e.to_string(),
        })?;
        if self.worker_id.trim().is_empty() {
            return Err(SettingsError {
                key: "worker_id",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// The running worker's config: handlers, the read batch (at least one per handler),
    /// the read wait and the handler timeout from these settings; the rest at its defaults.
    pub fn to_config(&self) -> WorkerConfig {
        let concurrency = usize::try_from(self.max_concurrent_handlers).unwrap_or(usize::MAX);
        WorkerConfig {
            namespace: self.namespace.clone(),
            worker_id: self.worker_id.clone(),
            max_concurrent_handlers: concurrency,
            batch_size: usize::try_from(self.dispatch_buffer_size)
                .unwrap_or(10)
                .max(concurrency),
            poll_wait: Duration::from_millis(self.polling_interval_ms),
            handler_timeout: Duration::from_millis(self.handler_timeout_ms),
            ..WorkerConfig::default()
        }
    }

    /// What `/config` shows of a worker running `config` made from these settings.
    pub fn running(&self, config: &WorkerConfig) -> WorkerSettings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        WorkerSettings {
            worker_id: config.worker_id.clone(),
            namespace: config.namespace.clone(),
            polling_interval_ms: ms(config.poll_wait),
            max_concurrent_handlers: config.max_concurrent_handlers as u64,
            handler_timeout_ms: ms(config.handler_timeout),
            dispatch_buffer_size: config.batch_size as u64,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_each_bad_value_is_named() {
        let e = serde_json::from_str::<WorkerSettings>(r#"{"max_concurent_handlers": 4}"#)
            .expect_err("a typo is refused");
        assert!(e.to_string().contains("max_concurent_handlers"), "{e}");
        let ok: WorkerSettings =
            serde_json::from_str(r#"{"max_concurrent_handlers": 4}"#).expect("partial");
        assert_eq!(ok.max_concurrent_handlers, 4);
        assert_eq!(ok.validate(), Ok(()));
        let zero = WorkerSettings {
            handler_timeout_ms: 0,
            ..WorkerSettings::default()
        };
        assert_eq!(zero.validate().expect_err("0").key, "handler_timeout_ms");
        let bad = WorkerSettings {
            namespace: "Bad Name".into(),
            ..WorkerSettings::default()
        };
        assert_eq!(bad.validate().expect_err("name").key, "namespace");
    }

    #[test]
    fn the_running_config_reads_at_least_one_step_per_handler() {
        let s = WorkerSettings {
            max_concurrent_handlers: 32,
            dispatch_buffer_size: 8,
            ..WorkerSettings::default()
        };
        let c = s.to_config();
        assert_eq!((c.max_concurrent_handlers, c.batch_size), (32, 32));
        assert_eq!(s.running(&c).dispatch_buffer_size, 32);
        assert_eq!(s.running(&c).environment, s.environment);
    }
}
