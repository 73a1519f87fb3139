//! The daemon loop in process, against the emulator engine, with tokio's
//! clock paused: pass cadence without overlap, memory across passes, reload
//! (signal and file change, valid and invalid; the file deleted, not UTF-8,
//! a directory, replaced by a rename), and shutdown during a pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use classiclink_mirror::config::Config;
use classiclink_mirror::daemon::{Connector, Event, PassObserver, ReloadOutcome, Settings, run};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::ec2::{Ec2, GroupFilter, Operation};
use classiclink_mirror::emulator::{Emulator, EmulatorOptions, ErrorInjection, Faults, NewGroup, NewVpc, RunInstances};
use classiclink_mirror::metrics::Metrics;
use classiclink_mirror::model::{GroupId, OWNERSHIP_TAG, VpcId};
use classiclink_mirror::reconcile::PassReport;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::daemon::{InProcessDaemon, spawn_daemon};

struct EmulatorConnector(Emulator);

#[async_trait]
impl Connector for EmulatorConnector {
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
        Arc::new(Limited::new(self.0.clone(), &config.rate_limit))
    }
}

struct Recorder {
    order: Mutex<Vec<&'static str>>,
    starts: Mutex<Vec<Instant>>,
    passes: Mutex<Vec<(usize, usize, usize)>>, // (pairs, actions, failed)
    interrupted: Mutex<Vec<bool>>,
    outcomes: Mutex<Vec<usize>>, // actions with an outcome, per pass
    reloads: Mutex<Vec<ReloadOutcome>>,
    stopped: Mutex<bool>,
    /// Per pass: (shrink guard holding, lost state holding).
    holds: Mutex<Vec<(bool, bool)>>,
    state_file_errors: Mutex<Vec<&'static str>>,
    /// Fed with the reloads as the daemon's own instruments feed it.
    metrics: Arc<Metrics>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            order: Mutex::default(),
            starts: Mutex::default(),
            passes: Mutex::default(),
            interrupted: Mutex::default(),
            outcomes: Mutex::default(),
            reloads: Mutex::default(),
            stopped: Mutex::default(),
            holds: Mutex::default(),
            state_file_errors: Mutex::default(),
            metrics: Metrics::new(),
        }
    }
}

impl Recorder {
    fn reloads(&self) -> Vec<ReloadOutcome> {
        self.reloads.lock().unwrap().clone()
    }

    /// `config_last_reload_successful` as `/metrics` shows it.
    fn last_reload_successful(&self) -> String {
        let text = self.metrics.render();
        let line = text.lines().find(|l| l.starts_with("classiclink_mirror_config_last_reload_successful "));
        line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or("absent").to_owned()
    }

    /// `config_reloads_total{outcome="rejected"}` as `/metrics` shows it.
    fn rejected_total(&self) -> String {
        let text = self.metrics.render();
        let line =
            text.lines().find(|l| l.starts_with("classiclink_mirror_config_reloads_total{outcome=\"rejected\"} "));
        line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or("absent").to_owned()
    }
}

impl PassObserver for Recorder {
    fn pass_started(&self, _: &Config) {
        self.starts.lock().unwrap().push(Instant::now());
        self.order.lock().unwrap().push("started");
    }
    fn snapshot_observed(&self, _: &classiclink_mirror::model::Snapshot) {
        self.order.lock().unwrap().push("observed");
    }
    fn pass_finished(&self, pass: &PassReport, _: &Config, _: SystemTime) {
        self.order.lock().unwrap().push("finished");
        self.passes.lock().unwrap().push((pass.plan.pairs.len(), pass.plan.actions.len(), pass.failed()));
        self.interrupted.lock().unwrap().push(pass.interrupted);
        self.outcomes.lock().unwrap().push(pass.report.outcomes.len());
        self.holds.lock().unwrap().push((pass.plan.holds.shrink, pass.plan.holds.state_lost));
    }
    fn state_file_failed(&self, error: &classiclink_mirror::state::StateError) {
        self.state_file_errors.lock().unwrap().push(error.kind());
    }
    fn reloaded(&self, outcome: ReloadOutcome, _: &Config) {
        self.reloads.lock().unwrap().push(outcome);
        self.metrics.record_reload(outcome);
    }
    fn stopping(&self) {
        *self.stopped.lock().unwrap() = true;
    }
}

