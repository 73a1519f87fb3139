//! The daemon's instruments: metrics, `/status`, health and systemd
//! notification as one [`PassObserver`], the watchdog, and `serve`, which
//! runs the loop with them and the HTTP listener beside it.

use super::*;

/// Metrics, `/status`, health and systemd notification as one
/// [`PassObserver`]: what `run` attaches to the loop.
pub struct Instruments {
    state: http::State,
    notified_ready: AtomicBool,
    /// The event path's hub, when events are on.
    events: parking_lot::Mutex<Option<EventHub>>,
}

impl Instruments {
    /// Instruments reporting into `state`.
    #[must_use]
    pub fn new(state: http::State) -> Self {
        Self { state, notified_ready: AtomicBool::new(false), events: parking_lot::Mutex::new(None) }
    }

    /// Alive for the watchdog, as for `/healthz`: a cycle started recently,
    /// or a pass is under way and still making EC2 requests (a cold start
    /// may legitimately take many intervals; a wedged one makes none).
    fn alive(&self) -> bool {
        self.state.liveness().alive
    }

    /// Tells systemd `READY=1` the first time the daemon is ready.
    fn notify_ready(&self) {
        if self.state.is_ready() && !self.notified_ready.swap(true, Ordering::SeqCst) {
            info!("ready: the first complete snapshot, or with several targets every target's first pass");
            notify(&[sd_notify::NotifyState::Ready]);
        }
    }
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

impl PassObserver for Instruments {
    fn pass_started(&self, _config: &Config) {
        self.state.cycle_started();
    }

    fn phase(&self, phase: Phase) {
        self.state.pass_phase(phase);
    }

    fn describe_failed(&self, error: &ObserveError) {
        self.state.describe_failed(error);
    }

    fn planned(&self, actions: usize) {
        self.state.pass_planned(actions);
    }

    fn action_finished(&self, result: &ActionResult) {
        self.state.action_finished(result);
    }

    fn snapshot_observed(&self, snapshot: &crate::model::Snapshot) {
        self.state.snapshot_observed(snapshot.is_complete());
        self.notify_ready();
    }

    fn pass_finished(&self, pass: &PassReport, _config: &Config, started_at: SystemTime) {
        self.state.record_pass(pass, started_at);
    }

    fn reloaded(&self, outcome: ReloadOutcome, config: &Config) {
        self.state.metrics().record_reload(outcome);
        if outcome == ReloadOutcome::Applied {
            self.state.apply_config(config);
            self.state.metrics().retain_retry_quotas(&config.client_accounts());
        }
    }

    fn state_file_failed(&self, error: &StateError) {
        self.state.metrics().record_state_file_error(error.kind());
    }

    fn stopping(&self) {
        notify(&[sd_notify::NotifyState::Stopping]);
    }

    fn target_started(&self, target: &super::TargetInfo) {
        self.state.target_started(&target.account, &target.region);
    }

    fn target_pass_finished(&self, account: &str, pass: &PassReport, started_at: SystemTime) {
        self.state.target_pass_finished(account, pass, started_at);
        self.notify_ready();
    }

    fn target_stopped(&self, account: &str) {
        self.state.target_stopped(account);
    }

    fn events_enabled(&self, hub: &EventHub) {
        // Registered once: a reload that moves the events to another
        // target's loop (a new primary target) hands it the same metrics.
        let registered = self.events.lock().as_ref().and_then(EventHub::metrics);
        match registered
            .map_or_else(|| crate::events::metrics::EventMetrics::register(self.state.metrics().registry()), Ok)
        {
            Ok(metrics) => hub.attach_metrics(metrics),
            Err(e) => warn!(error = %e, "the event metrics could not be registered"),
        }
        self.state.set_events(hub.clone());
        *self.events.lock() = Some(hub.clone());
    }

    fn events_disabled(&self) {
        self.state.clear_events();
        if let Some(metrics) = self.events.lock().as_ref().and_then(EventHub::metrics) {
            metrics.up.set(0);
        }
    }

    fn events_reenabled(&self, hub: &EventHub) {
        self.state.set_events(hub.clone());
    }

    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, started_at: SystemTime) {
        let hub = self.events.lock().clone();
        let Some(metrics) = hub.and_then(|h| h.metrics()) else { return };
        let kind = if event_times.is_some() { "targeted" } else { "full" };
        metrics.passes.with_label_values(&[kind]).inc();
        for time in event_times.unwrap_or_default() {
            metrics.lag.observe(started_at.duration_since(*time).unwrap_or_default().as_secs_f64());
        }
    }
}

/// Pings the systemd watchdog at half its period while the loop is alive (a
/// cycle started within three intervals, or a pass under way whose last EC2
/// request ended within three intervals). A wedged loop stops the pings and systemd restarts the service.
async fn watchdog(instruments: Arc<Instruments>, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else { return };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                if instruments.alive() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
}

/// Errors of [`serve`] before the loop runs.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The mapping file could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigLoadError),
    /// `daemon.listen` could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(e) => e.kind(),
            Self::Listen { .. } => "listen",
        }
    }
}

