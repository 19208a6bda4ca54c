//! The consumer's replay pass: the dead letters an operator replayed (`herald dlq replay`)
//! come back on `replay-{consumer}.{source}` and go through the processor as their original
//! events, under a checkpoint of their own; the source's checkpoint is not touched.

use herald::store::{EventStore, StreamName};

use super::{
    dead_letter_stream, store_error, ConsumerError, ConsumerStats, EventSubscriptionConsumer,
};

impl<S: EventStore> EventSubscriptionConsumer<S> {
    /// Processes the dead letters replayed to this consumer on `source`
    /// (`replay-{consumer}.{source}`), each as its original event, through the same path
    /// (retry, dead letter); the source's checkpoint is untouched, the replay stream has its
    /// own (`replay:{source}`), saved after each event.
    pub(super) async fn consume_replays(
        &self,
        source: &str,
        epoch: u64,
        stats: &mut ConsumerStats,
    ) -> Result<(), ConsumerError> {
        let place =
            StreamName::new(&dead_letter_stream(&self.name, source)).map_err(store_error)?;
        let stream = herald::dlq::stream::replay_stream(&place).map_err(store_error)?;
        let key = format!("{}:{source}", herald::dlq::stream::REPLAY_CATEGORY);
        let mut last = self
            .store
            .checkpoint(&self.name, &key)
            .await
            .map_err(store_error)?
            .map_or(-1, |(p, _)| p);
        loop {
            let page = self
                .store
                .read_stream(&stream, last + 1, self.settings.batch)
                .await
                .map_err(store_error)?;
            if page.is_empty() {
                return Ok(());
            }
            for replayed in page {
                if !self.holds(source, epoch) {
                    return Ok(());
                }
                if let Some(original) = herald::dlq::stream::as_original(&replayed) {
                    let (stream, position) = (original.stream.clone(), original.position);
                    if let Err(source_error) = self.handle(source, original, true, stats).await {
                        return Err(ConsumerError::Processor {
                            consumer: self.name.clone(),
                            stream,
                            position,
                            source: source_error,
                            exit_code: None,
                        });
                    }
                    stats.replayed += 1;
                }
                last = replayed.position;
                self.store
                    .save_checkpoint(&self.name, &key, last, epoch)
                    .await
                    .map_err(store_error)?;
                stats.checkpoints += 1;
            }
        }
    }
}