struct World {
    emu: Emulator,
    vpc: VpcId,
    web: GroupId,
    app: GroupId,
}

async fn world() -> World {
    let emu = Emulator::new(EmulatorOptions::default());
    let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
    let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
    emu.run_instances(&RunInstances::classic([web.clone()]).count(2)).await.unwrap();
    World { emu, vpc, web, app }
}

/// The daemon's state file goes beside the config, in the test's directory.
fn write_config(path: &Path, vpc: &VpcId, sources: &[&GroupId], extra: &str) {
    let state_dir = path.parent().unwrap().display();
    let mut text = format!(
        "[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"10s\"\nstate_dir = \"{state_dir}\"\n\
         [discovery]\ntag_key = \"\"\n{extra}"
    );
    for source in sources {
        text.push_str(&format!("[[mirror]]\nsource_group = \"{source}\"\nvpc = \"{vpc}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

async fn mirrored_sources(emu: &Emulator) -> Vec<GroupId> {
    let filter = GroupFilter { tag_keys: vec![OWNERSHIP_TAG.into()], ..GroupFilter::default() };
    let mut sources: Vec<GroupId> =
        emu.describe_security_groups(&filter).await.unwrap().iter().filter_map(|g| g.mirrored_from()).collect();
    sources.sort();
    sources
}

/// A daemon running in the background against `emu`.
type Running = InProcessDaemon<Recorder>;

fn spawn(settings: Settings, emu: &Emulator) -> Running {
    spawn_daemon(settings, EmulatorConnector(emu.clone()), Arc::new(Recorder::default()))
}

/// Lets the loop run for `d` of (paused) time.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn passes_start_every_interval_with_jitter_and_never_overlap() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web], "");
    // Each request takes 1 s: a pass is much shorter than the interval.
    w.emu.set_faults(Faults { latency: Duration::from_secs(1), ..Faults::none() });
    let settings = Settings::new(path, None);
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(65)).await;
    let recorder = daemon.stop().await;

    let starts = recorder.starts.lock().unwrap().clone();
    assert!(starts.len() >= 5, "{} passes in 65 s", starts.len());
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(9) && gap <= Duration::from_secs(11), "gap {gap:?}");
    }
    let passes = recorder.passes.lock().unwrap().clone();
    assert!(passes[0].1 > 0, "the first pass creates and links");
    assert!(passes[1..].iter().all(|p| p.1 == 0 && p.2 == 0), "later passes are converged: {passes:?}");
    assert!(*recorder.stopped.lock().unwrap());
    // Readiness hangs on the observation, which comes before the execution.
    let order = recorder.order.lock().unwrap().clone();
    assert_eq!(&order[..3], &["started", "observed", "finished"]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_pass_delays_the_next_instead_of_stacking() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web, &w.app], "");
    // ~12 requests of 3 s each, some in parallel: the first pass overruns 10 s.
    w.emu.set_faults(Faults { latency: Duration::from_secs(3), ..Faults::none() });
    let settings = Settings::new(path, None);
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(40)).await;
    let recorder = daemon.stop().await;
    let starts = recorder.starts.lock().unwrap().clone();
    let passes = recorder.passes.lock().unwrap().len();
    // Every pass but possibly the last finished before the next started.
    assert!(starts.len() <= passes + 1, "{} starts, {passes} finished", starts.len());
}