/// `run`: loads the mapping file, serves `/metrics`, `/healthz`, `/readyz`
/// and `/status` on `daemon.listen`, pings the systemd watchdog, and runs
/// the loop until [`Event::Shutdown`]. `connect` builds the EC2 client and
/// is given the metrics so every request is counted.
///
/// # Errors
/// [`ServeError`] when the file is invalid or the address cannot be bound.
pub async fn serve(
    settings: &Settings,
    make_connector: impl FnOnce(Arc<Metrics>) -> Box<dyn Connector>,
    events: mpsc::Receiver<Event>,
) -> Result<(), ServeError> {
    serve_with(settings, make_connector, &NoObserver, events).await
}

/// An observer that ignores everything.
pub struct NoObserver;
impl PassObserver for NoObserver {}

/// Two observers as one.
struct Both<'a>(&'a dyn PassObserver, &'a dyn PassObserver);

impl PassObserver for Both<'_> {
    fn pass_started(&self, config: &Config) {
        self.0.pass_started(config);
        self.1.pass_started(config);
    }
    fn phase(&self, phase: Phase) {
        self.0.phase(phase);
        self.1.phase(phase);
    }
    fn describe_failed(&self, error: &ObserveError) {
        self.0.describe_failed(error);
        self.1.describe_failed(error);
    }
    fn snapshot_observed(&self, snapshot: &crate::model::Snapshot) {
        self.0.snapshot_observed(snapshot);
        self.1.snapshot_observed(snapshot);
    }
    fn planned(&self, actions: usize) {
        self.0.planned(actions);
        self.1.planned(actions);
    }
    fn action_finished(&self, result: &ActionResult) {
        self.0.action_finished(result);
        self.1.action_finished(result);
    }
    fn pass_finished(&self, pass: &PassReport, config: &Config, started_at: SystemTime) {
        self.0.pass_finished(pass, config, started_at);
        self.1.pass_finished(pass, config, started_at);
    }
    fn reloaded(&self, outcome: ReloadOutcome, config: &Config) {
        self.0.reloaded(outcome, config);
        self.1.reloaded(outcome, config);
    }
    fn state_file_failed(&self, error: &StateError) {
        self.0.state_file_failed(error);
        self.1.state_file_failed(error);
    }
    fn stopping(&self) {
        self.0.stopping();
        self.1.stopping();
    }
    fn serving(&self, address: std::net::SocketAddr) {
        self.0.serving(address);
        self.1.serving(address);
    }
    fn events_enabled(&self, hub: &EventHub) {
        self.0.events_enabled(hub);
        self.1.events_enabled(hub);
    }
    fn events_disabled(&self) {
        self.0.events_disabled();
        self.1.events_disabled();
    }
    fn events_reenabled(&self, hub: &EventHub) {
        self.0.events_reenabled(hub);
        self.1.events_reenabled(hub);
    }
    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, started_at: SystemTime) {
        self.0.events_pass_finished(event_times, started_at);
        self.1.events_pass_finished(event_times, started_at);
    }
    fn target_started(&self, target: &super::TargetInfo) {
        self.0.target_started(target);
        self.1.target_started(target);
    }
    fn target_pass_finished(&self, account: &str, pass: &PassReport, started_at: SystemTime) {
        self.0.target_pass_finished(account, pass, started_at);
        self.1.target_pass_finished(account, pass, started_at);
    }
    fn target_stopped(&self, account: &str) {
        self.0.target_stopped(account);
        self.1.target_stopped(account);
    }
}

/// [`serve`] with one more observer of the loop (the `demo`'s narrator).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    settings: &Settings,
    make_connector: impl FnOnce(Arc<Metrics>) -> Box<dyn Connector>,
    extra: &dyn PassObserver,
    events: mpsc::Receiver<Event>,
) -> Result<(), ServeError> {
    // One read of the file serves both the listener and the loop.
    let (config, config_text) = load(settings)?;
    let metrics = Metrics::new();
    let state = http::State::new(Arc::clone(&metrics), &config);
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.daemon.listen, source })?;
    let address = listener.local_addr().map_err(|source| ServeError::Listen { addr: config.daemon.listen, source })?;
    info!(listen = %address, "serving /metrics /healthz /readyz /status");
    extra.serving(address);
    let stop_http = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(listener, state.clone(), stop_http.clone().cancelled_owned()));
    let connector = make_connector(metrics);
    let instruments = Arc::new(Instruments::new(state));
    let watchdog_task = tokio::spawn(watchdog(Arc::clone(&instruments), stop_http.clone()));
    run_loaded(settings, config, config_text, connector.as_ref(), &Both(instruments.as_ref(), extra), events).await;
    stop_http.cancel();
    let _ = watchdog_task.await;
    match http_task.await {
        Ok(Err(e)) => warn!(error = %e, "the HTTP server stopped with an error"),
        Err(e) => warn!(error = %e, "the HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    Ok(())
}
