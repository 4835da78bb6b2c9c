//! One name, one kind: which primitive a lock folder's children say uses it, and the refusal
//! when another kind asks for the same name.
//!
//! A mutex leaves `_c_<uuid>-lock-<seq>` nodes in the folder, a read-write lock `__READ__` and
//! `__WRIT__` nodes, a semaphore the `locks` and `leases` folders, an election (LeaderLatch)
//! `_c_<uuid>-latch-<seq>` nodes (Curator's layouts). Every
//! acquisition creates its own node first and then looks at where the other kinds would be, so
//! of two kinds arriving together at least one sees the other and backs off: they never both
//! hold. Other children are nested lock names (`a/b` under `a`), independent locks.

use std::fmt;

use tumbler_core::{Error, LockName};
use zookeeper_client as zk;

use crate::layout::{join, Marker, QueueNode, SEMAPHORE_LEASES, SEMAPHORE_LOCKS};

/// A primitive, as it shows in a lock folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// InterProcessMutex.
    Mutex,
    /// InterProcessReadWriteLock.
    ReadWrite,
    /// InterProcessSemaphoreV2.
    Semaphore,
    /// LeaderLatch.
    Election,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Mutex => "mutex",
            Kind::ReadWrite => "read-write lock",
            Kind::Semaphore => "semaphore",
            Kind::Election => "election",
        })
    }
}

/// Why an acquisition was refused before it could wait or hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name is in use by another kind of primitive.
    Kinds {
        /// What is asked for.
        asked: Kind,
        /// What uses the name.
        used: Kind,
        /// The node that shows it.
        node: String,
    },
    /// A node or data that no lock client wrote.
    Foreign {
        /// The full path.
        node: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A semaphore asked for with a limit other than the one recorded on the store.
    Limit {
        /// The recorded limit.
        recorded: u32,
        /// The limit asked for.
        asked: u32,
        /// Where it is recorded.
        node: String,
    },
}

impl Refusal {
    /// The typed error for lock `name`.
    pub(crate) fn into_error(self, name: &LockName) -> Error {
        let problem = match self {
            Refusal::Kinds { asked, used, node } => format!(
                "it is used as {} (node {node}) and was asked for as {}; a name belongs to \
                 one kind of primitive at a time, so pick another name for the {asked}",
                tumbler_core::with_article(&used.to_string()),
                tumbler_core::with_article(&asked.to_string()),
            ),
            Refusal::Foreign { node, problem } => format!(
                "node {node} {problem}; tumbler and Curator did not write it, so remove it or \
                 use another lock name"
            ),
            Refusal::Limit {
                recorded,
                asked,
                node,
            } => format!(
                "the semaphore's limit is {recorded} on the store (recorded in {node}) but this \
                 handle asks for limit {asked}; every handle of one semaphore must use the same \
                 limit"
            ),
        };
        Error::Conflict {
            name: name.clone(),
            problem,
        }
    }
}

/// The kind whose queue nodes are among `children` (of the folder `dir`) other than `asked`,
/// if any: the mutex's and the read-write lock's nodes. Semaphore folders are checked by
/// [`semaphore_folders`].
pub(crate) fn other_queue_kind(dir: &str, children: &[String], asked: Kind) -> Option<Refusal> {
    children.iter().find_map(|child| {
        let node = QueueNode::parse(child)?;
        let used = match node.marker {
            Marker::Lock => Kind::Mutex,
            Marker::Read | Marker::Write => Kind::ReadWrite,
            Marker::Latch => Kind::Election,
            Marker::Lease => {
                return Some(Refusal::Foreign {
                    node: join(dir, child),
                    problem: "is a semaphore lease outside the semaphore's leases folder".into(),
                })
            }
        };
        (used != asked).then(|| Refusal::Kinds {
            asked,
            used,
            node: join(dir, child),
        })
    })
}

/// The semaphore folders among `children` of `dir` (they may linger empty for a while after
/// the semaphore was last used: the servers remove empty containers periodically).
pub(crate) fn semaphore_folders(dir: &str, children: &[String]) -> Vec<String> {
    children
        .iter()
        .filter(|c| *c == SEMAPHORE_LOCKS || *c == SEMAPHORE_LEASES)
        .map(|c| join(dir, c))
        .collect()
}

/// A refusal if the node `path` that a lock waits for, with `stat`, was not written by a lock
/// client: every lock node is ephemeral, so a persistent one would never go away.
pub(crate) fn foreign_queue_node(path: &str, stat: &zk::Stat) -> Option<Refusal> {
    (stat.ephemeral_owner == 0).then(|| Refusal::Foreign {
        node: path.to_owned(),
        problem: "looks like a lock node but is persistent, so it would never be released".into(),
    })
}

