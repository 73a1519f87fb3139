//! The binary: parse the command line, set up logging, run the command, map
//! the outcome to the exit codes of the README's command table. `anyhow` lives here only.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Parser;
use std::path::Path;

use classiclink_mirror::cli::{
    ApplyArgs, Cli, Command, DemoArgs, EmulatorArgs, GlobalArgs, LogFormat, PlanArgs, PlanFormat,
};
use classiclink_mirror::config::{self, Config, ConfigLoadError};
use classiclink_mirror::ec2::aws::AwsEventSource;
use classiclink_mirror::ec2::aws::{AwsEc2, AwsOptions, SharedClients};
use classiclink_mirror::ec2::limited::Limited;
use classiclink_mirror::emulator::events::EventOptions;
use classiclink_mirror::emulator::{self, Emulator, EmulatorOptions, Estate, EstateError, Faults, Throttle};
use classiclink_mirror::events::{EventSource, QueueSettings};
use classiclink_mirror::execute::OutcomeKind;
use classiclink_mirror::model::Snapshot;
use classiclink_mirror::plan::{self, Memory};
use classiclink_mirror::state::{self, StateFile};
use classiclink_mirror::{observe, reconcile};
use std::sync::Arc;

use classiclink_mirror::daemon::{self, Connector, Event, Settings};
use classiclink_mirror::demo;
use classiclink_mirror::ec2::Ec2;
use classiclink_mirror::metrics::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code: success, or nothing to do.
const EXIT_OK: u8 = 0;
/// Exit code: error.
const EXIT_ERROR: u8 = 1;
/// Exit code of `plan`: changes pending.
const EXIT_CHANGES: u8 = 2;

fn main() -> ExitCode {
    // Not `Cli::parse()`: clap exits 2 on a usage error, which `plan` uses
    // for "changes pending". Usage errors are errors (1); --help and
    // --version succeed (0).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    // The demo narrates on stdout; its daemon's INFO lines would drown that.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_tracing(&cli.global, default_level);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_tracing(global: &GlobalArgs, default_level: &str) {
    let filter = match &global.log_level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(default_level)),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
    };
    let format =
        global.log_format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Text } else { LogFormat::Json });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn env_region() -> Option<String> {
    std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty())
}

/// Exit code of `apply`: not converged after `--max-passes`.
const EXIT_NOT_CONVERGED: u8 = 3;

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate(args) => Ok(validate(&args.config)),
        Command::Run(args) => block_on(run_daemon(&args.config))?,
        Command::Demo(args) => block_on(run_demo(&args))?,
        Command::Healthcheck(args) => {
            let status = classiclink_mirror::http::probe(&args.url, std::time::Duration::from_secs(5))?;
            println!("{}: {status}", args.url);
            Ok(if status == 200 { EXIT_OK } else { EXIT_ERROR })
        }
        Command::Plan(args) => match &args.snapshot {
            Some(snapshot) => plan_offline(&args, snapshot),
            None => block_on(plan_live(&args))?,
        },
        Command::Apply(args) => block_on(apply(&args))?,
        Command::Emulator(args) => run_emulator(&args),
    }
}

/// Builds the SDK clients of the daemon, its requests counted in the
/// metrics: one limited client per account, shared by the target loops.
struct AwsConnector {
    metrics: Arc<Metrics>,
    clients: SharedClients,
}

#[async_trait::async_trait]
impl Connector for AwsConnector {
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2> {
        let limit = |account: &str, client: AwsEc2| -> Arc<dyn Ec2> {
            Arc::new(
                Limited::new(client, &config.rate_limit).with_observer(self.metrics.account_request_observer(account)),
            )
        };
        classiclink_mirror::ec2::aws::connect_shared(config, &AwsOptions::default(), &self.clients, &limit).await
    }

    async fn event_source(&self, config: &Config) -> Option<Arc<dyn EventSource>> {
        let settings = QueueSettings::from_config(config)?;
        Some(Arc::new(AwsEventSource::from_settings(&settings).await))
    }

    fn reloaded(&self, config: &Config) {
        self.clients.retain(&config.client_accounts());
    }
}

