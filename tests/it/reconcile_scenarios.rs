//! End-to-end passes — observe → plan → execute — against the in-process
//! emulator engine, one test per behaviour of docs/semantics.md, plus faults. Tokio's
//! clock is paused, so throttling, backoff and consistency windows cost no
//! wall time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use classiclink_mirror::config::{Config, MirrorConfig, SourceRef};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{Ec2, GroupFilter, Operation};
use classiclink_mirror::emulator::GenerateSpec;
use classiclink_mirror::emulator::{Emulator, EmulatorOptions, NewGroup, NewVpc, RunInstances};
use classiclink_mirror::emulator::{ErrorInjection, Faults, IpPermission, Throttle};
use classiclink_mirror::execute::ActionResult;
use classiclink_mirror::model::{
    Grant, GroupId, InstanceId, ORPHANED_SINCE_TAG, OWNER_TAG, OWNERSHIP_TAG, Peer, Ports, Protocol, SecurityGroup,
    VpcId, format_time,
};
use classiclink_mirror::plan::{ActionKind, Memory};
use classiclink_mirror::reconcile::{PassReport, apply, execute_options, reconcile_once};
use tokio_util::sync::CancellationToken;

fn tcp(port: u16, cidr: &str) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::Ipv4(cidr.parse().unwrap()), None)
}
fn from_group(port: u16, group: &GroupId) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::Group { group: group.clone(), owner: None },
        None,
    )
}
fn from_account(port: u16, group: &str, owner: &str) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::Group { group: GroupId::try_new(group).unwrap(), owner: Some(owner.into()) },
        None,
    )
}

/// A test clock for the planner's `now`, advanced by hand.
struct Clock(Mutex<SystemTime>);
impl Clock {
    fn new() -> Self {
        Self(Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)))
    }
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

/// A three-tier Classic estate and a target VPC with ClassicLink on.
struct Estate {
    emu: Emulator,
    vpc: VpcId,
    web: GroupId,
    app: GroupId,
    db: GroupId,
    instances: Vec<InstanceId>,
}

async fn allow(emu: &Emulator, group: &GroupId, grants: &[Grant]) {
    let account = emu.account_id();
    let permissions: Vec<IpPermission> = grants.iter().map(|g| IpPermission::from_grant(g, &account)).collect();
    emu.authorize_permissions(group, &permissions).await.unwrap();
}

async fn three_tiers() -> Estate {
    let emu = Emulator::new(EmulatorOptions::default());
    let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
    let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
    let db = emu.create_group(&NewGroup::classic("db", "Database tier")).await.unwrap();
    allow(&emu, &web, &[tcp(443, "0.0.0.0/0"), from_account(80, "sg-843f59ed", "amazon-elb")]).await;
    allow(&emu, &app, &[from_group(8080, &web), from_group(7000, &app)]).await;
    allow(&emu, &db, &[from_group(5432, &app), tcp(5432, "198.51.100.0/24")]).await;
    let mut instances = Vec::new();
    instances.extend(emu.run_instances(&RunInstances::classic([web.clone()]).count(3)).await.unwrap());
    instances.extend(emu.run_instances(&RunInstances::classic([app.clone()]).count(2)).await.unwrap());
    instances.extend(emu.run_instances(&RunInstances::classic([app.clone(), db.clone()])).await.unwrap());
    Estate { emu, vpc, web, app, db, instances }
}

fn config_for(vpc: &VpcId, sources: &[&GroupId]) -> Config {
    let mut config = Config::with_region("us-east-1");
    config.discovery.tag_key = None;
    config.safety.orphan_grace = Duration::from_secs(600);
    for source in sources {
        config.mirrors.push(MirrorConfig::new(SourceRef::Id((*source).clone()), vpc.clone()));
    }
    config
}

fn limited(emu: &Emulator, config: &Config) -> Limited<Emulator> {
    Limited::new(emu.clone(), &config.rate_limit)
}

async fn pass(ec2: &dyn Ec2, config: &Config, memory: &mut Memory, clock: &Clock) -> PassReport {
    let report =
        reconcile_once(ec2, config, memory, clock.now(), &execute_options(config), &CancellationToken::new()).await;
    for (outcome, error) in report.report.failures() {
        eprintln!("failed: {:?} {error}", outcome.kind);
    }
    report
}

async fn mirrors(emu: &Emulator) -> Vec<SecurityGroup> {
    emu.describe_security_groups(&GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() })
        .await
        .unwrap()
}

async fn mirror_of(emu: &Emulator, source: &GroupId) -> SecurityGroup {
    mirrors(emu).await.into_iter().find(|g| g.mirrored_from().as_ref() == Some(source)).expect("mirror exists")
}

fn mutating_calls(emu: &Emulator) -> BTreeMap<Operation, u64> {
    let counters = emu.counters();
    Operation::daemon_writes().map(|op| (op, counters.requests(op))).filter(|(_, n)| *n > 0).collect()
}

