//! The client side of EC2's request limits, as a decorator of the port.
//!
//! Observe and execute both talk to EC2 through [`Limited`]. It sees every
//! EC2 request: each describe page is a call of its own (the pager of
//! [`super::paginate`] runs above it), so every page takes a token, is
//! counted and timed, and is retried alone. Each request gets:
//!
//! - a token bucket per request category (`governor`, from `[rate_limit]`)
//!   and an additive-increase / multiplicative-decrease slowdown after a
//!   throttling error (`RequestLimitExceeded` and the codes that classify
//!   like it, [`ErrorKind::Throttled`]);
//! - bounded retries of throttling and transient errors, as the AWS SDKs'
//!   *standard* retry mode does them: at most `max_attempts` attempts,
//!   exponential backoff with full jitter capped at `retry_max_delay`, and a
//!   retry quota per client — a token bucket that every retry draws from
//!   (`retry_cost`, `retry_timeout_cost` after a timeout) and successes refill
//!   — so that when EC2 keeps failing, requests stop retrying and fail fast.
//!
//! Semantic retries (eventual consistency, "already done") belong to the
//! executor, not here. Construction is total: any rate or burst, even one
//! validation would refuse, is clamped into what the buckets can represent.
//! All waiting uses tokio's clock, so tests under paused time run instantly.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use super::{
    Category, CreateGroup, CreatePrefixList, Ec2, Ec2Error, ErrorKind, GroupFilter, InstanceFilter, InterfaceFilter,
    LinkFilter, ModifyPrefixList, Operation, Page, PrefixListFilter, TIMEOUT,
};
use crate::config::RateLimitConfig;
use crate::model::{
    Grant, GroupId, Instance, InstanceId, Link, NetworkInterface, PrefixList, PrefixListEntry, PrefixListId,
    SecurityGroup, Vpc, VpcId,
};

/// The slowest request rate of a bucket, per second (one request every
/// 1,000 s); slower rates are raised to it. `[rate_limit]` validation
/// refuses rates outside [`MIN_RATE_PER_SECOND`]..=[`MAX_RATE_PER_SECOND`].
pub const MIN_RATE_PER_SECOND: f64 = 0.001;
/// The fastest request rate of a bucket, per second (one request every
/// 10 µs); faster rates, infinity included, are lowered to it.
pub const MAX_RATE_PER_SECOND: f64 = 100_000.0;
/// The largest bucket; larger bursts are lowered to it. With the slowest
/// rate this keeps the bucket's span (burst × period) far inside the
/// nanosecond arithmetic of `governor`.
pub const MAX_BURST: u32 = 1_000_000;

/// `rate` clamped into [`MIN_RATE_PER_SECOND`]..=[`MAX_RATE_PER_SECOND`]
/// (NaN is the slowest rate).
#[must_use]
pub fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() { MIN_RATE_PER_SECOND } else { rate.clamp(MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND) }
}

/// `burst` clamped into `1..=`[`MAX_BURST`].
#[must_use]
pub fn clamp_burst(burst: u32) -> NonZeroU32 {
    NonZeroU32::new(burst.min(MAX_BURST)).unwrap_or(NonZeroU32::MIN)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

/// A `governor` clock that reads tokio's clock, so paused-time tests control it.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self { start: Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// What [`Limited`] decided after a retryable error; the
/// `aws_retries_total{outcome}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum RetryOutcome {
    /// The request is sent again after a backoff.
    Retried,
    /// Not retried: the request used its `max_attempts`.
    MaxAttempts,
    /// Not retried: the retry quota had too few tokens left.
    QuotaEmpty,
}

impl RetryOutcome {
    /// Stable metric label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// Receives one record per EC2 request attempt (metrics live elsewhere).
pub trait RequestObserver: Send + Sync {
    /// `outcome` is `"ok"` or the error kind label.
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration);

    /// After a throttled or transient error: whether it was retried.
    fn retry(&self, operation: Operation, outcome: RetryOutcome) {
        let _ = (operation, outcome);
    }

    /// The tokens in the retry quota, whenever they change (and when the
    /// observer is installed).
    fn retry_quota(&self, tokens: u32) {
        let _ = tokens;
    }
}

/// An observer that drops everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl RequestObserver for NoObserver {
    fn record(&self, _: Operation, _: &'static str, _: Duration) {}
}