async fn run_demo(args: &DemoArgs) -> anyhow::Result<u8> {
    let (events, receiver) = mpsc::channel(8);
    tokio::spawn(forward_signals(events));
    let options = demo::DemoOptions {
        listen: args.listen,
        exit_when_done: args.exit_when_done,
        interval: args.interval,
        scenario: args.scenario,
    };
    demo::run(options, receiver).await?;
    Ok(EXIT_OK)
}

async fn run_daemon(config: &Path) -> anyhow::Result<u8> {
    let settings = Settings::new(config.to_owned(), env_region());
    let (events, receiver) = mpsc::channel(8);
    tokio::spawn(forward_signals(events));
    daemon::serve(&settings, |metrics| Box::new(AwsConnector { metrics, clients: SharedClients::default() }), receiver)
        .await?;
    Ok(EXIT_OK)
}

/// SIGTERM/SIGINT ask the loop to stop (a second one exits at once); SIGHUP
/// asks it to reload.
async fn forward_signals(events: mpsc::Sender<Event>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        eprintln!("error: cannot install signal handlers");
        std::process::exit(i32::from(EXIT_ERROR));
    };
    let mut stopping = false;
    loop {
        let event = tokio::select! {
            _ = term.recv() => Event::Shutdown,
            _ = int.recv() => Event::Shutdown,
            _ = hup.recv() => Event::Reload,
        };
        if event == Event::Shutdown {
            if stopping {
                eprintln!("second stop signal: exiting now");
                std::process::exit(i32::from(EXIT_ERROR));
            }
            stopping = true;
        }
        if events.send(event).await.is_err() {
            return;
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    Ok(runtime.block_on(future))
}

/// The EC2 client of a one-shot command: the SDK adapter under the
/// configured rate limits.
async fn connect(config: &Config) -> Arc<dyn Ec2> {
    let limit = |_: &str, client: AwsEc2| -> Arc<dyn Ec2> { Arc::new(Limited::new(client, &config.rate_limit)) };
    classiclink_mirror::ec2::aws::connect(config, &AwsOptions::default(), &limit).await
}

fn print_plan(plan: &plan::Plan, snapshot: &Snapshot, format: PlanFormat) {
    match format {
        PlanFormat::Text => print!("{}", plan::render_text(plan, snapshot)),
        PlanFormat::Json => print!("{}", plan::render_json(plan)),
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().context("the path has no file name")?.to_string_lossy();
    let temporary = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&temporary, text).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

async fn plan_live(args: &PlanArgs) -> anyhow::Result<u8> {
    let config = load_config(&args.config.config)?;
    let targets = config.targets();
    if targets.len() > 1 && args.dump_snapshot.is_some() {
        anyhow::bail!("--dump-snapshot writes one target's snapshot, but the mirrors target several accounts");
    }
    // One plan per target account, as the daemon's loops make them.
    let mut code = EXIT_OK;
    for target in &targets {
        let config = config.for_target(target);
        if targets.len() > 1 {
            eprintln!("target account {target} ({}):", config.target_region(target));
        }
        code = worst(code, plan_target(args, &config).await?);
    }
    Ok(code)
}

/// Of two exit codes of one command's targets, the one to report: an
/// error, else changes (or not converged), else OK.
fn worst(a: u8, b: u8) -> u8 {
    let rank = |code: u8| match code {
        EXIT_ERROR => 3,
        EXIT_NOT_CONVERGED => 2,
        EXIT_CHANGES => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `plan` for one target's part of the file.
async fn plan_target(args: &PlanArgs, config: &Config) -> anyhow::Result<u8> {
    let ec2 = connect(config).await;
    let observation = observe::observe(ec2.as_ref(), config).await;
    for error in &observation.errors {
        eprintln!("warning: {error}");
    }
    if let Some(path) = &args.dump_snapshot {
        write_atomically(path, &(observation.snapshot.to_json() + "\n"))?;
    }
    let (plan, _) = plan::plan(config, &observation.snapshot, &Memory::default(), SystemTime::now());
    print_plan(&plan, &observation.snapshot, args.format);
    if !observation.snapshot.is_complete() {
        // A plan from a partial view can miss changes: never "no changes".
        eprintln!("{}", incomplete_observation(&observation.snapshot));
        return Ok(EXIT_ERROR);
    }
    Ok(if plan.is_empty() { EXIT_OK } else { EXIT_CHANGES })
}

/// The error line of a command whose observation of EC2 was incomplete.
fn incomplete_observation(snapshot: &Snapshot) -> String {
    let parts: Vec<&str> = snapshot.incomplete.iter().map(|part| part.as_str()).collect();
    format!("error: the observation of EC2 is incomplete ({}): the plan may miss changes", parts.join(", "))
}

async fn apply(args: &ApplyArgs) -> anyhow::Result<u8> {
    let config = load_config(&args.config.config)?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the actions in flight");
            on_signal.cancel();
        }
    });
    // One target account after the other, each with its own client and
    // state file, as the daemon's loops.
    let targets = config.targets();
    daemon::take_over_legacy_state_file(&config);
    let mut code = EXIT_OK;
    for target in &targets {
        if cancel.is_cancelled() {
            break;
        }
        if targets.len() > 1 {
            println!("target account {target} ({}):", config.target_region(target));
        }
        let state_file = StateFile::named(config.daemon.state_dir.clone(), config.state_file_name(target));
        code = worst(code, apply_target(args, &config.for_target(target), state_file, &cancel).await);
    }
    Ok(code)
}

/// `apply` for one target's part of the file.
async fn apply_target(args: &ApplyArgs, config: &Config, mut state_file: StateFile, cancel: &CancellationToken) -> u8 {
    let ec2 = connect(config).await;
    let max_passes = usize::try_from(args.max_passes).unwrap_or(usize::MAX);
    // The daemon's state file, when there is one: apply honours the shrink
    // guard's baseline and the deletion backoffs, and writes them back.
    let existed = state_file.exists();
    let memory = match state_file.load() {
        Ok(memory) => memory.unwrap_or_default(),
        Err(error) => {
            eprintln!("warning: {error}; starting conservatively: destructive actions held for one orphan_grace");
            state::conservative_start(SystemTime::now())
        }
    };
    let report = reconcile::apply_from(ec2.as_ref(), config, max_passes, &SystemTime::now, cancel, memory).await;
    if existed && let Err(error) = state_file.save(&report.memory) {
        eprintln!("warning: {error}");
    }
    for (number, pass) in report.passes.iter().enumerate() {
        if pass.interrupted {
            println!("pass {}: interrupted during observation; nothing planned or started", number + 1);
            continue;
        }
        let summary = plan::Summary::of(&pass.plan);
        println!(
            "pass {}: {} actions ({} done, {} failed, {} skipped){}",
            number + 1,
            pass.plan.actions.len() - summary.audit_only,
            pass.report.count(OutcomeKind::Done) + pass.report.count(OutcomeKind::AlreadyDone),
            pass.failed(),
            pass.report.count(OutcomeKind::Skipped),
            if pass.snapshot.is_complete() { "" } else { "; snapshot incomplete" }
        );
        for (outcome, error) in pass.report.failures() {
            println!("  failed {}: {error}", outcome.kind.as_str());
        }
    }
    if let Some(last) = report.passes.last() {
        // What is left: audited drift, warnings, or what did not converge.
        if !last.plan.is_empty() || !last.plan.warnings.is_empty() {
            print!("{}", plan::render_text(&last.plan, &last.snapshot));
        }
    }
    if report.converged {
        println!("converged");
        EXIT_OK
    } else if let Some(last) = report.passes.last().filter(|pass| !pass.snapshot.is_complete() && !pass.interrupted) {
        // Not "not converged": whether anything is left to do is unknown.
        println!("not converged after {} passes", report.passes.len());
        eprintln!("{}", incomplete_observation(&last.snapshot));
        EXIT_ERROR
    } else if cancel.is_cancelled() {
        println!("interrupted before converging");
        EXIT_NOT_CONVERGED
    } else {
        println!("not converged after {} passes", report.passes.len());
        EXIT_NOT_CONVERGED
    }
}

/// `emulator`: seed the world, print the bound address, serve until
/// SIGINT/SIGTERM.
fn run_emulator(args: &EmulatorArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut faults =
            Faults::none().with_error_rate(args.error_rate).with_consistency_window(args.consistency_delay);
        for (operation, rate) in &args.operation_error_rates {
            faults = faults.with_operation_error_rate(*operation, *rate);
        }
        if args.throttle {
            faults = faults.with_throttle(Throttle::ec2().scaled(args.throttle_scale));
        }
        let options = EmulatorOptions { faults, ..EmulatorOptions::default() };
        let world = match &args.estate {
            Some(path) => {
                let estate = Estate::read(path).map_err(|error| match error {
                    EstateError::Parse(toml) => anyhow::anyhow!("estate {} is not valid: {toml}", path.display()),
                    other => anyhow::anyhow!("{other}"),
                })?;
                emulator::Cloud::from_estate(&estate, options)
                    .map_err(|errors| anyhow::anyhow!("estate {} is not valid:\n{errors}", path.display()))?
            }
            None => emulator::Cloud::new(Emulator::new(options)),
        };
        // The home world: the default account in us-east-1 (docs/emulator.md).
        let cloud = world;
        let world = cloud.home();
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("the listener has no address")?;
        let stats = world.stats();
        tracing::info!(%address, vpcs = stats.vpcs, groups = stats.groups, instances = stats.instances,
            links = stats.links, "emulator serving the EC2 Query API");
        if let Some(throttle) = world.faults().throttle {
            tracing::info!(
                describe_burst = throttle.describe.capacity,
                describe_per_second = throttle.describe.refill_per_second,
                mutating_burst = throttle.mutating.capacity,
                mutating_per_second = throttle.mutating.refill_per_second,
                "throttling like EC2's token buckets"
            );
        }
        let mut announce = format!("emulator listening on http://{address}\n");
        if args.events {
            let queue = world.enable_events(EventOptions {
                delay: args.event_delay,
                delay_jitter: args.event_delay_jitter,
                loss: args.event_loss,
                duplication: args.event_duplication,
                seed: args.event_seed,
                ..EventOptions::default()
            });
            let url = queue.url(&format!("http://{address}"), &world.account_id());
            tracing::info!(queue_url = %url, delay = ?args.event_delay, loss = args.event_loss,
                duplication = args.event_duplication, "emulator serving its event queue over SQS");
            announce.push_str(&format!("event queue at {url}\n"));
        }
        // One write: a reader that stops after the first line must not make
        // the second one fail.
        let mut stdout = std::io::stdout();
        std::io::Write::write_all(&mut stdout, announce.as_bytes()).context("cannot write to stdout")?;
        std::io::Write::flush(&mut stdout).context("cannot write to stdout")?;
        emulator::server::serve_cloud(cloud, listener, shutdown).await.context("the emulator server failed")?;
        tracing::info!("emulator stopped");
        Ok(EXIT_OK)
    })
}

