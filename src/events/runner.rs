//! The event reader: a task that long-polls the [`EventSource`], parses
//! each message ([`parse`]), feeds the hints into the shared [`DirtySet`],
//! deletes every message it has read — acted on, ignored or malformed, so
//! nothing is retried forever — and keeps the counts and the health that
//! metrics and `/status` show.
//!
//! A failing queue never stops anything: the reader backs off (1 s doubling
//! to 60 s; 60 s at once for a missing queue, a denial or missing
//! credentials, which need a human), logs, counts, and the daemon keeps
//! running its periodic full passes — it *degrades to polling*.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dirty::{Added, Batch, Dirty, DirtySet};
use super::metrics::EventMetrics;
use super::parse::{Expected, IgnoreReason, Verdict, parse};
use super::{EventErrorKind, EventSource, MAX_BATCH, MAX_WAIT};

/// How long a targeted pass waits after the latest event of a burst.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// … and at most after the first.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// The first backoff after a failed receive.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Counts since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Messages received.
    pub received: u64,
    /// Events whose hints were merged into the dirty set.
    pub acted_on: u64,
    /// Events ignored, by reason (`duplicate` for a repeated event id).
    pub ignored: BTreeMap<&'static str, u64>,
    /// Failed requests to the queue, by error kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Messages deleted.
    pub deleted: u64,
}

/// The event source's health, for `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// When the last receive succeeded (wall clock).
    pub last_receive: Option<SystemTime>,
    /// When the last request failed, its error kind and message.
    pub last_error: Option<(SystemTime, &'static str, String)>,
    /// Failed receives since the last good one: more than zero means the
    /// daemon is running on its periodic passes alone.
    pub consecutive_errors: u32,
}

impl SourceHealth {
    /// True while receives succeed.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.consecutive_errors == 0
    }
}

#[derive(Debug)]
struct Shared {
    dirty: DirtySet,
    expected: Expected,
    counts: EventCounts,
    health: SourceHealth,
    metrics: Option<EventMetrics>,
}

impl Shared {
    fn count_error(&mut self, kind: EventErrorKind) {
        *self.counts.errors.entry(kind.as_str()).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.errors.with_label_values(&[kind.as_str()]).inc();
        }
    }

    fn count_ignored(&mut self, reason: &'static str) {
        *self.counts.ignored.entry(reason).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.ignored.with_label_values(&[reason]).inc();
        }
    }
}

/// What the reader and the daemon loop share: the dirty set, what events
/// are expected to look like, counts and health. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventHub {
    shared: Arc<Mutex<Shared>>,
    /// Woken when a hint arrives, so the loop can compute its next deadline.
    wake: Arc<Notify>,
}

impl EventHub {
    /// A hub expecting events of `expected`, with the default debounce.
    #[must_use]
    pub fn new(expected: Expected) -> Self {
        Self::with_debounce(expected, DEBOUNCE, MAX_DELAY)
    }

