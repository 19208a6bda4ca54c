//! Seed 000's three unit tests, ported one to one.

use std::sync::Arc;

use herald::{sync_handler, Bus, Event};
use herald_worker::{step_handler_fn, HandlerRegistry, StepContext, StepHandlerResult};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

/// `test_event_bridge_publish_subscribe`: the bus delivers what is published.
#[tokio::test]
async fn test_event_bridge_publish_subscribe() {
    let bridge = Bus::new();
    bridge.start();
    let received: Arc<Mutex<Vec<Value>>> = Default::default();
    let r = received.clone();
    let _sub = bridge
        .subscribe(
            "test.event",
            sync_handler(move |e: &Event| r.lock().push(e.data["value"].clone())),
        )
        .expect("subscribe");
    bridge
        .publish_json("test.event", json!({"value": "data"}))
        .await
        .expect("publish");
    assert_eq!(*received.lock(), [json!("data")]);
    bridge.stop().await;
}

/// `test_handler_registry_register_resolve`.
#[test]
fn test_handler_registry_register_resolve() {
    let registry = HandlerRegistry::new();
    let test_handler = step_handler_fn("test_handler", |_ctx: StepContext| async {
        StepHandlerResult::success(Map::new())
    });
    registry.register("test_handler", move || Ok(Box::new(test_handler.clone())));
    let handler = registry.resolve("test_handler");
    let handler = handler.expect("is not None");
    assert_eq!(handler.name(), "test_handler");
}

/// `test_step_handler_result_factory_methods`.
#[test]
fn test_step_handler_result_factory_methods() {
    let mut result = Map::new();
    result.insert("key".into(), "value".into());
    let success = StepHandlerResult::success(result.clone());
    assert!(success.success);
    assert_eq!(success.result, Some(result));

    let failure = StepHandlerResult::failure("error").retryable(false);
    assert!(!failure.success);
    assert!(!failure.retryable);
}
