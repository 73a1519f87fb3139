//! Two deployments with different configurations in one account, end to
//! end (issue 11): two real `run` daemons on one emulator HTTP server.
//! Deployment "b" lists three groups by name (one under another mirror
//! name), discovery off, and starts first; deployment "a" discovers all six by tag. Then "b"
//! is told (SIGHUP) to list a fourth, which "a" mirrors already. Each owns
//! the mirrors it made; the other's are reported as `conflict_foreign_owner`
//! and left alone. After both have settled, a window of several intervals
//! sees no write at all, no mirror was ever deleted or unlinked (the
//! emulator counts every request), every source has exactly one mirror, and
//! both daemons' `/status` and `/metrics` show the conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use classiclink_mirror::ec2::aws::AwsEc2;
use classiclink_mirror::ec2::{Ec2, InstanceFilter, LinkFilter};
use classiclink_mirror::model::{GroupId, OWNER_TAG};
use serde_json::Value;
use tokio::process::Child;

use crate::common::emulator::EmulatorProcess;
use crate::common::http::{self, free_port, metric, metrics, settled};
use crate::common::process::{run_daemon, signal, stop_with_log};
use crate::common::vpc_groups;

const TARGET_VPC: &str = "vpc-9f2e1d0c";
/// Classic groups, all carrying the discovery tag; each references the next.
const GROUPS: usize = 6;
/// Classic instances: instance `n` is in groups `n` and `n + 1`, so some
/// links hold a mirror of each deployment.
const INSTANCES: usize = 6;
/// The daemons' interval: the quiet window spans several.
const INTERVAL: Duration = Duration::from_secs(1);

fn estate() -> String {
    let mut estate = format!("[[vpc]]\nname = \"target\"\nid = \"{TARGET_VPC}\"\nclassic_link = true\n");
    for n in 0..GROUPS {
        estate.push_str(&format!(
            "[[group]]\nname = \"g{n}\"\ntags = {{ \"classiclinkmirror:linkToVPC\" = \"{TARGET_VPC}\" }}\n\
             [[group.rules]]\nprotocol = \"tcp\"\nport = {}\ncidr = \"10.0.0.0/8\"\n\
             [[group.rules]]\nprotocol = \"tcp\"\nport = {}\nfrom_group = \"g{}\"\n",
            1000 + n,
            2000 + n,
            (n + 1) % GROUPS
        ));
    }
    for n in 0..INSTANCES {
        estate.push_str(&format!("[[instance]]\ngroups = [\"g{n}\", \"g{}\"]\n", (n + 1) % GROUPS));
    }
    estate
}

