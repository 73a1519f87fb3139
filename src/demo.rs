//! `demo`: the whole product on one machine, for a newcomer. Starts the EC2
//! emulator over HTTP with the sample Classic estate (`config/demo-estate.toml`,
//! built in) and its event queue, runs the daemon against both through the
//! real AWS SDKs, narrates each pass, then changes the Classic side a few
//! times — a new rule, new instances, a discovery tag removed — so the
//! mirrors can be seen following (within a second: each change's event
//! brings a targeted pass before the next full one), and keeps serving
//! `/metrics` until Ctrl-C.
//!
//! `--scenario vpc-accounts` plays a VPC-to-VPC migration instead
//! (`config/demo-vpc-estate.toml`, docs/migrating-vpc-to-vpc.md): sources in
//! a VPC of one account, mirrors in a VPC of another account and region,
//! the daemon reaching each through an assumed role; the script changes a
//! source, then revokes the target's role and restores it.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::daemon::{Connector, Event, PassObserver, ServeError, Settings, serve_with};
use crate::ec2::aws::{AwsEc2, AwsEventSource, AwsOptions, SharedClients, StaticCredentials};
use crate::ec2::limited::{Limited, RequestObserver};
use crate::ec2::{Category, Ec2, Operation};
use crate::emulator::events::EventOptions;
use crate::emulator::{Emulator, EmulatorOptions, Estate, EstateError, Faults, Throttle};
use crate::events::{EventSource, QueueSettings};
use crate::model::{DEFAULT_DISCOVERY_TAG, Grant, GroupId, Peer, Ports, Protocol};
use crate::plan::{Action, WarningKind};
use crate::reconcile::PassReport;

/// The sample estate, built into the binary so `demo` runs from anywhere.
pub const DEMO_ESTATE: &str = include_str!("../config/demo-estate.toml");

/// The estate of the VPC-to-VPC scenario: two accounts, two regions, roles.
pub const DEMO_VPC_ESTATE: &str = include_str!("../config/demo-vpc-estate.toml");

/// Which migration the demo plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// EC2-Classic groups and instances into a VPC (the default).
    #[default]
    Classic,
    /// A VPC of one account into a VPC of another account and region.
    VpcAccounts,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The built-in estate did not load (a bug in the shipped file).
    #[error("the demo estate is invalid: {0}")]
    Estate(String),
    /// Local I/O (a port, a temporary file).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] ServeError),
    /// A scripted change to the Classic side failed.
    #[error("changing the Classic estate failed: {0}")]
    Script(#[from] crate::ec2::Ec2Error),
}

impl DemoError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Estate(_) => "estate",
            Self::Io { .. } => "io",
            Self::Daemon(e) => e.kind(),
            Self::Script(e) => e.kind(),
        }
    }
}

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the daemon serves `/metrics` (port 0: any free port).
    pub listen: SocketAddr,
    /// Stop after the scripted changes instead of serving until Ctrl-C.
    pub exit_when_done: bool,
    /// Time between passes.
    pub interval: Duration,
    /// Which migration to play.
    pub scenario: Scenario,
}

/// Counts the writes sent, for the progress line.
struct WriteCounter(Arc<AtomicU64>);

impl RequestObserver for WriteCounter {
    fn record(&self, operation: Operation, _outcome: &'static str, _elapsed: Duration) {
        if operation.category() == Category::Mutating {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Both the metrics and the progress line see every request.
struct Fanout(Box<dyn RequestObserver>, WriteCounter);

impl RequestObserver for Fanout {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.0.record(operation, outcome, elapsed);
        self.1.record(operation, outcome, elapsed);
    }
}

struct DemoConnector {
    metrics: Arc<crate::metrics::Metrics>,
    writes: Arc<AtomicU64>,
    /// One limited client per account, shared by the target loops.
    clients: SharedClients,
}

#[async_trait]
impl Connector for DemoConnector {
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
        let limit = |account: &str, client: AwsEc2| -> Arc<dyn Ec2> {
            let observer =
                Fanout(self.metrics.account_request_observer(account), WriteCounter(Arc::clone(&self.writes)));
            Arc::new(Limited::new(client, &config.rate_limit).with_observer(Box::new(observer)))
        };
        crate::ec2::aws::connect_shared(config, &demo_aws_options(), &self.clients, &limit).await
    }

    async fn event_source(&self, config: &Config) -> Option<Arc<dyn EventSource>> {
        let settings = QueueSettings::from_config(config)?;
        Some(Arc::new(AwsEventSource::from_settings_with(&settings, demo_aws_options()).await))
    }

    fn reloaded(&self, config: &Config) {
        self.clients.retain(&config.client_accounts());
    }
}

fn demo_aws_options() -> AwsOptions {
    AwsOptions {
        credentials: Some(StaticCredentials { access_key_id: "demo".into(), secret_access_key: "demo".into() }),
        ..AwsOptions::default()
    }
}

/// What the narrator tells the script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    passes: u64,
    /// The last pass executed actions, none failed.
    wrote: bool,
    /// The last pass planned nothing to execute on a complete snapshot.
    converged: bool,
    /// Orphaned mirrors the last pass saw.
    orphans: usize,
}