    /// A hub with explicit debounce settings.
    #[must_use]
    pub fn with_debounce(expected: Expected, debounce: Duration, max_delay: Duration) -> Self {
        let shared = Shared {
            dirty: DirtySet::new(debounce, max_delay),
            expected,
            counts: EventCounts::default(),
            health: SourceHealth::default(),
            metrics: None,
        };
        Self { shared: Arc::new(Mutex::new(shared)), wake: Arc::new(Notify::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock()
    }

    /// Sets the account events must come from (learnt from a snapshot).
    pub fn expect_account(&self, account: &str) {
        if account.is_empty() {
            return;
        }
        self.lock().expected.account = Some(account.to_owned());
    }

    /// Counts into `metrics` from now on.
    pub fn attach_metrics(&self, metrics: EventMetrics) {
        self.lock().metrics = Some(metrics);
    }

    /// The metrics attached, if any.
    #[must_use]
    pub fn metrics(&self) -> Option<EventMetrics> {
        self.lock().metrics.clone()
    }

    /// When a targeted pass is due, if events are pending.
    #[must_use]
    pub fn due_at(&self) -> Option<Instant> {
        self.lock().dirty.due_at()
    }

    /// Waits until a hint arrives (then call [`Self::due_at`] again).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Takes the pending batch for a targeted pass.
    #[must_use]
    pub fn take(&self) -> Batch {
        self.lock().dirty.take()
    }

    /// A full pass starts: it will see what pending events point at.
    pub fn full_pass_started(&self) {
        self.lock().dirty.clear();
    }

    /// The reader restarts with another source (a reload changed
    /// `[events]`): the old source's health no longer says anything.
    pub fn source_restarted(&self) {
        self.lock().health = SourceHealth::default();
    }

    /// How many stale ids (of the last passes' writes) the next batch carries.
    #[must_use]
    pub fn stale_len(&self) -> usize {
        self.lock().dirty.stale_len()
    }

    /// After a full pass: what its own writes made stale, in place of what
    /// earlier passes' writes did (its snapshot saw those).
    pub fn full_pass_wrote(&self, stale: Dirty) {
        self.lock().dirty.replace_stale(stale);
    }

    /// After a targeted pass: what its own writes made stale.
    pub fn pass_wrote(&self, stale: Dirty) {
        self.lock().dirty.add_stale(stale);
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> EventCounts {
        self.lock().counts.clone()
    }

    /// The source's health.
    #[must_use]
    pub fn health(&self) -> SourceHealth {
        self.lock().health.clone()
    }

    /// Parses one message body and merges its hint; what happened, for the
    /// counts (`acted_on`, or an ignore reason).
    fn digest(&self, body: &str, now: Instant) -> Result<(), &'static str> {
        let mut shared = self.lock();
        let verdict = parse(body, &shared.expected);
        let outcome = match verdict {
            Verdict::Act(hint) => match shared.dirty.add(hint, now) {
                Added::Merged => Ok(()),
                Added::Duplicate => Err("duplicate"),
            },
            Verdict::Ignore(reason) => Err(reason.as_str()),
        };
        match outcome {
            Ok(()) => {
                shared.counts.acted_on += 1;
                if let Some(m) = &shared.metrics {
                    m.acted_on.inc();
                }
            }
            Err(reason) => shared.count_ignored(reason),
        }
        outcome
    }
}

/// The labels `EventCounts::ignored` uses: every [`IgnoreReason`] and `duplicate`.
#[must_use]
pub fn ignore_labels() -> Vec<&'static str> {
    IgnoreReason::ALL.iter().map(|r| r.as_str()).chain(["duplicate"]).collect()
}

fn backoff(kind: EventErrorKind, consecutive: u32) -> Duration {
    match kind {
        EventErrorKind::NoQueue | EventErrorKind::Denied | EventErrorKind::Credentials => MAX_BACKOFF,
        _ => FIRST_BACKOFF.saturating_mul(1 << consecutive.saturating_sub(1).min(6)).min(MAX_BACKOFF),
    }
}

/// Reads events until `cancel` fires.
pub async fn read_events(
    source: Arc<dyn EventSource>,
    hub: EventHub,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    cancel: CancellationToken,
) {
    info!("event source: reading the queue");
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            received = source.receive(MAX_BATCH, MAX_WAIT) => received,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(error) => {
                let kind = error.kind();
                let wait = {
                    let mut shared = hub.lock();
                    shared.count_error(kind);
                    if let Some(m) = &shared.metrics {
                        m.up.set(0);
                    }
                    shared.health.consecutive_errors += 1;
                    shared.health.last_error = Some((clock(), kind.as_str(), error.to_string()));
                    backoff(kind, shared.health.consecutive_errors)
                };
                warn!(kind = kind.as_str(), code = %error.code, error = %error, retry_in = ?wait,
                    "cannot receive events; running on periodic passes until the queue answers");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        {
            let mut shared = hub.lock();
            if shared.health.consecutive_errors > 0 {
                info!("event source: the queue answers again");
            }
            shared.health.consecutive_errors = 0;
            shared.health.last_receive = Some(clock());
            shared.counts.received += messages.len() as u64;
            if let Some(m) = &shared.metrics {
                m.up.set(1);
                m.received.inc_by(messages.len() as u64);
            }
        }
        if messages.is_empty() {
            continue;
        }
        let now = Instant::now();
        let mut acted = false;
        for message in &messages {
            match hub.digest(&message.body, now) {
                Ok(()) => acted = true,
                Err(reason) => debug!(message_id = %message.message_id, reason, "event ignored"),
            }
        }
        if acted {
            hub.wake.notify_one();
        }
        let receipts: Vec<_> = messages.into_iter().map(|m| m.receipt).collect();
        match source.delete(&receipts).await {
            Ok(done) => {
                let mut shared = hub.lock();
                shared.counts.deleted += done.deleted as u64;
                for (_, error) in &done.failed {
                    shared.count_error(error.kind());
                }
            }
            Err(error) => {
                // The messages come back after their visibility timeout:
                // duplicates, dropped by event id.
                let kind = error.kind();
                let mut shared = hub.lock();
                shared.count_error(kind);
                shared.health.last_error = Some((clock(), kind.as_str(), error.to_string()));
                warn!(kind = kind.as_str(), error = %error, "cannot delete events; they will be delivered again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::events::{Deleted, EventMessage, EventOperation, EventSourceError, Receipt};

    /// A scripted queue: each receive answers the next script entry.
    struct Script {
        answers: Mutex<Vec<Result<Vec<EventMessage>, EventSourceError>>>,
        deleted: Mutex<Vec<Receipt>>,
    }

    #[async_trait]
    impl EventSource for Script {
        async fn receive(&self, _: usize, wait: Duration) -> Result<Vec<EventMessage>, EventSourceError> {
            let next = self.answers.lock().pop();
            match next {
                Some(answer) => answer,
                None => {
                    tokio::time::sleep(wait).await;
                    Ok(Vec::new())
                }
            }
        }

        async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Deleted, EventSourceError> {
            self.deleted.lock().extend(receipts.iter().cloned());
            Ok(Deleted { deleted: receipts.len(), failed: Vec::new() })
        }
    }

    fn message(n: u32, body: &str) -> EventMessage {
        EventMessage {
            message_id: format!("m{n}"),
            receipt: Receipt(format!("r{n}")),
            body: body.to_owned(),
            receive_count: 1,
        }
    }

    fn event(id: &str, region: &str) -> String {
        serde_json::json!({
            "id": id, "source": "aws.ec2", "detail-type": "AWS API Call via CloudTrail",
            "account": "123456789012", "region": region, "time": "2026-12-06T08:00:00Z",
            "detail": { "eventName": "CreateTags", "userAgent": "console",
                        "requestParameters": { "resourcesSet": { "items": [{ "resourceId": "sg-1" }] } } },
        })
        .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn every_message_is_deleted_and_counted_by_what_it_was() {
        let batch = vec![
            message(1, &event("a", "us-east-1")),
            message(2, &event("a", "us-east-1")),
            message(3, &event("b", "eu-west-1")),
            message(4, "not json"),
        ];
        let source = Arc::new(Script { answers: Mutex::new(vec![Ok(batch)]), deleted: Mutex::new(Vec::new()) });
        let hub = EventHub::new(Expected { account: None, region: "us-east-1".into() });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(read_events(source.clone(), hub.clone(), Arc::new(SystemTime::now), cancel.clone()));
        hub.changed().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(source.deleted.lock().len(), 4, "acted on, duplicate, other region, malformed: all deleted");
        let counts = hub.counts();
        assert_eq!((counts.received, counts.acted_on, counts.deleted), (4, 1, 4));
        assert_eq!(counts.ignored, BTreeMap::from([("duplicate", 1), ("malformed", 1), ("other_region", 1)]));
        assert!(hub.due_at().is_some());
        assert_eq!(hub.take().dirty.groups.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_queue_backs_off_is_unhealthy_and_recovers() {
        let denied =
            || Err(EventSourceError::new(EventOperation::Receive, "AWS.SimpleQueueService.NonExistentQueue", "gone"));
        let flaky = || Err(EventSourceError::new(EventOperation::Receive, "HttpStatus503", "busy"));
        // Popped from the end: 503, 503, no queue, then a good empty answer.
        let answers = vec![Ok(Vec::new()), denied(), flaky(), flaky()];
        let source = Arc::new(Script { answers: Mutex::new(answers), deleted: Mutex::new(Vec::new()) });
        let hub = EventHub::new(Expected { account: None, region: "us-east-1".into() });
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(read_events(source, hub.clone(), Arc::new(SystemTime::now), cancel.clone()));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(hub.health().consecutive_errors, 2, "1 s, then 2 s of backoff");
        assert!(!hub.health().is_healthy());
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(hub.health().is_healthy(), "a missing queue waits 60 s, then the queue answers");
        assert_eq!(hub.counts().errors, BTreeMap::from([("no_queue", 1), ("transient", 2)]));
        assert!(hub.health().last_error.is_some() && hub.health().last_receive.is_some());
        assert!(started.elapsed() >= Duration::from_secs(63));
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(EventErrorKind::Transient, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(EventErrorKind::Denied, 1), MAX_BACKOFF);
    }
}