/// Retry policy for throttling and transient errors (`[rate_limit]`'s
/// retry keys; [`RetryPolicy::default`] is their default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (1: never retry).
    pub max_attempts: u32,
    /// Backoff base after a transient error: retry `n` waits a random time
    /// in `[0, min(base × 2^(n-1), max_delay))` (full jitter).
    pub base_delay: Duration,
    /// Backoff base after a throttling error.
    pub throttled_base_delay: Duration,
    /// Cap on one backoff.
    pub max_delay: Duration,
    /// Size of the retry quota (tokens; it starts full). 0: never retry.
    pub quota: u32,
    /// Tokens one retry draws from the quota.
    pub retry_cost: u32,
    /// Tokens one retry after a timeout draws from the quota.
    pub timeout_retry_cost: u32,
}

impl Default for RetryPolicy {
    /// The AWS SDKs' standard mode: 3 attempts, 20 s cap, a 500-token quota,
    /// 5 tokens a retry and 10 after a timeout; bases of 100 ms (transient)
    /// and 1 s (throttled).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            throttled_base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            quota: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
        }
    }
}

impl RetryPolicy {
    /// The policy of `[rate_limit]`.
    #[must_use]
    pub fn from_config(limits: &RateLimitConfig) -> Self {
        Self {
            max_attempts: limits.max_attempts,
            base_delay: limits.retry_base_delay,
            throttled_base_delay: limits.retry_throttled_base_delay,
            max_delay: limits.retry_max_delay,
            quota: limits.retry_quota,
            retry_cost: limits.retry_cost,
            timeout_retry_cost: limits.retry_timeout_cost,
        }
    }

    /// The longest a retry after `attempt` failed attempts, the last of
    /// `kind`, may wait (the jitter picks a point below it): throttling
    /// backs off from its own, longer base.
    fn ceiling(&self, attempt: u32, kind: ErrorKind) -> Duration {
        let base = if kind == ErrorKind::Throttled { self.throttled_base_delay } else { self.base_delay };
        let factor = 1u32 << attempt.saturating_sub(1).min(30);
        base.saturating_mul(factor).min(self.max_delay)
    }

    /// What a retry after `error` draws from the quota.
    fn cost(&self, error: &Ec2Error) -> u32 {
        if error.code == TIMEOUT { self.timeout_retry_cost } else { self.retry_cost }
    }
}

/// The retry quota of one client: retries draw from it, successes refill it
/// (1 token for a first-attempt success, the cost of the last retry back for
/// a success after retries), never above its size.
#[derive(Debug)]
struct RetryQuota {
    capacity: u32,
    available: u32,
    /// A retry was refused since the last one granted (logged once).
    refusing: bool,
}

impl RetryQuota {
    fn new(capacity: u32) -> Self {
        Self { capacity, available: capacity, refusing: false }
    }

    /// Takes `cost` tokens; `false` (and nothing taken) when fewer are left.
    fn draw(&mut self, cost: u32) -> bool {
        match self.available.checked_sub(cost) {
            Some(left) => {
                self.available = left;
                true
            }
            None => false,
        }
    }

    /// A success; `last_retry_cost` is what its last retry drew, if any.
    /// Returns whether the level changed.
    fn refill(&mut self, last_retry_cost: Option<u32>) -> bool {
        let before = self.available;
        self.available = self.available.saturating_add(last_retry_cost.unwrap_or(1)).min(self.capacity);
        self.available != before
    }
}

/// AIMD pacing of one category: inactive at the configured rate; after a
/// throttle, spaces requests at `1 / rate` and climbs back additively.
#[derive(Debug)]
struct Pacer {
    max_rate: f64,
    min_rate: f64,
    rate: f64,
    next_slot: Instant,
}

impl Pacer {
    fn new(max_rate: f64) -> Self {
        Self { max_rate, min_rate: (max_rate / 32.0).max(0.05), rate: max_rate, next_slot: Instant::now() }
    }

