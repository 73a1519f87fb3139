//! One target's reconcile loop (docs/architecture.md, "Many targets"): the
//! passes of one target account — its own EC2 port (token buckets, retry
//! quota), its own planner `Memory` and state file, the mirrors that target
//! it — on its own timer. The supervisor (`daemon.rs`) runs one per target
//! and hands each its part of the file on a reload; a target whose role
//! cannot be assumed or whose region is down fails its own passes only.
//!
//! - Full passes never overlap: the next one starts `interval` (±10% jitter)
//!   after the previous one *started*, or at once if that one overran. With
//!   events (the primary target only), targeted passes run between them,
//!   and also *beside* a full pass while it only observes; executions never
//!   overlap (docs/semantics.md, "Events and targeted passes").
//! - A [`Command::Shutdown`] stops new passes and actions; in-flight actions
//!   get `drain_grace` to finish.

use super::*;

/// What the supervisor tells a target's loop.
pub(super) enum Command {
    /// The target's part of a reloaded file ([`Config::for_target`]): in
    /// force from its next pass.
    Config(Box<Config>),
    /// Stop: no new pass or action; the in-flight ones get the drain grace.
    Shutdown,
}

/// One target's loop state between passes.
struct Loop<'a> {
    connector: &'a dyn Connector,
    observer: &'a dyn PassObserver,
    /// The target's part of the file.
    config: Config,
    ec2: Arc<dyn Ec2>,
    memory: Memory,
    /// Where `memory` is kept across restarts.
    state_file: StateFile,
    /// The last save failed (logged once until one succeeds again).
    state_file_failing: bool,
    /// A reload changed `[events]`: the event reader restarts before the next pass.
    events_changed: bool,
}

/// The event reader task of the configuration in force, stopped when
/// replaced (a reload that changed `[events]`) or dropped.
#[derive(Default)]
struct EventReader {
    cancel: Option<CancellationToken>,
    /// The hub has been shown to the observer (metrics registered once).
    announced: bool,
}

impl EventReader {
    /// Stops the running reader, if any, and starts one for `config`'s
    /// `[events]`, if any. Pending hints are dropped (the next full pass
    /// answers them). True when events are on.
    async fn start(
        &mut self,
        connector: &dyn Connector,
        config: &Config,
        hub: &EventHub,
        observer: &dyn PassObserver,
        settings: &Settings,
    ) -> bool {
        let restart = self.cancel.is_some() || self.announced;
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
        hub.full_pass_started();
        hub.source_restarted();
        let Some(source) = connector.event_source(config).await else {
            if restart {
                info!("events off: periodic passes only");
                observer.events_disabled();
            }
            return false;
        };
        if self.announced {
            observer.events_reenabled(hub);
        } else {
            observer.events_enabled(hub);
            self.announced = true;
        }
        let cancel = CancellationToken::new();
        tokio::spawn(read_events(source, hub.clone(), Arc::clone(&settings.wall_clock), cancel.clone()));
        self.cancel = Some(cancel);
        true
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        if let Some(cancel) = &self.cancel {
            cancel.cancel();
        }
    }
}

impl Loop<'_> {
    /// Takes the target's part of a reloaded file: a new client when its
    /// accounts, `[aws]` or `[rate_limit]` changed, the event reader
    /// restarted when `[events]` did.
    async fn apply(&mut self, config: Config) {
        // Accounts: a client per account the mirrors reach, and the
        // sources each source account's client describes.
        let accounts_changed = config.accounts != self.config.accounts
            || ((config.uses_accounts() || self.config.uses_accounts()) && config.mirrors != self.config.mirrors);
        if config.aws != self.config.aws || config.rate_limit != self.config.rate_limit || accounts_changed {
            self.ec2 = self.connector.connect(&config).await;
        }
        if config.events != self.config.events {
            info!(queue_url = ?config.events.queue_url, "[events] changed: the event reader restarts");
            self.events_changed = true;
        }
        self.config = config;
    }

    /// Writes the memory back to the state file if the pass changed it.
    fn save_state(&mut self) {
        match self.state_file.save(&self.memory) {
            Ok(_) if self.state_file_failing => {
                self.state_file_failing = false;
                info!(path = %self.state_file.path().display(), "the state file is written again");
            }
            Ok(_) => {}
            Err(error) => {
                if self.state_file_failing {
                    debug!(error = %error, "the state file still cannot be written");
                } else {
                    warn!(error = %error, kind = error.kind(),
                        "the state file cannot be written: a restart would forget the shrink guard's baseline \
                         and the deletion backoffs; the daemon keeps running");
                }
                self.state_file_failing = true;
                self.observer.state_file_failed(&error);
            }
        }
    }
}

