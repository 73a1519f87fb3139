//! The binary: parse the command line, set up logging, run the command, map
//! the outcome to SPEC §2's exit codes. `anyhow` lives here only.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Parser;
use classiclink_mirror::cli::{Cli, Command, EmulatorArgs, GlobalArgs, LogFormat, PlanArgs, PlanFormat};
use classiclink_mirror::config::{self, Config, ConfigLoadError};
use classiclink_mirror::emulator::{self, Emulator, EmulatorOptions, Estate, EstateError, Faults, Throttle};
use classiclink_mirror::model::Snapshot;
use classiclink_mirror::plan::{self, Memory};
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
    init_tracing(&cli.global);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_tracing(global: &GlobalArgs) {
    let filter = match &global.log_level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let format =
        global.log_format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Text } else { LogFormat::Json });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn env_region() -> Option<String> {
    std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty())
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate(args) => Ok(validate(&args.config)),
        Command::Plan(args) => plan_offline(&args),
        Command::Emulator(args) => run_emulator(&args),
    }
}

/// `emulator`: seed the world, print the bound address, serve until
/// SIGINT/SIGTERM.
fn run_emulator(args: &EmulatorArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut faults =
            Faults::none().with_error_rate(args.error_rate).with_consistency_window(args.consistency_delay);
        if args.throttle {
            faults = faults.with_throttle(Throttle::ec2());
        }
        let options = EmulatorOptions { faults, ..EmulatorOptions::default() };
        let world = match &args.estate {
            Some(path) => {
                let estate = Estate::read(path).map_err(|error| match error {
                    EstateError::Parse(toml) => anyhow::anyhow!("estate {} is not valid: {toml}", path.display()),
                    other => anyhow::anyhow!("{other}"),
                })?;
                Emulator::from_estate(&estate, options)
                    .map_err(|errors| anyhow::anyhow!("estate {} is not valid:\n{errors}", path.display()))?
            }
            None => Emulator::new(options),
        };
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("the listener has no address")?;
        let stats = world.stats();
        tracing::info!(%address, vpcs = stats.vpcs, groups = stats.groups, instances = stats.instances,
            links = stats.links, "emulator serving the EC2 Query API");
        println!("emulator listening on http://{address}");
        std::io::Write::flush(&mut std::io::stdout()).context("cannot write to stdout")?;
        emulator::server::serve(world, listener, shutdown).await.context("the emulator server failed")?;
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

fn plan_offline(args: &PlanArgs) -> anyhow::Result<u8> {
    let config = load_config(&args.config.config)?;
    let text = std::fs::read_to_string(&args.snapshot)
        .with_context(|| format!("cannot read snapshot {}", args.snapshot.display()))?;
    let snapshot =
        Snapshot::from_json(&text).with_context(|| format!("{} is not a valid snapshot", args.snapshot.display()))?;
    let (plan, _) = plan::plan(&config, &snapshot, &Memory::default(), SystemTime::now());
    match args.format {
        PlanFormat::Text => print!("{}", plan::render_text(&plan, &snapshot)),
        PlanFormat::Json => print!("{}", plan::render_json(&plan)),
    }
    Ok(if plan.is_empty() { EXIT_OK } else { EXIT_CHANGES })
}
