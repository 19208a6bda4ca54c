//! The broker state conformance suite: the lease and its epochs, heartbeats and claims,
//! allocations under the lease (compare-and-set, never to a second live claimer), checkpoint
//! fencing by allocation epoch, purging, and the idempotent count projection. Runs unchanged
//! on memory, SQLite and PostgreSQL; each backend gives it a store of its own (the lease and
//! the nodes are global to a store).

use std::time::Duration;

use herald::store::broker::COORDINATOR_LEASE;
use herald::store::{
    AllocationChange, BrokerStore, CountProjection, EventStore, GroupInfo, NodeInfo, StoreError,
};

const LONG: Duration = Duration::from_secs(30);

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        node_id: id.to_owned(),
        role: "full".to_owned(),
        ttl: None,
        groups: vec![GroupInfo {
            group: "g".to_owned(),
            sources: vec!["s1".to_owned(), "s2".to_owned()],
        }],
    }
}

fn change(source: &str, to: Option<&str>, expected: Option<u64>) -> AllocationChange {
    AllocationChange {
        group: "g".to_owned(),
        source: source.to_owned(),
        to: to.map(str::to_owned),
        expected_epoch: expected,
    }
}

/// The lease: first holder gets epoch 1; renewals keep it; another holder waits while it is
/// live and takes it with epoch + 1 once it expired; the old holder's writes are refused.
pub async fn lease<S: BrokerStore>(s: &S) {
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "a", Duration::from_millis(1000))
            .await
            .expect("lease"),
        Some(1)
    );
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "b", LONG)
            .await
            .expect("lease"),
        None,
        "a's lease is live"
    );
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "a", Duration::from_millis(1000))
            .await
            .expect("renew"),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "b", LONG)
            .await
            .expect("take"),
        Some(2),
        "expired: a new term"
    );
    let refused = s
        .allocate("a", 1, LONG, &[change("s1", Some("a"), None)])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::LeaseLost { holder, epoch: 1 }) if holder == "a"),
        "{refused:?}"
    );
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "a", LONG)
            .await
            .expect("lease"),
        None
    );
    let snap = s.snapshot(LONG).await.expect("snapshot");
    let lease = snap.lease.expect("a lease");
    assert_eq!(
        (lease.holder.as_str(), lease.epoch, lease.live),
        ("b", 2, true)
    );
    s.release_lease(COORDINATOR_LEASE, "b", 2)
        .await
        .expect("release");
    assert_eq!(
        s.acquire_lease(COORDINATOR_LEASE, "a", LONG)
            .await
            .expect("lease"),
        Some(3)
    );
    assert!(
        s.allocate("b", 2, LONG, &[]).await.is_err(),
        "b released it"
    );
    s.release_lease(COORDINATOR_LEASE, "a", 3)
        .await
        .expect("release");
}

