//! The real binary's `apply` and `plan` in VPC source mode (docs/semantics.md, "VPC source mode")
//! against moto, an EC2 emulator we did not write: groups of one VPC are
//! mirrored into another, read back through the SDK, applied again
//! (idempotent), and an unmapped mirror is deleted as an orphan.
//!
//! moto has no EC2-Classic and no ClassicLink, which is exactly why VPC
//! source mode must not need them. The rules used stay inside what moto
//! implements like EC2 (see "moto vs EC2" in `docs/emulator.md`): no
//! described group references, since moto cannot revoke those as EC2 can.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::moto::{Moto, client, moto, ok};
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::model::{GroupId, OWNERSHIP_TAG, Peer, Ports, Protocol, SecurityGroup, VpcId};
use classiclink_mirror::{ec2::CreateGroup, model::Grant};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn classiclink_mirror(moto: &Moto, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_classiclink-mirror"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CLASSICLINK_MIRROR_LOG_FORMAT", "text")
        .env("CLASSICLINK_MIRROR_LOG_LEVEL", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the binary: {e} (moto log {})", moto.log.display()));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write_config(dir: &Path, moto: &Moto, target: &VpcId, sources: &[&GroupId]) -> String {
    let mut text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n[discovery]\ntag_key = \"\"\n\n\
         [safety]\norphan_grace = \"0s\"\n",
        moto.url
    );
    for source in sources {
        text.push_str(&format!("\n[[mirror]]\nsource_group = \"{source}\"\nvpc = \"{target}\"\n"));
    }
    let path = dir.join("mirror.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn tcp(port: u16, peer: Peer) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, peer, None)
}

fn keys(grants: &[Grant]) -> BTreeSet<String> {
    grants.iter().map(|g| serde_json::to_string(&g.key).unwrap()).collect()
}

async fn mirrors_in(ec2: &dyn Ec2, vpc: &VpcId) -> Vec<SecurityGroup> {
    let filter =
        GroupFilter { vpc_ids: vec![vpc.clone()], tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    ec2.describe_security_groups(&filter).await.unwrap()
}

#[tokio::test]
async fn apply_mirrors_a_vpc_into_another_idempotently_and_deletes_orphans() {
    let Some(moto) = moto() else { return };
    let ec2 = client(moto).await;
    let old = ok(moto, ec2.world().create_vpc("10.40.0.0/16").await);
    let new = ok(moto, ec2.world().create_vpc("10.41.0.0/16").await);
    let group = |name: &str| CreateGroup {
        vpc_id: old.clone(),
        name: name.into(),
        description: format!("{name} tier"),
        tags: Default::default(),
    };
    let api = ok(moto, ec2.create_security_group(&group("api")).await);
    let worker = ok(moto, ec2.create_security_group(&group("worker")).await);
    let office =
        Grant { description: Some("office".into()), ..tcp(443, Peer::Ipv4("203.0.113.0/24".parse().unwrap())) };
    let by_id = |g: &GroupId| Peer::Group { group: g.clone(), owner: None };
    ok(moto, ec2.authorize_ingress(&api, &[office.clone(), tcp(8080, by_id(&worker))]).await);
    ok(moto, ec2.authorize_ingress(&worker, &[tcp(9000, by_id(&api)), tcp(7000, by_id(&worker))]).await);

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &new, &[&api, &worker]);

    let plan = classiclink_mirror(moto, &["plan", "--config", &config]);
    assert_eq!(plan.code, 2, "changes pending\n{}{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("2 mirrors to create"), "{}", plan.stdout);

    let first = classiclink_mirror(moto, &["apply", "--config", &config]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("converged"), "{}", first.stdout);

    let mirrors = mirrors_in(&ec2, &new).await;
    assert_eq!(mirrors.len(), 2);
    let mirror = |source: &GroupId| mirrors.iter().find(|g| g.mirrored_from().as_ref() == Some(source)).unwrap();
    let (api_mirror, worker_mirror) = (mirror(&api), mirror(&worker));
    assert_eq!(api_mirror.name, "api");
    assert_eq!(api_mirror.description, "api tier");
    assert_eq!(keys(&api_mirror.ingress), keys(&[office.clone(), tcp(8080, by_id(&worker_mirror.id))]));
    assert_eq!(
        keys(&worker_mirror.ingress),
        keys(&[tcp(9000, by_id(&api_mirror.id)), tcp(7000, by_id(&worker_mirror.id))]),
        "references are translated to the mirrors, the self reference to the mirror itself"
    );
    assert!(api_mirror.ingress.iter().any(|g| g.description.as_deref() == Some("office")));

    // Idempotent: a second apply plans nothing and writes nothing.
    let again = classiclink_mirror(moto, &["apply", "--config", &config]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.starts_with("pass 1: 0 actions"), "{}", again.stdout);
    let plan = classiclink_mirror(moto, &["plan", "--config", &config]);
    assert_eq!(plan.code, 0, "nothing to do\n{}", plan.stdout);

    // Unmap worker: its mirror is an orphan (grace 0 s): the reference to it
    // is revoked from api's mirror, then it is deleted.
    let config = write_config(dir.path(), moto, &new, &[&api]);
    let orphaned = classiclink_mirror(moto, &["apply", "--config", &config]);
    assert_eq!(orphaned.code, 0, "{}{}", orphaned.stdout, orphaned.stderr);
    let left = mirrors_in(&ec2, &new).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(keys(&left[0].ingress), keys(&[office]));
}

#[tokio::test]
async fn plan_can_dump_the_observed_snapshot_and_replay_it_offline() {
    let Some(moto) = moto() else { return };
    let ec2 = client(moto).await;
    let old = ok(moto, ec2.world().create_vpc("10.42.0.0/16").await);
    let new = ok(moto, ec2.world().create_vpc("10.43.0.0/16").await);
    let request =
        CreateGroup { vpc_id: old, name: "cache".into(), description: "cache".into(), tags: Default::default() };
    let cache = ok(moto, ec2.create_security_group(&request).await);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &new, &[&cache]);
    let dump = dir.path().join("snapshot.json");
    let live = classiclink_mirror(moto, &["plan", "--config", &config, "--dump-snapshot", dump.to_str().unwrap()]);
    assert_eq!(live.code, 2, "{}{}", live.stdout, live.stderr);
    let offline = classiclink_mirror(moto, &["plan", "--config", &config, "--snapshot", dump.to_str().unwrap()]);
    assert_eq!(offline.code, 2, "{}", offline.stderr);
    assert_eq!(offline.stdout, live.stdout, "the replay plans exactly what the live run planned");
}