fn keys(grants: &[Grant]) -> BTreeSet<String> {
    grants.iter().map(|g| serde_json::to_string(&g.key).unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_cold_estate_converges_with_the_fewest_writes_and_a_second_pass_writes_nothing() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    estate.emu.reset_counters();

    let first = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(first.failed(), 0);
    // One create per mirror, one authorize per mirror with grants, one
    // attach per running member instance — nothing else.
    let expected = BTreeMap::from([
        (Operation::CreateSecurityGroup, 3),
        (Operation::AuthorizeSecurityGroupIngress, 3),
        (Operation::AttachClassicLinkVpc, estate.instances.len() as u64),
    ]);
    assert_eq!(mutating_calls(&estate.emu), expected);

    estate.emu.reset_counters();
    let second = pass(&ec2, &config, &mut memory, &clock).await;
    assert!(second.converged(), "{:?}", second.plan.actions);
    assert_eq!(estate.emu.counters().mutating_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn rules_are_mirrored_with_references_translated_to_the_mirrors() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    let ec2 = limited(&estate.emu, &config);
    let report = apply(&ec2, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);

    let (web, app, db) = (
        mirror_of(&estate.emu, &estate.web).await,
        mirror_of(&estate.emu, &estate.app).await,
        mirror_of(&estate.emu, &estate.db).await,
    );
    assert_eq!(keys(&web.ingress), keys(&[tcp(443, "0.0.0.0/0")]), "the ELB reference cannot be mirrored");
    assert_eq!(keys(&app.ingress), keys(&[from_group(8080, &web.id), from_group(7000, &app.id)]));
    assert_eq!(keys(&db.ingress), keys(&[from_group(5432, &app.id), tcp(5432, "198.51.100.0/24")]));
    assert_eq!(db.description, "Database tier");
    assert_eq!(web.vpc_id.as_ref(), Some(&estate.vpc));

    // Links: every instance with exactly the mirrors of its groups.
    let last = estate.instances.last().unwrap();
    let link = estate.emu.peek_link(last).expect("linked");
    assert_eq!(link.groups, BTreeSet::from([app.id.clone(), db.id.clone()]));
    assert_eq!(estate.emu.peek_link(&estate.instances[0]).unwrap().groups, BTreeSet::from([web.id.clone()]));
}

#[tokio::test(start_paused = true)]
async fn a_source_rule_change_is_followed_by_add_revoke_and_description_update() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;

    let account = estate.emu.account_id();
    estate
        .emu
        .revoke_permissions(&estate.web, &[IpPermission::from_grant(&tcp(443, "0.0.0.0/0"), &account)])
        .await
        .unwrap();
    let described = Grant { description: Some("office".into()), ..tcp(22, "203.0.113.0/24") };
    allow(&estate.emu, &estate.web, std::slice::from_ref(&described)).await;
    estate.emu.reset_counters();
    let changed = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(changed.failed(), 0);
    assert_eq!(estate.emu.counters().requests(Operation::AuthorizeSecurityGroupIngress), 1);
    assert_eq!(estate.emu.counters().requests(Operation::RevokeSecurityGroupIngress), 1);
    let mirror = mirror_of(&estate.emu, &estate.web).await;
    assert_eq!(mirror.ingress, vec![described]);

    // A description change is an in-place update, not revoke + add.
    estate
        .emu
        .revoke_permissions(&estate.web, &[IpPermission::from_grant(&tcp(22, "203.0.113.0/24"), &account)])
        .await
        .unwrap();
    allow(&estate.emu, &estate.web, &[Grant { description: Some("new office".into()), ..tcp(22, "203.0.113.0/24") }])
        .await;
    estate.emu.reset_counters();
    pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(
        mutating_calls(&estate.emu),
        BTreeMap::from([(Operation::UpdateSecurityGroupRuleDescriptionsIngress, 1)])
    );
    assert_eq!(mirror_of(&estate.emu, &estate.web).await.ingress[0].description.as_deref(), Some("new office"));
}

#[tokio::test(start_paused = true)]
async fn the_classic_default_group_maps_onto_the_vpc_default_group() {
    let estate = three_tiers().await;
    let classic_default = estate.emu.default_group(None).unwrap();
    allow(&estate.emu, &classic_default, &[tcp(22, "10.0.0.0/8")]).await;
    let config = config_for(&estate.vpc, &[&classic_default]);
    let ec2 = limited(&estate.emu, &config);
    estate.emu.reset_counters();
    let report = apply(&ec2, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);
    let vpc_default = estate.emu.default_group(Some(&estate.vpc)).unwrap();
    let group = estate.emu.peek_group(&vpc_default).unwrap();
    assert_eq!(group.mirrored_from(), Some(classic_default.clone()));
    assert!(group.ingress.contains(&tcp(22, "10.0.0.0/8")));
    assert_eq!(estate.emu.counters().requests(Operation::CreateSecurityGroup), 0);
}

#[tokio::test(start_paused = true)]
async fn a_same_name_group_that_is_not_ours_is_left_alone() {
    let estate = three_tiers().await;
    let theirs = estate.emu.create_group(&NewGroup::in_vpc(&estate.vpc, "web", "owned by another team")).await.unwrap();
    allow(&estate.emu, &theirs, &[tcp(3389, "0.0.0.0/0")]).await;
    let config = config_for(&estate.vpc, &[&estate.web]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    estate.emu.reset_counters();
    let report = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(estate.emu.counters().mutating_calls(), 0);
    assert!(report.plan.warnings.iter().any(|w| w.kind.conflict_kind() == Some("name_taken")));
    assert_eq!(estate.emu.peek_group(&theirs).unwrap().ingress, vec![tcp(3389, "0.0.0.0/0")]);
}

#[tokio::test(start_paused = true)]
async fn a_link_with_foreign_groups_is_relinked_keeping_them() {
    let estate = three_tiers().await;
    let ops = estate.emu.create_group(&NewGroup::in_vpc(&estate.vpc, "ops", "monitoring")).await.unwrap();
    let instance = &estate.instances[0];
    estate.emu.attach_classic_link_vpc(instance, &estate.vpc, std::slice::from_ref(&ops)).await.unwrap();
    let config = config_for(&estate.vpc, &[&estate.web]);
    let ec2 = limited(&estate.emu, &config);
    let report = apply(&ec2, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);
    let web = mirror_of(&estate.emu, &estate.web).await;
    assert_eq!(estate.emu.peek_link(instance).unwrap().groups, BTreeSet::from([ops, web.id]));
    assert!(report.passes[0].plan.actions.iter().any(|a| a.action.kind() == ActionKind::Relink));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_instance_is_linked_again_once_it_runs() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;
    let instance = &estate.instances[0];
    estate.emu.stop_instances(std::slice::from_ref(instance)).await.unwrap();
    assert!(estate.emu.peek_link(instance).is_none(), "EC2 unlinks a stopped instance");
    estate.emu.reset_counters();
    let stopped = pass(&ec2, &config, &mut memory, &clock).await;
    assert!(stopped.converged(), "{:?}", stopped.plan.actions);
    assert_eq!(estate.emu.counters().mutating_calls(), 0);
    estate.emu.start_instances(std::slice::from_ref(instance)).await.unwrap();
    pass(&ec2, &config, &mut memory, &clock).await;
    assert!(estate.emu.peek_link(instance).is_some());
}

#[tokio::test(start_paused = true)]
async fn an_orphan_is_detached_dereferenced_and_deleted_after_its_grace() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;
    let web_mirror = mirror_of(&estate.emu, &estate.web).await;

    // Stop mirroring web: its mirror is an orphan that keeps working for the grace.
    let smaller = config_for(&estate.vpc, &[&estate.app]);
    estate.emu.reset_counters();
    let waiting = pass(&ec2, &smaller, &mut memory, &clock).await;
    assert_eq!(waiting.plan.orphans.len(), 1);
    // Its one write: the moment it was first seen orphaned, on the orphan.
    assert_eq!(estate.emu.counters().mutating_calls(), 1);
    assert_eq!(estate.emu.counters().requests(Operation::CreateTags), 1);
    let marked = estate.emu.peek_group(&web_mirror.id).unwrap();
    assert_eq!(marked.tags.get(ORPHANED_SINCE_TAG), Some(&format_time(clock.now())));
    assert!(estate.emu.peek_link(&estate.instances[0]).is_some());

    clock.advance(Duration::from_secs(600));
    let due = pass(&ec2, &smaller, &mut memory, &clock).await;
    assert_eq!(due.failed(), 0, "{:?}", due.report.outcomes);
    assert!(estate.emu.peek_group(&web_mirror.id).is_none(), "deleted");
    assert!(estate.emu.peek_link(&estate.instances[0]).is_none(), "detached first");
    let app_mirror = mirror_of(&estate.emu, &estate.app).await;
    assert_eq!(keys(&app_mirror.ingress), keys(&[from_group(7000, &app_mirror.id)]), "reference revoked");
    assert!(memory.orphans_since.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_orphan_is_deleted_after_its_grace_even_when_the_daemon_restarts_every_12_s() {
    // Regression (issue 10): restarted every 12 s, the daemon never deleted
    // an orphan whose orphan_grace was 45 s: each restart forgot when it was
    // first seen orphaned. The orphanedSince tag on the orphan remembers.
    let estate = three_tiers().await;
    let mut config = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    config.safety.orphan_grace = Duration::from_secs(45);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    pass(&ec2, &config, &mut Memory::default(), &clock).await;
    let web_mirror = mirror_of(&estate.emu, &estate.web).await;
    let mut smaller = config_for(&estate.vpc, &[&estate.app]);
    smaller.safety.orphan_grace = Duration::from_secs(45);
    let mut deleted_after = None;
    for restart in 1..=6u32 {
        // A fresh process: nothing remembered.
        let mut memory = Memory::default();
        pass(&ec2, &smaller, &mut memory, &clock).await;
        if estate.emu.peek_group(&web_mirror.id).is_none() {
            deleted_after = Some(restart);
            break;
        }
        clock.advance(Duration::from_secs(12));
    }
    // Orphaned at 0 s; the passes run at 12, 24, 36 and 48 s.
    assert_eq!(deleted_after, Some(5), "deleted at the first pass past the 45 s grace");
}

#[tokio::test(start_paused = true)]
async fn a_second_daemon_counts_an_orphans_grace_from_the_first_daemons_tag() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    pass(&ec2, &config, &mut Memory::default(), &clock).await;
    let web_mirror = mirror_of(&estate.emu, &estate.web).await;
    let smaller = config_for(&estate.vpc, &[&estate.app]);
    let orphaned_at = clock.now();
    let mut first = Memory::default();
    pass(&ec2, &smaller, &mut first, &clock).await;

    // Another daemon, with its own memory, starts watching 9 minutes later.
    clock.advance(Duration::from_secs(540));
    let mut second = Memory::default();
    let seen = pass(&ec2, &smaller, &mut second, &clock).await;
    assert_eq!(seen.plan.orphans[0].since, orphaned_at, "the first daemon's tag");
    assert_eq!(seen.plan.orphans[0].due, Some(orphaned_at + Duration::from_secs(600)));
    assert!(seen.plan.actions.is_empty(), "nothing to mark again: {:?}", seen.plan.actions);
    clock.advance(Duration::from_secs(60));
    pass(&ec2, &smaller, &mut second, &clock).await;
    assert!(estate.emu.peek_group(&web_mirror.id).is_none(), "deleted 10 minutes after the first daemon saw it");
    // The first daemon finds it gone: nothing to do, nothing failed.
    let after = pass(&ec2, &smaller, &mut first, &clock).await;
    assert!(after.converged() && after.failed() == 0, "{:?}", after.plan.actions);
}

#[tokio::test(start_paused = true)]
async fn a_vpc_group_is_mirrored_into_another_vpc_without_links() {
    let emu = Emulator::new(EmulatorOptions::default());
    let old = emu.create_vpc(&NewVpc::default()).await.unwrap();
    let new = emu.create_vpc(&NewVpc::default()).await.unwrap();
    let api = emu.create_group(&NewGroup::in_vpc(&old, "api", "API")).await.unwrap();
    allow(&emu, &api, &[tcp(443, "10.0.0.0/8"), from_group(9000, &api)]).await;
    emu.run_instances(&RunInstances::in_vpc(&old, [api.clone()])).await.unwrap();
    let config = config_for(&new, &[&api]);
    let ec2 = limited(&emu, &config);
    let report = apply(&ec2, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);
    let mirror = mirror_of(&emu, &api).await;
    assert_eq!(mirror.vpc_id, Some(new));
    assert_eq!(keys(&mirror.ingress), keys(&[tcp(443, "10.0.0.0/8"), from_group(9000, &mirror.id)]));
    assert_eq!(emu.counters().requests(Operation::AttachClassicLinkVpc), 0);
    // VPC-to-VPC mirroring must work where the ClassicLink APIs are gone.
    assert_eq!(emu.counters().requests(Operation::DescribeClassicLinkInstances), 0);
    assert_eq!(emu.counters().requests(Operation::DescribeVpcClassicLink), 0);
    assert!(emu.counters().requests(Operation::DescribeVpcs) > 0);
}

// ----- faults -----------------------------------------------------------------

fn generated(groups: usize, instances: usize, seed: u64) -> (Emulator, Config) {
    let spec = GenerateSpec {
        classic_groups: groups,
        rules_per_group: 4,
        cross_reference_fraction: 0.3,
        instances,
        vpcs: 1,
        discovery_fraction: 1.0,
        seed,
        ..GenerateSpec::default()
    };
    let emu = Emulator::from_estate(&spec.estate(), EmulatorOptions::default()).unwrap();
    let mut config = Config::with_region("us-east-1");
    config.safety.orphan_grace = Duration::ZERO;
    (emu, config)
}

#[tokio::test(start_paused = true)]
async fn under_ec2_throttling_a_large_estate_converges_and_no_action_fails_for_throttling() {
    let (emu, config) = generated(300, 1000, 1);
    emu.set_faults(Faults { throttle: Some(Throttle::ec2()), ..Faults::none() });
    let ec2 = limited(&emu, &config);
    let report = apply(&ec2, &config, 3, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged, "passes: {}", report.passes.len());
    let failed: usize = report.passes.iter().map(PassReport::failed).sum();
    assert_eq!(failed, 0);
    assert!(report.passes.iter().all(|p| p.snapshot.is_complete()));
    let counters = emu.counters();
    assert_eq!(counters.requests(Operation::CreateSecurityGroup), 300);
    assert_eq!(counters.requests(Operation::AttachClassicLinkVpc), 1000);
}

#[tokio::test(start_paused = true)]
async fn when_ec2_throttles_below_our_rate_retries_and_slowdown_keep_every_action_alive() {
    let (emu, config) = generated(100, 300, 6);
    // EC2's buckets at a fifth of the defaults: 1 write/s, bucket 10 — half
    // of what the daemon's own limiter allows, so EC2 does throttle.
    emu.set_faults(Faults { throttle: Some(Throttle::ec2().scaled(0.2)), ..Faults::none() });
    let ec2 = limited(&emu, &config);
    let report = apply(&ec2, &config, 3, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);
    let failed: usize = report.passes.iter().map(PassReport::failed).sum();
    assert_eq!(failed, 0);
    assert!(emu.counters().throttled_total() > 0, "the test must actually be throttled");
    assert!(ec2.stats().throttled.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test(start_paused = true)]
async fn with_20_percent_injected_errors_the_estate_converges_within_a_few_passes() {
    let (emu, config) = generated(40, 120, 2);
    emu.set_faults(Faults {
        errors: ErrorInjection { rate: 0.2, after_effect: 0.3, ..ErrorInjection::default() },
        seed: 7,
        ..Faults::none()
    });
    let ec2 = limited(&emu, &config).with_retry(classiclink_mirror::ec2::limited::RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(100),
        throttled_base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        ..classiclink_mirror::ec2::limited::RetryPolicy::default()
    });
    let report = apply(&ec2, &config, 8, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged, "not converged after {} passes", report.passes.len());
    emu.set_faults(Faults::none());
    assert_eq!(mirrors(&emu).await.len(), 40, "no duplicate mirrors");
}

#[tokio::test(start_paused = true)]
async fn with_an_eventual_consistency_window_it_converges_without_duplicate_groups() {
    let (emu, config) = generated(30, 60, 3);
    emu.set_faults(Faults { consistency_window: Duration::from_secs(2), ..Faults::none() });
    let ec2 = limited(&emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    let first = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(first.failed(), 0, "authorize/attach on new mirrors wait for visibility");
    // The next pass may run inside the window: it must not create again.
    let second = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(second.failed(), 0, "{:?}", second.report.outcomes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let third = pass(&ec2, &config, &mut memory, &clock).await;
    assert!(third.converged(), "{:?}", third.plan.actions);
    assert_eq!(mirrors(&emu).await.len(), 30);
    assert_eq!(
        emu.counters().requests(Operation::CreateSecurityGroup)
            - emu.counters().errors(Operation::CreateSecurityGroup, "InvalidGroup.Duplicate"),
        30
    );
}

#[tokio::test(start_paused = true)]
async fn failing_security_group_describes_never_lead_to_a_revoke_delete_or_detach() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    let ec2 = limited(&estate.emu, &config).with_retry(classiclink_mirror::ec2::limited::RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        throttled_base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..classiclink_mirror::ec2::limited::RetryPolicy::default()
    });
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;
    // Now every DescribeSecurityGroups fails, web is no longer mapped and its
    // orphan is long due: a naive daemon would revoke, detach and delete.
    let smaller = config_for(&estate.vpc, &[&estate.app]);
    pass(&ec2, &smaller, &mut memory, &clock).await;
    clock.advance(Duration::from_secs(3600));
    estate.emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::DescribeSecurityGroups, 1.0)]),
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });
    estate.emu.reset_counters();
    for _ in 0..3 {
        let report = pass(&ec2, &smaller, &mut memory, &clock).await;
        assert!(!report.snapshot.is_complete());
        clock.advance(Duration::from_secs(60));
    }
    let counters = estate.emu.counters();
    for op in [
        Operation::RevokeSecurityGroupIngress,
        Operation::DeleteSecurityGroup,
        Operation::DetachClassicLinkVpc,
        Operation::DeleteTags,
    ] {
        assert_eq!(counters.requests(op), 0, "{op}");
    }
}

