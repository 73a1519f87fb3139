//! Crash safety of `run`, end to end: the real binary is killed with
//! SIGKILL at random moments of a long cold start against an emulator that
//! throttles like EC2 and shows new groups only after 1.5 s (eventual
//! consistency: a restarted daemon may not see what it created just before
//! the kill), four times, then restarted and left to converge. Nothing it did before a kill may be
//! left half-made: no duplicate mirror, no untagged VPC group with a mirror's
//! name, and once converged every rule and link is what a fresh planner
//! wants (a final `plan` exits 0; the rules and links are also checked one by
//! one through the SDK).
//!
//! And `apply` with the state file: it uses one that exists (a corrupt one
//! holds deletions), writes it back, and creates none.
//!
//! The kill moments come from a seed that is printed; rerun a failure with
//! `CLASSICLINK_MIRROR_CRASH_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use classiclink_mirror::ec2::{Ec2, GroupFilter, InstanceFilter, LinkFilter};
use classiclink_mirror::model::{
    GrantKey, GroupId, InstanceState, ORPHANED_SINCE_TAG, OWNERSHIP_TAG, Peer, Ports, Protocol, SecurityGroup,
};

use crate::common::config::daemon_toml;
use crate::common::emulator::EmulatorProcess;
use crate::common::http::{converged, free_port};
use crate::common::process::{log_of, run_daemon, signal};
use crate::common::wait::eventually;
use crate::common::{binary, vpc_groups};

const TARGET_VPC: &str = "vpc-9f2e1d0c";
/// Classic groups to mirror; each references the next, so authorizations
/// depend on other mirrors' creation.
const GROUPS: usize = 24;
/// Classic instances, each in two of the groups.
const INSTANCES: usize = 12;
/// A mirror of a source that no longer exists: it must be marked, and kept
/// through every crash (its grace is an hour).
const ORPHAN_NAME: &str = "old-mirror";
const ORPHAN_SOURCE: &str = "sg-0badf00d";
const KILLS: usize = 4;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration in `[low, high)`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from((high - low).as_millis()).expect("small");
        low + Duration::from_millis(self.next() % span)
    }
}

fn estate() -> String {
    let mut estate = format!("[[vpc]]\nname = \"target\"\nid = \"{TARGET_VPC}\"\nclassic_link = true\n");
    for n in 0..GROUPS {
        estate.push_str(&format!(
            "[[group]]\nname = \"g{n:02}\"\ntags = {{ \"classiclinkmirror:linkToVPC\" = \"{TARGET_VPC}\" }}\n\
             [[group.rules]]\nprotocol = \"tcp\"\nport = {}\ncidr = \"10.0.0.0/8\"\n\
             [[group.rules]]\nprotocol = \"tcp\"\nport = {}\nfrom_group = \"g{:02}\"\n",
            1000 + n,
            2000 + n,
            (n + 1) % GROUPS
        ));
    }
    estate.push_str(&format!(
        "[[group]]\nname = \"{ORPHAN_NAME}\"\nvpc = \"target\"\ntags = {{ \"{OWNERSHIP_TAG}\" = \"{ORPHAN_SOURCE}\" }}\n"
    ));
    for n in 0..INSTANCES {
        estate.push_str(&format!("[[instance]]\ngroups = [\"g{:02}\", \"g{:02}\"]\n", 2 * n, 2 * n + 1));
    }
    estate
}

struct World {
    emulator: EmulatorProcess,
    dir: tempfile::TempDir,
    config: String,
}

async fn start_world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let estate_path = dir.path().join("estate.toml");
    std::fs::write(&estate_path, estate()).unwrap();
    let emulator =
        EmulatorProcess::start(estate_path.to_str().unwrap(), &["--throttle", "--consistency-delay", "1500ms"]).await;
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    // Four writes a second: the cold start (24 creates, 24 authorizes, 12
    // attaches, 1 mark) takes about 15 s, so every kill lands inside it.
    let text = daemon_toml(
        &emulator.url,
        "127.0.0.1:0",
        &state_dir,
        "[safety]\norphan_grace = \"1h\"\n[rate_limit]\nmutating_per_second = 4.0\nmutating_burst = 2\n",
    );
    let config = dir.path().join("mirror.toml");
    std::fs::write(&config, text).unwrap();
    World { emulator, config: config.to_str().unwrap().to_owned(), dir }
}

