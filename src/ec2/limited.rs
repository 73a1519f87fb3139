//! The client side of EC2's request limits, as a decorator of the port.
//!
//! Observe and execute both talk to EC2 through [`Limited`], which gives every
//! call: a token bucket per request category (`governor`, from `[rate_limit]`),
//! an additive-increase / multiplicative-decrease slowdown after
//! `RequestLimitExceeded`, and retries with capped exponential backoff and
//! jitter (`backon`) for throttling and 5xx. Semantic retries (eventual
//! consistency, "already done") belong to the executor, not here.
//!
//! All waiting uses tokio's clock, so tests under paused time run instantly.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::{Category, CreateGroup, Ec2, Ec2Error, ErrorKind, GroupFilter, InstanceFilter, LinkFilter, Operation};
use crate::config::RateLimitConfig;
use crate::model::{Grant, GroupId, Instance, InstanceId, Link, SecurityGroup, Vpc, VpcId};

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

/// Receives one record per EC2 request attempt (metrics live elsewhere).
pub trait RequestObserver: Send + Sync {
    /// `outcome` is `"ok"` or the error kind label; `throttled` is true for
    /// `RequestLimitExceeded`.
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration);
}

/// An observer that drops everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl RequestObserver for NoObserver {
    fn record(&self, _: Operation, _: &'static str, _: Duration) {}
}

/// Retry policy for throttling and transient errors.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Cap on one delay.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(20), max_retries: 8 }
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
    fn new(per_second: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second.max(1e-3));
        let quota = Quota::with_period(period)
            .expect("positive period")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst >= 1"));
        let clock = TokioClock::default();
        Self {
            bucket: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            pacer: Mutex::new(Pacer::new(per_second)),
        }
    }

    async fn acquire(&self) {
        let pace = self.pacer.lock().expect("pacer lock").reserve();
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
    /// Attempts answered `RequestLimitExceeded`.
    pub throttled: AtomicU64,
    /// Attempts retried (throttled or transient).
    pub retries: AtomicU64,
}

/// The port, rate limited and retried. See the module docs.
pub struct Limited<E> {
    inner: E,
    describe: Lane,
    mutating: Lane,
    retry: RetryPolicy,
    observer: Box<dyn RequestObserver>,
    stats: LimiterStats,
    per_operation: Mutex<BTreeMap<Operation, u64>>,
}

impl<E: Ec2> Limited<E> {
    /// Wraps `inner` with the limits of `[rate_limit]`.
    #[must_use]
    pub fn new(inner: E, limits: &RateLimitConfig) -> Self {
        Self {
            inner,
            describe: Lane::new(limits.describe_per_second, limits.describe_burst),
            mutating: Lane::new(limits.mutating_per_second, limits.mutating_burst),
            retry: RetryPolicy::default(),
            observer: Box::new(NoObserver),
            stats: LimiterStats::default(),
            per_operation: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends a record of every attempt to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Box<dyn RequestObserver>) -> Self {
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

    /// Attempts sent per operation (including retries).
    pub fn attempts(&self) -> BTreeMap<Operation, u64> {
        self.per_operation.lock().expect("attempts lock").clone()
    }

    fn lane(&self, category: Category) -> &Lane {
        match category {
            Category::Describe => &self.describe,
            Category::Mutating => &self.mutating,
        }
    }

    async fn call<T, F, Fut>(&self, operation: Operation, attempt: F) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Ec2Error>>,
    {
        let lane = self.lane(operation.category());
        let once = || async {
            lane.acquire().await;
            *self.per_operation.lock().expect("attempts lock").entry(operation).or_default() += 1;
            let started = Instant::now();
            let result = attempt().await;
            let outcome = match &result {
                Ok(_) => {
                    lane.pacer.lock().expect("pacer lock").on_success();
                    "ok"
                }
                Err(error) => {
                    if error.kind == ErrorKind::Throttled {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        lane.pacer.lock().expect("pacer lock").on_throttle();
                    }
                    error.kind()
                }
            };
            self.observer.record(operation, outcome, started.elapsed());
            result
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        once.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &Ec2Error| matches!(e.kind, ErrorKind::Throttled | ErrorKind::Transient))
            .notify(|_, _| {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            })
            .await
    }
}

#[async_trait]
impl<E: Ec2> Ec2 for Limited<E> {
    async fn describe_security_groups(&self, filter: &GroupFilter) -> Result<Vec<SecurityGroup>, Ec2Error> {
        self.call(Operation::DescribeSecurityGroups, || self.inner.describe_security_groups(filter)).await
    }
    async fn describe_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>, Ec2Error> {
        self.call(Operation::DescribeInstances, || self.inner.describe_instances(filter)).await
    }
    async fn describe_classic_link_instances(&self, filter: &LinkFilter) -> Result<Vec<Link>, Ec2Error> {
        self.call(Operation::DescribeClassicLinkInstances, || self.inner.describe_classic_link_instances(filter)).await
    }
    async fn describe_vpc_classic_link(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        self.call(Operation::DescribeVpcClassicLink, || self.inner.describe_vpc_classic_link(vpc_ids)).await
    }
    async fn describe_vpcs(&self, vpc_ids: &[VpcId]) -> Result<Vec<VpcId>, Ec2Error> {
        self.call(Operation::DescribeVpcs, || self.inner.describe_vpcs(vpc_ids)).await
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