#[tokio::test(start_paused = true)]
async fn two_reconcilers_on_one_world_converge_to_the_same_state_without_duplicate_mirrors() {
    let (emu, config) = generated(25, 50, 4);
    let (a, b) = (limited(&emu, &config), limited(&emu, &config));
    let clock = Clock::new();
    let (mut memory_a, mut memory_b) = (Memory::default(), Memory::default());
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(pass(&a, &config, &mut memory_a, &clock), pass(&b, &config, &mut memory_b, &clock));
        // A race is allowed to fail an action; the next pass repairs it.
        let _ = (ra, rb);
    }
    let settled_a = pass(&a, &config, &mut memory_a, &clock).await;
    let settled_b = pass(&b, &config, &mut memory_b, &clock).await;
    assert!(settled_a.converged(), "{:?}", settled_a.plan.actions);
    assert!(settled_b.converged(), "{:?}", settled_b.plan.actions);
    let all = mirrors(&emu).await;
    assert_eq!(all.len(), 25);
    let sources: BTreeSet<GroupId> = all.iter().filter_map(SecurityGroup::mirrored_from).collect();
    assert_eq!(sources.len(), 25, "one mirror per source");
}

#[tokio::test(start_paused = true)]
async fn audit_mode_reports_drift_and_writes_nothing() {
    let estate = three_tiers().await;
    let mut config = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    config.daemon.mode = classiclink_mirror::config::Mode::Audit;
    let ec2 = limited(&estate.emu, &config);
    estate.emu.reset_counters();
    let report = apply(&ec2, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged, "audited drift does not count against convergence");
    assert!(!report.passes[0].plan.actions.is_empty());
    assert!(report.passes[0].report.outcomes.iter().all(|o| o.result == ActionResult::Audit));
    assert_eq!(estate.emu.counters().mutating_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_new_actions_and_lets_in_flight_ones_finish() {
    let (emu, config) = generated(20, 40, 5);
    let ec2 = limited(&emu, &config);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = apply(&ec2, &config, 3, &|| SystemTime::UNIX_EPOCH, &cancel).await;
    assert!(report.passes.is_empty());
    assert_eq!(emu.counters().mutating_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_action_skips_its_dependants_and_everything_else_still_runs() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;

    // Now app is mapped too, but every CreateSecurityGroup is refused; web's
    // mirror has drift that needs no create.
    let both = config_for(&estate.vpc, &[&estate.web, &estate.app]);
    allow(&estate.emu, &estate.web, &[tcp(8443, "10.0.0.0/8")]).await;
    estate.emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::CreateSecurityGroup, 1.0)]),
            codes: vec!["UnauthorizedOperation".into()],
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });
    let report = pass(&ec2, &both, &mut memory, &clock).await;
    let by_kind = |kind: ActionKind| -> Vec<&str> {
        report.report.outcomes.iter().filter(|o| o.kind == kind).map(|o| o.result.label()).collect()
    };
    assert_eq!(by_kind(ActionKind::CreateMirror), vec!["failed"]);
    // app's authorize and the attaches of app's instances depend on the create.
    assert!(by_kind(ActionKind::Attach).iter().all(|l| *l == "skipped"));
    assert!(!by_kind(ActionKind::Attach).is_empty());
    // web's new rule is independent of it and still lands.
    assert_eq!(by_kind(ActionKind::Authorize).iter().filter(|l| **l == "done").count(), 1);
    assert!(mirror_of(&estate.emu, &estate.web).await.ingress.contains(&tcp(8443, "10.0.0.0/8")));
}

