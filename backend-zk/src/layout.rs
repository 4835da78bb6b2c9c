//! Where locks live in the znode tree and how their nodes are named, parsed and ordered:
//! Curator's layouts (InterProcessMutex, InterProcessReadWriteLock, InterProcessSemaphoreV2,
//! LeaderLatch).
//!
//! Every contender creates a "protected" node `_c_<uuid>-<marker><sequence>` (the uuid lets a
//! client find its own node after a lost create reply). Nodes are ordered by the sequence
//! after the marker, as Curator does; children that do not follow the pattern are ignored.

use tumbler_core::LockName;
use uuid::Uuid;

/// The protection prefix Curator puts in front of node names: `_c_<uuid>-`.
const PROTECTED: &str = "_c_";
/// Length of `_c_` + a canonical uuid + `-`.
const PROTECTED_LEN: usize = 3 + 36 + 1;

/// The marker between the protection prefix and the sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// `lock-`: InterProcessMutex (also the semaphore's `locks` mutex).
    Lock,
    /// `__READ__`: the read side of InterProcessReadWriteLock.
    Read,
    /// `__WRIT__`: the write side of InterProcessReadWriteLock.
    Write,
    /// `lease-`: one permit of InterProcessSemaphoreV2.
    Lease,
    /// `latch-`: one candidate of LeaderLatch (its data is the participant id).
    Latch,
}

impl Marker {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Marker::Lock => "lock-",
            Marker::Read => "__READ__",
            Marker::Write => "__WRIT__",
            Marker::Lease => "lease-",
            Marker::Latch => "latch-",
        }
    }

    const ALL: [Marker; 5] = [
        Marker::Lock,
        Marker::Read,
        Marker::Write,
        Marker::Lease,
        Marker::Latch,
    ];
}

/// The data Curator's `Revoker` writes into a holder's node to ask it to release.
pub(crate) const REVOKE_MESSAGE: &[u8] = b"__REVOKE__";

/// The semaphore's mutex folder (InterProcessSemaphoreV2's `locks`).
pub(crate) const SEMAPHORE_LOCKS: &str = "locks";
/// The semaphore's lease folder (InterProcessSemaphoreV2's `leases`).
pub(crate) const SEMAPHORE_LEASES: &str = "leases";

/// Maps lock names to znode paths under a base path (`""` for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    base: String,
}

impl Layout {
    /// `base` is `""` or an absolute path without a trailing `/`, checked by the config.
    pub(crate) fn new(base: &str) -> Self {
        Layout {
            base: base.to_owned(),
        }
    }

    /// The folder of lock `name`: `<base>/<name>`, one znode per name segment. (`LockName`
    /// already refuses what a znode path cannot hold: `.` segments and the reserved
    /// `zookeeper` first segment.)
    pub(crate) fn dir(&self, name: &LockName) -> String {
        format!("{}/{}", self.base, name.as_str())
    }
}

/// `<dir>/<child>`.
pub(crate) fn join(dir: &str, child: &str) -> String {
    format!("{dir}/{child}")
}

/// The name prefix of a new protected node: `_c_<uuid>-<marker>`.
pub(crate) fn node_prefix(uuid: &Uuid, marker: Marker) -> String {
    format!("{PROTECTED}{}-{}", uuid.hyphenated(), marker.text())
}

/// The protection prefix of `uuid`: `_c_<uuid>-` (every node of one acquisition starts with it).
pub(crate) fn protection(uuid: &Uuid) -> String {
    format!("{PROTECTED}{}-", uuid.hyphenated())
}

/// One parsed child of a lock folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueNode {
    /// The child's name.
    pub(crate) name: String,
    /// Which recipe it belongs to.
    pub(crate) marker: Marker,
    /// The sequence after the marker (the sort key).
    pub(crate) seq: i64,
}

