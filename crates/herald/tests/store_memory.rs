//! The event store contract in memory: the store conformance suite.

use herald::store::memory::MemoryEventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_event_store_passes_the_store_conformance_suite() {
    herald_testkit::store_conformance::run_all(&MemoryEventStore::new(), "confmem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_passes_the_broker_conformance_suite() {
    herald_testkit::broker_conformance::run_all(&MemoryEventStore::new()).await;
}