#[tokio::test(start_paused = true)]
async fn observe_uses_filters_and_one_call_per_kind_of_thing() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    estate.emu.reset_counters();
    let observation = classiclink_mirror::observe::observe(&estate.emu, &config).await;
    assert!(observation.errors.is_empty());
    assert_eq!(observation.snapshot.source_groups.len(), 3);
    assert_eq!(observation.snapshot.instances.len(), estate.instances.len());
    let counters = estate.emu.counters();
    // Sources by id, mirrors by tag, same-name candidates in the target VPCs.
    assert_eq!(counters.requests(Operation::DescribeSecurityGroups), 3);
    assert_eq!(counters.requests(Operation::DescribeInstances), 1);
    assert_eq!(counters.requests(Operation::DescribeClassicLinkInstances), 1);
    assert_eq!(counters.requests(Operation::DescribeVpcClassicLink), 1);
    assert_eq!(counters.mutating_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_converged_estate_is_observed_without_looking_up_any_mirror_name() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    let report = apply(&estate.emu, &config, 5, &|| SystemTime::UNIX_EPOCH, &CancellationToken::new()).await;
    assert!(report.converged);
    estate.emu.reset_counters();
    let observation = classiclink_mirror::observe::observe(&estate.emu, &config).await;
    assert!(observation.errors.is_empty());
    assert_eq!(observation.snapshot.vpc_groups.len(), 3, "the three mirrors, and no default group");
    let counters = estate.emu.counters();
    // Sources by id, mirrors by tag: every mirror is found by its tag, so no
    // name is looked up.
    assert_eq!(counters.requests(Operation::DescribeSecurityGroups), 2);
    assert_eq!(counters.requests(Operation::DescribeInstances), 1);
    assert_eq!(counters.requests(Operation::DescribeClassicLinkInstances), 1);
    assert_eq!(counters.requests(Operation::DescribeVpcClassicLink), 1);
    assert_eq!(counters.total_requests(), 5);
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_bounds_how_many_actions_run_at_once() {
    async fn cold_pass_time(max_in_flight: usize) -> Duration {
        let (emu, mut config) = generated(8, 0, 9);
        config.rate_limit.max_in_flight = max_in_flight;
        config.rate_limit.mutating_burst = 100;
        emu.set_faults(Faults { latency: Duration::from_secs(1), ..Faults::none() });
        let ec2 = limited(&emu, &config);
        let clock = Clock::new();
        let started = tokio::time::Instant::now();
        let report = pass(&ec2, &config, &mut Memory::default(), &clock).await;
        assert_eq!(report.failed(), 0);
        started.elapsed()
    }
    // 8 creates, then 8 authorizes, each answered after 1 s; describes in
    // between take a few seconds of their own.
    let one = cold_pass_time(1).await;
    let four = cold_pass_time(4).await;
    assert!(one >= Duration::from_secs(16), "{one:?}");
    assert!(four < one - Duration::from_secs(10), "4 in flight: {four:?}, 1 in flight: {one:?}");
}

/// Someone links `instance` to `vpc` with `groups` alone, as if by hand: the
/// next pass must relink it (detach, then attach with its mirror too).
async fn relink_by_hand(emu: &Emulator, instance: &InstanceId, vpc: &VpcId, groups: &[GroupId]) {
    emu.detach_classic_link_vpc(instance, vpc).await.unwrap();
    emu.attach_classic_link_vpc(instance, vpc, groups).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn relink_at_85_percent_errors_attaches_the_detached_instance_again_at_once_and_first_in_the_next_pass() {
    use classiclink_mirror::plan::Action;
    let estate = three_tiers().await;
    let emu = &estate.emu;
    let mut config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    // One action at a time: the order in which ready actions start is all that matters.
    config.rate_limit.max_in_flight = 1;
    let ec2 = limited(emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;
    assert!(pass(&ec2, &config, &mut memory, &clock).await.converged());
    let ops = emu.create_group(&NewGroup::in_vpc(&estate.vpc, "ops", "monitoring")).await.unwrap();
    let instance = estate.instances[0].clone();
    let web = mirror_of(emu, &estate.web).await.id;
    let attaches = || emu.counters().requests(Operation::AttachClassicLinkVpc);
    let is_relink = |p: &PassReport| p.plan.actions.iter().any(|a| matches!(a.action, Action::Relink { .. }));

    // 85 % of attaches fail: the attach after the relink's detach is retried
    // at once, within the pass, until the instance is linked again.
    relink_by_hand(emu, &instance, &estate.vpc, std::slice::from_ref(&ops)).await;
    emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::AttachClassicLinkVpc, 0.85)]),
            ..ErrorInjection::default()
        },
        seed: 11,
        ..Faults::none()
    });
    let before = attaches();
    clock.advance(Duration::from_secs(30));
    let relinked = pass(&ec2, &config, &mut memory, &clock).await;
    assert!(is_relink(&relinked));
    let tried = attaches() - before;
    assert!(tried > u64::from(config.rate_limit.max_attempts), "one attach request is not retried at once: {tried}");
    assert_eq!(relinked.failed(), 0);
    assert_eq!(emu.peek_link(&instance).unwrap().groups, BTreeSet::from([ops.clone(), web.clone()]));

    // Every attach fails: the relink leaves the instance detached after
    // retrying the attach at once, and says so.
    relink_by_hand(emu, &instance, &estate.vpc, std::slice::from_ref(&ops)).await;
    emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::AttachClassicLinkVpc, 1.0)]),
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });
    let before = attaches();
    clock.advance(Duration::from_secs(30));
    let failed = pass(&ec2, &config, &mut memory, &clock).await;
    assert!(is_relink(&failed));
    assert_eq!(failed.failed(), 1);
    let options = execute_options(&config);
    let expected = u64::from(config.rate_limit.max_attempts) * (1 + options.reattach_retries as u64);
    assert_eq!(attaches() - before, expected, "each re-attach request retried underneath, and re-attached again");
    assert!(emu.peek_link(&instance).is_none(), "detached, not attached again");

    // Next pass: slow work is ahead of the attach in plan order (new rules on
    // every source, every request taking 2 s), and the attach still runs first.
    for (i, source) in [&estate.web, &estate.app, &estate.db].into_iter().enumerate() {
        let port = 9000 + u16::try_from(i).unwrap();
        allow(emu, source, &[tcp(port, "10.9.0.0/16"), tcp(port, "10.8.0.0/16")]).await;
    }
    emu.set_faults(Faults { latency: Duration::from_secs(2), ..Faults::none() });
    let authorizes = || emu.counters().requests(Operation::AuthorizeSecurityGroupIngress);
    let authorizes_before = authorizes();
    let watcher = {
        let emu = emu.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            while emu.peek_link(&instance).is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            emu.counters().requests(Operation::AuthorizeSecurityGroupIngress)
        })
    };
    clock.advance(Duration::from_secs(30));
    let next = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(next.failed(), 0);
    let kinds: Vec<ActionKind> = next.plan.actions.iter().map(|a| a.action.kind()).collect();
    let attach = kinds.iter().position(|k| *k == ActionKind::Attach).expect("an attach is planned");
    let authorize = kinds.iter().position(|k| *k == ActionKind::Authorize).expect("authorizes are planned");
    assert!(authorize < attach, "the slow work comes first in plan order: {kinds:?}");
    let authorizes_at_link = tokio::time::timeout(Duration::from_secs(60), watcher).await.unwrap().unwrap();
    assert_eq!(authorizes_at_link, authorizes_before, "the attach waited behind grant batches");
    // Linked with its mirror (the hand-added group went with the detach).
    assert_eq!(emu.peek_link(&instance).unwrap().groups, BTreeSet::from([web]));
}

