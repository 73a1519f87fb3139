//! Expanded references end to end: the real binary's `apply` against the
//! `emulator` over HTTP, an unmanaged `bastion` group referenced by the
//! mirrored `web` (docs/semantics.md, "Expanded references").

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::ec2::{Ec2, GroupFilter, InstanceFilter, Operation, PrefixListFilter};
use classiclink_mirror::model::{
    EXPANSION_TAG, Grant, GroupId, InstanceState, OWNERSHIP_TAG, Peer, Ports, PrefixList, Protocol,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::common::binary;

const ESTATE: &str = r#"
[[vpc]]
name = "target"
id = "vpc-9f2e1d0c"
cidr = "10.0.0.0/16"
classic_link = true

[[group]]
name = "web"
id = "sg-0a1b2c3d"
description = "Web tier"

[[group.rules]]
protocol = "tcp"
port = 22
from_group = "bastion"

[[group]]
name = "bastion"
id = "sg-0b0b0c0d"
description = "Bastion hosts, not mirrored"

[[instance]]
groups = ["bastion"]
count = 3
"#;

const WEB: &str = "sg-0a1b2c3d";
const BASTION: &str = "sg-0b0b0c0d";

struct Emulator {
    _child: Child,
    url: String,
}

async fn start_emulator(estate: &std::path::Path) -> Emulator {
    let mut child = binary()
        .args(["emulator", "--listen", "127.0.0.1:0", "--estate"])
        .arg(estate)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the emulator");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the emulator prints its address within 30 s")
        .expect("read stdout")
        .expect("a first line");
    let url = first.rsplit(' ').next().expect("an address").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Emulator { _child: child, url }
}

async fn apply(config: &std::path::Path) -> String {
    let output =
        tokio::time::timeout(Duration::from_secs(120), binary().arg("apply").arg("--config").arg(config).output())
            .await
            .expect("apply finishes within 120 s")
            .expect("apply runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    stdout
}

async fn writes(url: &str) -> u64 {
    let body = reqwest::get(format!("{url}/_emulator/calls")).await.unwrap().text().await.unwrap();
    let calls: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    Operation::daemon_writes()
        .filter_map(|op| calls.get(op.as_str()))
        .map(|c| c["requests"].as_u64().unwrap_or(0))
        .sum()
}

async fn reset_calls(url: &str) {
    let response = reqwest::Client::new().post(format!("{url}/_emulator/reset-calls")).send().await.unwrap();
    assert!(response.status().is_success());
}

/// The expansion lists that exist (a deleted one may stay describable).
async fn lists(ec2: &AwsEc2) -> Vec<PrefixList> {
    let filter = PrefixListFilter { tag_keys: vec![EXPANSION_TAG.to_owned()], ..PrefixListFilter::default() };
    let lists = ec2.describe_prefix_lists(&filter).await.unwrap();
    lists.into_iter().filter(|l| !l.state.starts_with("delete")).collect()
}

async fn entries(ec2: &AwsEc2, list: &PrefixList) -> BTreeSet<String> {
    ec2.prefix_list_entries(&list.id).await.unwrap().into_iter().map(|e| e.cidr.to_string()).collect()
}

async fn bastion_addresses(ec2: &AwsEc2) -> BTreeSet<String> {
    let filter = InstanceFilter {
        group_ids: vec![GroupId::try_new(BASTION).unwrap()],
        states: vec![InstanceState::Running],
        ..InstanceFilter::default()
    };
    let instances = ec2.describe_instances(&filter).await.unwrap();
    instances.iter().filter_map(|i| i.private_ip).map(|ip: Ipv4Addr| format!("{ip}/32")).collect()
}

/// The peers of the mirror of `web`'s ssh rules.
async fn ssh_peers(ec2: &AwsEc2) -> Vec<Peer> {
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    let mirrors = ec2.describe_security_groups(&filter).await.unwrap();
    let mirror = mirrors.iter().find(|g| g.mirrored_from().is_some_and(|s| s.as_str() == WEB)).expect("web's mirror");
    mirror
        .ingress
        .iter()
        .filter(|g| g.key.ports == Ports::Range { from: 22, to: 22 })
        .map(|g| g.key.peer.clone())
        .collect()
}

#[tokio::test]
async fn an_unmanaged_bastion_is_expanded_to_its_members_follows_them_and_its_list_goes_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let estate = dir.path().join("estate.toml");
    std::fs::write(&estate, ESTATE).unwrap();
    let emulator = start_emulator(&estate).await;
    let config = dir.path().join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n\
             state_dir = \"{}\"\n[safety]\norphan_grace = \"3s\"\n[mirroring]\nunmanaged_references = \"expand\"\n\
             [[mirror]]\nsource_group = \"{WEB}\"\nvpc = \"vpc-9f2e1d0c\"\n",
            emulator.url,
            dir.path().display()
        ),
    )
    .unwrap();
    // A daemon's state file: `apply` keeps the list's grace in it (it
    // writes only a state file that exists).
    std::fs::write(dir.path().join("state.json"), "{\"version\": 1}").unwrap();
    let ec2 = crate::common::local_port(&emulator.url).await;

    // One apply: the mirror's ssh rule names a list of exactly the three
    // bastions' addresses.
    let out = apply(&config).await;
    assert!(out.contains("converged"), "{out}");
    let found = lists(&ec2).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let list = &found[0];
    assert_eq!(list.tags.get(EXPANSION_TAG).map(String::as_str), Some(BASTION));
    assert_eq!(list.max_entries, 10);
    let members = bastion_addresses(&ec2).await;
    assert_eq!(members.len(), 3);
    assert_eq!(entries(&ec2, list).await, members);
    assert_eq!(ssh_peers(&ec2).await, vec![Peer::PrefixList(list.id.clone())]);

    // A second apply writes nothing.
    reset_calls(&emulator.url).await;
    apply(&config).await;
    assert_eq!(writes(&emulator.url).await, 0, "a converged expansion gets no writes");

    // A fourth bastion starts: one pass adds it (a modification of the same
    // list, no new list).
    ec2.world().run_instances("ami-12345678", &[GroupId::try_new(BASTION).unwrap()], 1).await.unwrap();
    let members = bastion_addresses(&ec2).await;
    assert_eq!(members.len(), 4);
    reset_calls(&emulator.url).await;
    apply(&config).await;
    assert_eq!(entries(&ec2, list).await, members);
    assert_eq!(lists(&ec2).await.len(), 1);
    assert_eq!(writes(&emulator.url).await, 1, "one ModifyManagedPrefixList");

    // The rule goes from web: the mirror's grant is revoked at once, the
    // list stays through the grace, then goes.
    let ssh = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 22, to: 22 },
        Peer::Group { group: GroupId::try_new(BASTION).unwrap(), owner: None },
        None,
    );
    ec2.revoke_ingress(&GroupId::try_new(WEB).unwrap(), &[ssh]).await.unwrap();
    apply(&config).await;
    assert!(ssh_peers(&ec2).await.is_empty());
    assert_eq!(lists(&ec2).await.len(), 1, "kept through the grace");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let out = apply(&config).await;
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default();
    assert!(lists(&ec2).await.is_empty(), "deleted after the grace: {out}\n{state}\n{:?}", lists(&ec2).await);
}
