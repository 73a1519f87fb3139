//! The daemon's event path in process, against the emulator engine and its
//! event queue, with tokio's clock paused: a change reaches the VPC side in
//! a targeted pass within seconds though `daemon.interval` is a minute; the
//! daemon's own writes do not pay a pass; with every event lost the full
//! pass still repairs everything; a broken queue degrades to polling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use classiclink_mirror::config::Config;
use classiclink_mirror::daemon::{Connector, PassObserver, Settings};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::emulator::events::{EventOptions, EventQueue};
use classiclink_mirror::emulator::{CidrSource, Emulator, IpPermission, NewGroup, NewVpc, RunInstances};
use classiclink_mirror::events::{EventMessage, EventOperation, EventSource, EventSourceError};
use classiclink_mirror::model::{GroupId, InstanceId, OWNERSHIP_TAG, Peer, VpcId};
use classiclink_mirror::reconcile::PassReport;

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