/// The memory to start from: the state file's, nothing on a first start, or
/// a conservative start when the file cannot be used.
fn load_state(state_file: &mut StateFile, observer: &dyn PassObserver, now: SystemTime) -> Memory {
    let path = state_file.path();
    match state_file.load() {
        Ok(Some(memory)) => {
            info!(path = %path.display(), "state file loaded");
            memory
        }
        Ok(None) => {
            info!(path = %path.display(), "no state file: a first start");
            Memory::default()
        }
        Err(error) => {
            warn!(error = %error, kind = error.kind(),
                "the state file cannot be used: starting conservatively, destructive actions held for one \
                 orphan_grace while the shrink guard takes a new baseline");
            observer.state_file_failed(&error);
            conservative_start(now)
        }
    }
}

/// One target's loop: connects, loads its state file, and runs passes
/// until [`Command::Shutdown`] (or the supervisor gone). `config` is the
/// target's part of the file; `state_file` its own.
pub(super) async fn run_target(
    settings: &Settings,
    config: Config,
    state_file: StateFile,
    connector: &dyn Connector,
    observer: &dyn PassObserver,
    mut events: mpsc::UnboundedReceiver<Command>,
) {
    let ec2 = connector.connect(&config).await;
    // Events (docs/architecture.md, "Events"): a reader task feeds the hub;
    // the loop runs a targeted pass when its debounce is due.
    let hub = EventHub::new(Expected { account: None, region: config.aws.region.clone() });
    let mut reader = EventReader::default();
    let mut events_on = reader.start(connector, &config, &hub, observer, settings).await;
    let mut state_file = state_file;
    let memory = load_state(&mut state_file, observer, (settings.wall_clock)());
    let mut state =
        Loop { connector, observer, config, ec2, memory, state_file, state_file_failing: false, events_changed: false };
    info!(mappings = state.config.mirrors.len(), events = events_on,
        interval = %humantime::format_duration(state.config.daemon.interval), "target loop started");
    // The last complete snapshot, which a targeted pass merges into.
    let mut base: Option<Arc<crate::model::Snapshot>> = None;

    let cancel = CancellationToken::new();
    let mut next_start = Instant::now();
    // A reloaded part of the file, in force from the next pass.
    let mut reload_pending: Option<Box<Config>> = None;

    'daemon: loop {
        // Wait for the next pass, reloading on the way when asked; a
        // targeted pass when events are due before it.
        let mut targeted = None;
        loop {
            if let Some(config) = reload_pending.take() {
                state.apply(*config).await;
            }
            if std::mem::take(&mut state.events_changed) {
                events_on = reader.start(connector, &state.config, &hub, observer, settings).await;
                events_restarted(events_on, &mut base, &mut next_start);
            }
            let due = if events_on && base.is_some() { hub.due_at() } else { None };
            tokio::select! {
                () = tokio::time::sleep_until(next_start) => break,
                () = sleep_until_some(due) => {
                    let batch = hub.take();
                    if !batch.dirty.everything {
                        targeted = Some(batch);
                    }
                    break;
                }
                () = hub.changed(), if events_on => {}
                event = events.recv() => match event {
                    Some(Command::Config(config)) => reload_pending = Some(config),
                    Some(Command::Shutdown) | None => break 'daemon,
                },
            }
        }

        let started = Instant::now();
        let started_at = (settings.wall_clock)();
        let config = state.config.clone();
        let ec2 = Arc::clone(&state.ec2);
        // A targeted pass merges into the last complete snapshot; without
        // one (or with a hint that ids cannot narrow down) the pass is full.
        let (main_batch, main_base) = match (targeted, base.clone()) {
            (Some(batch), Some(base)) => (Some(batch), Some(base)),
            _ => (None, None),
        };
        let full = main_batch.is_none();
        if full {
            hub.full_pass_started();
        }
        observer.pass_started(&config);
        let mut stopping = false;
        let mut drain_deadline: Option<Instant> = None;

        // 1. Observe. While a *full* observation runs (seconds on a large
        //    estate), events do not wait for it: targeted passes run to
        //    completion beside it, one at a time, and what they looked at
        //    and wrote is described again before the full pass plans
        //    (docs/semantics.md, "Targeted passes beside a full pass").
        // The full observation runs as a task of its own: decoding its
        // pages keeps a thread busy for seconds on a large estate, and the
        // targeted passes beside it must not wait for a page to be decoded.
        let (failures, mut failed) = mpsc::unbounded_channel();
        let full_observation = full.then(|| {
            observer.phase(Phase::Observing);
            let (ec2, config, cancel) = (Arc::clone(&ec2), config.clone(), cancel.clone());
            tokio::spawn(async move {
                observe_cancellable(ec2.as_ref(), &config, &cancel, &ForwardFailures(failures)).await
            })
        });
        let observe = async {
            let progress = Observed(observer);
            match (&main_batch, &main_base, full_observation) {
                (Some(batch), Some(base), _) => {
                    progress.phase(Phase::Observing);
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => None,
                        observation = observe_targeted(ec2.as_ref(), &config, base, &batch.dirty) => Some(observation),
                    }
                }
                (_, _, Some(task)) => task.await.unwrap_or_else(|error| {
                    error!(error = %error, "the observation task failed: this pass plans nothing");
                    None
                }),
                _ => None,
            }
        };
        tokio::pin!(observe);
        let mut observed: Option<Option<crate::observe::Observation>> = None;
        let mut beside: Option<Pin<Box<dyn Future<Output = Beside> + Send + '_>>> = None;
        // What the targeted passes beside this observation looked at and wrote.
        let mut refresh = Dirty::default();
        // A hint that ids cannot narrow down arrived during the observation.
        let mut full_again = false;
        while observed.is_none() || beside.is_some() {
            // Beside a full pass only while the batch is small: after a pass
            // that wrote much (a first start), describing all it wrote costs
            // about what the full pass does, which answers it anyway.
            let small = hub.stale_len() <= BESIDE_MAX_STALE;
            let due = if full && observed.is_none() && beside.is_none() && !stopping && base.is_some() && small {
                hub.due_at()
            } else {
                None
            };
            tokio::select! {
                result = &mut observe, if observed.is_none() => {
                    while let Ok(error) = failed.try_recv() {
                        observer.describe_failed(&error);
                    }
                    observed = Some(result);
                }
                Some(error) = failed.recv(), if observed.is_none() => observer.describe_failed(&error),
                done = async {
                    match beside.as_mut() {
                        Some(pass) => pass.await,
                        None => std::future::pending().await,
                    }
                }, if beside.is_some() => {
                    beside = None;
                    refresh.extend(done.batch.dirty.clone());
                    refresh.extend(crate::events::dirty::touched(&done.report.plan));
                    finish_pass(&mut state, &hub, &mut base, events_on, done.report, done.memory,
                        Some(&done.batch), done.started_at);
                    if observed.is_none() {
                        // `/status` shows the full pass under way again.
                        observer.pass_started(&config);
                        observer.phase(Phase::Observing);
                    }
                }
                () = sleep_until_some(due) => {
                    let batch = hub.take();
                    if batch.dirty.everything {
                        full_again = true;
                    } else if let Some(base) = base.clone() {
                        let memory = std::mem::take(&mut state.memory);
                        let now = (settings.wall_clock)();
                        beside = Some(Box::pin(targeted_pass(
                            Arc::clone(&ec2), config.clone(), base, batch, memory, now, cancel.clone(), observer,
                        )));
                    }
                }
                () = hub.changed(), if events_on && due.is_none() && full && observed.is_none() => {}
                event = events.recv(), if !stopping => on_event(
                    event, settings.drain_grace, &cancel, &mut reload_pending, &mut stopping, &mut drain_deadline,
                ),
                () = sleep_until_some(drain_deadline) => {
                    warn!("in-flight actions did not finish within the drain grace; stopping anyway");
                    break 'daemon;
                }
            }
        }

        // 2. Plan with the whole picture and execute, strictly after every
        //    targeted pass beside the observation has finished.
        // A random starting point in the plan: two daemons on one estate
        // then work on different actions instead of racing for the same ones.
        let options = ExecuteOptions { rotation: rand::random_range(0..usize::MAX), ..execute_options(&config) };
        let mut memory = std::mem::take(&mut state.memory);
        if let Some(batch) = &main_batch {
            memory.event_principals.clone_from(&batch.principals);
        }
        let observed = observed.flatten();
        let pass = async {
            let progress = Observed(observer);
            let Some(mut observation) = observed else {
                return (crate::reconcile::interrupted(started, &memory), memory);
            };
            if refresh.everything {
                // A targeted pass enabled ClassicLink on a VPC: look at everything again.
                match observe_cancellable(ec2.as_ref(), &config, &cancel, &progress).await {
                    Some(again) => observation = again,
                    None => return (crate::reconcile::interrupted(started, &memory), memory),
                }
            } else if !refresh.is_empty() {
                let refreshed = observe_targeted(ec2.as_ref(), &config, &observation.snapshot, &refresh).await;
                let mut errors = observation.errors;
                errors.extend(refreshed.errors);
                observation = crate::observe::Observation { snapshot: refreshed.snapshot, errors };
            }
            progress.observed(&observation.snapshot);
            let report = plan_and_execute(
                ec2.as_ref(),
                &config,
                observation,
                started,
                &mut memory,
                started_at,
                &options,
                &cancel,
                &progress,
            )
            .await;
            (report, memory)
        };
        tokio::pin!(pass);
        let finished = loop {
            tokio::select! {
                finished = &mut pass => break Some(finished),
                event = events.recv(), if !stopping => on_event(
                    event, settings.drain_grace, &cancel, &mut reload_pending, &mut stopping, &mut drain_deadline,
                ),
                () = sleep_until_some(drain_deadline) => {
                    warn!("in-flight actions did not finish within the drain grace; stopping anyway");
                    break None;
                }
            }
        };
        let Some((report, memory)) = finished else { break 'daemon };
        finish_pass(&mut state, &hub, &mut base, events_on, report, memory, main_batch.as_ref(), started_at);
        if stopping {
            break 'daemon;
        }
        if full {
            next_start = if full_again { Instant::now() } else { started + jittered(state.config.daemon.interval) };
        }
    }
    info!("target loop stopped");
}

