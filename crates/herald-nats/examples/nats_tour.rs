//! Herald over NATS: a handler, a queue group, request/reply and a JetStream publish with
//! ack and dedupe. Needs a server: `cargo run -p herald-nats --example nats_tour [URL]`.

use std::sync::Arc;
use std::time::Duration;

use herald::{handler_fn, Event};
use herald_nats::{Nats, StreamSpec};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let nats = Nats::builder()
        .server(&url)
        .name("nats-tour")
        .on_state_change(|s| eprintln!("connection: {s:?}"))
        .connect()
        .await?;

    // The same Handler type as the in-process bus; two members share a queue group.
    for member in ["a", "b"] {
        nats.subscribe_handler(
            "tour.jobs.*",
            Some("workers"),
            handler_fn(move |e: Arc<Event>| async move {
                println!("worker {member} got {}", e.subject);
            }),
        )
        .await?
        .detach();
    }
    for i in 0..4 {
        nats.publish(&Event::try_new(&format!("tour.jobs.{i}"), json!({"n": i}))?)
            .await?;
    }
    nats.flush().await?;

    // Request/reply: the response copies the request's correlation id.
    let _echo = nats
        .respond("tour.echo", None, |req: Arc<Event>| async move {
            Ok(req.data.clone())
        })
        .await?;
    let request = Event::try_new("tour.echo", json!({"ping": true}))?.with_type("request");
    let response = nats.request(&request, Duration::from_secs(2)).await?;
    println!(
        "response {} (correlation {})",
        serde_json::Value::Object(response.data),
        response.correlation_id
    );

    // JetStream: stored once even when the same event is published twice.
    let js = nats.jetstream();
    js.ensure_stream(&StreamSpec::new("TOUR", ["tour.stored.>"]))
        .await?;
    let event = Event::try_new("tour.stored.order", json!({"id": 7}))?.ensure_event_id();
    let first = js.publish(&event).await?;
    let again = js.publish(&event).await?;
    println!(
        "stored at {} (retry duplicate: {})",
        first.sequence, again.duplicate
    );
    js.delete_stream("TOUR").await?;

    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("stats: {:?}", nats.stats());
    nats.drain().await?;
    Ok(())
}
