//! A shared `moto_server` for the test files that check the adapter and the
//! daemon against moto, an independent EC2 emulator (see `docs/emulator.md`).
//! `scripts/test` installs moto into `.venv` and sets
//! `CLASSICLINK_MIRROR_REQUIRE_MOTO`, so in CI a missing moto fails.
#![allow(dead_code)] // each test file uses a different part of it

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use classiclink_mirror::ec2::Ec2Error;
use classiclink_mirror::ec2::aws::{AwsEc2, AwsOptions};

/// Set by `scripts/test` (and so CI): a missing moto is then a failure.
pub const REQUIRE_MOTO: &str = "CLASSICLINK_MIRROR_REQUIRE_MOTO";

pub struct Moto {
    pub url: String,
    pub log: PathBuf,
    _watchdog: Mutex<Child>,
}

static MOTO: OnceLock<Option<Moto>> = OnceLock::new();

/// The shared moto server, started on first use; `None` (after a loud
/// message) when moto is not installed and not required.
pub fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(start_moto).as_ref()
}

pub fn start_moto() -> Option<Moto> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if !bin.exists() {
        assert!(
            std::env::var_os(REQUIRE_MOTO).is_none(),
            "{REQUIRE_MOTO} is set but {} is missing: run ./scripts/test, which installs moto",
            bin.display()
        );
        // Straight to stderr: libtest captures `eprintln!`, and a skip must be
        // seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n\n*** SKIPPING moto conformance tests: {} is missing. ***\n\
             *** Run ./scripts/test (it installs moto into .venv) to run them. ***\n",
            bin.display()
        );
        return None;
    }
    // A free port: bind to 0, read it, close.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("moto log file");
    // moto runs under a small shell watchdog that stops it once this test
    // process is gone: statics are never dropped, so nothing else would.
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(
            r#""$1" -H 127.0.0.1 -p "$2" & moto=$!
               while kill -0 "$3" 2>/dev/null && kill -0 "$moto" 2>/dev/null; do sleep 0.2; done
               kill "$moto" 2>/dev/null; wait"#,
        )
        .arg("moto-watchdog")
        .arg(&bin)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start moto_server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on port {port} within 30 s; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto { url: format!("http://127.0.0.1:{port}"), log, _watchdog: Mutex::new(watchdog) })
}

pub async fn client_with(moto: &Moto, page_size: i32) -> AwsEc2 {
    super::local_port_paged(&moto.url, page_size).await
}

pub async fn client(moto: &Moto) -> AwsEc2 {
    client_with(moto, AwsOptions::default().page_size).await
}

/// Unwraps, naming moto's log on failure.
pub fn ok<T>(moto: &Moto, result: Result<T, Ec2Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e} (moto log: {})", moto.log.display()))
}
