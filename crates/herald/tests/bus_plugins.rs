//! The plugin rows of DESIGN.md's Decisions table: reload, unload cleanup, failed setup,
//! sources, and serialised lifecycles.

use std::sync::Arc;

use herald::{sync_handler, BoxError, Bus, Event, Plugin, PluginContext, PluginManager, Priority};
use herald_testkit::fixtures::{id_of, tagged as ev_id};
use herald_testkit::DeliveryCheck;
use parking_lot::Mutex;

// ----- plugins -----

struct Counting {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Plugin for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let s = self.seen.clone();
        ctx.subscribe(
            "game.*",
            sync_handler(move |e: &Event| s.lock().push(id_of(e))),
        )?;
        let s = self.seen.clone();
        ctx.subscribe_with_priority(
            "game.>",
            Priority::Low,
            sync_handler(move |e: &Event| s.lock().push(format!("all-{}", id_of(e)))),
        )?;
        Ok(())
    }
}

#[tokio::test]
async fn a_plugin_reloaded_three_times_receives_each_later_event_exactly_once() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    plugins.load(Counting { seen: seen.clone() }).expect("load");
    for _ in 0..3 {
        plugins.reload("counting").expect("reload");
    }
    assert_eq!(bus.subscriptions().len(), 2);
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    for id in &ids {
        bus.publish(ev_id("game.move", id)).await.expect("publish");
    }
    let seen = seen.lock();
    let direct: Vec<String> = seen
        .iter()
        .filter(|s| !s.starts_with("all-"))
        .cloned()
        .collect();
    let via_gt: Vec<String> = seen
        .iter()
        .filter_map(|s| s.strip_prefix("all-").map(str::to_owned))
        .collect();
    DeliveryCheck::compare(ids.clone(), direct).assert_exactly_once();
    DeliveryCheck::compare(ids, via_gt).assert_exactly_once();
}

#[tokio::test]
async fn unloading_a_plugin_removes_every_subscription_it_made() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    plugins
        .load(Counting {
            seen: Default::default(),
        })
        .expect("load");
    assert!(
        plugins
            .load(Counting {
                seen: Default::default()
            })
            .is_err(),
        "names are unique"
    );
    assert_eq!(bus.subscriptions().len(), 2);
    plugins.unload("counting").expect("unload");
    assert!(bus.subscriptions().is_empty());
    assert!(plugins.unload("counting").is_err());
}

struct Broken;
impl Plugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.subscribe("x.y", sync_handler(|_: &Event| ()))?;
        Err("cannot start".into())
    }
}

#[tokio::test]
async fn a_plugin_whose_setup_fails_is_not_loaded_and_leaves_no_subscription() {
    let bus = Bus::new();
    let plugins = PluginManager::new(bus.clone());
    let err = plugins.load(Broken).expect_err("setup fails");
    assert!(err.to_string().contains("cannot start"));
    assert!(bus.subscriptions().is_empty());
    assert!(plugins.loaded().is_empty());
}

#[tokio::test]
async fn plugin_events_carry_the_plugin_name_as_source() {
    let bus = Bus::new();
    let ctx = PluginContext::new(bus.clone(), "quote");
    let event = ctx
        .event("quote.added", serde_json::json!({"text": "hi"}))
        .expect("event");
    ctx.publish(event).await.expect("publish");
    assert_eq!(bus.history(Some(1))[0].source, "quote");
}

struct Slow;
impl Plugin for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.subscribe("slow.x", sync_handler(|_: &Event| ()))?;
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(())
    }
}

#[test]
fn two_concurrent_loads_of_the_same_plugin_let_exactly_one_succeed() {
    let bus = Bus::new();
    let plugins = Arc::new(PluginManager::new(bus.clone()));
    let results: Vec<bool> = (0..2)
        .map(|_| {
            let p = plugins.clone();
            std::thread::spawn(move || p.load(Slow).is_ok())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
    assert_eq!(
        bus.subscriptions().len(),
        1,
        "the loser left nothing subscribed"
    );
}