/// Prints each pass in words, with a progress line while it runs.
struct Narrator {
    writes: Arc<AtomicU64>,
    bar: Mutex<Option<ProgressBar>>,
    seen_warnings: Mutex<std::collections::BTreeSet<String>>,
    progress: watch::Sender<Progress>,
    metrics_at: watch::Sender<Option<SocketAddr>>,
}

fn describe_pass(pass: &PassReport) -> Vec<String> {
    let mut created = Vec::new();
    let (mut added, mut removed, mut updated, mut linked, mut relinked, mut unlinked, mut deleted) =
        (0, 0, 0, 0, 0, 0, Vec::new());
    for (planned, outcome) in pass.plan.actions.iter().zip(&pass.report.outcomes) {
        if !outcome.result.succeeded() {
            continue;
        }
        match &planned.action {
            Action::CreateMirror { name, vpc, .. } => created.push(format!("{name} in {vpc}")),
            Action::Authorize { grants, .. } | Action::AuthorizeEgress { grants, .. } => added += grants.len(),
            Action::Revoke { grants, .. } | Action::RevokeEgress { grants, .. } => removed += grants.len(),
            Action::UpdateDescriptions { grants, .. } => updated += grants.len(),
            Action::Attach { .. } => linked += 1,
            Action::Relink { .. } => relinked += 1,
            Action::Detach { .. } => unlinked += 1,
            Action::DeleteMirror { name, .. } => deleted.push(name.clone()),
            Action::TagGroup { .. }
            | Action::UntagGroup { .. }
            | Action::EnableClassicLink { .. }
            | Action::MarkOrphan { .. }
            | Action::UnmarkOrphan { .. }
            | Action::CreatePrefixList { .. }
            | Action::ModifyPrefixList { .. }
            | Action::DeletePrefixList { .. } => {}
        }
    }
    let mut lines = Vec::new();
    if !created.is_empty() {
        lines.push(format!("  created mirrors: {}", created.join(", ")));
    }
    for (count, what) in [
        (added, "rules added"),
        (removed, "rules removed"),
        (updated, "descriptions updated"),
        (linked, "instances linked"),
        (relinked, "instances relinked"),
        (unlinked, "instances unlinked"),
    ] {
        if count > 0 {
            lines.push(format!("  {count} {what}"));
        }
    }
    if !deleted.is_empty() {
        lines.push(format!("  deleted orphaned mirrors: {}", deleted.join(", ")));
    }
    for (outcome, error) in pass.report.failures() {
        lines.push(format!("  failed {}: {error}", outcome.kind.as_str()));
    }
    lines
}