#[tokio::test(start_paused = true)]
async fn a_valid_reload_takes_effect_at_the_next_pass_and_an_invalid_one_is_rejected() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web], "");
    let mut settings = Settings::new(path.clone(), None);
    settings.watch_every = Duration::from_secs(3600); // this test reloads by signal only
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(5)).await;
    assert_eq!(mirrored_sources(&w.emu).await, vec![w.web.clone()]);

    // An invalid file: rejected, and web keeps being reconciled.
    std::fs::write(&path, "[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"soon\"\n").unwrap();
    daemon.send(Event::Reload).await;
    run_for(Duration::from_secs(12)).await;
    assert_eq!(daemon.observer().reloads.lock().unwrap().clone(), vec![ReloadOutcome::Rejected]);
    assert_eq!(daemon.observer().passes.lock().unwrap().last().unwrap().0, 1, "the old config still has one pair");

    // A valid file adding app: mirrored at the next pass.
    write_config(&path, &w.vpc, &[&w.web, &w.app], "");
    daemon.send(Event::Reload).await;
    run_for(Duration::from_secs(12)).await;
    assert_eq!(daemon.observer().reloads.lock().unwrap().last(), Some(&ReloadOutcome::Applied));
    let mut expected = vec![w.web.clone(), w.app.clone()];
    expected.sort();
    assert_eq!(mirrored_sources(&w.emu).await, expected);

    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_file_is_noticed_without_a_signal() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web], "");
    let settings = Settings::new(path.clone(), None);
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(2)).await;
    write_config(&path, &w.vpc, &[&w.web, &w.app], "");
    run_for(Duration::from_secs(25)).await;
    assert_eq!(
        daemon.observer().reloads.lock().unwrap().clone(),
        vec![ReloadOutcome::Applied],
        "reloaded exactly once"
    );
    assert_eq!(mirrored_sources(&w.emu).await.len(), 2);
    daemon.stop().await;
}

/// A daemon on a valid one-mapping file, watched every 5 s, after its first
/// pass; the file's path and its text.
async fn watched_daemon(w: &World, dir: &tempfile::TempDir) -> (Running, std::path::PathBuf, String) {
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web], "");
    let text = std::fs::read_to_string(&path).unwrap();
    let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
    run_for(Duration::from_secs(2)).await;
    assert_eq!(mirrored_sources(&w.emu).await, vec![w.web.clone()]);
    (daemon, path, text)
}

/// The reload outcomes so far, and both reload metrics, after `d` more.
async fn after(daemon: &Running, d: Duration) -> (Vec<ReloadOutcome>, String, String) {
    run_for(d).await;
    let r = daemon.observer();
    (r.reloads(), r.last_reload_successful(), r.rejected_total())
}

