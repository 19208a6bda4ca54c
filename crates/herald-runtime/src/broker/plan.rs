//! The coordinator's allocation plan, a pure function of a broker snapshot: each group's sources
//! shared out evenly among its live subscribers, moving as few as possible. A source leaves a
//! dead node at once; it leaves a live but overloaded node in two rounds (revoked now, given to
//! another node after the old owner's heartbeat has dropped it).

use std::collections::{BTreeMap, BTreeSet};

use herald::store::{AllocationChange, BrokerSnapshot};

/// The changes that bring `snapshot` closer to an even allocation.
pub fn plan(snapshot: &BrokerSnapshot) -> Vec<AllocationChange> {
    let mut groups: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for n in snapshot.nodes.iter().filter(|n| n.live) {
        for g in &n.info.groups {
            let entry = groups.entry(g.group.as_str()).or_default();
            entry.0.insert(n.info.node_id.as_str());
            entry.1.extend(g.sources.iter().map(String::as_str));
        }
    }
    let mut changes = Vec::new();
    for (group, (instances, sources)) in groups {
        let current: BTreeMap<&str, _> = snapshot
            .allocations
            .iter()
            .filter(|a| a.group == group)
            .map(|a| (a.source.as_str(), a))
            .collect();
        let owner_of = |s: &str| {
            current
                .get(s)
                .and_then(|a| a.node_id.as_deref())
                .filter(|n| instances.contains(n))
        };
        let mut load: BTreeMap<&str, usize> = instances.iter().map(|n| (*n, 0)).collect();
        for s in &sources {
            if let Some(n) = owner_of(s) {
                *load.entry(n).or_default() += 1;
            }
        }
        let cap = sources.len().div_ceil(instances.len());
        let change = |source: &str, to: Option<&str>| AllocationChange {
            group: group.to_owned(),
            source: source.to_owned(),
            to: to.map(str::to_owned),
            expected_epoch: current.get(source).map(|a| a.epoch),
        };
        let mut unowned = Vec::new();
        for s in &sources {
            match owner_of(s) {
                Some(n) if load[n] > cap => {
                    if let Some(l) = load.get_mut(n) {
                        *l -= 1;
                    }
                    changes.push(change(s, None));
                }
                Some(_) => {}
                // A revoked source (no owner) waits for the next round only if it was revoked
                // from a node that is still live; the store refuses a live claimer anyway.
                None => unowned.push(*s),
            }
        }
        for s in unowned {
            let Some((&to, _)) = load.iter().min_by_key(|(n, l)| (**l, **n)) else {
                continue;
            };
            if let Some(l) = load.get_mut(to) {
                *l += 1;
            }
            changes.push(change(s, Some(to)));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald::store::{Allocation, BrokerSnapshot, GroupInfo, NodeInfo, NodeState};

    use super::plan;

    fn node(id: &str, live: bool, sources: &[&str]) -> NodeState {
        NodeState {
            info: NodeInfo {
                node_id: id.to_owned(),
                role: "full".to_owned(),
                ttl: None,
                groups: vec![GroupInfo {
                    group: "g".to_owned(),
                    sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                }],
            },
            live,
            since_seen: Duration::ZERO,
            claims: Vec::new(),
        }
    }

    fn alloc(source: &str, node: Option<&str>) -> Allocation {
        Allocation {
            group: "g".to_owned(),
            source: source.to_owned(),
            node_id: node.map(str::to_owned),
            epoch: 1,
            coordinator_epoch: 1,
        }
    }

    fn apply(snapshot: &mut BrokerSnapshot) {
        for c in plan(snapshot) {
            snapshot.allocations.retain(|a| a.source != c.source);
            snapshot.allocations.push(alloc(&c.source, c.to.as_deref()));
        }
    }

    fn loads(snapshot: &BrokerSnapshot) -> Vec<usize> {
        let mut out: Vec<usize> = snapshot
            .nodes
            .iter()
            .filter(|n| n.live)
            .map(|n| {
                snapshot
                    .allocations
                    .iter()
                    .filter(|a| a.node_id.as_deref() == Some(n.info.node_id.as_str()))
                    .count()
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn sources_are_shared_evenly_and_move_off_dead_nodes_at_once() {
        let sources: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
        let mut snap = BrokerSnapshot {
            nodes: vec![
                node("a", true, &refs),
                node("b", true, &refs),
                node("c", true, &refs),
            ],
            ..BrokerSnapshot::default()
        };
        apply(&mut snap);
        assert_eq!(loads(&snap), [6, 7, 7]);
        assert!(plan(&snap).is_empty(), "stable once even");
        snap.nodes[1].live = false;
        apply(&mut snap);
        assert_eq!(loads(&snap), [10, 10], "b's sources moved in one round");
        snap.nodes[1].live = true;
        apply(&mut snap); // revokes from the overloaded
        apply(&mut snap); // gives them to b
        assert_eq!(loads(&snap), [6, 7, 7]);
    }

    #[test]
    fn a_coordinator_only_cluster_allocates_nothing() {
        let mut snap = BrokerSnapshot {
            nodes: vec![node("c", true, &[])],
            allocations: vec![alloc("s1", Some("x"))],
            ..BrokerSnapshot::default()
        };
        snap.nodes[0].info.groups.clear();
        assert!(plan(&snap).is_empty());
    }
}