    /// How long the caller must wait before sending.
    fn reserve(&mut self) -> Duration {
        if self.rate >= self.max_rate {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let slot = self.next_slot.max(now);
        self.next_slot = slot + Duration::from_secs_f64(1.0 / self.rate);
        slot - now
    }

    fn on_throttle(&mut self) {
        self.rate = (self.rate / 2.0).max(self.min_rate);
    }

    fn on_success(&mut self) {
        if self.rate < self.max_rate {
            self.rate = (self.rate + self.max_rate / 20.0).min(self.max_rate);
        }
    }
}

struct Lane {
    bucket: Bucket,
    clock: TokioClock,
    pacer: Mutex<Pacer>,
}

impl Lane {
    /// Total: see [`clamp_rate`] and [`clamp_burst`].
    fn new(per_second: f64, burst: u32) -> Self {
        let rate = clamp_rate(per_second);
        // At most 1,000 s and at least 10 µs: never zero, never overflowing.
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period).unwrap_or(Quota::per_second(NonZeroU32::MIN));
        let quota = quota.allow_burst(clamp_burst(burst));
        let clock = TokioClock::default();
        Self {
            bucket: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            pacer: Mutex::new(Pacer::new(rate)),
        }
    }

    async fn acquire(&self) {
        let pace = lock(&self.pacer).reserve();
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        while let Err(not_until) = self.bucket.check() {
            tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
        }
    }
}

/// Counters of what the limiter saw, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct LimiterStats {
    /// Attempts answered with a throttling error ([`ErrorKind::Throttled`]:
    /// `RequestLimitExceeded` and the like).
    pub throttled: AtomicU64,
    /// Attempts retried (throttled or transient).
    pub retries: AtomicU64,
    /// Retryable errors not retried because the request used its attempts.
    pub attempts_exhausted: AtomicU64,
    /// Retryable errors not retried because the retry quota was empty.
    pub quota_refused: AtomicU64,
}

/// The port, rate limited and retried. See the module docs.
pub struct Limited<E> {
    inner: E,
    describe: Lane,
    mutating: Lane,
    retry: RetryPolicy,
    quota: Mutex<RetryQuota>,
    rng: Mutex<StdRng>,
    observer: Box<dyn RequestObserver>,
    stats: LimiterStats,
    per_operation: Mutex<BTreeMap<Operation, u64>>,
}

impl<E: Ec2> Limited<E> {
    /// Wraps `inner` with the limits and retry policy of `[rate_limit]`.
    #[must_use]
    pub fn new(inner: E, limits: &RateLimitConfig) -> Self {
        let retry = RetryPolicy::from_config(limits);
        Self {
            inner,
            describe: Lane::new(limits.describe_per_second, limits.describe_burst),
            mutating: Lane::new(limits.mutating_per_second, limits.mutating_burst),
            quota: Mutex::new(RetryQuota::new(retry.quota)),
            retry,
            rng: Mutex::new(rand::make_rng()),
            observer: Box::new(NoObserver),
            stats: LimiterStats::default(),
            per_operation: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the retry policy (and refills the quota to its size).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self.quota = Mutex::new(RetryQuota::new(retry.quota));
        self
    }

    /// Seeds the backoff jitter, for reproducible tests.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Mutex::new(StdRng::seed_from_u64(seed));
        self
    }

    /// Sends `observer` a record of every attempt, every retry decision and
    /// the retry quota's level (now, and whenever it changes).
    #[must_use]
    pub fn with_observer(mut self, observer: Box<dyn RequestObserver>) -> Self {
        observer.retry_quota(self.retry_quota());
        self.observer = observer;
        self
    }

    /// The wrapped port.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// What the limiter saw.
    pub fn stats(&self) -> &LimiterStats {
        &self.stats
    }

    /// Tokens left in the retry quota.
    pub fn retry_quota(&self) -> u32 {
        lock(&self.quota).available
    }

    /// Attempts sent per operation (including retries).
    pub fn attempts(&self) -> BTreeMap<Operation, u64> {
        lock(&self.per_operation).clone()
    }

    fn lane(&self, category: Category) -> &Lane {
        match category {
            Category::Describe => &self.describe,
            Category::Mutating => &self.mutating,
        }
    }

    /// One attempt: a token, the request, the record.
    async fn attempt<T, Fut>(&self, operation: Operation, lane: &Lane, request: Fut) -> Result<T, Ec2Error>
    where
        Fut: std::future::Future<Output = Result<T, Ec2Error>>,
    {
        lane.acquire().await;
        *lock(&self.per_operation).entry(operation).or_default() += 1;
        let started = Instant::now();
        let result = request.await;
        let outcome = match &result {
            Ok(_) => {
                lock(&lane.pacer).on_success();
                "ok"
            }
            Err(error) => {
                if error.kind == ErrorKind::Throttled {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    lock(&lane.pacer).on_throttle();
                }
                error.kind()
            }
        };
        self.observer.record(operation, outcome, started.elapsed());
        result
    }

