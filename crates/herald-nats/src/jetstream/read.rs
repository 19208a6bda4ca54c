//! Reading a whole stream back, to the last sequence its leader reports: an ack-less
//! ephemeral consumer read until it has delivered that sequence, so a consumer placed on a
//! replica that has not yet applied the last commit is waited for, not taken as the end.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use bytes::Bytes;
use futures_util::StreamExt;
use herald::{Decoded, EnvelopeError, Event};

use super::JetStream;
use crate::error::NatsError;

/// One message of a stream, as read back.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its stream sequence.
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// Its payload, as stored.
    pub payload: Bytes,
}

impl StoredMessage {
    /// The payload read as Herald's envelope.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] naming what is wrong with the payload.
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        Event::from_json(&self.payload).map(|d: Decoded| d.event)
    }
}

impl JetStream {
    /// Every message the stream holds, in sequence order, up to the last sequence its leader
    /// reports when the read starts.
    ///
    /// In a cluster a consumer may be served by a replica that holds the last entries but
    /// has not yet learned they are committed; an empty fetch is then not the end. The read
    /// goes on until it has delivered the leader's last sequence, or `wait` has passed.
    ///
    /// # Errors
    ///
    /// [`NatsError::JetStream`] when the stream cannot be read, and
    /// [`NatsError::Timeout`] (naming the stream and the sequence reached) when `wait`
    /// passes before the last sequence arrives.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the ephemeral consumer it made is removed by the server once idle.
    pub async fn read_stream(
        &self,
        name: &str,
        wait: Duration,
    ) -> Result<Vec<StoredMessage>, NatsError> {
        self.read_stream_to(name, 0, wait).await
    }

    /// [`JetStream::read_stream`] to at least `sequence` (the highest a publisher was
    /// acknowledged, say), should the leader report less: a leader elected a moment ago may
    /// not have applied every entry it holds.
    ///
    /// # Errors
    ///
    /// As [`JetStream::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// As [`JetStream::read_stream`].
    pub async fn read_stream_to(
        &self,
        name: &str,
        sequence: u64,
        wait: Duration,
    ) -> Result<Vec<StoredMessage>, NatsError> {
        let deadline = Instant::now() + wait;
        // Stream info is answered by the stream's leader, and a consumer is made by it: during
        // an election both fail for a moment, so both are retried until the deadline.
        let (summary, consumer) = loop {
            match self.open_reader(name).await {
                Ok(opened) => break opened,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let last = summary.last_sequence.max(sequence);
        let mut out = Vec::with_capacity(usize::try_from(summary.messages).unwrap_or(0));
        if last == 0 {
            return Ok(out);
        }
        let mut reached = 0;
        while reached < last {
            if Instant::now() >= deadline {
                return Err(NatsError::Timeout {
                    subject: format!("stream {name} read to sequence {reached} of {last}"),
                    timeout: wait,
                });
            }
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| NatsError::js(format!("read stream {name}"), e))?;
            // A status (a leader change, a timeout) ends this batch; the next fetch goes on.
            while let Some(Ok(m)) = batch.next().await {
                let Ok(info) = m.info() else { continue };
                let sequence = info.stream_sequence;
                // A consumer that changed leader may deliver a sequence again: keep it once.
                if sequence <= reached {
                    continue;
                }
                reached = sequence;
                out.push(StoredMessage {
                    sequence,
                    subject: m.subject.to_string(),
                    payload: m.payload.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The stream's state as its leader reports it, and an ack-less ephemeral consumer on it.
    async fn open_reader(
        &self,
        name: &str,
    ) -> Result<(super::StreamSummary, PullConsumer), NatsError> {
        let summary = self.stream_info(name).await?;
        let consumer = self
            .ctx
            .get_stream(name)
            .await
            .map_err(|e| NatsError::js(format!("get stream {name}"), e))?
            .create_consumer(pull::Config {
                // No acks: no cap of pending acks on what one reader sees.
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::js(format!("create a reader on stream {name}"), e))?;
        Ok((summary, consumer))
    }
}
