//! The daemon's event path in process, against the emulator engine and its
//! event queue, with tokio's clock paused: a change reaches the VPC side in
//! a targeted pass within seconds though `daemon.interval` is a minute; the
//! daemon's own writes do not pay a pass; with every event lost the full
//! pass still repairs everything; a broken queue degrades to polling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use classiclink_mirror::config::Config;
use classiclink_mirror::daemon::{Connector, Event, PassObserver, Settings, run};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::emulator::events::{EventOptions, EventQueue};
use classiclink_mirror::emulator::{CidrSource, Emulator, IpPermission, NewGroup, NewVpc, RunInstances};
use classiclink_mirror::events::{EventMessage, EventOperation, EventSource, EventSourceError};
use classiclink_mirror::model::{GroupId, InstanceId, OWNERSHIP_TAG, Peer, VpcId};
use classiclink_mirror::reconcile::PassReport;

use tokio::sync::mpsc;

use crate::common::daemon::{InProcessDaemon, spawn_daemon};

const QUEUE_URL: &str = "http://127.0.0.1:4566/123456789012/classiclink-mirror-events";

struct EventConnector {
    emu: Emulator,
    source: Arc<dyn EventSource>,
}

#[async_trait]
impl Connector for EventConnector {
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
        Arc::new(Limited::new(self.emu.clone(), &config.rate_limit))
    }

    async fn event_source(&self, config: &Config) -> Option<Arc<dyn EventSource>> {
        config.events.queue_url.as_ref().map(|_| Arc::clone(&self.source))
    }
}

#[derive(Default)]
struct Passes(Mutex<Vec<(tokio::time::Instant, bool)>>);

impl PassObserver for Passes {
    fn pass_finished(&self, _: &PassReport, _: &Config, _: SystemTime) {}
    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, _: SystemTime) {
        self.0.lock().unwrap().push((tokio::time::Instant::now(), event_times.is_some()));
    }
}

impl Passes {
    fn targeted(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, t)| *t).count()
    }
    fn full(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, t)| !*t).count()
    }
}

struct World {
    emu: Emulator,
    vpc: VpcId,
    web: GroupId,
    queue: EventQueue,
}

async fn world(options: EventOptions) -> World {
    let emu = Emulator::default();
    let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
    emu.run_instances(&RunInstances::classic([web.clone()]).count(2)).await.unwrap();
    let queue = emu.enable_events(options);
    // The daemon's writes carry its app name, as its SDK client's do.
    emu.set_port_user_agent("aws-sdk-rust/1 app/classiclink-mirror");
    World { emu, vpc, web, queue }
}

/// The daemon loop and the directory of its config file.
struct Running {
    daemon: InProcessDaemon<Passes>,
    _dir: tempfile::TempDir,
}

fn spawn(w: &World, source: Arc<dyn EventSource>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"60s\"\n[discovery]\ntag_key = \"\"\n\
         [events]\nqueue_url = \"{QUEUE_URL}\"\n[[mirror]]\nsource_group = \"{}\"\nvpc = \"{}\"\n",
        w.web, w.vpc
    );
    std::fs::write(&path, text).unwrap();
    let connector = EventConnector { emu: w.emu.clone(), source };
    let daemon = spawn_daemon(Settings::new(path, None), connector, Arc::new(Passes::default()));
    Running { daemon, _dir: dir }
}

impl Running {
    fn passes(&self) -> &Passes {
        self.daemon.observer()
    }

    async fn stop(self) -> Arc<Passes> {
        self.daemon.stop().await
    }
}

fn redis_rule() -> IpPermission {
    IpPermission {
        ip_protocol: "tcp".into(),
        from_port: Some(6379),
        to_port: Some(6379),
        ip_ranges: vec![CidrSource { cidr: "10.20.0.0/16".into(), description: None }],
        ..IpPermission::default()
    }
}

async fn mirror_has_redis(emu: &Emulator) -> bool {
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    emu.describe_security_groups(&filter).await.unwrap().iter().any(|g| {
        g.ingress.iter().any(|grant| matches!(&grant.key.peer, Peer::Ipv4(net) if net.to_string() == "10.20.0.0/16"))
    })
}

fn linked(emu: &Emulator, instance: &InstanceId) -> bool {
    emu.peek_link(instance).is_some()
}