#[tokio::test(start_paused = true)]
async fn a_deleted_config_file_is_rejected_once_and_reloaded_when_restored() {
    // The watcher used to be silent about a deleted file, and after it was
    // restored `config_last_reload_successful` stayed 0 until a SIGHUP.
    use ReloadOutcome::{Applied, Rejected};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, path, text) = watched_daemon(&w, &dir).await;
    std::fs::remove_file(&path).unwrap();
    // Six checks of the watcher and two passes: one attempt, counted once.
    assert_eq!(after(&daemon, Duration::from_secs(30)).await, (vec![Rejected], "0".into(), "1".into()));
    // A SIGHUP meanwhile is an attempt of its own; the watcher does not add one.
    daemon.send(Event::Reload).await;
    assert_eq!(after(&daemon, Duration::from_secs(12)).await, (vec![Rejected; 2], "0".into(), "2".into()));
    // The same text as before comes back: reloaded without a signal.
    std::fs::write(&path, &text).unwrap();
    assert_eq!(
        after(&daemon, Duration::from_secs(6)).await,
        (vec![Rejected, Rejected, Applied], "1".into(), "2".into())
    );
    assert_eq!(after(&daemon, Duration::from_secs(20)).await.0.len(), 3, "nothing more to reload");
    // The old configuration ran all along.
    assert!(daemon.observer().passes.lock().unwrap().iter().all(|p| p.0 == 1));
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_file_made_non_utf8_is_rejected_once_and_reloaded_when_fixed() {
    use ReloadOutcome::{Applied, Rejected};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, path, text) = watched_daemon(&w, &dir).await;
    let mut bytes = text.clone().into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(after(&daemon, Duration::from_secs(30)).await, (vec![Rejected], "0".into(), "1".into()));
    // Another non-UTF-8 content is another change, and another attempt.
    bytes.extend_from_slice(b"\xff\n");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(after(&daemon, Duration::from_secs(6)).await, (vec![Rejected; 2], "0".into(), "2".into()));
    // Fixed, and with a second mapping: applied without a signal.
    write_config(&path, &w.vpc, &[&w.web, &w.app], "");
    assert_eq!(
        after(&daemon, Duration::from_secs(6)).await,
        (vec![Rejected, Rejected, Applied], "1".into(), "2".into())
    );
    run_for(Duration::from_secs(10)).await;
    assert_eq!(mirrored_sources(&w.emu).await.len(), 2);
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_file_replaced_by_a_directory_is_rejected_once_and_reloaded_when_a_file_again() {
    use ReloadOutcome::{Applied, Rejected};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, path, text) = watched_daemon(&w, &dir).await;
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(after(&daemon, Duration::from_secs(30)).await, (vec![Rejected], "0".into(), "1".into()));
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, &text).unwrap();
    assert_eq!(after(&daemon, Duration::from_secs(6)).await, (vec![Rejected, Applied], "1".into(), "1".into()));
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_file_replaced_atomically_by_a_rename_is_reloaded() {
    use ReloadOutcome::{Applied, Rejected};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, path, _) = watched_daemon(&w, &dir).await;
    let replace = |text: &str| {
        let temporary = dir.path().join(".mirror.toml.tmp");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
    };
    replace("[aws]\nregion = \"us-east-1\"\n[daemon]\ninterval = \"soon\"\n");
    assert_eq!(after(&daemon, Duration::from_secs(12)).await, (vec![Rejected], "0".into(), "1".into()));
    write_config(&dir.path().join("next.toml"), &w.vpc, &[&w.web, &w.app], "");
    replace(&std::fs::read_to_string(dir.path().join("next.toml")).unwrap());
    assert_eq!(after(&daemon, Duration::from_secs(6)).await, (vec![Rejected, Applied], "1".into(), "1".into()));
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reloading_mutating_per_second_1e12_never_takes_the_daemon_down() {
    // `mutating_per_second = 1e12` validated, and the reload then panicked
    // the running daemon building the limiter (its period rounded to 0), so
    // systemd crash-looped it. Now it is refused; and the most extreme file
    // that does validate is applied and runs.
    use ReloadOutcome::{Applied, Rejected};
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, path, _) = watched_daemon(&w, &dir).await;
    write_config(&path, &w.vpc, &[&w.web], "[rate_limit]\nmutating_per_second = 1e12\ndescribe_per_second = 1e10\n");
    assert_eq!(after(&daemon, Duration::from_secs(12)).await.0, vec![Rejected]);
    let extremes = "[daemon]\ninterval = \"1s\"\n\
        [safety]\nmax_revokes_per_cycle = 1000000\nmax_deletes_per_cycle = 1000000\nmax_unlinks_per_cycle = 0\n\
        orphan_grace = \"1year\"\nmax_source_shrink = 1e-300\n\
        [rate_limit]\nmutating_per_second = 100000\nmutating_burst = 1000000\ndescribe_per_second = 100000\n\
        describe_burst = 1000000\nmax_in_flight = 1000\nmax_attempts = 10\nretry_base_delay = \"1m\"\n\
        retry_throttled_base_delay = \"1ms\"\nretry_max_delay = \"5m\"\nretry_quota = 1000000\n\
        retry_cost = 1\nretry_timeout_cost = 1000000\n[limits]\nrules_per_group = 1000\n";
    // `write_config` sets `daemon.interval` itself: write this one whole.
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\n[discovery]\ntag_key = \"\"\n{extremes}\
         [[mirror]]\nsource_group = \"{}\"\nvpc = \"{}\"\n[[mirror]]\nsource_group = \"{}\"\nvpc = \"{}\"\n",
        w.web, w.vpc, w.app, w.vpc
    );
    std::fs::write(&path, text).unwrap();
    let passes_before = daemon.observer().passes.lock().unwrap().len();
    assert_eq!(after(&daemon, Duration::from_secs(20)).await.0, vec![Rejected, Applied]);
    assert!(!daemon.is_finished(), "the daemon is still running");
    assert!(daemon.observer().passes.lock().unwrap().len() > passes_before + 2, "passes every second now");
    assert_eq!(mirrored_sources(&w.emu).await.len(), 2);
    // The minimum rates validate too: a describe every 1,000 s is slow, not fatal.
    write_config(&path, &w.vpc, &[&w.web], "[rate_limit]\nmutating_per_second = 0.001\ndescribe_per_second = 0.001\n");
    assert_eq!(after(&daemon, Duration::from_secs(12)).await.0, vec![Rejected, Applied, Applied]);
    assert!(!daemon.is_finished(), "the daemon is still running");
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn memory_survives_between_passes_so_an_orphan_is_deleted_after_its_grace() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web, &w.app], "[safety]\norphan_grace = \"30s\"\n");
    let mut settings = Settings::new(path.clone(), None);
    // The planner's wall clock, driven by tokio's paused clock.
    let (base, epoch) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000), Instant::now());
    settings.wall_clock = Arc::new(move || base + epoch.elapsed());
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(5)).await;
    write_config(&path, &w.vpc, &[&w.web], "[safety]\norphan_grace = \"30s\"\n");
    daemon.send(Event::Reload).await;
    run_for(Duration::from_secs(25)).await;
    assert_eq!(mirrored_sources(&w.emu).await.len(), 2, "the orphan waits for its grace");
    run_for(Duration::from_secs(30)).await;
    assert_eq!(mirrored_sources(&w.emu).await, vec![w.web.clone()], "deleted once the grace has passed");
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_shrink_guards_baseline_and_its_hold() {
    // Regression (issue 10): the baseline lived in the process only, so a
    // restart took a shrunk estate as the new normal and lifted the hold.
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web, &w.app], "");
    let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
    run_for(Duration::from_secs(5)).await;
    let first = daemon.stop().await;
    assert_eq!(first.holds.lock().unwrap().last(), Some(&(false, false)));
    assert!(dir.path().join("state.json").exists(), "the state file is written after a pass");
    // Both mappings go while the daemon is down: a drop the guard holds, on
    // this start and on the next.
    write_config(&path, &w.vpc, &[], "");
    for start in ["the first start after the drop", "another restart"] {
        let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
        run_for(Duration::from_secs(5)).await;
        let recorder = daemon.stop().await;
        assert_eq!(recorder.holds.lock().unwrap().first(), Some(&(true, false)), "{start}");
        assert!(recorder.state_file_errors.lock().unwrap().is_empty(), "{start}");
    }
    assert_eq!(mirrored_sources(&w.emu).await.len(), 2, "nothing was deleted");
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_state_file_is_a_conservative_start_not_a_crash() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    write_config(&path, &w.vpc, &[&w.web], "");
    std::fs::write(dir.path().join("state.json"), "{\"version\": 1, \"baseline\": {\"managed_").unwrap();
    let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
    run_for(Duration::from_secs(5)).await;
    let recorder = daemon.stop().await;
    assert_eq!(*recorder.state_file_errors.lock().unwrap(), ["corrupt"]);
    assert_eq!(recorder.holds.lock().unwrap().first(), Some(&(false, true)), "destructive actions held");
    assert_eq!(mirrored_sources(&w.emu).await, vec![w.web.clone()], "additions go ahead");
    // The file was rewritten with the hold in it: a restart keeps holding.
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(text.contains("\"state_lost_at\": \""), "{text}");
    let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
    run_for(Duration::from_secs(5)).await;
    let recorder = daemon.stop().await;
    assert!(recorder.state_file_errors.lock().unwrap().is_empty());
    assert_eq!(recorder.holds.lock().unwrap().first(), Some(&(false, true)), "still within one orphan_grace");
}