impl PassObserver for Narrator {
    fn pass_started(&self, _config: &Config) {
        let number = self.progress.borrow().passes + 1;
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} pass {prefix}: {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(number.to_string());
        bar.set_message("observing and reconciling");
        bar.enable_steady_tick(Duration::from_millis(100));
        let writes = Arc::clone(&self.writes);
        writes.store(0, Ordering::Relaxed);
        let ticker = bar.clone();
        tokio::spawn(async move {
            while !ticker.is_finished() {
                ticker.set_message(format!("{} EC2 writes sent", writes.load(Ordering::Relaxed)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        *self.bar.lock() = Some(bar);
    }

    fn pass_finished(&self, pass: &PassReport, _config: &Config, _started_at: SystemTime) {
        if let Some(bar) = self.bar.lock().take() {
            bar.finish_and_clear();
        }
        let number = self.progress.borrow().passes + 1;
        let converged = pass.converged();
        let lines = describe_pass(pass);
        if lines.is_empty() && !pass.observe_errors.is_empty() {
            println!("pass {number}: EC2 could not be observed completely ({:.1?})", pass.duration);
        } else if lines.is_empty() {
            println!("pass {number}: in sync ({} pairs, {:.1?})", pass.plan.pairs.len(), pass.duration);
        } else {
            let count = pass.plan.actions.len();
            let noun = if count == 1 { "action" } else { "actions" };
            println!("pass {number}: {count} {noun} in {:.1?}", pass.duration);
            for line in lines {
                println!("{line}");
            }
        }
        let mut seen = self.seen_warnings.lock();
        for warning in &pass.plan.warnings {
            // Orphan countdowns change every pass; say each only once.
            let key = match warning.kind {
                WarningKind::OrphanWaiting => format!("orphan {:?}", warning.subject),
                _ => warning.message.clone(),
            };
            if seen.insert(key) {
                println!("  warning: {}", warning.message);
            }
        }
        for error in &pass.observe_errors {
            println!("  could not observe {}: {}", error.part.as_str(), error.source.code);
        }
        let orphans = pass.plan.orphans.len();
        let wrote = !pass.report.outcomes.is_empty() && pass.failed() == 0;
        self.progress.send_modify(|p| {
            p.passes += 1;
            p.wrote = wrote;
            p.converged = converged;
            p.orphans = orphans;
        });
    }

    fn serving(&self, address: SocketAddr) {
        let _ = self.metrics_at.send(Some(address));
    }

    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, _started_at: SystemTime) {
        if let Some(times) = event_times {
            let noun = if times.len() == 1 { "event" } else { "events" };
            println!("  (a targeted pass: {} {noun} named what changed; only that was described again)", times.len());
        }
    }
}

/// Waits for the pass that mirrors a change made at `changed`, and says how
/// long it took against the interval a pass without events would wait.
async fn mirrored(progress: &mut watch::Receiver<Progress>, changed: std::time::Instant, interval: Duration) {
    let after = progress.borrow().passes;
    wait_for(progress, |p| p.passes > after && p.wrote).await;
    println!(
        "==> mirrored {:.1?} after the change; without events it waits for the next full pass (every {})",
        changed.elapsed(),
        humantime::format_duration(interval)
    );
}

async fn wait_for(progress: &mut watch::Receiver<Progress>, what: impl Fn(&Progress) -> bool) {
    // The sender lives as long as the daemon; a closed channel ends the wait.
    let _ = progress.wait_for(what).await;
}

/// Waits for a pass that starts after now and converges.
async fn next_convergence(progress: &mut watch::Receiver<Progress>) {
    let after = progress.borrow().passes;
    wait_for(progress, |p| p.passes > after && p.converged).await;
}

fn tcp_from(port: u16, cidr: &str, description: &str) -> Grant {
    let peer = Peer::Ipv4(cidr.parse().expect("literal CIDR"));
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, peer, Some(description.to_owned()))
}

/// Changes the Classic side step by step, each time waiting for the mirrors
/// to follow.
async fn script(
    client: &AwsEc2,
    emulator: &Emulator,
    mut progress: watch::Receiver<Progress>,
    interval: Duration,
) -> Result<(), DemoError> {
    let group = |name: &str| -> GroupId { emulator.group_id(None, name).expect("demo estate group") };
    wait_for(&mut progress, |p| p.converged).await;
    println!("\n==> the VPC side mirrors the Classic estate. Now changing the Classic side.\n");

    println!("==> Classic: app now allows tcp 9090 from 10.30.0.0/16 (\"metrics scrape\")");
    let changed = std::time::Instant::now();
    client.authorize_ingress(&group("app"), &[tcp_from(9090, "10.30.0.0/16", "metrics scrape")]).await?;
    mirrored(&mut progress, changed, interval).await;
    next_convergence(&mut progress).await;

    println!("\n==> Classic: two more web instances are launched");
    let changed = std::time::Instant::now();
    client.world().run_instances("ami-12c6146b", &[group("web")], 2).await?;
    mirrored(&mut progress, changed, interval).await;
    next_convergence(&mut progress).await;

    println!("\n==> Classic: the discovery tag is removed from db (it stops being mirrored)");
    client.delete_tags(&group("db"), &[DEFAULT_DISCOVERY_TAG.to_owned()]).await?;
    next_convergence(&mut progress).await;
    println!("    db's mirror is now an orphan: it keeps its links and references for orphan_grace,");
    println!("    then its instances are unlinked, references to it revoked, and it is deleted.");
    wait_for(&mut progress, |p| p.orphans == 0 && p.converged).await;
    Ok(())
}

fn demo_config(endpoint: &str, options: &DemoOptions, state_dir: &Path) -> String {
    format!(
        "# Written by `classiclink-mirror demo`; edit it while the demo runs to see a reload.\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n\n\
         [daemon]\ninterval = \"{}\"\nlisten = \"{}\"\nstate_dir = {:?}\n\n\
         [safety]\norphan_grace = \"{}\"\n\n\
         [discovery]\ntag_key = \"{DEFAULT_DISCOVERY_TAG}\"\n\n\
         # The emulator's event queue, on its EC2 endpoint (docs/operations.md, \"Events\").\n\
         [events]\nqueue_url = \"{endpoint}/{}/{}\"\n",
        humantime::format_duration(options.interval),
        options.listen,
        state_dir.display().to_string(),
        humantime::format_duration(options.interval * 3),
        crate::emulator::DEFAULT_ACCOUNT_ID,
        crate::emulator::events::DEFAULT_QUEUE_NAME,
    )
}

/// Runs the demo until Ctrl-C (or, with `exit_when_done`, until the script
/// has run).
///
/// # Errors
/// [`DemoError`] when the emulator or the daemon cannot start.
pub async fn run(options: DemoOptions, stop: mpsc::Receiver<Event>) -> Result<(), DemoError> {
    match options.scenario {
        Scenario::Classic => run_classic(options, stop).await,
        Scenario::VpcAccounts => run_vpc_accounts(options, stop).await,
    }
}

async fn run_classic(options: DemoOptions, mut stop: mpsc::Receiver<Event>) -> Result<(), DemoError> {
    let estate = Estate::from_toml(DEMO_ESTATE).map_err(|e: EstateError| DemoError::Estate(e.to_string()))?;
    let faults = Faults { throttle: Some(Throttle::ec2()), latency: Duration::from_millis(15), ..Faults::none() };
    let emulator = Emulator::from_estate(&estate, EmulatorOptions { faults, ..EmulatorOptions::default() })
        .map_err(|e| DemoError::Estate(e.to_string()))?;
    emulator.enable_events(EventOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| DemoError::Io { what: "cannot bind the emulator", source })?;
    let endpoint = format!(
        "http://{}",
        listener.local_addr().map_err(|source| DemoError::Io { what: "emulator address", source })?
    );
    let stop_emulator = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::emulator::server::serve(
        emulator.clone(),
        listener,
        stop_emulator.clone().cancelled_owned(),
    ));

    let dir = tempfile_dir()?;
    let config_path = dir.join("classiclink-mirror.toml");
    // The demo's daemon keeps its state file beside its config, not in /var/lib.
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir)
        .map_err(|source| DemoError::Io { what: "cannot create the demo's state directory", source })?;
    std::fs::write(&config_path, demo_config(&endpoint, &options, &state_dir))
        .map_err(|source| DemoError::Io { what: "cannot write the demo config", source })?;
    println!("EC2 emulator (EC2-Classic estate: web, app, db, bastion, cache; 20 instances) at {endpoint}");
    println!("daemon config: {}", config_path.display());

    let writes = Arc::new(AtomicU64::new(0));
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (metrics_tx, mut metrics_rx) = watch::channel(None);
    let narrator = Narrator {
        writes: Arc::clone(&writes),
        bar: Mutex::new(None),
        seen_warnings: Mutex::new(Default::default()),
        progress: progress_tx,
        metrics_at: metrics_tx,
    };
    let (events, receiver) = mpsc::channel(8);
    let settings = Settings::new(config_path.clone(), None);
    // The script plays an operator, not the daemon: its writes must not
    // read as the daemon's own echo.
    let client = AwsEc2::from_config_with(
        &crate::config::AwsConfig { region: "us-east-1".into(), endpoint_url: Some(endpoint.clone()), profile: None },
        AwsOptions { app_name: "demo-operator".into(), ..demo_aws_options() },
    )
    .await;

    let daemon = serve_with(
        &settings,
        |metrics| Box::new(DemoConnector { metrics, writes: Arc::clone(&writes), clients: SharedClients::default() }),
        &narrator,
        receiver,
    );
    let driver = async {
        let _ = metrics_rx.wait_for(Option::is_some).await;
        let address = (*metrics_rx.borrow()).expect("set");
        println!("daemon metrics at http://{address}/metrics, status at http://{address}/status\n");
        // Ctrl-C stops the demo at any point, script or not.
        let scripted = tokio::select! {
            scripted = script(&client, &emulator, progress_rx, options.interval) => scripted,
            _ = stop.recv() => {
                let _ = events.send(Event::Shutdown).await;
                return Ok(());
            }
        };
        match &scripted {
            Ok(()) if options.exit_when_done => println!("\ndemo finished"),
            Ok(()) => println!("\ndemo finished; still serving http://{address}/metrics — Ctrl-C to stop"),
            Err(e) => println!("\ndemo script stopped: {e}"),
        }
        if !options.exit_when_done && scripted.is_ok() {
            let _ = stop.recv().await;
        }
        let _ = events.send(Event::Shutdown).await;
        scripted
    };
    let (served, scripted) = tokio::join!(daemon, driver);
    stop_emulator.cancel();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    served?;
    scripted
}

/// A private temporary directory for the demo's config file.
fn tempfile_dir() -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("classiclink-mirror-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|source| DemoError::Io { what: "cannot create a temporary directory", source })?;
    Ok(dir)
}

// ----- the VPC-to-VPC scenario ----------------------------------------------

/// The role the demo's daemon assumes in the target account.
const DEMO_TARGET_ROLE: &str = "arn:aws:iam::222222222222:role/classiclink-mirror";

fn vpc_accounts_config(endpoint: &str, options: &DemoOptions, state_dir: &Path) -> String {
    let mut text = format!(
        "# Written by `classiclink-mirror demo --scenario vpc-accounts` (docs/migrating-vpc-to-vpc.md).\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n\n\
         [daemon]\ninterval = \"{}\"\nlisten = \"{}\"\nstate_dir = {:?}\n\n\
         # The old VPC's account: the sources are only described there.\n\
         [accounts.old]\nregion = \"us-east-1\"\nrole_arn = \"arn:aws:iam::111111111111:role/classiclink-mirror-read\"\n\n\
         # The new VPC's account and region: the mirrors live there.\n\
         [accounts.new]\nregion = \"eu-west-1\"\nrole_arn = \"{DEMO_TARGET_ROLE}\"\nexternal_id = \"migration-2026\"\n",
        humantime::format_duration(options.interval),
        options.listen,
        state_dir.display().to_string(),
    );
    for id in ["sg-0e0e0e01", "sg-0e0e0e02", "sg-0e0e0e03", "sg-0e0e0e04"] {
        text.push_str(&format!(
            "\n[[mirror]]\nsource_group = \"{id}\"\nvpc = \"vpc-0b0b0b0b\"\nsource_account = \"old\"\n\
             target_account = \"new\"\n"
        ));
    }
    text
}

/// Changes a source in the old account, then cuts the target account off
/// and restores it, each time waiting for the daemon.
async fn vpc_accounts_script(
    operator: &AwsEc2,
    cloud: &crate::emulator::Cloud,
    mut progress: watch::Receiver<Progress>,
    interval: Duration,
) -> Result<(), DemoError> {
    wait_for(&mut progress, |p| p.converged).await;
    println!("\n==> account 222222222222 / eu-west-1 mirrors the old VPC; references point at the new mirrors.\n");

    println!("==> old account: web now allows tcp 8443 from 10.40.0.0/16 (\"partner API\")");
    let web = GroupId::try_new("sg-0e0e0e01").expect("literal group id");
    let changed = std::time::Instant::now();
    operator.authorize_ingress(&web, &[tcp_from(8443, "10.40.0.0/16", "partner API")]).await?;
    let after = progress.borrow().passes;
    wait_for(&mut progress, |p| p.passes > after && p.wrote).await;
    println!(
        "==> mirrored {:.1?} after the change (no events across accounts: the next full pass, every {})",
        changed.elapsed(),
        humantime::format_duration(interval)
    );
    next_convergence(&mut progress).await;

    println!("\n==> the target account's role is revoked (its sessions too)");
    cloud.set_role_revoked(DEMO_TARGET_ROLE, true);
    let after = progress.borrow().passes;
    wait_for(&mut progress, |p| p.passes > after && !p.converged).await;
    println!("    passes fail and write nothing until the role is back; /status shows the failed describes");
    cloud.set_role_revoked(DEMO_TARGET_ROLE, false);
    println!("\n==> the role is restored");
    next_convergence(&mut progress).await;
    println!("    the next pass reached the account again and found everything in sync");
    Ok(())
}

async fn run_vpc_accounts(options: DemoOptions, mut stop: mpsc::Receiver<Event>) -> Result<(), DemoError> {
    let estate = Estate::from_toml(DEMO_VPC_ESTATE).map_err(|e: EstateError| DemoError::Estate(e.to_string()))?;
    let cloud = crate::emulator::Cloud::from_estate(&estate, EmulatorOptions::default())
        .map_err(|e| DemoError::Estate(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| DemoError::Io { what: "cannot bind the emulator", source })?;
    let endpoint = format!(
        "http://{}",
        listener.local_addr().map_err(|source| DemoError::Io { what: "emulator address", source })?
    );
    let stop_emulator = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::emulator::server::serve_cloud(
        cloud.clone(),
        listener,
        stop_emulator.clone().cancelled_owned(),
    ));

    let dir = tempfile_dir()?;
    let config_path = dir.join("classiclink-mirror.toml");
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir)
        .map_err(|source| DemoError::Io { what: "cannot create the demo's state directory", source })?;
    std::fs::write(&config_path, vpc_accounts_config(&endpoint, &options, &state_dir))
        .map_err(|source| DemoError::Io { what: "cannot write the demo config", source })?;
    println!(
        "EC2 and STS emulator at {endpoint}: web, app, db, bastion in vpc-0a0a0a0a of account 111111111111 \
         (us-east-1), an empty vpc-0b0b0b0b in account 222222222222 (eu-west-1)"
    );
    println!("daemon config: {}", config_path.display());

