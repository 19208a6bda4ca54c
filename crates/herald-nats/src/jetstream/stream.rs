//! JetStream streams: `StreamSpec` from config (validated, naming the key), seed 004's
//! default streams, and idempotent create-or-update, list, info and delete.

use std::time::Duration;

use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::JetStream;
use crate::error::NatsError;

/// One stream, as a config file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The stream's name (no spaces, dots or wildcards).
    pub name: String,
    /// Subjects it captures (`*`/`>` allowed).
    pub subjects: Vec<String>,
    /// Oldest message kept, in seconds; 0 = unlimited.
    #[serde(default)]
    pub max_age_secs: u64,
    /// Bytes kept; -1 = unlimited.
    #[serde(default = "unlimited")]
    pub max_bytes: i64,
    /// Keep messages in memory instead of files.
    #[serde(default)]
    pub memory: bool,
    /// How long a message id is remembered for dedupe, in seconds (server default 120).
    #[serde(default = "two_minutes")]
    pub duplicate_window_secs: u64,
    /// Copies kept on a cluster (1 on a single server; 3 survives the loss of one node).
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

fn unlimited() -> i64 {
    -1
}

fn two_minutes() -> u64 {
    120
}

impl StreamSpec {
    /// A file-backed stream with limits retention and no other limit.
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        StreamSpec {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            max_age_secs: 0,
            max_bytes: -1,
            memory: false,
            duplicate_window_secs: 120,
            replicas: 1,
        }
    }

    /// The same stream with `n` replicas.
    pub fn with_replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Checks the name and subjects; the error names the key.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`].
    pub fn validate(&self) -> Result<(), NatsError> {
        if self.name.is_empty()
            || self
                .name
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(NatsError::Config {
                key: "name",
                reason: format!(
                    "{:?} is not a valid stream name (no spaces, dots or wildcards)",
                    self.name
                ),
            });
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(NatsError::Config {
                key: "replicas",
                reason: format!(
                    "stream {}: {} replicas (JetStream takes 1 to 5)",
                    self.name, self.replicas
                ),
            });
        }
        if self.subjects.is_empty() {
            return Err(NatsError::Config {
                key: "subjects",
                reason: format!("stream {} captures no subject", self.name),
            });
        }
        for s in &self.subjects {
            herald::Pattern::new(s).map_err(|e| NatsError::Config {
                key: "subjects",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn to_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::Limits,
            max_age: Duration::from_secs(self.max_age_secs),
            max_bytes: self.max_bytes,
            num_replicas: self.replicas,
            storage: if self.memory {
                StorageType::Memory
            } else {
                StorageType::File
            },
            // The server refuses a duplicate window longer than the max age.
            duplicate_window: Duration::from_secs(match self.max_age_secs {
                0 => self.duplicate_window_secs,
                age => self.duplicate_window_secs.min(age),
            }),
            ..Default::default()
        }
    }
}

/// Seed 004's three streams: `PLATFORM_EVENTS` (`rosey.platform.>`, 7 days, 1 GiB),
/// `COMMANDS` (`rosey.commands.>`, 24 h, 100 MiB), `PLUGINS` (`rosey.plugins.>`, 24 h,
/// 100 MiB), all with limits retention.
pub fn default_streams() -> Vec<StreamSpec> {
    let spec = |name: &str, subject: &str, age: u64, bytes: i64| StreamSpec {
        max_age_secs: age,
        max_bytes: bytes,
        ..StreamSpec::new(name, [subject])
    };
    vec![
        spec(
            "PLATFORM_EVENTS",
            "rosey.platform.>",
            7 * 24 * 3600,
            1024 * 1024 * 1024,
        ),
        spec("COMMANDS", "rosey.commands.>", 24 * 3600, 100 * 1024 * 1024),
        spec("PLUGINS", "rosey.plugins.>", 24 * 3600, 100 * 1024 * 1024),
    ]
}

/// What a stream holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    /// Name.
    pub name: String,
    /// Captured subjects.
    pub subjects: Vec<String>,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence kept.
    pub first_sequence: u64,
    /// Last sequence stored.
    pub last_sequence: u64,
    /// Consumers.
    pub consumers: usize,
    /// Max age in seconds (0 = unlimited).
    pub max_age_secs: u64,
    /// Max bytes (-1 = unlimited).
    pub max_bytes: i64,
}

impl From<stream::Info> for StreamSummary {
    fn from(info: stream::Info) -> Self {
        StreamSummary {
            name: info.config.name,
            subjects: info.config.subjects,
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            consumers: info.state.consumer_count,
            max_age_secs: info.config.max_age.as_secs(),
            max_bytes: info.config.max_bytes,
        }
    }
}

/// How many times a stream whose store the server failed to create is asked for again.
const STORE_RETRIES: u32 = 5;

/// The server's generic "error creating store for stream" (err_code 10049): a file-store
/// failure whose cause the server writes only to its own log. It is transient (a stream of
/// the same name still being torn down, a directory race under load), so the create is
/// tried again; every other refusal is returned at once.
fn store_failed(e: &async_nats::jetstream::context::CreateStreamError) -> bool {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    match e.kind() {
        CreateStreamErrorKind::JetStream(js) => {
            js.error_code() == ErrorCode::STREAM_CREATE
                && js.to_string().contains("error creating store")
        }
        _ => false,
    }
}

impl JetStream {
    /// Creates the stream, or updates it to match `spec`. Idempotent. The server's
    /// transient "error creating store for stream" is retried up to five times.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for an invalid spec, [`NatsError::JetStream`] when the server
    /// refuses (an overlapping subject, JetStream disabled).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the stream may or may not exist.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<StreamSummary, NatsError> {
        spec.validate()?;
        let mut attempt = 0;
        loop {
            match self.ctx.create_or_update_stream(spec.to_config()).await {
                Ok(info) => return Ok(info.into()),
                Err(e) if attempt < STORE_RETRIES && store_failed(&e) => {
                    attempt += 1;
                    tracing::warn!(stream = %spec.name, attempt, "the server could not create the stream's store; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(e) => {
                    return Err(NatsError::js(
                        format!("create or update stream {}", spec.name),
                        e,
                    ))
                }
            }
        }
    }

    /// Where stream `name` ends: its last sequence (0 when empty) and that message's
    /// `Nats-Msg-Id` (`None` when it has none, or the message cannot be read: deleted, or
    /// aged out).
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the stream's info cannot be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn stream_tail(&self, name: &str) -> Result<(u64, Option<String>), NatsError> {
        let op = || format!("read the tail of stream {name}");
        let mut stream = self
            .ctx
            .get_stream(name)
            .await
            .map_err(|e| NatsError::js(op(), e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| NatsError::js(op(), e))?
            .state
            .last_sequence;
        if last == 0 {
            return Ok((0, None));
        }
        let id = stream.get_raw_message(last).await.ok().and_then(|m| {
            m.headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
        });
        Ok((last, id))
    }

    /// Ensures seed 004's three default streams.
    ///
    /// # Errors
    ///
    /// As [`JetStream::ensure_stream`].
    ///
    /// # Cancel safety
    ///
    /// As [`JetStream::ensure_stream`].
    pub async fn ensure_default_streams(&self) -> Result<Vec<StreamSummary>, NatsError> {
        let mut out = Vec::new();
        for spec in default_streams() {
            out.push(self.ensure_stream(&spec).await?);
        }
        Ok(out)
    }

    /// The names of all streams.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_names(&self) -> Result<Vec<String>, NatsError> {
        let mut names = Vec::new();
        let mut pages = self.ctx.stream_names();
        while let Some(name) = pages.next().await {
            names.push(name.map_err(|e| NatsError::js("list streams", e))?);
        }
        names.sort();
        Ok(names)
    }

    /// One stream's state.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (for instance, no such stream).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stream_info(&self, name: &str) -> Result<StreamSummary, NatsError> {
        let mut stream = self
            .ctx
            .get_stream(name)
            .await
            .map_err(|e| NatsError::js(format!("get stream {name}"), e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| NatsError::js(format!("stream info {name}"), e))?;
        Ok(info.clone().into())
    }

    /// Deletes a stream and everything in it.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] (for instance, no such stream).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn delete_stream(&self, name: &str) -> Result<(), NatsError> {
        self.ctx
            .delete_stream(name)
            .await
            .map_err(|e| NatsError::js(format!("delete stream {name}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};

    use super::store_failed;

    fn refusal(body: &str) -> CreateStreamError {
        let e = serde_json::from_str(body).expect("a server error body");
        CreateStreamError::new(CreateStreamErrorKind::JetStream(e))
    }

    #[test]
    fn only_the_server_s_store_failure_is_tried_again() {
        let store = refusal(
            r#"{"code":500,"err_code":10049,"description":"error creating store for stream"}"#,
        );
        assert!(store_failed(&store));
        let other_create = refusal(
            r#"{"code":500,"err_code":10049,"description":"replicas > 1 not supported in non-clustered mode"}"#,
        );
        assert!(!store_failed(&other_create));
        let overlap = refusal(
            r#"{"code":400,"err_code":10065,"description":"subjects overlap with an existing stream"}"#,
        );
        assert!(!store_failed(&overlap));
        assert!(!store_failed(&CreateStreamError::new(
            CreateStreamErrorKind::TimedOut
        )));
    }
}
