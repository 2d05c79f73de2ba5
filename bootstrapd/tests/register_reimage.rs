//! Re-registration after a reimage (issue 17), against the project's Rancher test server on
//! loopback: a reimage is a fresh `--root` tree (a new disk) with the same datasource.
//! With `rancher.system_agent.machine_id: instance_id` the same instance id is the same
//! machine; with the default (`random`, as Rancher's install.sh) it is a new machine and the
//! old one stays in Rancher.

mod common;

use common::{SettingsBuilder, temp_root};

use bootstrapd::actions::register::{NodeIdentity, RegisterError, register_instance};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::Tuning;
use bootstrapd::rancher::system_agent::{
    CATTLE_ID_FILE, CONNECTION_INFO_FILE, SystemAgentError, machine_name,
};
use bootstrapd::userdata::{MachineId, Role, Settings};
use rancher_test_server::{Config, Generation, Server, start};

const TOKEN: &str = "tsq2w3e4r5t6y7u8i9o0pasdfghjklzxcvbnmqwertyuiopas";
const INSTANCE: &str = "iid-node4";

async fn server() -> Server {
    start(Config {
        tokens: vec![TOKEN.into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn settings(srv: &Server, machine_id: MachineId) -> Settings {
    let mut s = SettingsBuilder::system_agent(&srv.url)
        .roles(&[Role::Worker])
        .token(TOKEN)
        .ca_checksum(Some(srv.ca_checksum.clone()))
        .node_name("node4")
        .deadline(60)
        .build();
    s.rancher.system_agent.machine_id = machine_id;
    s
}

fn node() -> NodeIdentity {
    NodeIdentity {
        node_name: "node4".into(),
        address: Some("10.0.2.15".into()),
        internal_address: None,
    }
}

/// One boot of a node on a disk (`root`): the register stage as `bootstrapd run` calls it.
async fn boot(root: &HostRoot, s: &Settings) -> Result<String, RegisterError> {
    let rec = register_instance(root, s, &node(), Some(INSTANCE), &Tuning::default()).await?;
    Ok(rec.system_agent.expect("system agent record").machine_name)
}

/// The plan secret the connection info names (what the agent will watch).
fn plan_secret(root: &HostRoot) -> String {
    let text = std::fs::read_to_string(root.path(CONNECTION_INFO_FILE)).unwrap();
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    info["secretName"].as_str().unwrap().to_string()
}

fn cattle_id(root: &HostRoot) -> String {
    std::fs::read_to_string(root.path(CATTLE_ID_FILE))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn with_instance_id_a_reimaged_node_is_the_same_machine() {
    let srv = server().await;
    let s = settings(&srv, MachineId::InstanceId);
    let (_d1, first_disk) = temp_root();
    let (_d2, new_disk) = temp_root();

    let first = boot(&first_disk, &s).await.unwrap();
    let again = boot(&new_disk, &s).await.unwrap();

    assert_eq!(first, again);
    assert_eq!(cattle_id(&first_disk), cattle_id(&new_disk));
    assert_eq!(first, machine_name(&cattle_id(&new_disk)));
    // Rancher hands the same machine's plan secret to the new disk's agent.
    assert_eq!(plan_secret(&first_disk), plan_secret(&new_disk));
    let nodes = srv.record();
    assert_eq!(nodes.len(), 1, "one machine for both disks: {nodes:?}");
    assert_eq!(nodes[0].generation, Generation::SystemAgent);
    assert_eq!(nodes[0].name, first);
    assert_eq!(nodes[0].connect_count, 2);
    srv.shutdown();
}

#[tokio::test]
async fn by_default_a_reimaged_node_is_a_new_machine() {
    // Documented (README, "Re-registration after a reimage"): a random CATTLE_ID lives on
    // the disk, so a new disk is a new machine and the old one stays until deleted.
    let srv = server().await;
    let s = settings(&srv, MachineId::Random);
    let (_d1, first_disk) = temp_root();
    let (_d2, new_disk) = temp_root();

    let first = boot(&first_disk, &s).await.unwrap();
    let again = boot(&new_disk, &s).await.unwrap();

    assert_ne!(first, again);
    assert_ne!(plan_secret(&first_disk), plan_secret(&new_disk));
    let nodes = srv.record();
    assert_eq!(nodes.len(), 2, "two machines, same node name: {nodes:?}");
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    let mut want = [first.as_str(), again.as_str()];
    want.sort();
    assert_eq!(names, want);
    assert!(nodes.iter().all(|n| n.hostname.as_deref() == Some("node4")));
    assert!(nodes.iter().all(|n| n.connect_count == 1));
    srv.shutdown();
}

#[tokio::test]
async fn another_instance_id_is_another_machine() {
    let srv = server().await;
    let s = settings(&srv, MachineId::InstanceId);
    let (_d1, a) = temp_root();
    let (_d2, b) = temp_root();
    let first = boot(&a, &s).await.unwrap();
    let rec = register_instance(&b, &s, &node(), Some("iid-node5"), &Tuning::default())
        .await
        .unwrap();
    assert_ne!(first, rec.system_agent.unwrap().machine_name);
    assert_eq!(srv.record().len(), 2);
    srv.shutdown();
}

#[tokio::test]
async fn an_explicit_value_is_the_cattle_id() {
    let srv = server().await;
    let id = "0123456789abcdef".to_string();
    let s = settings(&srv, MachineId::Value(id.clone()));
    let (_d, root) = temp_root();
    let name = boot(&root, &s).await.unwrap();
    assert_eq!(cattle_id(&root), id);
    assert_eq!(name, machine_name(&id));
    assert_eq!(srv.record()[0].name, name);
    srv.shutdown();
}

#[tokio::test]
async fn a_disk_registered_as_another_machine_is_refused_before_anything_is_sent() {
    let srv = server().await;
    let (_d, root) = temp_root();
    // Registered before with a random id (or copied from another host's image).
    boot(&root, &settings(&srv, MachineId::Random))
        .await
        .unwrap();
    let old = cattle_id(&root);
    // A file where the interlock's directory goes: had the interlock (the first step that
    // writes) run before the conflict was found, the error would be the interlock's.
    let interlock = root.path("/var/lib/rancher/agent/interlock");
    std::fs::remove_dir_all(&interlock).unwrap();
    std::fs::write(&interlock, b"").unwrap();
    let requests_before = srv.requests().0.len();
    let info_before = std::fs::read(root.path(CONNECTION_INFO_FILE)).unwrap();

    let err = boot(&root, &settings(&srv, MachineId::InstanceId))
        .await
        .unwrap_err();
    assert!(err.is_cattle_id_conflict(), "{err}");
    let RegisterError::SystemAgent(SystemAgentError::CattleIdConflict {
        file_id,
        file_machine,
        ..
    }) = &err
    else {
        panic!("{err}")
    };
    assert_eq!(file_id, &old);
    assert_eq!(file_machine, &machine_name(&old));
    let msg = err.to_string();
    assert!(
        msg.contains("machine_id: instance_id (instance iid-node4)"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN));
    // Nothing changed: no request, the same id and connection info on the disk, one machine.
    assert_eq!(srv.requests().0.len(), requests_before);
    assert_eq!(cattle_id(&root), old);
    assert_eq!(
        std::fs::read(root.path(CONNECTION_INFO_FILE)).unwrap(),
        info_before
    );
    assert_eq!(srv.record().len(), 1);

    std::fs::remove_file(&interlock).unwrap();
    // The same id given explicitly is the same machine again.
    let name = boot(&root, &settings(&srv, MachineId::Value(old.clone())))
        .await
        .unwrap();
    assert_eq!(name, machine_name(&old));
    assert_eq!(srv.record().len(), 1);
    assert_eq!(srv.record()[0].connect_count, 2);
    srv.shutdown();
}