/// Deployment `owner`'s mapping file: its own port and state directory,
/// fast writes, an orphan grace of two seconds (a deployment taking the
/// other's mirrors for its orphans would delete them within the test), and
/// `mirrors` (the `[[mirror]]` entries, if any).
fn config(dir: &std::path::Path, url: &str, owner: &str, port: u16, mirrors: &str) -> std::path::PathBuf {
    let state_dir = dir.join(format!("state-{owner}"));
    std::fs::create_dir_all(&state_dir).unwrap();
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\
         [daemon]\ninterval = \"{}s\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\nowner = \"{owner}\"\n\
         [safety]\norphan_grace = \"2s\"\n\
         [rate_limit]\nmutating_per_second = 50.0\nmutating_burst = 50\ndescribe_per_second = 50.0\n\
         describe_burst = 50\n{mirrors}",
        INTERVAL.as_secs(),
        state_dir.display()
    );
    let path = dir.join(format!("{owner}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn by_name(names: &[(&str, Option<&str>)]) -> String {
    names
        .iter()
        .map(|(source, name)| {
            let name = name.map(|n| format!("name = \"{n}\"\n")).unwrap_or_default();
            format!("[[mirror]]\nsource_group = \"{source}\"\nvpc = \"{TARGET_VPC}\"\n{name}")
        })
        .collect()
}

/// The daemon listening on `port`: its `/status`.
async fn status(port: u16) -> Option<Value> {
    http::status(&format!("http://127.0.0.1:{port}")).await
}

/// The conflict kinds `/status` shows on the daemon's pairs.
fn conflicts(status: &Value) -> BTreeSet<String> {
    status["pairs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["conflicts"].as_array().into_iter().flatten())
        .filter_map(|c| c["kind"].as_str().map(str::to_owned))
        .collect()
}

/// The emulator's request counts by action.
async fn calls(emulator: &EmulatorProcess) -> BTreeMap<String, u64> {
    emulator.calls().await.into_iter().map(|(op, c)| (op, c["requests"].as_u64().unwrap_or(0))).collect()
}

/// Requests of every action that is not a describe.
fn writes(calls: &BTreeMap<String, u64>) -> u64 {
    calls.iter().filter(|(op, _)| !op.starts_with("Describe")).map(|(_, n)| n).sum()
}

/// The mirrors in the VPC, by id, with their owner tag.
async fn mirrors(ec2: &AwsEc2) -> BTreeMap<GroupId, (GroupId, String)> {
    vpc_groups(ec2, TARGET_VPC)
        .await
        .into_iter()
        .filter_map(|g| {
            let source = g.mirrored_from()?;
            Some((g.id.clone(), (source, g.owner_tag().unwrap_or_default().to_owned())))
        })
        .collect()
}

/// Polls until both daemons' last pass had nothing to do, checking on every
/// look that no mirror seen before has gone.
async fn wait_settled(ports: &[u16], ec2: &AwsEc2, seen: &mut BTreeMap<GroupId, (GroupId, String)>, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let now = mirrors(ec2).await;
        for (id, (source, owner)) in seen.iter() {
            assert!(now.contains_key(id), "{what}: the mirror {id} of {source} (owner {owner:?}) was deleted");
        }
        seen.extend(now);
        let mut all = true;
        for port in ports {
            all &= status(*port).await.is_some_and(|s| settled(&s));
        }
        if all {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: the daemons did not settle within 25 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stops a daemon with SIGTERM; it exits 0.
async fn stop(daemon: Child) {
    let (status, log) = stop_with_log(daemon, "TERM").await;
    assert_eq!(status.code(), Some(0), "{log}");
}

#[tokio::test]
async fn two_deployments_with_different_configs_settle_to_no_writes_and_never_touch_each_others_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate()).unwrap();
    let emulator = EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await;
    let url = emulator.url.clone();
    let ec2 = emulator.sdk().await;

    // "b" lists g0, g1 (under another mirror name) and g2, and starts first.
    let (port_a, port_b) = (free_port(), free_port());
    let b_mirrors = [("g0", None), ("g1", Some("g1-renamed")), ("g2", None)];
    let only_listed = format!("[discovery]\ntag_key = \"\"\n{}", by_name(&b_mirrors));
    let config_b = config(dir.path(), &url, "b", port_b, &only_listed);
    let daemon_b = run_daemon(&config_b);
    let mut seen = BTreeMap::new();
    wait_settled(&[port_b], &ec2, &mut seen, "b alone").await;

    // "a" discovers all six by tag.
    let config_a = config(dir.path(), &url, "a", port_a, "");
    let daemon_a = run_daemon(&config_a);
    wait_settled(&[port_a, port_b], &ec2, &mut seen, "a and b").await;

    // "b" is told to list g3 too, which "a" mirrors already.
    let more = [("g0", None), ("g1", Some("g1-renamed")), ("g2", None), ("g3", None)];
    let text = std::fs::read_to_string(&config_b).unwrap();
    std::fs::write(&config_b, text.replace(&by_name(&b_mirrors), &by_name(&more))).unwrap();
    signal(&daemon_b, "HUP").await;
    tokio::time::sleep(INTERVAL * 2).await;
    wait_settled(&[port_a, port_b], &ec2, &mut seen, "after b's reload").await;

    // A quiet window of several intervals: not one write.
    let before = calls(&emulator).await;
    tokio::time::sleep(INTERVAL * 6).await;
    let after = calls(&emulator).await;
    assert_eq!(writes(&after) - writes(&before), 0, "writes in a settled window:\n{before:?}\n{after:?}");

    // Nothing was ever deleted, revoked or untagged, by either. (A relink
    // that adds one deployment's mirror to a link holding the other's is a
    // detach and an attach: EC2 cannot change a link's groups in place.)
    for op in ["DeleteSecurityGroup", "RevokeSecurityGroupIngress", "DeleteTags"] {
        assert_eq!(after.get(op).copied().unwrap_or(0), 0, "{op} was called: {after:?}");
    }
    let now = mirrors(&ec2).await;
    assert_eq!(now, seen, "every mirror ever seen is still there");
    // One mirror per source: b's for g0..g2, a's for g3..g5.
    let mut per_source: BTreeMap<GroupId, Vec<&str>> = BTreeMap::new();
    for (source, owner) in now.values() {
        per_source.entry(source.clone()).or_default().push(owner);
    }
    let owners: Vec<Vec<&str>> = per_source.values().cloned().collect();
    assert_eq!(owners, [["b"], ["b"], ["b"], ["a"], ["a"], ["a"]], "{now:?}");
    let groups = vpc_groups(&ec2, TARGET_VPC).await;
    assert!(groups.iter().any(|g| g.name == "g1-renamed" && g.tags.get(OWNER_TAG).is_some_and(|o| o == "b")));

    // Every instance is linked to the mirrors of both its groups, whoever owns them.
    let mirror_of: BTreeMap<&GroupId, &GroupId> = now.iter().map(|(id, (source, _))| (source, id)).collect();
    let instances = ec2.describe_instances(&InstanceFilter::default()).await.unwrap();
    let links = ec2.describe_classic_link_instances(&LinkFilter::default()).await.unwrap();
    assert_eq!(links.len(), INSTANCES, "{links:?}");
    for link in &links {
        let instance = instances.iter().find(|i| i.id == link.instance_id).unwrap();
        let want: BTreeSet<&GroupId> = instance.groups.iter().map(|g| mirror_of[g]).collect();
        assert_eq!(link.groups.iter().collect::<BTreeSet<_>>(), want, "link of {}", link.instance_id);
    }

    // Both report the conflict: /status and the metric.
    for (who, port, expected) in [("a", port_a, 3.0), ("b", port_b, 1.0)] {
        let status = status(port).await.unwrap();
        assert!(conflicts(&status).contains("foreign_owner"), "{who}'s /status: {status}");
        let text = metrics(&format!("http://127.0.0.1:{port}")).await;
        let gauge = "classiclink_mirror_conflicts{kind=\"foreign_owner\"}";
        assert!(text.lines().any(|l| l.starts_with(gauge)), "{who}: no foreign_owner conflict gauge:\n{text}");
        assert_eq!(metric(&text, gauge), expected, "{who}: {text}");
    }

    stop(daemon_a).await;
    stop(daemon_b).await;
}