/// A refusal if the child `path` of an election's folder, with `stat`, is neither a candidate
/// nor a nested name: an ephemeral node that is no queue node of any kind (nested names are
/// folders, and an ephemeral node cannot be one).
pub(crate) fn foreign_election_child(path: &str, stat: &zk::Stat) -> Option<Refusal> {
    (stat.ephemeral_owner != 0).then(|| Refusal::Foreign {
        node: path.to_owned(),
        problem:
            "is an ephemeral node that is not a LeaderLatch candidate (`_c_<uuid>-latch-<seq>`)"
                .into(),
    })
}

/// The refusal for a lock folder `dir` that is an ephemeral node (which cannot have children).
pub(crate) fn ephemeral_folder(dir: &str) -> Refusal {
    Refusal::Foreign {
        node: dir.to_owned(),
        problem: "is an ephemeral node, which cannot hold lock nodes".into(),
    }
}

/// The prefix of the semaphore limit record in the data of the `leases` folder.
const LIMIT_RECORD: &str = "tumbler-semaphore-limit=";

/// The data that records semaphore limit `limit`.
pub(crate) fn limit_record(limit: u32) -> Vec<u8> {
    format!("{LIMIT_RECORD}{limit}").into_bytes()
}

/// What the data of a `leases` folder says: `Ok(None)` nothing recorded, `Ok(Some(limit))`,
/// or a refusal for data no lock client wrote.
pub(crate) fn recorded_limit(node: &str, data: &[u8]) -> Result<Option<u32>, Refusal> {
    if data.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(data)
        .ok()
        .and_then(|text| text.strip_prefix(LIMIT_RECORD))
        .and_then(|limit| limit.parse::<u32>().ok())
        .filter(|limit| *limit > 0)
        .map(Some)
        .ok_or_else(|| Refusal::Foreign {
            node: node.to_owned(),
            problem: format!(
                "holds {} bytes that are not a semaphore limit record",
                data.len()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f0b6b8e-8d1f-4a43-9b7e-2f1d2c7b9a01";

    #[test]
    fn queue_nodes_of_another_kind_are_refused() {
        let mutex = format!("_c_{A}-lock-0000000001");
        let writer = format!("_c_{A}-__WRIT__0000000002");
        let nested = "inner".to_owned();
        assert_eq!(
            other_queue_kind("/n", &[mutex.clone(), nested.clone()], Kind::Mutex),
            None
        );
        assert_eq!(
            other_queue_kind("/n", &[nested.clone(), mutex.clone()], Kind::ReadWrite),
            Some(Refusal::Kinds {
                asked: Kind::ReadWrite,
                used: Kind::Mutex,
                node: format!("/n/{mutex}"),
            })
        );
        let latch = format!("_c_{A}-latch-0000000003");
        assert_eq!(
            other_queue_kind("/n", std::slice::from_ref(&latch), Kind::Mutex),
            Some(Refusal::Kinds {
                asked: Kind::Mutex,
                used: Kind::Election,
                node: format!("/n/{latch}"),
            })
        );
        assert!(matches!(
            other_queue_kind("/n", &[writer], Kind::Semaphore),
            Some(Refusal::Kinds {
                used: Kind::ReadWrite,
                ..
            })
        ));
        assert_eq!(
            semaphore_folders("/n", &["leases".into(), nested, "locks".into()]),
            vec!["/n/leases".to_owned(), "/n/locks".to_owned()]
        );
    }

    #[test]
    fn kind_conflicts_read_as_english() {
        let name = LockName::new("n").unwrap();
        let error = Refusal::Kinds {
            asked: Kind::Mutex,
            used: Kind::Election,
            node: "/n/x".into(),
        }
        .into_error(&name)
        .to_string();
        assert!(
            error.contains("used as an election") && error.contains("asked for as a mutex"),
            "{error}"
        );
    }

    #[test]
    fn limit_records_round_trip_and_garbage_is_foreign() {
        assert_eq!(recorded_limit("/n/leases", b""), Ok(None));
        assert_eq!(recorded_limit("/n/leases", &limit_record(7)), Ok(Some(7)));
        for garbage in [&b"7"[..], b"tumbler-semaphore-limit=0", b"\xff\x00"] {
            assert!(matches!(
                recorded_limit("/n/leases", garbage),
                Err(Refusal::Foreign { .. })
            ));
        }
        let error = Refusal::Limit {
            recorded: 2,
            asked: 5,
            node: "/n/leases".into(),
        }
        .into_error(&LockName::new("n").unwrap());
        assert!(error.to_string().contains("limit is 2"), "{error}");
    }
}