/// After the event reader restarted: with events off, the last snapshot is
/// not kept (it serves targeted passes only); with events on and none kept
/// (they were off), a full pass starts now to take one — targeted passes
/// merge into it — and to answer what no event reported meanwhile.
fn events_restarted(events_on: bool, base: &mut Option<Arc<Snapshot>>, next_start: &mut Instant) {
    if !events_on {
        *base = None;
    } else if base.is_none() {
        *next_start = Instant::now();
    }
}

/// The supervisor's command, in either wait of a pass: a reloaded part is
/// kept for the next pass; a shutdown (or the supervisor gone) stops new
/// actions and starts the drain grace.
fn on_event(
    event: Option<Command>,
    drain_grace: Duration,
    cancel: &CancellationToken,
    reload_pending: &mut Option<Box<Config>>,
    stopping: &mut bool,
    drain_deadline: &mut Option<Instant>,
) {
    match event {
        Some(Command::Config(config)) => *reload_pending = Some(config),
        Some(Command::Shutdown) | None => {
            info!(grace = %humantime::format_duration(drain_grace),
                "shutting down: no new actions; waiting for the ones in flight");
            *stopping = true;
            *drain_deadline = Some(Instant::now() + drain_grace);
            cancel.cancel();
        }
    }
}

/// Sleeps until `due`, or forever when there is none.
async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The most stale ids (the last passes' writes) a targeted pass beside a
/// full pass describes: 5 describes of each kind at 200 ids a filter.
const BESIDE_MAX_STALE: usize = 1_000;

/// Hands a spawned observation's failed describes to the loop, which tells
/// the [`PassObserver`] (`/status` shows them while the pass runs).
struct ForwardFailures(mpsc::UnboundedSender<ObserveError>);

impl Progress for ForwardFailures {
    fn describe_failed(&self, error: &ObserveError) {
        let _ = self.0.send(error.clone());
    }
}

/// A targeted pass that ran beside a full pass's observation.
struct Beside {
    report: PassReport,
    memory: Memory,
    batch: Batch,
    started_at: SystemTime,
}

/// One targeted pass, owning what it needs so that it can run beside a full
/// pass's observation: describe what `batch` names, merge it into `base`,
/// plan with the whole picture and execute.
#[allow(clippy::too_many_arguments)] // the pass's inputs, each needed
async fn targeted_pass(
    ec2: Arc<dyn Ec2>,
    config: Config,
    base: Arc<Snapshot>,
    batch: Batch,
    mut memory: Memory,
    started_at: SystemTime,
    cancel: CancellationToken,
    observer: &dyn PassObserver,
) -> Beside {
    let started = Instant::now();
    memory.event_principals.clone_from(&batch.principals);
    observer.pass_started(&config);
    let progress = Observed(observer);
    progress.phase(Phase::Observing);
    let observation = observe_targeted(ec2.as_ref(), &config, &base, &batch.dirty).await;
    progress.observed(&observation.snapshot);
    let options = ExecuteOptions { rotation: rand::random_range(0..usize::MAX), ..execute_options(&config) };
    let report = plan_and_execute(
        ec2.as_ref(),
        &config,
        observation,
        started,
        &mut memory,
        started_at,
        &options,
        &cancel,
        &progress,
    )
    .await;
    Beside { report, memory, batch, started_at }
}

/// After any pass: keeps its memory (and saves it), reports it, and with
/// events on hands the hub what the pass wrote and keeps its snapshot, when
/// complete, as the base of the next targeted pass. `batch` is a targeted
/// pass's.
#[allow(clippy::too_many_arguments)] // the loop's state a pass ends into
fn finish_pass(
    state: &mut Loop<'_>,
    hub: &EventHub,
    base: &mut Option<Arc<Snapshot>>,
    events_on: bool,
    report: PassReport,
    memory: Memory,
    batch: Option<&Batch>,
    started_at: SystemTime,
) {
    state.memory = memory;
    state.save_state();
    state.observer.pass_finished(&report, &state.config, started_at);
    if !events_on {
        return;
    }
    state.observer.events_pass_finished(batch.map(|b| b.event_times.as_slice()), started_at);
    if let Some(batch) = batch {
        info!(
            groups = batch.dirty.groups.len(),
            instances = batch.dirty.instances.len(),
            actions = report.plan.actions.len(),
            "targeted pass on events finished"
        );
    }
    // This pass's writes are stale in its snapshot: the next targeted pass
    // describes them again.
    let touched = crate::events::dirty::touched(&report.plan);
    if batch.is_some() {
        hub.pass_wrote(touched);
    } else if report.snapshot.is_complete() {
        hub.full_pass_wrote(touched);
    } else {
        // An incomplete snapshot is not kept: the base stays the older one.
        hub.pass_wrote(touched);
    }
    if report.snapshot.is_complete() {
        if let Some(account) = report.snapshot.source_groups.values().map(|g| g.owner_id.as_str()).next() {
            hub.expect_account(account);
        }
        // Kept (moved, not copied) for the next targeted pass to merge into.
        *base = Some(Arc::new(report.snapshot));
    } else if let Some(batch) = batch {
        // Look again with the next batch (or the next full pass).
        hub.pass_wrote(batch.dirty.clone());
    }
}

// What `run` attaches to the loop (metrics, `/status`, health, systemd) and
