//! Digest credentials: lock nodes carry an ACL that lets only the same credentials delete them.

mod common;

use common::{children, raw, server, PROMPT};
use zookeeper_client as zk;

#[tokio::test]
async fn an_unauthenticated_delete_of_a_lock_node_is_refused() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let alice = tumbler_zookeeper::connect_url(&format!(
        "zk://alice:s3cret@{hosts}/secure?session_timeout=6s"
    ))
    .await
    .unwrap();
    let held = alice.mutex("vault").unwrap().lock().await.unwrap();

    // Anyone may look (READ), as Curator's participant listing does.
    let anonymous = raw(&hosts).await;
    let nodes = children(&anonymous, "/secure/vault").await;
    assert_eq!(nodes.len(), 1);
    let node = format!("/secure/vault/{}", nodes[0]);
    let (acl, _) = anonymous.get_acl(&node).await.unwrap();
    assert!(
        acl.iter().any(|a| a.scheme() == "digest"
            && a.id().starts_with("alice:")
            && a.permission() == zk::Permission::ALL),
        "the creator's credentials get every permission: {acl:?}"
    );
    assert!(
        acl.iter()
            .any(|a| a.scheme() == "world" && a.permission() == zk::Permission::READ),
        "the world may only read: {acl:?}"
    );

    // Deleting needs DELETE on the folder, which only alice has.
    assert_eq!(anonymous.delete(&node, None).await, Err(zk::Error::NoAuth));
    let mallory = zk::Client::connector()
        .with_auth("digest", b"mallory:guess")
        .connect(&hosts)
        .await
        .unwrap();
    assert_eq!(mallory.delete(&node, None).await, Err(zk::Error::NoAuth));
    assert_eq!(
        mallory
            .set_data(&node, b"__REVOKE__", None)
            .await
            .map(|_| ()),
        Err(zk::Error::NoAuth),
        "nor can a stranger write the revoke marker"
    );
    assert!(held.lost_reason().is_none());

    // A tumbler client without the credentials cannot queue either, and is told why.
    let stranger =
        tumbler_zookeeper::connect_url(&format!("zk://{hosts}/secure?session_timeout=6s"))
            .await
            .unwrap();
    let tried = stranger.mutex("vault").unwrap().try_lock().await;
    assert!(
        matches!(tried, Err(tumbler_core::Error::Auth { .. })),
        "{tried:?}"
    );

    // The same credentials share the lock normally.
    let alice2 = tumbler_zookeeper::connect_url(&format!(
        "zk://alice:s3cret@{hosts}/secure?session_timeout=6s"
    ))
    .await
    .unwrap();
    let second = alice2.mutex("vault").unwrap();
    assert!(second.try_lock().await.unwrap().is_none());
    held.release().await.unwrap();
    let got = second.lock_timeout(PROMPT).await.unwrap();
    assert!(got.is_some());
}
