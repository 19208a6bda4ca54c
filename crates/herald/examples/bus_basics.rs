//! The in-process bus in one screen: subscribe with priorities, publish and wait, emit and
//! flush, isolation of a failing handler, history and stats. Run: `cargo run --example bus_basics`.

use std::sync::Arc;

use herald::{handler_fn, sync_handler, Bus, Event, Priority, SubscribeOptions};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The bus catches and reports handler panics; keep the default hook's backtrace quiet.
    std::panic::set_hook(Box::new(|_| {}));
    let bus = Bus::new();

    // A critical audit handler runs first for every event, whatever its pattern.
    let _audit = bus.subscribe_with(
        ">",
        SubscribeOptions::owner("audit").priority(Priority::Critical),
        sync_handler(|e: &Event| println!("audit: {} from {}", e.subject, e.source)),
    )?;
    // An async handler for orders.
    let _orders = bus.subscribe(
        "orders.*",
        handler_fn(|e: Arc<Event>| async move {
            println!(
                "orders: {} {}",
                e.event_type,
                serde_json::Value::Object(e.data.clone())
            );
        }),
    )?;
    // A buggy handler: its panic is caught, counted and reported; the others still run.
    let _buggy = bus.subscribe(
        "orders.cancelled",
        sync_handler(|_: &Event| -> Result<(), herald::BoxError> { panic!("bug") }),
    )?;

    let created = Event::try_new("orders.created", json!({"id": 1}))?.with_source("shop");
    let report = bus.publish(created).await?;
    println!("created: {} handlers ran", report.handlers_run);

    let cancelled = Event::try_new("orders.cancelled", json!({"id": 1}))?.with_source("shop");
    let report = bus.publish(cancelled).await?;
    println!(
        "cancelled: {} ran, {} failed: {}",
        report.handlers_run,
        report.failed(),
        report.failures[0].failure
    );

    // Fire and forget: a backlog drains critical first.
    bus.emit(Event::try_new("orders.shipped", json!({"id": 1}))?.with_priority(Priority::Low))?;
    bus.emit(
        Event::try_new("orders.flagged", json!({"id": 2}))?.with_priority(Priority::Critical),
    )?;
    bus.flush().await;

    let recent: Vec<String> = bus
        .history_matching("orders.>", Some(3))?
        .iter()
        .map(|e| e.subject.to_string())
        .collect();
    println!("newest orders events: {recent:?}");
    println!("stats: {:?}", bus.stats());
    Ok(())
}
