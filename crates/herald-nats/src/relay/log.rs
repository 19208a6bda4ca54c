//! `Relay`: the event store's log to JetStream (the outbox). One relay per destination
//! stream is active, under the store's lease `relay.{stream}`; the others wait on it and take
//! over when it lapses. The active one resumes from where the stream ends (its last message's
//! `Nats-Msg-Id` names the last position relayed), publishes each event after it in global
//! order with `Nats-Msg-Id` = `{store id}:{global position}` and `Nats-Expected-Last-Sequence`
//! (a window of acks in flight), and saves its checkpoint, fenced by its lease epoch, after
//! the acks.
//!
//! # Why each event is in the stream once, in order
//!
//! - Every publish names the sequence the stream must end at before it. A publish lost in
//!   flight (a NATS server killed, a connection cut) makes every later one of the pass
//!   fail, so the stream never holds an event after a gap; the next pass reads where the
//!   stream ends again and goes on from there.
//! - A relay that resumes (a restart, a standby taking over, a relay that lost its lease and
//!   did not know it) starts after the event the stream holds last, not after its checkpoint,
//!   so what was acknowledged but not checkpointed is not sent again; two relays that both
//!   think they are active send the same events in the same order against the same expected
//!   sequences, and the stream takes each once.
//! - When the stream's last message is not one of this store's (another publisher on the
//!   stream's subjects, or the stream purged), the relay resumes from its checkpoint without
//!   an expected sequence and the stream's duplicate window drops what it sends again: the
//!   window is then the longest outage it resumes from without a duplicate.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::store::{BrokerStore, EventStore, StoreError};
use parking_lot::Mutex;

use super::{ensure_stream, send, subject_for, Counters, RelayError, RelayReport, RelaySettings};
use crate::jetstream::JetStream;
use crate::NatsError;

/// Where the relay stands against the stream, once read from it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The last global position relayed (or passed over).
    position: i64,
    /// The stream's last sequence, when the stream ends with this store's event at
    /// `position` (publishes then carry the sequence they expect); `None` otherwise.
    last_sequence: Option<u64>,
}

/// The relay's term: the lease epoch it holds and when it last renewed it.
#[derive(Debug, Default)]
struct Term {
    epoch: Option<u64>,
    renewed: Option<Instant>,
    cursor: Option<Cursor>,
}

/// The store's log to JetStream.
#[derive(Debug, Clone)]
pub struct Relay<S> {
    store: S,
    js: JetStream,
    settings: RelaySettings,
    counters: Arc<Counters>,
    term: Arc<Mutex<Term>>,
}

impl<S: EventStore + BrokerStore> Relay<S> {
    /// A relay of `store` to `js`; makes sure the stream exists with its duplicate window.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] for a prefix that is not a subject; JetStream's errors.
    pub async fn new(store: S, js: JetStream, settings: RelaySettings) -> Result<Self, RelayError> {
        ensure_stream(&js, &settings).await?;
        Ok(Relay {
            store,
            js,
            settings,
            counters: Arc::default(),
            term: Arc::default(),
        })
    }

    /// What it has done so far.
    pub fn report(&self) -> RelayReport {
        self.counters.report()
    }

    /// The lease epoch this relay holds, when it is the active one.
    pub fn epoch(&self) -> Option<u64> {
        self.term.lock().epoch
    }

    fn relayed(&self, stream: &str) -> bool {
        // A stored stream name is valid: its category is what comes before the first `-`
        // (`StreamName::category`), taken without building the name again per event.
        let category = stream.split('-').next().unwrap_or(stream);
        if self.settings.categories.is_empty() {
            !matches!(category, "deadletter" | "replay" | "herald")
        } else {
            self.settings.categories.iter().any(|c| c == category)
        }
    }