// ----- owners: two deployments, and the upgrade to owner tags -------------------

#[tokio::test(start_paused = true)]
async fn an_estate_made_before_owner_tags_is_claimed_with_one_tag_per_mirror_and_nothing_else() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    let mut memory = Memory::default();
    pass(&ec2, &config, &mut memory, &clock).await;
    assert!(pass(&ec2, &config, &mut memory, &clock).await.converged());
    // What an older version (or the 2016 Lambda) left: no owner tags.
    for mirror in mirrors(&estate.emu).await {
        estate.emu.delete_tags(&mirror.id, &[OWNER_TAG.to_owned()]).await.unwrap();
    }
    estate.emu.reset_counters();
    let upgrade = pass(&ec2, &config, &mut memory, &clock).await;
    assert_eq!(upgrade.failed(), 0);
    let kinds: Vec<ActionKind> = upgrade.plan.actions.iter().map(|a| a.action.kind()).collect();
    assert_eq!(kinds, [ActionKind::TagGroup; 3]);
    assert_eq!(mutating_calls(&estate.emu), BTreeMap::from([(Operation::CreateTags, 3)]));
    for mirror in mirrors(&estate.emu).await {
        assert_eq!(mirror.owner_tag(), Some("default"), "{}", mirror.id);
    }
    assert!(pass(&ec2, &config, &mut memory, &clock).await.converged());
}

