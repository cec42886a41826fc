//! Auto-storage in the coordinator, against a real Azurite: the Blob client's
//! SharedKey signature is accepted on PUT and GET, an existing container is
//! no error, a missing one is told apart, and a wrong key is refused with the
//! service's 403 and no trace of the key; a node of an auto-storage cluster is
//! sent the expanded volumes with the key, and one whose coordinator lost its
//! `[storage]` account is made unusable, saying why, and sent nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bai_common::standins::{self, azurite, azurite::Azurite};
use bai_coordinator::Config;
use bai_coordinator::config::AutoStorage;
use bai_coordinator::domain::Secret;
use bai_coordinator::domain::auto_storage::AutoStorageAccount;
use bai_coordinator::storage::blob::{BlobError, BlobService, Created};
use bai_proto::v1 as pb;
use bai_proto::v1::coordinator_message::Msg as Out;
use std::time::Duration;
use support::{Coordinator, FakeAgent, register};

#[tokio::test]
async fn create_if_missing_exists_and_a_wrong_key_against_azurite() {
    let Some(program) = standins::require_program("azurite-blob") else {
        return;
    };
    let azurite = Azurite::start(&program).expect("azurite");
    let s = BlobService::new(azurite::ACCOUNT, azurite::KEY, &azurite.endpoint()).unwrap();
    assert!(!s.container_exists("batchaicontainer").await.unwrap());
    assert_eq!(
        s.create_container("batchaicontainer").await.unwrap(),
        Created::New
    );
    assert!(s.container_exists("batchaicontainer").await.unwrap());
    assert_eq!(
        s.create_container("batchaicontainer").await.unwrap(),
        Created::AlreadyThere
    );

    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let w = BlobService::new(azurite::ACCOUNT, wrong, &azurite.endpoint()).unwrap();
    let e = w.create_container("other").await.unwrap_err();
    let BlobError::Refused { status, code, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(*status, 403, "{e}");
    // Azure's code is AuthenticationFailed; Azurite says AuthorizationFailure.
    assert!(
        ["AuthenticationFailed", "AuthorizationFailure"].contains(&code.as_str()),
        "{e}"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("storage account devstoreaccount1, container other: "),
        "{shown}"
    );
    assert!(
        !shown.contains(wrong) && !shown.contains(azurite::KEY),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_sent_the_expanded_volumes_or_told_the_account_is_gone() {
    let Some(program) = standins::require_program("azurite-blob") else {
        return;
    };
    let azurite = Azurite::start(&program).expect("azurite");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_state_dir(dir.path());
    config.storage.auto_storage = Some(AutoStorage {
        account: AutoStorageAccount {
            account: azurite::ACCOUNT.into(),
            key: Secret::new(azurite::KEY),
        },
        blob_endpoint: azurite.endpoint(),
    });
    let c = Coordinator::start_with(config).await;
    c.seed(0).await;
    let mut auto = support::cluster("auto", 1);
    auto.node_setup = Some(pb::NodeSetup {
        mount_volumes: Some(pb::MountVolumes {
            use_auto_storage: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    c.clusters()
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(auto),
        })
        .await
        .unwrap();
    let s = BlobService::new(azurite::ACCOUNT, azurite::KEY, &azurite.endpoint()).unwrap();
    assert!(s.container_exists("batchaicontainer").await.unwrap());

    let (agent, _) = FakeAgent::connect(&c, register("n1", "auto", vec![])).await;
    let m = agent
        .prepare
        .as_ref()
        .and_then(|p| p.mount_volumes.clone())
        .expect("the node setup has volumes");
    assert!(!m.use_auto_storage, "{m:?}");
    let share = &m.azure_file_shares[0];
    assert_eq!(
        (
            share.relative_mount_path.as_str(),
            share.azure_file_url.as_str()
        ),
        (
            "autoafs",
            "https://devstoreaccount1.file.core.windows.net/batchaishare"
        )
    );
    let blob = &m.azure_blob_file_systems[0];
    assert_eq!(
        (
            blob.relative_mount_path.as_str(),
            blob.container_name.as_str()
        ),
        ("autobfs", "batchaicontainer")
    );
    for key in [&share.credentials, &blob.credentials] {
        assert_eq!(key.as_ref().unwrap().account_key, azurite::KEY);
    }
    agent.hang_up();
    c.stop().await;

    // The same state without [storage]: the node cannot be prepared.
    let c = Coordinator::start(dir.path()).await;
    let mut agent = FakeAgent::open(&c, register("n1", "auto", vec![]))
        .await
        .unwrap();
    assert!(matches!(agent.recv().await, Out::Registered(_)));
    let after = agent.quiet(Duration::from_millis(300)).await;
    assert!(
        !matches!(after, Some(Out::PrepareNode(_))),
        "no setup to prepare: {after:?}"
    );
    let node = c
        .clusters()
        .list_cluster_nodes(pb::ListClusterNodesRequest {
            workspace: "w".into(),
            cluster: "auto".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .nodes
        .remove(0);
    assert_eq!(node.state, pb::NodeState::Unusable as i32, "{node:?}");
    assert_eq!(node.errors[0].code, "AutoStorageNotConfigured", "{node:?}");
    c.stop().await;
}
