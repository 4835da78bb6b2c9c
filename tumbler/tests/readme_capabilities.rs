//! The README's "What each store gives" table says what `capabilities()` says, on every store
//! (real servers started by testkit): a row cannot drift from the code unnoticed.

#![cfg(feature = "all")]

use tumbler_core::{Capabilities, Fencing};

/// The table's cells, by row title, in column order memory, Redis, Redlock, ZooKeeper, etcd,
/// Consul.
fn table() -> Vec<(String, Vec<String>)> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("### What each store gives")
        .expect("README has the 'What each store gives' section");
    readme[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

fn row(table: &[(String, Vec<String>)], title: &str) -> Vec<String> {
    table
        .iter()
        .find(|(t, _)| t.starts_with(title))
        .unwrap_or_else(|| panic!("README table has no row {title:?}"))
        .1
        .clone()
}

fn says_yes(cell: &str) -> bool {
    assert!(
        cell.starts_with("yes") || cell.starts_with("no"),
        "cell {cell:?} should start with yes or no"
    );
    cell.starts_with("yes")
}

#[tokio::test]
async fn readme_capability_table_matches_capabilities() {
    let redis = testkit::redis::Redis::start().await.expect("start redis");
    let masters = testkit::redis::Redis::start_many(3)
        .await
        .expect("start redis masters");
    let zk = testkit::zk::ZooKeeper::start()
        .await
        .expect("start zookeeper");
    let etcd = testkit::etcd::Etcd::start().await.expect("start etcd");
    let consul = testkit::consul::ConsulServer::start()
        .await
        .expect("start the consul test server");
    let redlock = format!(
        "redis+redlock://{}",
        masters
            .iter()
            .map(|m| m.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let urls = [
        "memory://readme".to_owned(),
        redis.url(),
        redlock,
        format!("zk://{}", zk.addr()),
        format!("etcd://{}", etcd.addr()),
        format!("consul://{}", consul.addr()),
    ];
    let mut caps: Vec<Capabilities> = Vec::new();
    for url in &urls {
        let locks = tumbler_locks::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        caps.push(locks.capabilities());
        locks.shutdown().await.expect("shutdown");
    }

    let table = table();
    let mut wrong = Vec::new();
    let mut check = |what: &str, column: usize, readme: bool, code: bool| {
        if readme != code {
            let store = ["memory", "Redis", "Redlock", "ZooKeeper", "etcd", "Consul"][column];
            wrong.push(format!(
                "{what} on {store}: README says {readme}, capabilities() says {code}"
            ));
        }
    };
    let rwlock = row(&table, "read-write lock");
    let semaphore = row(&table, "semaphore");
    let revocation = row(&table, "revocation");
    let waiters = row(&table, "waiters served");
    let fencing = row(&table, "fencing token");
    for (i, c) in caps.iter().enumerate() {
        check("read-write lock", i, says_yes(&rwlock[i]), c.rwlock);
        check("semaphore", i, says_yes(&semaphore[i]), c.semaphore);
        check("revocation", i, says_yes(&revocation[i]), c.revocation);
        check("FIFO", i, waiters[i].starts_with("FIFO"), c.fifo);
        check(
            "best-effort fencing",
            i,
            fencing[i].contains("best effort"),
            c.fencing == Fencing::BestEffort,
        );
    }
    assert!(
        wrong.is_empty(),
        "README out of date:\n{}",
        wrong.join("\n")
    );
}