#[tokio::test(start_paused = true)]
async fn a_second_deployment_never_writes_to_or_deletes_the_first_ones_mirrors() {
    let estate = three_tiers().await;
    let mut first = config_for(&estate.vpc, &[&estate.web, &estate.app, &estate.db]);
    first.daemon.owner = "a".to_owned();
    let ec2 = limited(&estate.emu, &first);
    let clock = Clock::new();
    let (mut memory_a, mut memory_b) = (Memory::default(), Memory::default());
    pass(&ec2, &first, &mut memory_a, &clock).await;
    assert!(pass(&ec2, &first, &mut memory_a, &clock).await.converged());
    let before = mirrors(&estate.emu).await;

    // "b" manages app only, under another name, and deletes orphans at once:
    // web's and db's mirrors would be its orphans if it took them for its own.
    let mut second = config_for(&estate.vpc, &[&estate.app]);
    second.daemon.owner = "b".to_owned();
    second.mirrors[0].name = Some("app-b".to_owned());
    second.safety.orphan_grace = Duration::ZERO;
    estate.emu.reset_counters();
    for _ in 0..3 {
        let report = pass(&ec2, &second, &mut memory_b, &clock).await;
        assert!(report.converged(), "{:?}", report.plan.actions);
        assert!(report.plan.orphans.is_empty());
        let conflicts: Vec<_> = report.plan.warnings.iter().filter_map(|w| w.kind.conflict_kind()).collect();
        assert_eq!(conflicts, ["foreign_owner"]);
        clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(mutating_calls(&estate.emu), BTreeMap::new(), "b wrote nothing");
    assert_eq!(mirrors(&estate.emu).await, before);
    assert!(pass(&ec2, &first, &mut memory_a, &clock).await.converged(), "and a has nothing to repair");
}

#[tokio::test(start_paused = true)]
async fn a_create_racing_another_deployments_create_does_not_take_its_mirror() {
    let estate = three_tiers().await;
    let mut config = config_for(&estate.vpc, &[&estate.web]);
    config.daemon.owner = "b".to_owned();
    let ec2 = limited(&estate.emu, &config);
    let observation = classiclink_mirror::observe::observe(&ec2, &config).await;
    let now = Clock::new().now();
    let (plan, _) = classiclink_mirror::plan::plan(&config, &observation.snapshot, &Memory::default(), now);
    assert_eq!(plan.actions[0].action.kind(), ActionKind::CreateMirror);
    // Deployment "a" creates the same mirror between our observation and our create.
    let theirs =
        NewGroup::in_vpc(&estate.vpc, "web", "Web tier").tag(OWNERSHIP_TAG, estate.web.to_string()).tag(OWNER_TAG, "a");
    let theirs = estate.emu.create_group(&theirs).await.unwrap();
    estate.emu.reset_counters();
    let report =
        classiclink_mirror::execute::execute(&ec2, &plan, &execute_options(&config), &CancellationToken::new()).await;
    let failures: Vec<_> = report.failures().map(|(o, e)| (o.kind, e.kind())).collect();
    assert_eq!(failures, [(ActionKind::CreateMirror, "not_ours")], "{:?}", report.outcomes);
    // Nothing that depended on the create ran against their group.
    let writes = mutating_calls(&estate.emu);
    assert_eq!(writes, BTreeMap::from([(Operation::CreateSecurityGroup, 1)]), "only the refused create");
    let group = mirrors(&estate.emu).await.into_iter().find(|g| g.id == theirs).unwrap();
    assert_eq!(group.owner_tag(), Some("a"));
    assert!(group.ingress.is_empty());
    // The next pass sees their mirror: a conflict, and nothing to do.
    let next = pass(&ec2, &config, &mut Memory::default(), &Clock::new()).await;
    assert!(next.converged(), "{:?}", next.plan.actions);
    assert!(next.plan.warnings.iter().any(|w| w.kind.conflict_kind() == Some("foreign_owner")));
}

/// The plan of one pass on `estate` against what it observes now.
async fn plan_now(ec2: &dyn Ec2, config: &Config, clock: &Clock) -> classiclink_mirror::plan::Plan {
    let observation = classiclink_mirror::observe::observe(ec2, config).await;
    classiclink_mirror::plan::plan(config, &observation.snapshot, &Memory::default(), clock.now()).0
}

async fn execute_now(ec2: &dyn Ec2, plan: &classiclink_mirror::plan::Plan) -> classiclink_mirror::execute::Report {
    let options = classiclink_mirror::execute::ExecuteOptions::default();
    classiclink_mirror::execute::execute(ec2, plan, &options, &CancellationToken::new()).await
}

#[tokio::test(start_paused = true)]
async fn a_batch_authorize_partly_done_by_another_writer_costs_one_describe_and_one_authorize() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.db]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    pass(&ec2, &config, &mut Memory::default(), &clock).await;
    let mirror = mirror_of(&estate.emu, &estate.db).await;
    // Three new source rules; the plan adds them in one batch.
    let new = [tcp(1001, "192.0.2.0/24"), tcp(1002, "192.0.2.0/24"), tcp(1003, "192.0.2.0/24")];
    allow(&estate.emu, &estate.db, &new).await;
    let plan = plan_now(&ec2, &config, &clock).await;
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    // Another writer adds two of them between our observation and our write.
    allow(&estate.emu, &mirror.id, &new[..2]).await;
    estate.emu.reset_counters();

    let report = execute_now(&ec2, &plan).await;
    assert_eq!(report.outcomes[0].result, ActionResult::Done);
    let counters = estate.emu.counters();
    assert_eq!(counters.requests(Operation::AuthorizeSecurityGroupIngress), 2, "the batch, then the one missing");
    assert_eq!(counters.requests(Operation::DescribeSecurityGroups), 1, "one re-read of the group");
    // Its one CIDR rule (app is not managed here) and the three new ones.
    assert_eq!(keys(&mirror_of(&estate.emu, &estate.db).await.ingress).len(), 4);

    // Everything there already: one re-read, no second write, already done.
    estate.emu.reset_counters();
    let report = execute_now(&ec2, &plan).await;
    assert_eq!(report.outcomes[0].result, ActionResult::AlreadyDone);
    let counters = estate.emu.counters();
    assert_eq!(counters.requests(Operation::AuthorizeSecurityGroupIngress), 1);
    assert_eq!(counters.requests(Operation::DescribeSecurityGroups), 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_revoke_partly_done_by_another_writer_costs_one_describe_and_one_revoke() {
    let estate = three_tiers().await;
    let config = config_for(&estate.vpc, &[&estate.db]);
    let ec2 = limited(&estate.emu, &config);
    let clock = Clock::new();
    pass(&ec2, &config, &mut Memory::default(), &clock).await;
    let mirror = mirror_of(&estate.emu, &estate.db).await;
    // Three extra rules on the mirror; the plan revokes them in one batch.
    let extra = [tcp(2001, "192.0.2.0/24"), tcp(2002, "192.0.2.0/24"), tcp(2003, "192.0.2.0/24")];
    allow(&estate.emu, &mirror.id, &extra).await;
    let plan = plan_now(&ec2, &config, &clock).await;
    assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    let account = estate.emu.account_id();
    let gone: Vec<IpPermission> = extra[..2].iter().map(|g| IpPermission::from_grant(g, &account)).collect();
    estate.emu.revoke_permissions(&mirror.id, &gone).await.unwrap();
    estate.emu.reset_counters();

    let report = execute_now(&ec2, &plan).await;
    assert_eq!(report.outcomes[0].result, ActionResult::Done);
    let counters = estate.emu.counters();
    assert_eq!(counters.requests(Operation::RevokeSecurityGroupIngress), 2, "the batch, then the one left");
    assert_eq!(counters.requests(Operation::DescribeSecurityGroups), 1);
    assert_eq!(keys(&mirror_of(&estate.emu, &estate.db).await.ingress).len(), 1, "its one CIDR rule");

    estate.emu.reset_counters();
    let report = execute_now(&ec2, &plan).await;
    assert_eq!(report.outcomes[0].result, ActionResult::AlreadyDone);
    assert_eq!(estate.emu.counters().requests(Operation::RevokeSecurityGroupIngress), 1);
    assert_eq!(estate.emu.counters().requests(Operation::DescribeSecurityGroups), 1);
}