    /// Takes or renews the lease (renewed once a third of its time-to-live has passed); the
    /// epoch when this relay is the active one.
    async fn lead(&self) -> Result<Option<u64>, RelayError> {
        let ttl = self.settings.lease_ttl;
        {
            let t = self.term.lock();
            if let (Some(epoch), Some(at)) = (t.epoch, t.renewed) {
                if at.elapsed() < ttl / 3 {
                    return Ok(Some(epoch));
                }
            }
        }
        let asked = Instant::now();
        let got = self
            .store
            .acquire_lease(&self.settings.lease_name(), &self.settings.holder, ttl)
            .await?;
        let mut t = self.term.lock();
        if got != t.epoch {
            // A new term (or none): where the stream ends is read again.
            t.cursor = None;
            if got.is_some() {
                self.counters.terms.fetch_add(1, Ordering::Relaxed);
            }
        }
        t.epoch = got;
        t.renewed = got.map(|_| asked);
        Ok(got)
    }

    /// Where to go on from: after the stream's last event when it is this store's,
    /// otherwise after the checkpoint.
    async fn resume(&self) -> Result<Cursor, RelayError> {
        let checkpoint = self
            .store
            .checkpoint(&self.settings.checkpoint_name(), "log")
            .await?
            .map_or(0, |(p, _)| p);
        let (last, id) = self.js.stream_tail(&self.settings.stream).await?;
        if last == 0 {
            return Ok(Cursor {
                position: checkpoint,
                last_sequence: Some(0),
            });
        }
        let ours = id.as_deref().and_then(|id| {
            let (store, position) = id.rsplit_once(':')?;
            (store == self.settings.store_id)
                .then(|| position.parse::<i64>().ok())
                .flatten()
        });
        match ours {
            Some(position) => {
                if position > checkpoint {
                    self.counters.skipped_ahead.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Cursor {
                    position: position.max(checkpoint),
                    last_sequence: Some(last),
                })
            }
            None => {
                tracing::warn!(
                    "relay: stream {} ends with a message that is not this store's ({:?}); \
                     resuming from the checkpoint at {checkpoint}, the duplicate window drops \
                     what is sent again",
                    self.settings.stream,
                    id
                );
                self.check_window(checkpoint).await?;
                Ok(Cursor {
                    position: checkpoint,
                    last_sequence: None,
                })
            }
        }
    }