    let writes = Arc::new(AtomicU64::new(0));
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (metrics_tx, mut metrics_rx) = watch::channel(None);
    let narrator = Narrator {
        writes: Arc::clone(&writes),
        bar: Mutex::new(None),
        seen_warnings: Mutex::new(Default::default()),
        progress: progress_tx,
        metrics_at: metrics_tx,
    };
    let (events, receiver) = mpsc::channel(8);
    let settings = Settings::new(config_path.clone(), None);
    // The old account's operator, by its own access key.
    let operator = AwsEc2::from_config_with(
        &crate::config::AwsConfig { region: "us-east-1".into(), endpoint_url: Some(endpoint.clone()), profile: None },
        AwsOptions {
            app_name: "demo-operator".into(),
            credentials: Some(StaticCredentials {
                access_key_id: "AKIADEMOOLD".into(),
                secret_access_key: "demo".into(),
            }),
            ..AwsOptions::default()
        },
    )
    .await;
    let daemon = serve_with(
        &settings,
        |metrics| Box::new(DemoConnector { metrics, writes: Arc::clone(&writes), clients: SharedClients::default() }),
        &narrator,
        receiver,
    );
    let driver = async {
        let _ = metrics_rx.wait_for(Option::is_some).await;
        let address = (*metrics_rx.borrow()).expect("set");
        println!("daemon metrics at http://{address}/metrics, status at http://{address}/status\n");
        let scripted = tokio::select! {
            scripted = vpc_accounts_script(&operator, &cloud, progress_rx, options.interval) => scripted,
            _ = stop.recv() => {
                let _ = events.send(Event::Shutdown).await;
                return Ok(());
            }
        };
        match &scripted {
            Ok(()) if options.exit_when_done => println!("\ndemo finished"),
            Ok(()) => println!("\ndemo finished; still serving http://{address}/metrics — Ctrl-C to stop"),
            Err(e) => println!("\ndemo script stopped: {e}"),
        }
        if !options.exit_when_done && scripted.is_ok() {
            let _ = stop.recv().await;
        }
        let _ = events.send(Event::Shutdown).await;
        scripted
    };
    let (served, scripted) = tokio::join!(daemon, driver);
    stop_emulator.cancel();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    served?;
    scripted
}