    /// Whether to retry after `error`, the `attempt`-th failure; draws the
    /// retry's cost from the quota when it says yes.
    fn decide(&self, operation: Operation, error: &Ec2Error, attempt: u32) -> RetryOutcome {
        let mut quota = lock(&self.quota);
        let outcome = if attempt >= self.retry.max_attempts {
            self.stats.attempts_exhausted.fetch_add(1, Ordering::Relaxed);
            RetryOutcome::MaxAttempts
        } else if quota.draw(self.retry.cost(error)) {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            RetryOutcome::Retried
        } else {
            self.stats.quota_refused.fetch_add(1, Ordering::Relaxed);
            RetryOutcome::QuotaEmpty
        };
        let left = quota.available;
        // State changes of the quota are logged once, not per request.
        let was_refusing = quota.refusing;
        match outcome {
            RetryOutcome::Retried => quota.refusing = false,
            RetryOutcome::QuotaEmpty => quota.refusing = true,
            RetryOutcome::MaxAttempts => {}
        }
        drop(quota);
        match (was_refusing, outcome) {
            (false, RetryOutcome::QuotaEmpty) => tracing::warn!(%operation, code = %error.code, quota_left = left,
                "the EC2 retry quota is empty: failing requests are no longer retried until requests succeed again"),
            (true, RetryOutcome::Retried) => {
                tracing::info!(quota_left = left, "the EC2 retry quota has tokens again: failing requests are retried");
            }
            _ => {}
        }
        self.observer.retry(operation, outcome);
        if outcome == RetryOutcome::Retried {
            self.observer.retry_quota(left);
        }
        match outcome {
            RetryOutcome::Retried => {}
            RetryOutcome::MaxAttempts => tracing::debug!(%operation, code = %error.code, attempts = attempt,
                "EC2 request failed on its last attempt"),
            RetryOutcome::QuotaEmpty => tracing::debug!(%operation, code = %error.code, quota_left = left,
                "EC2 request not retried: the retry quota is empty"),
        }
        outcome
    }