/// A future that completes on the first SIGINT or SIGTERM. The handlers
/// are installed here, before the address is printed, so a signal sent as
/// soon as the address is known cannot kill the process by default action.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

fn validate(path: &std::path::Path) -> u8 {
    match Config::load(path, env_region().as_deref()) {
        Ok(config) => {
            let count = config.mirrors.len();
            println!("{}: valid ({count} mapping{})", path.display(), if count == 1 { "" } else { "s" });
            EXIT_OK
        }
        Err(ConfigLoadError::Invalid { errors, .. }) => {
            print!("{}", config::render_errors(&errors));
            println!("{}: {} errors", path.display(), errors.len());
            EXIT_ERROR
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_ERROR
        }
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, env_region().as_deref())?)
}

fn plan_offline(args: &PlanArgs, path: &Path) -> anyhow::Result<u8> {
    let config = load_config(&args.config.config)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read snapshot {}", path.display()))?;
    let snapshot = Snapshot::from_json(&text).with_context(|| format!("{} is not a valid snapshot", path.display()))?;
    let (plan, _) = plan::plan(&config, &snapshot, &Memory::default(), SystemTime::now());
    print_plan(&plan, &snapshot, args.format);
    Ok(if plan.is_empty() { EXIT_OK } else { EXIT_CHANGES })
}