#[tokio::test(start_paused = true)]
async fn a_state_directory_that_cannot_be_written_is_counted_and_the_daemon_keeps_running() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    let missing = dir.path().join("not-there");
    write_config(&path, &w.vpc, &[&w.web], "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("state_dir = \"{}\"", dir.path().display()),
        &format!("state_dir = \"{}\"", missing.display()),
    );
    std::fs::write(&path, text).unwrap();
    let daemon = spawn(Settings::new(path.clone(), None), &w.emu);
    run_for(Duration::from_secs(25)).await;
    let recorder = daemon.stop().await;
    let passes = recorder.passes.lock().unwrap().len();
    assert!(passes >= 2, "{passes} passes");
    assert_eq!(*recorder.state_file_errors.lock().unwrap(), vec!["write"; passes], "one per pass");
    assert_eq!(mirrored_sources(&w.emu).await, vec![w.web.clone()]);
    assert!(!missing.exists(), "the daemon does not create its state directory");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_throttled_pass_stops_new_actions_and_returns_within_the_grace() {
    let w = world().await;
    // Twenty more groups to mirror: a long pass of slow writes.
    let mut sources = vec![w.web.clone()];
    for n in 0..20 {
        sources.push(w.emu.create_group(&NewGroup::classic(format!("g{n}"), "tier")).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    let refs: Vec<&GroupId> = sources.iter().collect();
    write_config(&path, &w.vpc, &refs, "[rate_limit]\nmutating_per_second = 1.0\nmutating_burst = 1\n");
    w.emu.set_faults(Faults { latency: Duration::from_millis(500), ..Faults::none() });
    let settings = Settings::new(path, None);
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(6)).await;
    let asked = Instant::now();
    let recorder = daemon.stop().await;
    assert!(*recorder.stopped.lock().unwrap());
    assert!(asked.elapsed() < Duration::from_secs(20), "stopped after {:?}", asked.elapsed());
    let mirrored = mirrored_sources(&w.emu).await.len();
    assert!(mirrored > 0 && mirrored < sources.len(), "stopped part way: {mirrored} of {}", sources.len());
    // No half-made mirror: every group in the VPC besides default is tagged.
    let all = w
        .emu
        .describe_security_groups(&GroupFilter { vpc_ids: vec![w.vpc.clone()], ..GroupFilter::default() })
        .await
        .unwrap();
    assert!(all.iter().all(|g| g.name == "default" || g.mirrored_from().is_some()));
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_an_observation_of_a_failing_ec2_stops_it_at_once_with_no_unfinished_action() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    // Every security-group describe fails, and is retried slowly: one
    // observation takes minutes of back-off sleeps.
    write_config(
        &path,
        &w.vpc,
        &[&w.web],
        "[rate_limit]\nmax_attempts = 10\nretry_base_delay = \"20s\"\nretry_max_delay = \"1m\"\n",
    );
    w.emu.set_faults(Faults {
        errors: ErrorInjection {
            per_operation: BTreeMap::from([(Operation::DescribeSecurityGroups, 1.0)]),
            ..ErrorInjection::default()
        },
        ..Faults::none()
    });
    let writes = w.emu.counters().mutating_calls();
    let settings = Settings::new(path, None);
    let daemon = spawn(settings, &w.emu);
    run_for(Duration::from_secs(5)).await;
    assert_eq!(daemon.observer().order.lock().unwrap().clone(), vec!["started"], "observing, backing off");
    let asked = Instant::now();
    let recorder = daemon.stop().await;
    assert!(asked.elapsed() < Duration::from_secs(1), "stopped after {:?}, not after the grace", asked.elapsed());
    assert_eq!(recorder.order.lock().unwrap().clone(), vec!["started", "finished"]);
    assert_eq!(recorder.interrupted.lock().unwrap().clone(), vec![true]);
    assert_eq!(recorder.outcomes.lock().unwrap().clone(), vec![0], "no action unfinished: none was planned");
    assert_eq!(w.emu.counters().mutating_calls(), writes, "no write sent");
}

#[tokio::test]
async fn an_invalid_file_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.toml");
    std::fs::write(&path, "[daemon]\ninterval = 5\n").unwrap();
    let emu = Emulator::new(EmulatorOptions::default());
    let (_tx, rx) = mpsc::channel(1);
    let settings = Settings::new(path, None);
    let error = run(&settings, &EmulatorConnector(emu), &Recorder::default(), rx).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("mirror.toml") && text.contains("daemon.interval"), "{text}");
}