    /// When resuming from the checkpoint without the stream's help: warns (and counts) when
    /// the first event after it was appended longer ago than the duplicate window, because
    /// then a copy the stream took before the outage may be out of the window (the check
    /// errs on the side of warning: that event was published no earlier than it was
    /// appended). The bound: the longest outage resumed without a copy is the window.
    async fn check_window(&self, checkpoint: i64) -> Result<(), RelayError> {
        let Some(next) = self.store.read_all(checkpoint + 1, 1).await?.pop() else {
            return Ok(());
        };
        let age = time::OffsetDateTime::now_utc() - next.recorded_at.as_datetime();
        let window = self.settings.duplicate_window;
        if age > window {
            self.counters.stale_resumes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "relay: the first event after the checkpoint (position {}) was appended {:.0} s \
                 ago, more than stream {}'s duplicate window ({} s): events the stream took \
                 before the relay stopped may be stored twice",
                next.global_position,
                age.as_seconds_f64(),
                self.settings.stream,
                window.as_secs()
            );
        }
        Ok(())
    }

    /// Relays what the log holds after where the stream ends, up to `max` events: how many
    /// events it moved past (`Some(0)`: caught up), or `None` while another relay holds the
    /// lease.
    ///
    /// # Errors
    ///
    /// [`RelayError`]: the next pass reads where the stream ends again. A checkpoint refused
    /// for a newer epoch ([`StoreError::StaleEpoch`]) means another relay took over: this one
    /// goes back to waiting.
    pub async fn pass(&self, max: usize) -> Result<Option<usize>, RelayError> {
        let Some(epoch) = self.lead().await? else {
            return Ok(None);
        };
        let cursor = self.term.lock().cursor;
        let cursor = match cursor {
            Some(c) => c,
            None => self.resume().await?,
        };
        let result = self.publish(cursor, epoch, max).await;
        let mut t = self.term.lock();
        match result {
            Ok((moved, next)) => {
                t.cursor = next;
                Ok(Some(moved))
            }
            Err(RelayError::Store(e @ StoreError::StaleEpoch { .. })) => {
                tracing::warn!("relay: {}; another relay is active", herald::report(&e));
                *t = Term::default();
                Ok(None)
            }
            Err(e) => {
                t.cursor = None;
                Err(e)
            }
        }
    }

    /// Publishes the events after `cursor`, then checkpoints under `epoch`; the cursor after
    /// them (`None` when the stream must be read again).
    async fn publish(
        &self,
        cursor: Cursor,
        epoch: u64,
        max: usize,
    ) -> Result<(usize, Option<Cursor>), RelayError> {
        let events = self.store.read_all(cursor.position + 1, max).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok((0, Some(cursor)));
        };
        let mut expected = cursor.last_sequence;
        let mut acks = std::collections::VecDeque::new();
        for e in &events {
            let subject = match self.relayed(&e.stream) {
                true => subject_for(&self.settings.prefix, &e.stream),
                false => None,
            };
            let Some(subject) = subject else {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let id = format!("{}:{}", self.settings.store_id, e.global_position);
            let ack = send(&self.js, &subject, &e.body, id, expected).await?;
            acks.push_back((subject, e.global_position, expected, ack));
            expected = expected.map(|s| s + 1);
            if acks.len() >= self.settings.window.max(1) {
                self.settle(acks.pop_front()).await?;
            }
        }
        while let Some(a) = acks.pop_front() {
            self.settle(Some(a)).await?;
        }
        // Every publish up to `last` is acknowledged: the checkpoint moves there.
        self.store
            .save_checkpoint(&self.settings.checkpoint_name(), "log", last, epoch)
            .await?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        let next = expected.map(|s| Cursor {
            position: last,
            last_sequence: Some(s),
        });
        Ok((events.len(), next))
    }

    async fn settle(
        &self,
        ack: Option<(
            herald::Subject,
            i64,
            Option<u64>,
            async_nats::jetstream::context::PublishAckFuture,
        )>,
    ) -> Result<(), RelayError> {
        let Some((subject, position, expected, ack)) = ack else {
            return Ok(());
        };
        let ack = ack.await.map_err(|err| NatsError::Publish {
            subject: subject.to_string(),
            source: err.to_string().into(),
        })?;
        self.counters.acked(ack.duplicate);
        if let Some(before) = expected {
            if ack.duplicate || ack.sequence != before + 1 {
                return Err(RelayError::OutOfStep {
                    stream: self.settings.stream.clone(),
                    position,
                    expected: before + 1,
                    got: ack.sequence,
                });
            }
        }
        Ok(())
    }

    /// Gives the lease up (a clean stop), so a standby takes over at once.
    pub async fn release(&self) {
        let epoch = std::mem::take(&mut *self.term.lock()).epoch;
        if let Some(epoch) = epoch {
            let name = self.settings.lease_name();
            if let Err(e) = self
                .store
                .release_lease(&name, &self.settings.holder, epoch)
                .await
            {
                tracing::warn!("relay: release the lease {name}: {}", herald::report(&e));
            }
        }
    }

    /// Relays until `stop` completes, then gives the lease up. A standby tries for the lease
    /// every quarter of its time-to-live; a failed pass is logged and tried again after the
    /// poll interval.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was not checkpointed is found in the stream by the next run (a
    /// cancelled relay keeps its lease until it lapses).
    pub async fn run(&self, stop: impl Future<Output = ()>) -> RelayReport {
        tokio::pin!(stop);
        loop {
            let moved = tokio::select! {
                () = &mut stop => break,
                r = self.pass(4096) => r,
            };
            let wait = match moved {
                Ok(Some(0)) => Some(self.settings.poll),
                Ok(Some(_)) => None,
                Ok(None) => Some(standby_wait(self.settings.lease_ttl)),
                Err(e) => {
                    tracing::warn!("relay: {}", herald::report(&e));
                    Some(self.settings.poll)
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.release().await;
        self.report()
    }
}

/// How long a standby waits between tries for the lease: a quarter of its time-to-live.
fn standby_wait(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(10))
}