impl QueueNode {
    /// Parses `name`; `None` for children that are not lock nodes.
    pub(crate) fn parse(name: &str) -> Option<QueueNode> {
        // Curator sorts on what follows the *last* occurrence of the lock name.
        let (marker, at) = Marker::ALL
            .iter()
            .filter_map(|m| name.rfind(m.text()).map(|at| (*m, at)))
            .max_by_key(|(_, at)| *at)?;
        let digits = &name[at + marker.text().len()..];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq = digits.parse().ok()?;
        Some(QueueNode {
            name: name.to_owned(),
            marker,
            seq,
        })
    }

    /// The uuid of a protected node name, if it has one.
    pub(crate) fn uuid(&self) -> Option<&str> {
        protected_uuid(&self.name)
    }
}

/// The uuid of a protected node name (`_c_<uuid>-...`), if it has one.
pub(crate) fn protected_uuid(name: &str) -> Option<&str> {
    if name.len() > PROTECTED_LEN
        && name.starts_with(PROTECTED)
        && name.as_bytes()[PROTECTED_LEN - 1] == b'-'
    {
        let id = &name[PROTECTED.len()..PROTECTED_LEN - 1];
        Uuid::parse_str(id).ok().map(|_| id)
    } else {
        None
    }
}

/// The children of one lock folder that carry one of `markers`, in Curator's order.
pub(crate) fn sorted(children: &[String], markers: &[Marker]) -> Vec<QueueNode> {
    let mut nodes: Vec<QueueNode> = children
        .iter()
        .filter_map(|c| QueueNode::parse(c))
        .filter(|n| markers.contains(&n.marker))
        .collect();
    nodes.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.name.cmp(&b.name)));
    nodes
}

/// Which side of which recipe an acquisition is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// InterProcessMutex: the lowest `lock-` node holds.
    Mutex,
    /// Reader: holds when no `__WRIT__` node is before it.
    Read,
    /// Writer: holds when it is the first of all `__READ__`/`__WRIT__` nodes.
    Write,
    /// LeaderLatch candidate: leads when it is the lowest `latch-` node.
    Leader,
}

impl Role {
    /// The marker of this role's own nodes.
    pub(crate) fn marker(self) -> Marker {
        match self {
            Role::Mutex => Marker::Lock,
            Role::Read => Marker::Read,
            Role::Write => Marker::Write,
            Role::Leader => Marker::Latch,
        }
    }

    /// The kind of primitive this role belongs to.
    pub(crate) fn kind(self) -> crate::kinds::Kind {
        match self {
            Role::Mutex => crate::kinds::Kind::Mutex,
            Role::Read | Role::Write => crate::kinds::Kind::ReadWrite,
            Role::Leader => crate::kinds::Kind::Election,
        }
    }

    /// The markers that take part in this role's ordering.
    pub(crate) fn markers(self) -> &'static [Marker] {
        match self {
            Role::Mutex => &[Marker::Lock],
            Role::Read | Role::Write => &[Marker::Read, Marker::Write],
            Role::Leader => &[Marker::Latch],
        }
    }
}

/// Where a node stands in its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// The node holds the lock.
    Holds,
    /// The node must wait until `node` is gone, then look again; unless `last`: `node` is
    /// the only thing between us and the lock, so its deletion grants it (no node can be
    /// created ahead of us later, since sequence numbers only grow).
    WaitFor {
        /// The node to wait for.
        node: String,
        /// Whether its deletion alone grants the lock.
        last: bool,
    },
    /// The node is not among the children (deleted, or its session expired).
    Missing,
}

/// Curator's rules: a mutex, writer or latch candidate waits for the node just before it; a
/// reader waits for the first writer before it.
///
/// A write node may be replaced by a read node with the same sequence (a downgrade), so a
/// writer waiting for a writer, or a reader with several writers ahead, must look again.
pub(crate) fn standing(children: &[String], ours: &str, role: Role) -> Standing {
    let nodes = sorted(children, role.markers());
    let Some(index) = nodes.iter().position(|n| n.name == ours) else {
        return Standing::Missing;
    };
    let ahead = &nodes[..index];
    match role {
        Role::Mutex | Role::Write | Role::Leader => match ahead.last() {
            None => Standing::Holds,
            Some(before) => Standing::WaitFor {
                node: before.name.clone(),
                last: ahead.len() == 1 && (role != Role::Write || before.marker == Marker::Read),
            },
        },
        Role::Read => {
            let mut writers = ahead.iter().filter(|n| n.marker == Marker::Write);
            match writers.next() {
                None => Standing::Holds,
                Some(writer) => Standing::WaitFor {
                    node: writer.name.clone(),
                    last: writers.next().is_none(),
                },
            }
        }
    }
}