#[tokio::test(start_paused = true)]
async fn a_rule_and_a_new_instance_reach_the_vpc_side_in_seconds_and_own_writes_pay_no_pass() {
    let w = world(EventOptions::default()).await;
    let daemon = spawn(&w, Arc::new(w.queue.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((daemon.passes().full(), daemon.passes().targeted()), (1, 0), "the first pass's own writes are echoes");

    let changed = tokio::time::Instant::now();
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    let launched = w.emu.run_instances(&RunInstances::classic([w.web.clone()])).await.unwrap();
    while !(mirror_has_redis(&w.emu).await && linked(&w.emu, &launched[0])) {
        assert!(changed.elapsed() < Duration::from_secs(3), "not on the VPC side within 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let passes = daemon.stop().await;
    assert_eq!(passes.full(), 1, "no full pass before the 60 s interval");
    assert_eq!(passes.targeted(), 1, "one targeted pass for the burst; its own writes are echoes");
}

#[tokio::test(start_paused = true)]
async fn with_every_event_lost_the_full_pass_still_repairs_on_its_interval() {
    let w = world(EventOptions { loss: 1.0, ..EventOptions::default() }).await;
    let daemon = spawn(&w, Arc::new(w.queue.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!mirror_has_redis(&w.emu).await, "no event, no targeted pass");
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(mirror_has_redis(&w.emu).await, "the full pass is the authority");
    let passes = daemon.stop().await;
    assert_eq!(passes.targeted(), 0);
}

/// A queue that always fails.
struct Broken;

#[async_trait]
impl EventSource for Broken {
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<EventMessage>, EventSourceError> {
        Err(EventSourceError::new(EventOperation::Receive, "AWS.SimpleQueueService.NonExistentQueue", "gone"))
    }
    async fn delete_batch(
        &self,
        _: &[classiclink_mirror::events::Receipt],
    ) -> Result<classiclink_mirror::events::Deleted, EventSourceError> {
        Ok(classiclink_mirror::events::Deleted::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_queue_degrades_to_polling_and_never_stops_the_daemon() {
    let w = world(EventOptions::default()).await;
    let daemon = spawn(&w, Arc::new(Broken));
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert!(mirror_has_redis(&w.emu).await, "repaired by the full pass");
    assert!(!daemon.daemon.is_finished(), "the daemon keeps running");
    let passes = daemon.stop().await;
    assert!(passes.full() >= 2 && passes.targeted() == 0);
}

/// The emulator with one describe made slow on demand: the full
/// observation's describe of every mirror (by the ownership tag's key),
/// which a targeted pass never makes (it names its mirrors' sources).
#[derive(Clone)]
struct SlowMirrors {
    emu: Emulator,
    delay: Arc<Mutex<Duration>>,
}

#[async_trait]
impl Ec2 for SlowMirrors {
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<
        classiclink_mirror::ec2::Page<classiclink_mirror::model::SecurityGroup>,
        classiclink_mirror::ec2::Ec2Error,
    > {
        if filter.tag_keys == [OWNERSHIP_TAG] {
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
        }
        self.emu.security_groups_page(filter, next_token).await
    }
    async fn instances_page(
        &self,
        filter: &classiclink_mirror::ec2::InstanceFilter,
        next_token: Option<String>,
    ) -> Result<classiclink_mirror::ec2::Page<classiclink_mirror::model::Instance>, classiclink_mirror::ec2::Ec2Error>
    {
        self.emu.instances_page(filter, next_token).await
    }
    async fn classic_link_instances_page(
        &self,
        filter: &classiclink_mirror::ec2::LinkFilter,
        next_token: Option<String>,
    ) -> Result<classiclink_mirror::ec2::Page<classiclink_mirror::model::Link>, classiclink_mirror::ec2::Ec2Error> {
        self.emu.classic_link_instances_page(filter, next_token).await
    }
    async fn vpcs_page(
        &self,
        vpc_ids: &[VpcId],
        next_token: Option<String>,
    ) -> Result<classiclink_mirror::ec2::Page<VpcId>, classiclink_mirror::ec2::Ec2Error> {
        self.emu.vpcs_page(vpc_ids, next_token).await
    }
    async fn vpc_classic_link_request(
        &self,
        vpc_ids: &[VpcId],
    ) -> Result<Vec<classiclink_mirror::model::Vpc>, classiclink_mirror::ec2::Ec2Error> {
        self.emu.vpc_classic_link_request(vpc_ids).await
    }
    async fn prefix_lists_page(
        &self,
        filter: &classiclink_mirror::ec2::PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<classiclink_mirror::ec2::Page<classiclink_mirror::model::PrefixList>, classiclink_mirror::ec2::Ec2Error>
    {
        self.emu.prefix_lists_page(filter, next_token).await
    }
    async fn prefix_list_entries_page(
        &self,
        id: &classiclink_mirror::model::PrefixListId,
        next_token: Option<String>,
    ) -> Result<
        classiclink_mirror::ec2::Page<classiclink_mirror::model::PrefixListEntry>,
        classiclink_mirror::ec2::Ec2Error,
    > {
        self.emu.prefix_list_entries_page(id, next_token).await
    }
    async fn network_interfaces_page(
        &self,
        filter: &classiclink_mirror::ec2::InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<
        classiclink_mirror::ec2::Page<classiclink_mirror::model::NetworkInterface>,
        classiclink_mirror::ec2::Ec2Error,
    > {
        self.emu.network_interfaces_page(filter, next_token).await
    }
    async fn create_prefix_list(
        &self,
        request: &classiclink_mirror::ec2::CreatePrefixList,
    ) -> Result<classiclink_mirror::model::PrefixList, classiclink_mirror::ec2::Ec2Error> {
        self.emu.create_prefix_list(request).await
    }
    async fn modify_prefix_list(
        &self,
        request: &classiclink_mirror::ec2::ModifyPrefixList,
    ) -> Result<classiclink_mirror::model::PrefixList, classiclink_mirror::ec2::Ec2Error> {
        self.emu.modify_prefix_list(request).await
    }
    async fn delete_prefix_list(
        &self,
        id: &classiclink_mirror::model::PrefixListId,
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.delete_prefix_list(id).await
    }
    async fn create_security_group(
        &self,
        request: &classiclink_mirror::ec2::CreateGroup,
    ) -> Result<GroupId, classiclink_mirror::ec2::Ec2Error> {
        self.emu.create_security_group(request).await
    }
    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.delete_security_group(group_id).await
    }
    async fn authorize_ingress(
        &self,
        group_id: &GroupId,
        grants: &[classiclink_mirror::model::Grant],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.authorize_ingress(group_id, grants).await
    }
    async fn revoke_ingress(
        &self,
        group_id: &GroupId,
        grants: &[classiclink_mirror::model::Grant],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.revoke_ingress(group_id, grants).await
    }
    async fn authorize_egress(
        &self,
        group_id: &GroupId,
        grants: &[classiclink_mirror::model::Grant],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.authorize_egress(group_id, grants).await
    }
    async fn revoke_egress(
        &self,
        group_id: &GroupId,
        grants: &[classiclink_mirror::model::Grant],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.revoke_egress(group_id, grants).await
    }
    async fn update_ingress_descriptions(
        &self,
        group_id: &GroupId,
        grants: &[classiclink_mirror::model::Grant],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.update_ingress_descriptions(group_id, grants).await
    }
    async fn create_tags(
        &self,
        group_id: &GroupId,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.create_tags(group_id, tags).await
    }
    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.delete_tags(group_id, keys).await
    }
    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.attach_classic_link_vpc(instance_id, vpc_id, groups).await
    }
    async fn detach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
    ) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.detach_classic_link_vpc(instance_id, vpc_id).await
    }
    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), classiclink_mirror::ec2::Ec2Error> {
        self.emu.enable_vpc_classic_link(vpc_id).await
    }
}

/// Connects to a [`SlowMirrors`]; the event source of `[events]` is the
/// emulator's queue whatever its URL, and every URL asked for is recorded.
struct SlowConnector {
    ec2: SlowMirrors,
    source: Arc<dyn EventSource>,
    asked: Arc<Mutex<Vec<Option<String>>>>,
}

#[async_trait]
impl Connector for SlowConnector {
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
        Arc::new(Limited::new(self.ec2.clone(), &config.rate_limit))
    }

    async fn event_source(&self, config: &Config) -> Option<Arc<dyn EventSource>> {
        self.asked.lock().unwrap().push(config.events.queue_url.clone());
        config.events.queue_url.as_ref().map(|_| Arc::clone(&self.source))
    }
}

/// Every pass's report, with when it finished and whether it was targeted.
#[derive(Default)]
struct Reports(Mutex<Vec<(tokio::time::Instant, PassReport)>>, Mutex<Vec<bool>>);

impl PassObserver for Reports {
    fn pass_finished(&self, report: &PassReport, _: &Config, _: SystemTime) {
        self.0.lock().unwrap().push((tokio::time::Instant::now(), report.clone()));
    }
    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, _: SystemTime) {
        self.1.lock().unwrap().push(event_times.is_some());
    }
}

impl Reports {
    fn targeted(&self) -> usize {
        self.1.lock().unwrap().iter().filter(|t| **t).count()
    }
    fn passes(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Slow {
    events: mpsc::Sender<Event>,
    task: tokio::task::JoinHandle<Result<(), classiclink_mirror::daemon::DaemonError>>,
    reports: Arc<Reports>,
    delay: Arc<Mutex<Duration>>,
    asked: Arc<Mutex<Vec<Option<String>>>>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn config_text(w: &World, events: Option<&str>, extra: &str) -> String {
    let events = events.map(|url| format!("[events]\nqueue_url = \"{url}\"\n")).unwrap_or_default();
    format!(
        "[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"60s\"\n[discovery]\ntag_key = \"\"\n{extra}{events}\
         [[mirror]]\nsource_group = \"{}\"\nvpc = \"{}\"\n",
        w.web, w.vpc
    )
}

fn spawn_slow(w: &World, text: &str) -> Slow {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    std::fs::write(&path, text).unwrap();
    let settings = Settings::new(path.clone(), None);
    let reports = Arc::new(Reports::default());
    let delay = Arc::new(Mutex::new(Duration::ZERO));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (events, rx) = mpsc::channel(4);
    let connector = SlowConnector {
        ec2: SlowMirrors { emu: w.emu.clone(), delay: Arc::clone(&delay) },
        source: Arc::new(w.queue.clone()),
        asked: Arc::clone(&asked),
    };
    let observer = Arc::clone(&reports);
    let task = tokio::spawn(async move { run(&settings, &connector, observer.as_ref(), rx).await });
    Slow { events, task, reports, delay, asked, path, _dir: dir }
}

#[tokio::test(start_paused = true)]
async fn a_change_during_a_long_full_observation_is_mirrored_before_it_ends_and_the_full_pass_does_not_undo_it() {
    let w = world(EventOptions::default()).await;
    let daemon = spawn_slow(&w, &config_text(&w, Some(QUEUE_URL), ""));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(daemon.reports.passes(), 1);
    // From now on a full observation reads the mirrors 40 s after the
    // sources: the next full pass (54–66 s) observes until 94 s at least.
    *daemon.delay.lock().unwrap() = Duration::from_secs(40);
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert_eq!(daemon.reports.passes(), 1, "the second full pass is still observing");

    // The source changes after the full pass read it, and its mirror is
    // changed (by a targeted pass) before the full pass reads that.
    let changed = tokio::time::Instant::now();
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    while !mirror_has_redis(&w.emu).await {
        assert!(changed.elapsed() < Duration::from_secs(3), "the change waited for the full pass");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((daemon.reports.passes(), daemon.reports.targeted()), (2, 1), "one targeted pass beside the full one");

    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(daemon.reports.passes(), 3, "the full pass has ended");
    let reports = daemon.reports.0.lock().unwrap().clone();
    let (_, full) = &reports[2];
    assert!(
        full.plan.actions.is_empty(),
        "the full pass described again what the targeted pass wrote, and planned nothing: {:?}",
        full.plan.actions
    );
    assert!(full.snapshot.is_complete());
    assert!(mirror_has_redis(&w.emu).await, "never undone");
    daemon.events.send(Event::Shutdown).await.unwrap();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_events_restarts_the_event_reader() {
    let w = world(EventOptions::default()).await;
    let daemon = spawn_slow(&w, &config_text(&w, None, ""));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Events added by a reload: a full pass at once takes the snapshot
    // targeted passes merge into; then a change is mirrored in seconds.
    std::fs::write(&daemon.path, config_text(&w, Some(QUEUE_URL), "")).unwrap();
    daemon.events.send(Event::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(daemon.reports.passes(), 2, "a full pass at once");
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(mirror_has_redis(&w.emu).await, "events on after the reload");
    assert_eq!(daemon.reports.targeted(), 1);

    // Removed: periodic passes only; the pending event is repaired by the full pass.
    std::fs::write(&daemon.path, config_text(&w, None, "")).unwrap();
    daemon.events.send(Event::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.emu.revoke_permissions(&w.web, &[redis_rule()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(mirror_has_redis(&w.emu).await, "events off: no targeted pass");
    assert_eq!(daemon.reports.targeted(), 1);

    // Another URL: the reader restarts on it.
    let other = "http://127.0.0.1:4566/123456789012/other-queue";
    std::fs::write(&daemon.path, config_text(&w, Some(other), "")).unwrap();
    daemon.events.send(Event::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.emu
        .authorize_permissions(&w.web, &[IpPermission { from_port: Some(6380), to_port: Some(6380), ..redis_rule() }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.reports.targeted() >= 2, "events on again");
    assert_eq!(
        daemon.asked.lock().unwrap().clone(),
        [None, Some(QUEUE_URL.to_owned()), None, Some(other.to_owned())],
        "one reader per [events] in force"
    );
    daemon.events.send(Event::Shutdown).await.unwrap();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fight_names_the_principal_of_the_event_that_reported_the_other_writers_change() {
    let w = world(EventOptions::default()).await;
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    // The first pass's authorize counts as the first repair of the rule.
    let safety = "[safety]\nfight_repairs = 3\nfight_window = \"10m\"\n";
    let daemon = spawn_slow(&w, &config_text(&w, Some(QUEUE_URL), safety));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(mirror_has_redis(&w.emu).await);
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    let mirror = w.emu.describe_security_groups(&filter).await.unwrap()[0].id.clone();
    // Someone keeps revoking the mirrored rule; each revoke's event makes a
    // targeted pass put it back, until that is a fight.
    for _ in 0..2 {
        w.emu.revoke_permissions(&mirror, &[redis_rule()]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(mirror_has_redis(&w.emu).await, "repaired on the event");
    }
    let reports = daemon.reports.0.lock().unwrap().clone();
    let (_, last) = reports.last().unwrap();
    assert_eq!(last.fights.len(), 1, "{:?}", last.fights);
    assert_eq!(last.fights[0].principal.as_deref(), Some("arn:aws:iam::123456789012:user/emulator"));
    daemon.events.send(Event::Shutdown).await.unwrap();
    daemon.task.await.unwrap().unwrap();
}

/// The bug: a full pass that started right after an overrunning one
/// cleared the stale ids of that pass's writes, and a targeted pass beside
/// it merged into the older pass's snapshot (observed before those
/// writes): it planned every mirror again.
#[tokio::test(start_paused = true)]
async fn a_targeted_pass_beside_a_full_pass_still_sees_the_previous_pass_writes() {
    let w = world(EventOptions::default()).await;
    let daemon = spawn_slow(&w, &config_text(&w, Some(QUEUE_URL), ""));
    // The first pass reads the mirrors 70 s late and overruns the
    // interval: the second starts at once and reads them late too.
    *daemon.delay.lock().unwrap() = Duration::from_secs(70);
    tokio::time::sleep(Duration::from_secs(75)).await;
    assert_eq!(daemon.reports.passes(), 1, "the first pass wrote the mirror; the second is observing");
    w.emu.authorize_permissions(&w.web, &[redis_rule()]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(mirror_has_redis(&w.emu).await, "mirrored beside the full pass");
    let reports = daemon.reports.0.lock().unwrap().clone();
    let (_, beside) = &reports[1];
    let kinds: Vec<&str> = beside.plan.actions.iter().map(|a| a.action.kind().as_str()).collect();
    assert_eq!(kinds, ["authorize"], "the mirror the first pass created is known");
    daemon.events.send(Event::Shutdown).await.unwrap();
    daemon.task.await.unwrap().unwrap();
}
