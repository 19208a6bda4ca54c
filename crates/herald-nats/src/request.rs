//! Request/reply on core NATS: `request` (typed timeout and no-responders errors), `respond`
//! (an isolated responder task under the connection's `Shutdown`) and `respond_to`; traced
//! as a publish of the request, its process by the responder, and the response's publish
//! inside that process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald::{Event, IntoPattern, Object};

use crate::client::Nats;
use crate::error::NatsError;
use crate::subscribe::{next_or_stop, HandlerSubscription, Incoming};

impl Nats {
    /// Sends `request` and waits for one response envelope. The request's `event_type` is
    /// kept as given (seed 004 uses `request`).
    ///
    /// # Errors
    ///
    /// [`NatsError::Timeout`] when nobody answered in time, [`NatsError::NoResponders`] when
    /// nobody listens, [`NatsError::Envelope`] when the response is not an envelope.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a late response is discarded.
    pub async fn request(&self, request: &Event, timeout: Duration) -> Result<Event, NatsError> {
        // Sent from inside a trace: a publish span until the response comes, whose context
        // the request carries.
        let (continued, _span) = crate::trace::continued(request);
        let request = continued.as_ref().unwrap_or(request);
        let payload = Bytes::from(request.to_json());
        self.check_size(request.subject.as_str(), payload.len())?;
        let subject = request.subject.to_string();
        let mut req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(h) = crate::trace::headers(request) {
            req = req.headers(h);
        }
        let response = self
            .inner()
            .client
            .send_request(subject.clone(), req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => NatsError::Timeout {
                    subject: subject.clone(),
                    timeout,
                },
                async_nats::RequestErrorKind::NoResponders => NatsError::NoResponders {
                    subject: subject.clone(),
                },
                _ => NatsError::Request {
                    subject: subject.clone(),
                    source: Box::new(e),
                },
            })?;
        let mut event = Event::from_json(&response.payload)?.event;
        crate::trace::adopt(&mut event, response.headers.as_ref());
        Ok(event)
    }

    /// Answers requests on `pattern`: `respond` turns each request into the response's data.
    /// The response envelope has the request's subject and `correlation_id`, `event_type`
    /// `response`, and this connection's name as source. A failing `respond` sends no
    /// response (the requester times out) and is counted.
    ///
    /// # Errors
    ///
    /// As [`Nats::subscribe`].
    ///
    /// # Cancel safety
    ///
    /// As [`Nats::subscribe`].
    pub async fn respond<F, Fut>(
        &self,
        pattern: impl IntoPattern,
        queue: Option<&str>,
        respond: F,
    ) -> Result<HandlerSubscription, NatsError>
    where
        F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Object, herald::BoxError>> + Send + 'static,
    {
        let mut stream = self.subscribe(pattern, queue).await?;
        let nats = self.clone();
        let stop = self.inner().shutdown.cancelled_owned();
        let task = self.inner().shutdown.spawn(async move {
            tokio::pin!(stop);
            while let Some(incoming) = next_or_stop(&mut stream, &mut stop).await {
                let Some(reply) = incoming.reply else {
                    tracing::warn!(
                        subject = incoming.event.subject.as_str(),
                        "message without a reply subject on a responder; skipped"
                    );
                    continue;
                };
                let request = Arc::new(incoming.event);
                // Each request is processed in its `process` span (a child of the requester's
                // publish), and the response published from inside it.
                let processing = herald::hop::process(&crate::trace::hop(&request, 1), &request);
                processing
                    .run(async {
                        // The same isolation as a handler's, including a panic before the
                        // first await.
                        let data = match herald::isolate(|| respond(request.clone())).await {
                            Ok(data) => data,
                            Err(failure) => {
                                nats.record_failure(&request, &failure);
                                return;
                            }
                        };
                        if let Err(e) = nats.answer(&reply, &request, data).await {
                            tracing::warn!("response not sent: {e}");
                        }
                    })
                    .await;
            }
        });
        Ok(HandlerSubscription::new(task))
    }

    /// Answers one request received on an [`EventStream`](crate::EventStream): the response envelope has the
    /// request's subject and `correlation_id`, `event_type` `response`, this connection's name
    /// as source, and `data`. Returns the response sent.
    ///
    /// # Errors
    ///
    /// [`NatsError::Config`] when the message has no reply subject (it was not a request);
    /// otherwise as [`Nats::publish`].
    ///
    /// # Cancel safety
    ///
    /// As [`Nats::publish`].
    pub async fn respond_to(&self, request: &Incoming, data: Object) -> Result<Event, NatsError> {
        let Some(reply) = &request.reply else {
            return Err(NatsError::Config {
                key: "reply",
                reason: format!(
                    "the message on {} is not a request (no reply subject)",
                    request.event.subject
                ),
            });
        };
        self.answer(reply, &request.event, data).await
    }

    async fn answer(&self, reply: &str, request: &Event, data: Object) -> Result<Event, NatsError> {
        let mut response = Event::new(request.subject.clone())
            .with_type("response")
            .with_source(self.name())
            .with_correlation_id(request.correlation_id.clone())
            .with_data(data);
        // The response continues the trace: in a publish span when one is current (the
        // request's process span, or the caller's), else one hop on from the request's context.
        let (continued, _span) = crate::trace::continued(&response);
        let response = match continued {
            Some(traced) => traced,
            None => {
                if let Some(ctx) = request.trace_context() {
                    response.set_trace_context(Some(&ctx.child()));
                }
                response
            }
        };
        let headers = crate::trace::headers(&response);
        self.send_with(reply, headers, Bytes::from(response.to_json()))
            .await?;
        Ok(response)
    }
}