/// The holders among a lock folder's children, in order, and how many others wait.
pub(crate) fn holders(children: &[String]) -> (Vec<QueueNode>, usize) {
    let mut held = Vec::new();
    let mut waiting = 0;
    for marker in [Marker::Lock, Marker::Latch] {
        let queue = sorted(children, &[marker]);
        if let Some((first, rest)) = queue.split_first() {
            held.push(first.clone());
            waiting += rest.len();
        }
    }
    let rw = sorted(children, &[Marker::Read, Marker::Write]);
    match rw.first() {
        Some(first) if first.marker == Marker::Write => {
            held.push(first.clone());
            waiting += rw.len() - 1;
        }
        _ => {
            let readers = rw.iter().take_while(|n| n.marker == Marker::Read).count();
            held.extend(rw[..readers].iter().cloned());
            waiting += rw.len() - readers;
        }
    }
    (held, waiting)
}

/// One semaphore acquisition's lease nodes (one node per permit, grouped by protection uuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseGroup {
    /// The nodes, in order.
    pub(crate) nodes: Vec<String>,
    /// The shared uuid (each unprotected node is its own group).
    pub(crate) uuid: Option<String>,
}

/// The lease nodes of a semaphore grouped by acquisition, in order of their first node.
pub(crate) fn lease_groups(children: &[String]) -> Vec<LeaseGroup> {
    let mut groups: Vec<LeaseGroup> = Vec::new();
    for node in sorted(children, &[Marker::Lease]) {
        let uuid = node.uuid().map(str::to_owned);
        match groups.iter_mut().find(|g| uuid.is_some() && g.uuid == uuid) {
            Some(group) => group.nodes.push(node.name),
            None => groups.push(LeaseGroup {
                nodes: vec![node.name],
                uuid,
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uuid: &str, marker: Marker, seq: u32) -> String {
        format!("_c_{uuid}-{}{seq:010}", marker.text())
    }

    const A: &str = "3f0b6b8e-8d1f-4a43-9b7e-2f1d2c7b9a01";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const C: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";

    #[test]
    fn parses_curator_names() {
        let n = QueueNode::parse(&node(A, Marker::Lock, 42)).unwrap();
        assert_eq!((n.marker, n.seq), (Marker::Lock, 42));
        assert_eq!(n.uuid(), Some(A));
        let r = QueueNode::parse(&node(B, Marker::Read, 7)).unwrap();
        assert_eq!((r.marker, r.seq), (Marker::Read, 7));
        assert_eq!(QueueNode::parse("leases"), None);
        assert_eq!(QueueNode::parse("locks"), None);
        assert_eq!(QueueNode::parse("lock-"), None);
        // Unprotected nodes (older Curator, other clients) still sort.
        assert_eq!(QueueNode::parse("lock-0000000003").map(|n| n.seq), Some(3));
        assert_eq!(QueueNode::parse("lock-0000000003").unwrap().uuid(), None);
    }

    #[test]
    fn mutex_waits_for_its_predecessor_only() {
        let children = vec![
            node(C, Marker::Lock, 9),
            node(A, Marker::Lock, 2),
            "unrelated".to_owned(),
            node(B, Marker::Lock, 5),
        ];
        assert_eq!(
            standing(&children, &node(A, Marker::Lock, 2), Role::Mutex),
            Standing::Holds
        );
        assert_eq!(
            standing(&children, &node(C, Marker::Lock, 9), Role::Mutex),
            Standing::WaitFor {
                node: node(B, Marker::Lock, 5),
                last: false
            }
        );
        assert_eq!(
            standing(&children, &node(B, Marker::Lock, 5), Role::Mutex),
            Standing::WaitFor {
                node: node(A, Marker::Lock, 2),
                last: true
            }
        );
        assert_eq!(
            standing(&children, &node(A, Marker::Lock, 3), Role::Mutex),
            Standing::Missing
        );
    }

    #[test]
    fn readers_share_until_the_first_writer() {
        let w = node(B, Marker::Write, 3);
        let children = vec![
            node(A, Marker::Read, 1),
            node(C, Marker::Read, 2),
            w.clone(),
            node(C, Marker::Read, 4),
        ];
        assert_eq!(
            standing(&children, &node(C, Marker::Read, 2), Role::Read),
            Standing::Holds
        );
        assert_eq!(
            standing(&children, &node(C, Marker::Read, 4), Role::Read),
            Standing::WaitFor {
                node: w.clone(),
                last: true
            }
        );
        assert_eq!(
            standing(&children, &w, Role::Write),
            Standing::WaitFor {
                node: node(C, Marker::Read, 2),
                last: false
            }
        );
        // Two writers ahead: the first one's deletion is not enough.
        let two = vec![
            w.clone(),
            node(A, Marker::Write, 5),
            node(C, Marker::Read, 6),
        ];
        assert_eq!(
            standing(&two, &node(C, Marker::Read, 6), Role::Read),
            Standing::WaitFor {
                node: w.clone(),
                last: false
            }
        );
        // A writer behind a writer must look again: the holder may downgrade in place.
        assert_eq!(
            standing(&two, &node(A, Marker::Write, 5), Role::Write),
            Standing::WaitFor {
                node: w.clone(),
                last: false
            }
        );
        let (held, waiting) = holders(&children);
        assert_eq!(held.len(), 2);
        assert_eq!(waiting, 2);
    }

    #[test]
    fn downgraded_reader_keeps_the_writers_place() {
        // The read node created by a downgrade carries the write node's sequence.
        let children = vec![node(A, Marker::Read, 3), node(B, Marker::Write, 4)];
        assert_eq!(
            standing(&children, &node(B, Marker::Write, 4), Role::Write),
            Standing::WaitFor {
                node: node(A, Marker::Read, 3),
                last: true
            }
        );
    }

    #[test]
    fn the_lowest_latch_node_leads_and_others_wait_for_their_predecessor() {
        let first = node(B, Marker::Latch, 4);
        let second = node(A, Marker::Latch, 11);
        let children = vec![second.clone(), "nested".to_owned(), first.clone()];
        let parsed = QueueNode::parse(&first).unwrap();
        assert_eq!((parsed.marker, parsed.seq), (Marker::Latch, 4));
        assert_eq!(standing(&children, &first, Role::Leader), Standing::Holds);
        assert_eq!(
            standing(&children, &second, Role::Leader),
            Standing::WaitFor {
                node: first,
                last: true
            }
        );
        let (held, waiting) = holders(&children);
        assert_eq!((held.len(), waiting), (1, 1));
    }

    #[test]
    fn leases_group_by_acquisition() {
        let children = vec![
            node(A, Marker::Lease, 1),
            node(B, Marker::Lease, 2),
            node(A, Marker::Lease, 3),
            "lease-0000000004".to_owned(),
        ];
        let groups = lease_groups(&children);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].nodes.len(), 2);
        assert_eq!(groups[0].uuid.as_deref(), Some(A));
        assert_eq!(groups[2].uuid, None);
    }

    #[test]
    fn names_map_to_paths() {
        let layout = Layout::new("/locks");
        let name = LockName::new("jobs/nightly").unwrap();
        assert_eq!(layout.dir(&name), "/locks/jobs/nightly");
        assert_eq!(Layout::new("").dir(&name), "/jobs/nightly");
    }
}
