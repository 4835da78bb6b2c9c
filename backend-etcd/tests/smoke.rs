//! Quick end-to-end checks of every primitive against a real etcd.

use std::time::Duration;

use lockcore::{HoldMode, LostReason, SharedBackend};
use testkit::etcd::Etcd;

async fn connect(e: &Etcd) -> SharedBackend {
    backend_etcd::connect_url(&format!("etcd://127.0.0.1:{}?ttl=2s", e.port()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn mutex_excludes_and_hands_off() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let b = connect(&e).await;
    let ga = a.mutex("m").unwrap().lock().await.unwrap();
    assert!(b.mutex("m").unwrap().try_lock().await.unwrap().is_none());
    let st = a
        .state(&lockcore::LockName::new("m").unwrap())
        .await
        .unwrap();
    assert_eq!(st.holders.len(), 1, "{st:?}");
    assert_eq!(st.holders[0].mode, HoldMode::Exclusive);
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.mutex("m").unwrap().lock().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    let t1 = ga.fencing_token();
    ga.release().await.unwrap();
    let gb = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(gb.fencing_token() > t1);
    gb.release().await.unwrap();
}

#[tokio::test]
async fn same_instance_excludes() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let g1 = a.mutex("x").unwrap().lock().await.unwrap();
    assert!(a.mutex("x").unwrap().try_lock().await.unwrap().is_none());
    let w = tokio::spawn({
        let a = a.clone();
        async move { a.mutex("x").unwrap().lock().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!w.is_finished());
    g1.release().await.unwrap();
    let g2 = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap()
        .unwrap();
    g2.release().await.unwrap();
}

#[tokio::test]
async fn rwlock_and_downgrade() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let b = connect(&e).await;
    let r1 = a.rwlock("rw").unwrap().read().await.unwrap();
    let r2 = b.rwlock("rw").unwrap().read().await.unwrap();
    assert!(b.rwlock("rw").unwrap().try_write().await.unwrap().is_none());
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let w = a.rwlock("rw").unwrap().write().await.unwrap();
    assert!(b.rwlock("rw").unwrap().try_read().await.unwrap().is_none());
    let writer = tokio::spawn({
        let b = b.clone();
        async move { b.rwlock("rw").unwrap().write().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = w.downgrade().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "writer slipped in after downgrade");
    r.release().await.unwrap();
    let w2 = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .unwrap()
        .unwrap();
    w2.release().await.unwrap();
}

#[tokio::test]
async fn semaphore_counts() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let b = connect(&e).await;
    let l1 = a.semaphore("s", 3).unwrap().acquire(2).await.unwrap();
    assert!(b
        .semaphore("s", 3)
        .unwrap()
        .try_acquire(2)
        .await
        .unwrap()
        .is_none());
    let l2 = b
        .semaphore("s", 3)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap()
        .unwrap();
    let r = b.semaphore("s", 4).unwrap().try_acquire(1).await;
    assert!(matches!(r, Err(lockcore::Error::Conflict { .. })), "{r:?}");
    l1.release().await.unwrap();
    l2.release().await.unwrap();
}

#[tokio::test]
async fn revoke_and_deleted_key() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let b = connect(&e).await;
    let g = a.mutex("r").unwrap().lock().await.unwrap();
    let n = b
        .request_revoke(&lockcore::LockName::new("r").unwrap())
        .await
        .unwrap();
    assert_eq!(n, 1);
    tokio::time::timeout(Duration::from_secs(5), g.revoke_requested())
        .await
        .unwrap();
    assert!(g.lost_reason().is_none());
    // delete our key from outside
    let st = b
        .state(&lockcore::LockName::new("r").unwrap())
        .await
        .unwrap();
    let key = format!("r/{}", st.holders[0].id);
    e.call("/v3/kv/deleterange", &serde_json::json!({"key": b64(&key)}))
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), g.lost())
        .await
        .unwrap();
    assert_eq!(reason, LostReason::Deleted);
    assert!(matches!(
        g.release().await,
        Err(lockcore::Error::NotOwner { .. })
    ));
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