    /// Sends one EC2 request with the retries of the module docs.
    async fn call<T, F, Fut>(&self, operation: Operation, request: F) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Ec2Error>>,
    {
        let lane = self.lane(operation.category());
        let mut last_retry_cost = None;
        let mut attempt = 1;
        loop {
            let error = match self.attempt(operation, lane, request()).await {
                Ok(value) => {
                    let mut quota = lock(&self.quota);
                    if quota.refill(last_retry_cost) {
                        let left = quota.available;
                        drop(quota);
                        self.observer.retry_quota(left);
                    }
                    return Ok(value);
                }
                Err(error) if matches!(error.kind, ErrorKind::Throttled | ErrorKind::Transient) => error,
                Err(error) => return Err(error),
            };
            if self.decide(operation, &error, attempt) != RetryOutcome::Retried {
                return Err(error);
            }
            last_retry_cost = Some(self.retry.cost(&error));
            let ceiling = self.retry.ceiling(attempt, error.kind);
            let delay = ceiling.mul_f64(lock(&self.rng).random::<f64>());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl<E: Ec2> Ec2 for Limited<E> {
    // Page methods only: the whole describes are the port's provided
    // pager, which calls these, so every page passes through `call`.
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        self.call(Operation::DescribeSecurityGroups, || self.inner.security_groups_page(filter, next_token.clone()))
            .await
    }
    async fn instances_page(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>, Ec2Error> {
        self.call(Operation::DescribeInstances, || self.inner.instances_page(filter, next_token.clone())).await
    }
    async fn classic_link_instances_page(
        &self,
        filter: &LinkFilter,
        next_token: Option<String>,
    ) -> Result<Page<Link>, Ec2Error> {
        self.call(Operation::DescribeClassicLinkInstances, || {
            self.inner.classic_link_instances_page(filter, next_token.clone())
        })
        .await
    }
    async fn vpcs_page(&self, vpc_ids: &[VpcId], next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
        self.call(Operation::DescribeVpcs, || self.inner.vpcs_page(vpc_ids, next_token.clone())).await
    }
    async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        self.call(Operation::DescribeVpcClassicLink, || self.inner.vpc_classic_link_request(vpc_ids)).await
    }
    async fn prefix_lists_page(
        &self,
        filter: &PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<Page<PrefixList>, Ec2Error> {
        self.call(Operation::DescribeManagedPrefixLists, || self.inner.prefix_lists_page(filter, next_token.clone()))
            .await
    }
    async fn prefix_list_entries_page(
        &self,
        id: &PrefixListId,
        next_token: Option<String>,
    ) -> Result<Page<PrefixListEntry>, Ec2Error> {
        self.call(Operation::GetManagedPrefixListEntries, || {
            self.inner.prefix_list_entries_page(id, next_token.clone())
        })
        .await
    }
    async fn network_interfaces_page(
        &self,
        filter: &InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<Page<NetworkInterface>, Ec2Error> {
        self.call(Operation::DescribeNetworkInterfaces, || {
            self.inner.network_interfaces_page(filter, next_token.clone())
        })
        .await
    }
    async fn create_prefix_list(&self, request: &CreatePrefixList) -> Result<PrefixList, Ec2Error> {
        self.call(Operation::CreateManagedPrefixList, || self.inner.create_prefix_list(request)).await
    }
    async fn modify_prefix_list(&self, request: &ModifyPrefixList) -> Result<PrefixList, Ec2Error> {
        self.call(Operation::ModifyManagedPrefixList, || self.inner.modify_prefix_list(request)).await
    }
    async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error> {
        self.call(Operation::DeleteManagedPrefixList, || self.inner.delete_prefix_list(id)).await
    }
    async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error> {
        self.call(Operation::CreateSecurityGroup, || self.inner.create_security_group(request)).await
    }
    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error> {
        self.call(Operation::DeleteSecurityGroup, || self.inner.delete_security_group(group_id)).await
    }
    async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.call(Operation::AuthorizeSecurityGroupIngress, || self.inner.authorize_ingress(group_id, grants)).await
    }
    async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.call(Operation::RevokeSecurityGroupIngress, || self.inner.revoke_ingress(group_id, grants)).await
    }
    async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.call(Operation::AuthorizeSecurityGroupEgress, || self.inner.authorize_egress(group_id, grants)).await
    }
    async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.call(Operation::RevokeSecurityGroupEgress, || self.inner.revoke_egress(group_id, grants)).await
    }
    async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.call(Operation::UpdateSecurityGroupRuleDescriptionsIngress, || {
            self.inner.update_ingress_descriptions(group_id, grants)
        })
        .await
    }
    async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        self.call(Operation::CreateTags, || self.inner.create_tags(group_id, tags)).await
    }
    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
        self.call(Operation::DeleteTags, || self.inner.delete_tags(group_id, keys)).await
    }
    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Ec2Error> {
        self.call(Operation::AttachClassicLinkVpc, || self.inner.attach_classic_link_vpc(instance_id, vpc_id, groups))
            .await
    }
    async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.call(Operation::DetachClassicLinkVpc, || self.inner.detach_classic_link_vpc(instance_id, vpc_id)).await
    }
    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.call(Operation::EnableVpcClassicLink, || self.inner.enable_vpc_classic_link(vpc_id)).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::config::Config;
    use crate::emulator::{Emulator, EmulatorOptions, NewGroup};

    /// A describe served in pages of two groups, recording every token it
    /// is asked for and answering the queued errors first, one per request;
    /// everything else goes to an emulator.
    struct Paged {
        emu: Emulator,
        groups: Vec<SecurityGroup>,
        tokens: Mutex<Vec<Option<String>>>,
        /// `(token, code)`: the next request with this token fails with `code`.
        failures: Mutex<VecDeque<(Option<String>, &'static str)>>,
        /// Every `vpc_classic_link_request` fails with this code.
        vpc_error: Option<&'static str>,
    }

    impl Paged {
        async fn new(groups: usize) -> Self {
            let emu = Emulator::new(EmulatorOptions::default());
            for i in 0..groups {
                emu.create_group(&NewGroup::classic(format!("g{i}"), "d")).await.unwrap();
            }
            // Without the Classic `default` group every world starts with.
            let mut all = emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
            all.retain(|g| g.name != "default");
            let groups = all;
            Self { emu, groups, tokens: Mutex::new(Vec::new()), failures: Mutex::new(VecDeque::new()), vpc_error: None }
        }

        fn fail(self, token: Option<&str>, code: &'static str) -> Self {
            lock(&self.failures).push_back((token.map(str::to_owned), code));
            self
        }

        fn tokens(&self) -> Vec<Option<String>> {
            lock(&self.tokens).clone()
        }
    }

    #[async_trait]
    impl Ec2 for Paged {
        async fn security_groups_page(
            &self,
            _: &GroupFilter,
            next_token: Option<String>,
        ) -> Result<Page<SecurityGroup>, Ec2Error> {
            lock(&self.tokens).push(next_token.clone());
            let op = Operation::DescribeSecurityGroups;
            {
                let mut failures = lock(&self.failures);
                if failures.front().is_some_and(|(token, _)| *token == next_token) {
                    let (_, code) = failures.pop_front().unwrap_or_default();
                    return Err(Ec2Error::new(op, code, "queued"));
                }
            }
            let start: usize = next_token.as_deref().map_or(0, |t| t.parse().unwrap());
            let end = (start + 2).min(self.groups.len());
            let next = (end < self.groups.len()).then(|| end.to_string());
            Ok(Page { items: self.groups[start..end].to_vec(), next_token: next })
        }
        async fn instances_page(&self, f: &InstanceFilter, t: Option<String>) -> Result<Page<Instance>, Ec2Error> {
            self.emu.instances_page(f, t).await
        }
        async fn classic_link_instances_page(&self, f: &LinkFilter, t: Option<String>) -> Result<Page<Link>, Ec2Error> {
            self.emu.classic_link_instances_page(f, t).await
        }
        async fn vpcs_page(&self, ids: &[VpcId], t: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
            self.emu.vpcs_page(ids, t).await
        }
        async fn vpc_classic_link_request(&self, ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
            match self.vpc_error {
                Some(code) => Err(Ec2Error::transport(Operation::DescribeVpcClassicLink, code, "queued")),
                None => self.emu.vpc_classic_link_request(ids).await,
            }
        }
        async fn prefix_lists_page(
            &self,
            f: &PrefixListFilter,
            t: Option<String>,
        ) -> Result<Page<PrefixList>, Ec2Error> {
            self.emu.prefix_lists_page(f, t).await
        }
        async fn prefix_list_entries_page(
            &self,
            id: &PrefixListId,
            t: Option<String>,
        ) -> Result<Page<PrefixListEntry>, Ec2Error> {
            self.emu.prefix_list_entries_page(id, t).await
        }
        async fn network_interfaces_page(
            &self,
            f: &InterfaceFilter,
            t: Option<String>,
        ) -> Result<Page<NetworkInterface>, Ec2Error> {
            self.emu.network_interfaces_page(f, t).await
        }
        async fn create_prefix_list(&self, r: &CreatePrefixList) -> Result<PrefixList, Ec2Error> {
            self.emu.create_prefix_list(r).await
        }
        async fn modify_prefix_list(&self, r: &ModifyPrefixList) -> Result<PrefixList, Ec2Error> {
            self.emu.modify_prefix_list(r).await
        }
        async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error> {
            self.emu.delete_prefix_list(id).await
        }
        async fn create_security_group(&self, r: &CreateGroup) -> Result<GroupId, Ec2Error> {
            self.emu.create_security_group(r).await
        }
        async fn delete_security_group(&self, g: &GroupId) -> Result<(), Ec2Error> {
            self.emu.delete_security_group(g).await
        }
        async fn authorize_ingress(&self, g: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.authorize_ingress(g, grants).await
        }
        async fn revoke_ingress(&self, g: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.revoke_ingress(g, grants).await
        }
        async fn update_ingress_descriptions(&self, g: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.update_ingress_descriptions(g, grants).await
        }
        async fn authorize_egress(&self, g: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.authorize_egress(g, grants).await
        }
        async fn revoke_egress(&self, g: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
            self.emu.revoke_egress(g, grants).await
        }
        async fn create_tags(&self, g: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
            self.emu.create_tags(g, tags).await
        }
        async fn delete_tags(&self, g: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
            self.emu.delete_tags(g, keys).await
        }
        async fn attach_classic_link_vpc(&self, i: &InstanceId, v: &VpcId, g: &[GroupId]) -> Result<(), Ec2Error> {
            self.emu.attach_classic_link_vpc(i, v, g).await
        }
        async fn detach_classic_link_vpc(&self, i: &InstanceId, v: &VpcId) -> Result<(), Ec2Error> {
            self.emu.detach_classic_link_vpc(i, v).await
        }
        async fn enable_vpc_classic_link(&self, v: &VpcId) -> Result<(), Ec2Error> {
            self.emu.enable_vpc_classic_link(v).await
        }
    }

    /// Records what the limiter reports.
    #[derive(Default)]
    struct Recorder {
        requests: Mutex<Vec<(Operation, &'static str)>>,
        retries: Mutex<Vec<RetryOutcome>>,
        quota: Mutex<Vec<u32>>,
    }

    impl RequestObserver for std::sync::Arc<Recorder> {
        fn record(&self, operation: Operation, outcome: &'static str, _: Duration) {
            lock(&self.requests).push((operation, outcome));
        }
        fn retry(&self, _: Operation, outcome: RetryOutcome) {
            lock(&self.retries).push(outcome);
        }
        fn retry_quota(&self, tokens: u32) {
            lock(&self.quota).push(tokens);
        }
    }

    fn limits() -> RateLimitConfig {
        Config::with_region("us-east-1").rate_limit
    }

    fn fast(policy: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(10),
            throttled_base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..policy
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_page_of_a_describe_takes_a_token_and_is_counted_as_a_request() {
        let paged = Paged::new(5).await;
        // One describe token a second, no burst: three pages need 2 s.
        let slow = RateLimitConfig { describe_per_second: 1.0, describe_burst: 1, ..limits() };
        let recorder = std::sync::Arc::new(Recorder::default());
        let ec2 = Limited::new(paged, &slow).with_observer(Box::new(recorder.clone()));
        let started = Instant::now();
        let groups = ec2.describe_security_groups(&GroupFilter::default()).await.unwrap();
        assert_eq!(groups.len(), 5);
        assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(ec2.inner().tokens(), [None, Some("2".into()), Some("4".into())]);
        assert_eq!(ec2.attempts()[&Operation::DescribeSecurityGroups], 3);
        assert_eq!(*lock(&recorder.requests), [(Operation::DescribeSecurityGroups, "ok"); 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_page_is_retried_alone_resumed_from_its_token() {
        let paged = Paged::new(7).await.fail(Some("6"), "RequestLimitExceeded").fail(Some("6"), "InternalError");
        let ec2 = Limited::new(paged, &limits()).with_retry(fast(RetryPolicy::default())).with_seed(1);
        let groups = ec2.describe_security_groups(&GroupFilter::default()).await.unwrap();
        assert_eq!(groups.len(), 7);
        let token = |t: &str| Some(t.to_owned());
        // Pages 1-3 once each; page 4 three times (throttled, 5xx, ok).
        assert_eq!(ec2.inner().tokens(), [None, token("2"), token("4"), token("6"), token("6"), token("6")]);
        assert_eq!(ec2.stats().retries.load(Ordering::Relaxed), 2);
        assert_eq!(ec2.stats().throttled.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_makes_at_most_max_attempts_attempts() {
        let paged = Paged::new(1).await;
        let paged = (0..10).fold(paged, |p, _| p.fail(None, "InternalError"));
        let ec2 = Limited::new(paged, &limits()).with_seed(2);
        let started = Instant::now();
        let error = ec2.describe_security_groups(&GroupFilter::default()).await.unwrap_err();
        assert_eq!(error.code, "InternalError");
        assert_eq!(ec2.inner().tokens().len(), 3, "the default is 3 attempts");
        // Two full-jitter backoffs below 100 ms and 200 ms.
        assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
        assert_eq!(ec2.stats().attempts_exhausted.load(Ordering::Relaxed), 1);
        // Errors that asking again cannot fix are not retried at all.
        let paged = Paged::new(1).await.fail(None, "UnauthorizedOperation");
        let ec2 = Limited::new(paged, &limits());
        assert_eq!(
            ec2.describe_security_groups(&GroupFilter::default()).await.unwrap_err().code,
            "UnauthorizedOperation"
        );
        assert_eq!(ec2.inner().tokens().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_retry_quota_fails_requests_on_their_first_attempt_and_successes_refill_it() {
        let policy = fast(RetryPolicy { max_attempts: 3, quota: 12, retry_cost: 5, ..RetryPolicy::default() });
        let paged = Paged::new(1).await;
        let paged = (0..4).fold(paged, |p, _| p.fail(None, "Unavailable"));
        let recorder = std::sync::Arc::new(Recorder::default());
        let ec2 = Limited::new(paged, &limits()).with_retry(policy).with_observer(Box::new(recorder.clone()));
        // 12 tokens: two retries (2 left), then the third attempt was the last.
        assert!(ec2.describe_security_groups(&GroupFilter::default()).await.is_err());
        assert_eq!(ec2.retry_quota(), 2);
        // 2 tokens cannot pay a retry: one attempt, one error.
        assert!(ec2.describe_security_groups(&GroupFilter::default()).await.is_err());
        assert_eq!(ec2.inner().tokens().len(), 4);
        assert_eq!(
            *lock(&recorder.retries),
            [RetryOutcome::Retried, RetryOutcome::Retried, RetryOutcome::MaxAttempts, RetryOutcome::QuotaEmpty]
        );
        // First-attempt successes refill one token each, up to the size.
        for _ in 0..3 {
            ec2.describe_security_groups(&GroupFilter::default()).await.unwrap();
        }
        assert_eq!(ec2.retry_quota(), 5);
        assert_eq!(*lock(&recorder.quota), [12, 7, 2, 3, 4, 5]);
        assert_eq!(ec2.stats().quota_refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_a_retry_gives_the_retry_cost_back_and_a_timeout_costs_more() {
        let policy = fast(RetryPolicy { quota: 100, retry_cost: 5, timeout_retry_cost: 10, ..RetryPolicy::default() });
        let paged = Paged::new(1).await.fail(None, "InternalError");
        let ec2 = Limited::new(paged, &limits()).with_retry(policy);
        ec2.describe_security_groups(&GroupFilter::default()).await.unwrap();
        assert_eq!(ec2.retry_quota(), 100, "drew 5, got 5 back");
        let mut paged = Paged::new(1).await;
        paged.vpc_error = Some(TIMEOUT);
        let ec2 = Limited::new(paged, &limits()).with_retry(policy);
        let vpc = VpcId::try_new("vpc-1").unwrap();
        assert_eq!(ec2.describe_vpc_classic_link(&[vpc]).await.unwrap_err().code, TIMEOUT);
        assert_eq!(ec2.retry_quota(), 80, "two retries after a timeout, 10 each");
    }

    #[test]
    fn backoff_ceilings_double_per_attempt_from_their_base_and_stop_at_the_cap() {
        let policy = RetryPolicy::default();
        let transient: Vec<Duration> = (1..=10).map(|n| policy.ceiling(n, ErrorKind::Transient)).collect();
        assert_eq!(
            transient[..3],
            [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]
        );
        assert_eq!(transient[9], Duration::from_secs(20));
        assert_eq!(policy.ceiling(1, ErrorKind::Throttled), Duration::from_secs(1));
        assert_eq!(policy.ceiling(6, ErrorKind::Throttled), Duration::from_secs(20), "32 s capped");
        assert_eq!(policy.ceiling(u32::MAX, ErrorKind::Throttled), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_of_1e12_or_any_other_value_builds_a_limiter_instead_of_panicking() {
        // `mutating_per_second = 1e12` validated and then panicked here (the
        // quota's period rounded to 0); so did `describe_per_second = 1e10`.
        let rates = [1e12, 1e10, f64::INFINITY, f64::MAX, f64::NAN, 0.0, -1.0, 1e-300, f64::MIN_POSITIVE, 5.0];
        for rate in rates {
            for burst in [0, 1, MAX_BURST, u32::MAX] {
                let config = RateLimitConfig {
                    mutating_per_second: rate,
                    mutating_burst: burst,
                    describe_per_second: rate,
                    describe_burst: burst,
                    ..limits()
                };
                let ec2 = Limited::new(Paged::new(0).await, &config);
                ec2.describe_security_groups(&GroupFilter::default()).await.unwrap();
            }
        }
        assert!((clamp_rate(1e12) - MAX_RATE_PER_SECOND).abs() < f64::EPSILON);
        assert!((clamp_rate(f64::NAN) - MIN_RATE_PER_SECOND).abs() < f64::EPSILON);
        assert_eq!(clamp_burst(0).get(), 1);
        assert_eq!(clamp_burst(u32::MAX).get(), MAX_BURST);
    }
}