/// The invariants that hold at every moment, converged or not: one mirror
/// per source at most, and every non-default group of the VPC ours.
fn check_no_half_made_group(groups: &[SecurityGroup], moment: &str) {
    let mut per_source: BTreeMap<GroupId, Vec<&GroupId>> = BTreeMap::new();
    for group in groups.iter().filter(|g| g.name != "default") {
        let source = group.mirrored_from();
        assert!(source.is_some(), "{moment}: {} ({}) in the VPC is not tagged as a mirror", group.id, group.name);
        per_source.entry(source.unwrap()).or_default().push(&group.id);
    }
    for (source, mirrors) in &per_source {
        assert_eq!(mirrors.len(), 1, "{moment}: {source} has several mirrors: {mirrors:?}");
    }
}

fn tcp(port: u16, peer: Peer) -> GrantKey {
    GrantKey { protocol: Protocol::Tcp, ports: Ports::Range { from: port, to: port }, peer }
}

#[tokio::test]
async fn kill_9_at_random_moments_of_a_cold_start_leaves_nothing_half_made_and_a_restart_converges() {
    let seed = std::env::var("CLASSICLINK_MIRROR_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }) | 1;
    eprintln!("crash_safety: seed {seed} (rerun with CLASSICLINK_MIRROR_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let world = start_world().await;
    let ec2 = world.emulator.sdk().await;

    let mut progress = Vec::new();
    for kill in 1..=KILLS {
        let mut daemon = run_daemon(Path::new(&world.config));
        let after = rng.between(Duration::from_millis(300), Duration::from_millis(2500));
        tokio::time::sleep(after).await;
        daemon.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait()).await.unwrap().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed by SIGKILL");
        let log = log_of(&mut daemon).await;
        assert!(!log.contains("state file cannot be used"), "kill {kill}: the state file was left unusable:\n{log}");
        let groups = vpc_groups(&ec2, TARGET_VPC).await;
        let mirrors = groups.iter().filter(|g| g.name != "default").count();
        eprintln!("crash_safety: kill {kill} after {after:?}: {mirrors} groups in the VPC");
        check_no_half_made_group(&groups, &format!("after kill {kill} ({after:?} into the run)"));
        progress.push(mirrors);
    }
    assert!(progress[0] < GROUPS + 1, "the first kill landed before the cold start ended: {progress:?}");

    // A restart converges: poll /status until a pass finds nothing to do.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let text = std::fs::read_to_string(&world.config).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&world.config, text).unwrap();
    let mut daemon = run_daemon(Path::new(&world.config));
    eventually(Duration::from_secs(60), "the restarted daemon converged", || converged(&base)).await;
    signal(&daemon, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = log_of(&mut daemon).await;
    // A kill before the first pass ended leaves no state file (a first
    // start); one after leaves a whole one: never an unusable one.
    assert!(log.contains("state file loaded") || log.contains("no state file"), "{log}");
    assert!(!log.contains("state file cannot be used"), "{log}");

    // A fresh planner (`plan` has no memory of its own) wants nothing more.
    let plan = binary().args(["plan", "--config", &world.config]).output().await.unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan after convergence:\n{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );

    // And explicitly: one mirror per source, the right rules, the right links.
    let groups = vpc_groups(&ec2, TARGET_VPC).await;
    check_no_half_made_group(&groups, "after convergence");
    let sources: BTreeMap<String, GroupId> = ec2
        .describe_security_groups(&GroupFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.is_classic() && g.name.starts_with('g'))
        .map(|g| (g.name, g.id))
        .collect();
    assert_eq!(sources.len(), GROUPS);
    let mirror_of: BTreeMap<&GroupId, &SecurityGroup> =
        sources.values().map(|s| (s, groups.iter().find(|g| g.mirrored_from().as_ref() == Some(s)).unwrap())).collect();
    for n in 0..GROUPS {
        let source = &sources[&format!("g{n:02}")];
        let next = &sources[&format!("g{:02}", (n + 1) % GROUPS)];
        let mirror = mirror_of[source];
        let want: BTreeSet<GrantKey> = BTreeSet::from([
            tcp(1000 + n as u16, Peer::Ipv4("10.0.0.0/8".parse().unwrap())),
            tcp(2000 + n as u16, Peer::Group { group: mirror_of[next].id.clone(), owner: None }),
        ]);
        let have: BTreeSet<GrantKey> = mirror.ingress.iter().map(|g| g.key.clone()).collect();
        assert_eq!(have, want, "rules of {} (mirror of g{n:02})", mirror.id);
        assert!(mirror.orphaned_since_tag().is_none(), "{} is not an orphan", mirror.id);
    }
    let orphan = groups.iter().find(|g| g.name == ORPHAN_NAME).expect("the orphan is kept within its grace");
    let since = orphan.orphaned_since_tag().expect("the orphan is marked");
    assert!(classiclink_mirror::model::parse_time(since).is_some(), "{ORPHAN_NAME} marked with {since:?}");

    let filter = InstanceFilter { states: vec![InstanceState::Running], ..InstanceFilter::default() };
    let instances: Vec<_> =
        ec2.describe_instances(&filter).await.unwrap().into_iter().filter(|i| i.vpc_id.is_none()).collect();
    assert_eq!(instances.len(), INSTANCES);
    let links: BTreeMap<_, _> = ec2
        .describe_classic_link_instances(&LinkFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.instance_id.clone(), l))
        .collect();
    for instance in &instances {
        let link = links.get(&instance.id).unwrap_or_else(|| panic!("{} is not linked", instance.id));
        assert_eq!(link.vpc_id.as_str(), TARGET_VPC);
        let want: BTreeSet<GroupId> = instance.groups.iter().map(|g| mirror_of[g].id.clone()).collect();
        let have: BTreeSet<GroupId> = link.groups.iter().cloned().collect();
        assert_eq!(have, want, "link of {}", instance.id);
    }
    let state = std::fs::read_to_string(world.dir.path().join("state/state.json")).expect("a state file");
    assert!(state.contains("\"version\": 1"), "{state}");
    // A kill in the middle of a write may leave a temporary file; the next
    // start removes it.
    let files: Vec<_> = std::fs::read_dir(world.dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["state.json"]);
}

/// An estate with one orphan whose grace ended long ago.
async fn start_orphan_world(dir: &Path) -> EmulatorProcess {
    let estate = format!(
        "[[vpc]]\nname = \"target\"\nid = \"{TARGET_VPC}\"\nclassic_link = true\n\
         [[group]]\nname = \"{ORPHAN_NAME}\"\nvpc = \"target\"\n\
         tags = {{ \"{OWNERSHIP_TAG}\" = \"{ORPHAN_SOURCE}\", \"{ORPHANED_SINCE_TAG}\" = \"2020-01-01T00:00:00Z\" }}\n"
    );
    let estate_path = dir.join("estate.toml");
    std::fs::write(&estate_path, estate).unwrap();
    EmulatorProcess::start(estate_path.to_str().unwrap(), &[]).await
}

#[tokio::test]
async fn apply_uses_the_state_file_when_it_exists_and_a_corrupt_one_holds_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_orphan_world(dir.path()).await;
    let url = &emulator.url;
    let ec2 = emulator.sdk().await;
    let config = dir.path().join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n[daemon]\nstate_dir = \"{}\"\n\
             [safety]\norphan_grace = \"1h\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state.json");
    let apply = || async { binary().args(["apply", "--config", config.to_str().unwrap()]).output().await.unwrap() };
    let orphan_exists = || async { vpc_groups(&ec2, TARGET_VPC).await.iter().any(|g| g.name == ORPHAN_NAME) };

    // A corrupt state file: a warning, a conservative start, the deletion held.
    std::fs::write(&state, "{\"version\": 1, \"baseline\": ").unwrap();
    let held = apply().await;
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert_eq!(held.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is corrupt") && stderr.contains("starting conservatively"), "{stderr}");
    assert!(orphan_exists().await, "the due orphan is kept while the state is lost");
    let written = std::fs::read_to_string(&state).unwrap();
    assert!(written.contains("\"state_lost_at\": \"20"), "written back with the hold: {written}");

    // The hold is in the file: the next apply keeps it.
    let again = apply().await;
    assert!(!String::from_utf8_lossy(&again.stderr).contains("corrupt"), "the file is good again");
    assert!(orphan_exists().await, "still within one orphan_grace of the loss");

    // A good state file without a hold: the orphan, long due, goes.
    std::fs::write(&state, "{\"version\": 1}\n").unwrap();
    let done = apply().await;
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(!orphan_exists().await, "deleted");
    let written = std::fs::read_to_string(&state).unwrap();
    assert!(written.contains("\"baseline\": {"), "apply wrote its baseline back: {written}");

    // No state file: apply neither needs nor creates one.
    std::fs::remove_file(&state).unwrap();
    assert_eq!(apply().await.status.code(), Some(0));
    assert!(!state.exists());
}
