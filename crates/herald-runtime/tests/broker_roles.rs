//! Seed 003's `TestDistributedEventBrokerRoles`, ported one to one on the memory store: which
//! components each role runs (seen in their statuses and in what they do to the store: the
//! lease taken, allocations handed out), registration per role, and status per role.

use std::sync::Arc;
use std::time::Duration;

use herald::store::memory::MemoryEventStore;
use herald::store::BrokerStore;
use herald::Shutdown;
use herald_runtime::{
    Assignment, BrokerError, BrokerRole, DistributedEventBroker, DistributedEventBrokerSettings,
    EventBroker, EventSubscriber, ProcessStatus, Service,
};
use parking_lot::Mutex;

#[derive(Default)]
struct Recorder {
    assignment: Mutex<Assignment>,
}

impl EventSubscriber for Recorder {
    fn group(&self) -> String {
        "projections".to_owned()
    }
    fn sources(&self) -> Vec<String> {
        vec!["orders".to_owned(), "users".to_owned()]
    }
    fn assign(&self, assignment: Assignment) {
        *self.assignment.lock() = assignment;
    }
    fn assignment(&self) -> Assignment {
        self.assignment.lock().clone()
    }
}

const BEAT: Duration = Duration::from_millis(20);

fn broker(
    role: BrokerRole,
    store: &MemoryEventStore,
) -> Arc<DistributedEventBroker<MemoryEventStore>> {
    Arc::new(
        DistributedEventBroker::new(
            "node-1",
            store.clone(),
            DistributedEventBrokerSettings::fast(role, BEAT),
        )
        .expect("settings"),
    )
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Runs `b` for a while (its components start), then stops it.
async fn run_then_stop(
    b: &Arc<DistributedEventBroker<MemoryEventStore>>,
) -> tokio::task::JoinHandle<()> {
    let stop = Shutdown::new();
    let task = tokio::spawn({
        let (b, stop) = (b.clone(), stop.clone());
        async move {
            b.execute(stop).await.expect("broker");
        }
    });
    tokio::time::sleep(BEAT * 8).await;
    stop.trigger();
    task
}

#[tokio::test]
async fn test_full_role_runs_coordinator_and_observer() {
    let store = MemoryEventStore::new();
    let b = broker(BrokerRole::Full, &store);
    let sub = Arc::new(Recorder::default());
    b.register(sub.clone()).expect("register");
    let stop = Shutdown::new();
    let task = tokio::spawn(b.clone().execute(stop.clone()));
    until("both components running", || {
        b.coordinator_status() == ProcessStatus::Running
            && b.observer_status() == ProcessStatus::Running
    })
    .await;
    until("the sources allocated and handed out", || {
        sub.assignment().sources.len() == 2
    })
    .await;
    let snap = store
        .snapshot(Duration::from_secs(5))
        .await
        .expect("snapshot");
    assert_eq!(
        snap.lease.expect("lease").holder,
        "node-1",
        "the coordinator took the lease"
    );
    stop.trigger();
    task.await.expect("join").expect("broker");
}

#[tokio::test]
async fn test_coordinator_role_runs_only_coordinator() {
    let store = MemoryEventStore::new();
    let b = broker(BrokerRole::Coordinator, &store);
    let task = run_then_stop(&b).await;
    assert_eq!(b.coordinator_status(), ProcessStatus::Running);
    assert_eq!(
        b.observer_status(),
        ProcessStatus::Initialised,
        "observe() never ran"
    );
    task.await.expect("join");
    assert!(b.counters().snapshot().terms >= 1, "coordinate() ran");
}

#[tokio::test]
async fn test_observer_role_runs_only_observer() {
    let store = MemoryEventStore::new();
    let b = broker(BrokerRole::Observer, &store);
    let task = run_then_stop(&b).await;
    assert_eq!(b.observer_status(), ProcessStatus::Running);
    assert_eq!(
        b.coordinator_status(),
        ProcessStatus::Initialised,
        "coordinate() never ran"
    );
    task.await.expect("join");
    let snap = store
        .snapshot(Duration::from_secs(5))
        .await
        .expect("snapshot");
    assert!(
        snap.lease.is_none(),
        "an observer never takes the lease, even a free one"
    );
}

#[tokio::test]
async fn test_coordinator_role_rejects_subscriber_registration() {
    let b = broker(BrokerRole::Coordinator, &MemoryEventStore::new());
    let err = b
        .register(Arc::new(Recorder::default()))
        .expect_err("refused");
    assert!(matches!(&err, BrokerError::CoordinatorOnly { node_id } if node_id == "node-1"));
    assert!(err.to_string().contains("coordinator-only"), "{err}");
    assert!(b.subscribers().is_empty());
}

#[tokio::test]
async fn test_observer_role_accepts_subscriber_registration() {
    let b = broker(BrokerRole::Observer, &MemoryEventStore::new());
    b.register(Arc::new(Recorder::default())).expect("accepted");
    assert_eq!(b.subscribers().len(), 1);
}

#[tokio::test]
async fn test_full_role_accepts_subscriber_registration() {
    let b = broker(BrokerRole::Full, &MemoryEventStore::new());
    b.register(Arc::new(Recorder::default())).expect("accepted");
    assert_eq!(b.subscribers().len(), 1);
}

#[tokio::test]
async fn test_status_reflects_coordinator_only_when_coordinator_role() {
    let b = broker(BrokerRole::Coordinator, &MemoryEventStore::new());
    assert_eq!(b.status(), ProcessStatus::Initialised);
    let task = run_then_stop(&b).await;
    assert_eq!(b.status(), b.coordinator_status());
    assert_eq!(
        b.status(),
        ProcessStatus::Running,
        "the observer's initialised status is ignored"
    );
    task.await.expect("join");
    assert_eq!(b.status(), ProcessStatus::Stopped);
}

#[tokio::test]
async fn test_status_reflects_observer_only_when_observer_role() {
    let b = broker(BrokerRole::Observer, &MemoryEventStore::new());
    let task = run_then_stop(&b).await;
    assert_eq!(b.status(), b.observer_status());
    assert_eq!(
        b.status(),
        ProcessStatus::Running,
        "the coordinator's initialised status is ignored"
    );
    task.await.expect("join");
    assert_eq!(b.status(), ProcessStatus::Stopped);
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_with_the_setting_named() {
    let mut s = DistributedEventBrokerSettings::fast(BrokerRole::Full, BEAT);
    s.subscriber_manager_heartbeat_interval = s.coordinator_subscriber_max_time_since_last_seen;
    let err = DistributedEventBroker::new("n", MemoryEventStore::new(), s).expect_err("refused");
    assert!(
        err.to_string()
            .contains("subscriber_manager_heartbeat_interval"),
        "{err}"
    );
    let unknown = "leader".parse::<BrokerRole>().expect_err("unknown");
    assert_eq!(
        unknown.to_string(),
        "unknown broker role \"leader\": expected coordinator, observer or full"
    );
}