/// Allocations: compare-and-set on the allocation epoch; never given to a node while another
/// live node claims the source; a revoke then an assign once the old owner dropped it; a dead
/// node's claims do not count; checkpoints fenced by the allocation epoch.
pub async fn allocations<S: BrokerStore + EventStore>(s: &S) {
    let epoch = s
        .acquire_lease(COORDINATOR_LEASE, "c", LONG)
        .await
        .expect("lease")
        .expect("held");
    for n in ["n1", "n2"] {
        assert!(s.heartbeat(&node(n)).await.expect("heartbeat").is_empty());
    }
    let applied = s
        .allocate(
            "c",
            epoch,
            LONG,
            &[
                change("s1", Some("n1"), None),
                change("s2", Some("n1"), None),
            ],
        )
        .await
        .expect("allocate");
    assert_eq!(applied, 2);
    let mine = s.heartbeat(&node("n1")).await.expect("heartbeat");
    let got: Vec<(&str, u64)> = mine.iter().map(|a| (a.source.as_str(), a.epoch)).collect();
    assert_eq!(got, [("s1", 1), ("s2", 1)]);
    // A stale expectation is skipped, and so is a move while n1 (live) claims s1.
    let skipped = s
        .allocate(
            "c",
            epoch,
            LONG,
            &[
                change("s1", Some("n2"), None),
                change("s1", Some("n2"), Some(1)),
            ],
        )
        .await
        .expect("allocate");
    assert_eq!(skipped, 0, "never to a second live claimer");
    // Revoke, then assign once n1's heartbeat dropped it.
    assert_eq!(
        s.allocate("c", epoch, LONG, &[change("s1", None, Some(1))])
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(
        s.allocate("c", epoch, LONG, &[change("s1", Some("n2"), Some(2))])
            .await
            .expect("allocate"),
        0,
        "n1 still claims it"
    );
    let mine = s.heartbeat(&node("n1")).await.expect("heartbeat");
    assert_eq!(mine.len(), 1, "n1 keeps s2 only: {mine:?}");
    assert_eq!(
        s.allocate("c", epoch, LONG, &[change("s1", Some("n2"), Some(2))])
            .await
            .expect("allocate"),
        1
    );
    let theirs = s.heartbeat(&node("n2")).await.expect("heartbeat");
    assert_eq!(
        (
            theirs[0].source.as_str(),
            theirs[0].epoch,
            theirs[0].coordinator_epoch
        ),
        ("s1", 3, epoch)
    );
    // Fencing: n1's checkpoint on s1 with its old epoch is refused; n2's goes through.
    let stale = s.save_checkpoint("g", "s1", 10, 1).await;
    assert!(
        matches!(
            &stale,
            Err(StoreError::StaleEpoch {
                epoch: 1,
                current: 3,
                ..
            })
        ),
        "{stale:?}"
    );
    s.save_checkpoint("g", "s1", 10, 3)
        .await
        .expect("the owner's checkpoint");
    assert_eq!(s.checkpoint("g", "s1").await.expect("read"), Some((10, 3)));
    // A node whose heartbeat is older than the time-to-live does not count: s2 moves at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.heartbeat(&node("n2")).await.expect("heartbeat");
    let short = Duration::from_millis(300);
    assert_eq!(
        s.allocate("c", epoch, short, &[change("s2", Some("n2"), Some(1))])
            .await
            .expect("allocate"),
        1
    );
    let snap = s.snapshot(short).await.expect("snapshot");
    let live: Vec<(&str, bool)> = snap
        .nodes
        .iter()
        .map(|n| (n.info.node_id.as_str(), n.live))
        .collect();
    assert_eq!(live, [("n1", false), ("n2", true)]);
    assert_eq!(snap.nodes[0].info, node("n1"), "what the node said is kept");
    let owners: Vec<(&str, Option<&str>, u64)> = snap
        .allocations
        .iter()
        .map(|a| (a.source.as_str(), a.node_id.as_deref(), a.epoch))
        .collect();
    assert_eq!(owners, [("s1", Some("n2"), 3), ("s2", Some("n2"), 2)]);
    // Purge and leave.
    assert_eq!(
        s.purge_nodes(Duration::from_millis(300))
            .await
            .expect("purge"),
        1
    );
    s.leave("n2").await.expect("leave");
    assert!(s.snapshot(LONG).await.expect("snapshot").nodes.is_empty());
}

/// The count projection counts each event once, whatever is replayed.
pub async fn counts<S: CountProjection>(s: &S) {
    for pos in [3, 5, 5, 4, 9] {
        s.count_event("p", "orders", pos).await.expect("count");
    }
    assert!(!s.count_event("p", "orders", 9).await.expect("count"));
    assert!(s.count_event("p", "users", 2).await.expect("count"));
    let got = s.counts("p").await.expect("counts");
    assert_eq!(
        got,
        [("orders".to_owned(), 3, 9), ("users".to_owned(), 1, 2)]
    );
    assert!(s.counts("other").await.expect("counts").is_empty());
}

/// Named leases (a relay's): each name has its own holder and epochs, independent of the
/// coordinator's and of each other; a standby takes an expired one with epoch + 1.
pub async fn named_leases<S: BrokerStore>(s: &S) {
    let short = Duration::from_millis(600);
    let a = s
        .acquire_lease("relay.A", "r1", short)
        .await
        .expect("lease");
    let b = s.acquire_lease("relay.B", "r2", LONG).await.expect("lease");
    assert_eq!((a, b), (Some(1), Some(1)), "two names, two first terms");
    assert_eq!(
        s.acquire_lease("relay.A", "r2", LONG).await.expect("lease"),
        None,
        "r1 holds relay.A"
    );
    let coordinator = s.snapshot(LONG).await.expect("snapshot").lease;
    assert!(
        coordinator
            .as_ref()
            .is_none_or(|l| l.holder != "r1" && l.holder != "r2"),
        "a named lease is not the coordinator's: {coordinator:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s.acquire_lease("relay.A", "r2", LONG).await.expect("take"),
        Some(2),
        "the standby takes the expired lease in a new term"
    );
    assert_eq!(
        s.acquire_lease("relay.A", "r1", LONG).await.expect("lease"),
        None,
        "the old holder waits"
    );
    s.release_lease("relay.A", "r2", 2).await.expect("release");
    s.release_lease("relay.B", "r2", 1).await.expect("release");
    assert_eq!(
        s.acquire_lease("relay.A", "r1", LONG).await.expect("lease"),
        Some(3)
    );
    s.release_lease("relay.A", "r1", 3).await.expect("release");
}

/// Every case, in order.
pub async fn run_all<S: BrokerStore + EventStore + CountProjection>(s: &S) {
    lease(s).await;
    named_leases(s).await;
    allocations(s).await;
    counts(s).await;
}
