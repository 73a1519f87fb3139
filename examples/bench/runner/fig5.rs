//! Figure 5 — through the wire: what one `DescribeSecurityGroups` page of
//! 1,000 groups costs (a) in the engine, in process; (b) as a raw HTTP POST
//! to the `emulator` process (the server's overhead: query parsing, XML,
//! HTTP); (c) through `aws-sdk-ec2` (the SDK's signing and XML
//! deserialisation on top); (d) through the daemon's adapter (`AwsEc2`:
//! the SDK plus conversion into the domain model), which is what `observe`
//! pays. Sequential requests, one at a time.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{Credentials, Region};
use classiclink_mirror::ec2::{Ec2, GroupFilter};
use classiclink_mirror::emulator::{Emulator, EmulatorOptions, PageRequest};
use classiclink_mirror::model::DEFAULT_DISCOVERY_TAG;
use serde::Serialize;

use super::procs::{Binary, EmulatorProcess, load_average};
use super::{Shape, secs};

/// What to run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Options {
    /// The estate: `groups` groups (at most 1,000: one page) of `grants` grants.
    pub shape: Shape,
    /// Timed requests per path (after `warmup` untimed ones).
    pub requests: usize,
    /// Untimed requests first.
    pub warmup: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { shape: Shape { groups: 1000, instances: 0, grants: 50, seed: 6 }, requests: 200, warmup: 10 }
    }
}

/// One path's timing.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Path {
    /// Timed requests.
    pub requests: usize,
    /// Their total wall time.
    pub total: Duration,
}

impl Path {
    /// Requests per second.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.requests as f64;
        n / self.total.as_secs_f64().max(1e-12)
    }

    /// Microseconds per request.
    #[must_use]
    pub fn micros(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.requests.max(1) as f64;
        self.total.as_secs_f64() * 1e6 / n
    }
}

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Fig5 {
    /// What ran.
    pub options: Options,
    /// (a) the engine in process.
    pub engine: Path,
    /// (b) raw HTTP POST, body read, nothing parsed.
    pub http: Path,
    /// (c) `aws-sdk-ec2` `describe_security_groups().send()`.
    pub sdk: Path,
    /// (d) the daemon's adapter, `AwsEc2::describe_security_groups`.
    pub adapter: Path,
    /// Bytes of one XML page.
    pub page_bytes: usize,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

impl Fig5 {
    fn ratio(over: &Path, under: &Path) -> f64 {
        over.micros() / under.micros().max(1e-9)
    }

    /// The readable report.
    #[must_use]
    pub fn table(&self) -> String {
        let s = &self.options.shape;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "figure 5: DescribeSecurityGroups, one page of {} groups × {} grants ({} KiB of XML), {} sequential requests per path",
            s.groups,
            s.grants,
            self.page_bytes / 1024,
            self.options.requests
        );
        let _ = writeln!(out, "  {:<46} {:>10} {:>12} {:>10}", "path", "req/s", "µs/request", "÷ (a)");
        for (name, path) in [
            ("(a) engine, in process", &self.engine),
            ("(b) HTTP POST to the emulator process", &self.http),
            ("(c) aws-sdk-ec2 send()", &self.sdk),
            ("(d) daemon adapter (SDK + domain model)", &self.adapter),
        ] {
            let _ = writeln!(
                out,
                "  {name:<46} {:>10.1} {:>12.0} {:>10.2}",
                path.per_second(),
                path.micros(),
                Self::ratio(path, &self.engine)
            );
        }
        let _ = writeln!(
            out,
            "  server overhead b/a = {:.2}, SDK c/b = {:.2}, adapter d/c = {:.2}",
            Self::ratio(&self.http, &self.engine),
            Self::ratio(&self.sdk, &self.http),
            Self::ratio(&self.adapter, &self.sdk)
        );
        out
    }

    /// The JSON line.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        let path = |p: &Path| serde_json::json!({"requests": p.requests, "total_s": secs(p.total), "per_second": p.per_second(), "micros": p.micros()});
        serde_json::json!({
            "figure": 5,
            "options": self.options,
            "page_bytes": self.page_bytes,
            "engine": path(&self.engine),
            "http": path(&self.http),
            "sdk": path(&self.sdk),
            "adapter": path(&self.adapter),
            "b_over_a": Self::ratio(&self.http, &self.engine),
            "c_over_b": Self::ratio(&self.sdk, &self.http),
            "d_over_c": Self::ratio(&self.adapter, &self.sdk),
            "load_before": self.load.0,
            "load_after": self.load.1,
        })
    }
}

/// Times `requests` calls of `call` after `warmup` untimed ones; each call
/// returns the number of groups it got, which must be `expected`.
async fn time<F, Fut>(warmup: usize, requests: usize, expected: usize, mut call: F) -> anyhow::Result<Path>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    for _ in 0..warmup {
        let got = call().await?;
        ensure!(got == expected, "a page of {got} groups, expected {expected}");
    }
    let started = Instant::now();
    for _ in 0..requests {
        let got = call().await?;
        ensure!(got == expected, "a page of {got} groups, expected {expected}");
    }
    Ok(Path { requests, total: started.elapsed() })
}

/// Runs figure 5 once.
///
/// # Errors
/// The estate is more than one page, a process fails, or a page is not
/// the expected size.
pub async fn run(binary: &Binary, options: &Options) -> anyhow::Result<Fig5> {
    let load_before = load_average();
    let groups = options.shape.groups;
    if groups > 1000 {
        bail!("{groups} groups is more than one page of 1,000");
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let estate_path = dir.path().join("estate.toml");
    let estate = options.shape.write(&estate_path)?;
    // Only the generated groups carry the discovery tag: one full page.
    let filter = GroupFilter { tag_keys: vec![DEFAULT_DISCOVERY_TAG.to_owned()], ..GroupFilter::default() };
    let (warmup, requests) = (options.warmup, options.requests);

    // (a) The engine, in this process.
    let engine = {
        let emu = Emulator::from_estate(&estate, EmulatorOptions::default())
            .map_err(|errors| anyhow::anyhow!("the estate does not load: {errors}"))?;
        let page = PageRequest::first(1000);
        time(warmup, requests, groups, || async {
            let page = emu.describe_security_groups_page(&[], &filter, &page).await?;
            Ok(page.items.len())
        })
        .await?
    };
    drop(estate);

    let emulator = EmulatorProcess::start(binary, &estate_path, &[]).await?;

    // (b) Raw HTTP: the form the SDK posts, the body read whole, no XML parsing.
    let http = reqwest::Client::new();
    let body = format!(
        "Action=DescribeSecurityGroups&Version=2016-11-15&MaxResults=1000&Filter.1.Name=tag-key&Filter.1.Value.1={}",
        DEFAULT_DISCOVERY_TAG.replace(':', "%3A")
    );
    let probe = http
        .post(&emulator.url)
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(body.clone())
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let page_bytes = probe.len();
    let per_page = String::from_utf8_lossy(&probe).matches("<groupDescription>").count();
    ensure!(per_page == groups, "the raw page holds {per_page} groups, expected {groups}");
    let raw = time(warmup, requests, groups, || async {
        let response = http
            .post(&emulator.url)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body.clone())
            .send()
            .await?;
        ensure!(response.status().is_success(), "HTTP {}", response.status());
        let bytes = response.bytes().await?;
        ensure!(bytes.len() == page_bytes, "a page of {} bytes, expected {page_bytes}", bytes.len());
        Ok(groups)
    })
    .await?;

    // (c) aws-sdk-ec2, configured as the daemon's adapter configures it.
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(emulator.url.clone())
        .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let client = aws_sdk_ec2::Client::new(&config);
    let tag_filter = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(DEFAULT_DISCOVERY_TAG).build();
    let sdk = time(warmup, requests, groups, || async {
        let output = client.describe_security_groups().max_results(1000).filters(tag_filter.clone()).send().await?;
        Ok(output.security_groups().len())
    })
    .await?;

    // (d) The daemon's adapter: the SDK plus conversion into the domain model.
    let port = emulator.port().await;
    let adapter =
        time(warmup, requests, groups, || async { Ok(port.describe_security_groups(&filter).await?.len()) }).await?;
    emulator.stop().await;

    Ok(Fig5 { options: *options, engine, http: raw, sdk, adapter, page_bytes, load: (load_before, load_average()) })
}
