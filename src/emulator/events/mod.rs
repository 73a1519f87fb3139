//! # The emulator's event queue
//!
//! What an EventBridge rule feeding an SQS queue would deliver: for every
//! write the engine accepts, the EventBridge event document ("AWS API Call
//! via CloudTrail", "EC2 Instance State-change Notification",
//! [`documents`]) becomes one SQS message in an in-memory queue, which the
//! HTTP server serves over SQS's JSON protocol (`server::sqs`) to the
//! unmodified `aws-sdk-sqs`.
//!
//! ```text
//!  write accepted ──► Published ──► envelope (id, time, region, userIdentity)
//!     ──► loss? ──► duplicate? ──► delay (+ jitter) ──► queue ──► ReceiveMessage (long poll)
//!                                                            ◄── DeleteMessage(Batch)
//! ```
//!
//! Knobs ([`EventOptions`]): delivery delay with jitter (which also
//! reorders), loss and duplication rates, all drawn from one seeded
//! generator. SQS semantics kept: a received message is invisible for the
//! visibility timeout, then delivered again with a new receipt handle and a
//! higher `ApproximateReceiveCount`; deleting with an outdated receipt
//! handle succeeds without deleting (as SQS documents); a handle the queue
//! never issued is `ReceiptHandleIsInvalid`. Clocks are `tokio::time`;
//! event `time` fields are wall-clock.

pub mod documents;

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use documents::Caller;
pub(crate) use documents::Published;

/// The queue's name unless told otherwise.
pub const DEFAULT_QUEUE_NAME: &str = "classiclink-mirror-events";
/// The region events carry when the request's credential scope names none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// SQS's default visibility timeout.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// SQS's longest long poll (`WaitTimeSeconds`).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's most messages per receive (`MaxNumberOfMessages`).
pub const MAX_MESSAGES: usize = 10;

/// How the queue delivers.
#[derive(Clone, Debug, PartialEq)]
pub struct EventOptions {
    /// The queue's name (the last segment of its URL).
    pub queue_name: String,
    /// The region of events whose request was not signed with one.
    pub region: String,
    /// Every event is delivered this long after its write …
    pub delay: Duration,
    /// … plus a uniform share of this (events overtake each other).
    pub delay_jitter: Duration,
    /// Share (0–1) of events never delivered.
    pub loss: f64,
    /// Share (0–1) of delivered events delivered twice (two messages, one event `id`).
    pub duplication: f64,
    /// Seed of the queue's random generator.
    pub seed: u64,
    /// The queue's default visibility timeout.
    pub visibility_timeout: Duration,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            queue_name: DEFAULT_QUEUE_NAME.to_owned(),
            region: DEFAULT_REGION.to_owned(),
            delay: Duration::ZERO,
            delay_jitter: Duration::ZERO,
            loss: 0.0,
            duplication: 0.0,
            seed: 0,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
        }
    }
}

/// What the queue has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events published by accepted writes.
    pub published: u64,
    /// Of those, dropped by the loss knob.
    pub lost: u64,
    /// Extra copies made by the duplication knob.
    pub duplicated: u64,
    /// Messages sent with `SendMessage`.
    pub sent: u64,
    /// Deliveries (a message received twice counts twice).
    pub received: u64,
    /// Messages deleted.
    pub deleted: u64,
}

/// Message counts as `GetQueueAttributes` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Receivable now (`ApproximateNumberOfMessages`).
    pub visible: usize,
    /// Received and not yet visible again (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: usize,
    /// Not delivered yet (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: usize,
}

/// One delivery of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `MessageId`.
    pub message_id: String,
    /// `ReceiptHandle` of this delivery.
    pub receipt_handle: String,
    /// `Body`: the event document.
    pub body: String,
    /// `MD5OfBody`, hex.
    pub md5_of_body: String,
    /// System attributes: `SentTimestamp`, `ApproximateReceiveCount`,
    /// `ApproximateFirstReceiveTimestamp` (epoch milliseconds), `SenderId`.
    pub attributes: BTreeMap<String, String>,
}

/// A receipt handle the queue never issued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
pub struct InvalidReceipt(pub String);

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    md5: String,
    sent_ms: u128,
    first_receive_ms: Option<u128>,
    receive_count: u64,
    visible_at: Instant,
    delivered: bool,
    /// The nonce of the latest receipt handle.
    receipt: Option<u64>,
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    next_seq: u64,
    messages: BTreeMap<u64, Message>,
    stats: EventStats,
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    options: EventOptions,
    state: Mutex<State>,
    arrived: Notify,
}

/// The event queue: a cheap `Clone` handle; clones share one queue.
#[derive(Clone, Debug)]
pub struct EventQueue {
    inner: Arc<Inner>,
}

fn epoch_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// RFC 3339 at second precision, as EventBridge writes `time`.
fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn md5_hex(body: &str) -> String {
    let mut out = String::with_capacity(32);
    for byte in Md5::digest(body.as_bytes()) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn uuid(rng: &mut StdRng) -> String {
    let a: u32 = rng.random();
    let b: u16 = rng.random();
    let c: u16 = rng.random::<u16>() & 0x0fff;
    let d: u16 = (rng.random::<u16>() & 0x3fff) | 0x8000;
    let e: u64 = rng.random::<u64>() & 0xffff_ffff_ffff;
    format!("{a:08x}-{b:04x}-4{c:03x}-{d:04x}-{e:012x}")
}

impl EventQueue {
    /// An empty queue.
    #[must_use]
    pub fn new(options: EventOptions) -> Self {
        let state = State {
            rng: StdRng::seed_from_u64(options.seed),
            next_seq: 0,
            messages: BTreeMap::new(),
            stats: EventStats::default(),
            closed: false,
        };
        Self { inner: Arc::new(Inner { options, state: Mutex::new(state), arrived: Notify::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock()
    }

    /// The options in force.
    #[must_use]
    pub fn options(&self) -> &EventOptions {
        &self.inner.options
    }

    /// The queue's URL under an endpoint (`http://127.0.0.1:4566`): SQS's
    /// `<endpoint>/<account>/<name>`.
    #[must_use]
    pub fn url(&self, endpoint: &str, account: &str) -> String {
        format!("{}/{account}/{}", endpoint.trim_end_matches('/'), self.inner.options.queue_name)
    }

    /// Publishes what one accepted write produced, through the loss,
    /// duplication and delay knobs.
    pub(crate) fn publish(&self, published: Vec<Published>, caller: &Caller, account: &str) {
        if published.is_empty() {
            return;
        }
        let options = &self.inner.options;
        let region = caller.region.clone().unwrap_or_else(|| options.region.clone());
        let time = rfc3339_now();
        let now = Instant::now();
        let mut state = self.lock();
        for item in published {
            state.stats.published += 1;
            let id = uuid(&mut state.rng);
            let envelope = documents::Envelope { id: &id, account, region: &region, time: &time };
            let body = documents::document(&item, &envelope, caller).to_string();
            let after = match &item {
                Published::StateChange { after, .. } => *after,
                Published::Call { .. } => Duration::ZERO,
            };
            if options.loss > 0.0 && state.rng.random_bool(options.loss.min(1.0)) {
                state.stats.lost += 1;
                continue;
            }
            let copies = if options.duplication > 0.0 && state.rng.random_bool(options.duplication.min(1.0)) {
                state.stats.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let jitter = options.delay_jitter.mul_f64(state.rng.random::<f64>());
                let visible_at = now + after + options.delay + jitter;
                state.enqueue(body.clone(), visible_at);
            }
        }
        drop(state);
        self.inner.arrived.notify_waiters();
    }

    /// `SendMessage`: one message, delivered at once (the knobs are
    /// EventBridge's, not the queue's). Returns its id and the body's MD5.
    pub fn send(&self, body: String) -> (String, String) {
        let mut state = self.lock();
        state.stats.sent += 1;
        let (id, md5) = state.enqueue(body, Instant::now());
        drop(state);
        self.inner.arrived.notify_waiters();
        (id, md5)
    }

    /// `ReceiveMessage`: up to `max` messages visible now, waiting up to
    /// `wait` for the first; each becomes invisible for `visibility`.
    pub async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Vec<Received> {
        let deadline = Instant::now() + wait;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = Instant::now();
            let (received, next_visible) = {
                let mut state = self.lock();
                if state.closed {
                    return Vec::new();
                }
                let received = state.take(now, max.clamp(1, MAX_MESSAGES), visibility);
                let next = state.messages.values().map(|m| m.visible_at).filter(|t| *t > now).min();
                (received, next)
            };
            if !received.is_empty() || now >= deadline {
                return received;
            }
            let wake = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// `DeleteMessage`: deletes the message of the latest receipt handle;
    /// an outdated handle, or one of a deleted message, succeeds and
    /// deletes nothing.
    ///
    /// # Errors
    /// [`InvalidReceipt`] for a handle this queue never issued.
    pub fn delete(&self, receipt_handle: &str) -> Result<(), InvalidReceipt> {
        let invalid = || InvalidReceipt(receipt_handle.to_owned());
        let (seq, nonce) = receipt_handle.split_once('.').ok_or_else(invalid)?;
        let seq = u64::from_str_radix(seq, 16).map_err(|_| invalid())?;
        let nonce = u64::from_str_radix(nonce, 16).map_err(|_| invalid())?;
        let mut state = self.lock();
        if seq >= state.next_seq {
            return Err(invalid());
        }
        if state.messages.get(&seq).is_some_and(|m| m.receipt == Some(nonce)) {
            state.messages.remove(&seq);
            state.stats.deleted += 1;
        }
        Ok(())
    }

    /// What the queue has done.
    #[must_use]
    pub fn stats(&self) -> EventStats {
        self.lock().stats
    }

    /// Messages by visibility now.
    #[must_use]
    pub fn counts(&self) -> QueueCounts {
        let now = Instant::now();
        let state = self.lock();
        let mut counts = QueueCounts::default();
        for m in state.messages.values() {
            if m.visible_at <= now {
                counts.visible += 1;
            } else if m.delivered {
                counts.in_flight += 1;
            } else {
                counts.delayed += 1;
            }
        }
        counts
    }

    /// Drops every message (`PurgeQueue`).
    pub fn purge(&self) {
        self.lock().messages.clear();
    }

    /// Ends every long poll now and answers later ones empty: the server
    /// is shutting down.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.arrived.notify_waiters();
    }
}

/// The queue as the daemon's event source, in-process (tests, `demo`
/// without HTTP): the same semantics as over SQS.
#[async_trait::async_trait]
impl crate::events::EventSource for EventQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<crate::events::EventMessage>, crate::events::EventSourceError> {
        let visibility = self.inner.options.visibility_timeout;
        let received = EventQueue::receive(self, max, wait.min(MAX_WAIT), visibility).await;
        Ok(received
            .into_iter()
            .map(|r| crate::events::EventMessage {
                receive_count: r.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
                message_id: r.message_id,
                receipt: crate::events::Receipt(r.receipt_handle),
                body: r.body,
            })
            .collect())
    }

    async fn delete_batch(
        &self,
        receipts: &[crate::events::Receipt],
    ) -> Result<crate::events::Deleted, crate::events::EventSourceError> {
        let mut done = crate::events::Deleted::default();
        for receipt in receipts.iter().take(crate::events::MAX_BATCH) {
            match self.delete(&receipt.0) {
                Ok(()) => done.deleted += 1,
                Err(e) => done.failed.push((
                    receipt.clone(),
                    crate::events::EventSourceError::new(
                        crate::events::EventOperation::Delete,
                        crate::events::codes::RECEIPT_HANDLE_IS_INVALID,
                        e.to_string(),
                    ),
                )),
            }
        }
        Ok(done)
    }
}

impl State {
    fn enqueue(&mut self, body: String, visible_at: Instant) -> (String, String) {
        let id = uuid(&mut self.rng);
        let md5 = md5_hex(&body);
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = Message {
            id: id.clone(),
            body,
            md5: md5.clone(),
            sent_ms: epoch_ms(),
            first_receive_ms: None,
            receive_count: 0,
            visible_at,
            delivered: false,
            receipt: None,
        };
        self.messages.insert(seq, message);
        (id, md5)
    }

    /// The messages visible at `now`, oldest visible first, at most `max`.
    fn take(&mut self, now: Instant, max: usize, visibility: Duration) -> Vec<Received> {
        let mut ready: Vec<(Instant, u64)> =
            self.messages.iter().filter(|(_, m)| m.visible_at <= now).map(|(s, m)| (m.visible_at, *s)).collect();
        ready.sort_unstable();
        ready.truncate(max);
        let mut out = Vec::with_capacity(ready.len());
        for (_, seq) in ready {
            let nonce: u64 = self.rng.random();
            let Some(message) = self.messages.get_mut(&seq) else { continue };
            message.receive_count += 1;
            message.delivered = true;
            message.visible_at = now + visibility;
            message.receipt = Some(nonce);
            let first = *message.first_receive_ms.get_or_insert_with(epoch_ms);
            let attributes = BTreeMap::from([
                ("ApproximateFirstReceiveTimestamp".to_owned(), first.to_string()),
                ("ApproximateReceiveCount".to_owned(), message.receive_count.to_string()),
                ("SenderId".to_owned(), "AIDAEMULATOREXAMPLE01".to_owned()),
                ("SentTimestamp".to_owned(), message.sent_ms.to_string()),
            ]);
            out.push(Received {
                message_id: message.id.clone(),
                receipt_handle: format!("{seq:x}.{nonce:016x}"),
                body: message.body.clone(),
                md5_of_body: message.md5.clone(),
                attributes,
            });
            self.stats.received += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupId, InstanceId, InstanceState};

    fn call(group: &str) -> Published {
        documents::delete_group(&GroupId::try_new(group).unwrap())
    }

    fn queue(options: EventOptions) -> EventQueue {
        EventQueue::new(options)
    }

    fn event_name(r: &Received) -> String {
        let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        doc["detail"]["requestParameters"]["groupId"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn published_events_are_received_in_order_with_md5_and_attributes() {
        let q = queue(EventOptions::default());
        q.publish(vec![call("sg-1"), call("sg-2")], &Caller::in_process(), "123456789012");
        let got = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await;
        assert_eq!(got.iter().map(event_name).collect::<Vec<_>>(), ["sg-1", "sg-2"]);
        assert_eq!(got[0].md5_of_body, md5_hex(&got[0].body));
        assert_eq!(got[0].attributes["ApproximateReceiveCount"], "1");
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_returns_as_soon_as_an_event_arrives() {
        let q = queue(EventOptions::default());
        let poller = tokio::spawn({
            let q = q.clone();
            async move {
                let start = Instant::now();
                (q.receive(10, MAX_WAIT, Duration::from_secs(30)).await, start.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        q.publish(vec![call("sg-1")], &Caller::in_process(), "1");
        let (got, waited) = poller.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(waited, Duration::from_secs(3));
        let start = Instant::now();
        assert!(q.receive(10, Duration::from_secs(5), Duration::from_secs(30)).await.is_empty());
        assert_eq!(start.elapsed(), Duration::from_secs(5), "an empty long poll waits its whole time");
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_messages_come_back_after_the_visibility_timeout_with_a_new_receipt() {
        let q = queue(EventOptions::default());
        q.publish(vec![call("sg-1")], &Caller::in_process(), "1");
        let first = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await;
        assert!(q.receive(10, Duration::from_secs(29), Duration::from_secs(30)).await.is_empty());
        let second = q.receive(10, Duration::from_secs(2), Duration::from_secs(30)).await;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].attributes["ApproximateReceiveCount"], "2");
        assert_ne!(first[0].receipt_handle, second[0].receipt_handle);
        q.delete(&first[0].receipt_handle).unwrap();
        assert_eq!(q.stats().deleted, 0, "an outdated receipt handle deletes nothing");
        q.delete(&second[0].receipt_handle).unwrap();
        assert_eq!(q.stats().deleted, 1);
        q.delete(&second[0].receipt_handle).unwrap();
        assert_eq!(q.counts(), QueueCounts::default());
    }

    #[test]
    fn receipt_handles_never_issued_are_invalid() {
        let q = queue(EventOptions::default());
        for bad in ["", "x", "0.zz", "5.0000000000000001", "zz.1"] {
            assert_eq!(q.delete(bad), Err(InvalidReceipt(bad.to_owned())), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delay_jitter_loss_and_duplication_follow_the_seeded_knobs() {
        let options = EventOptions {
            delay: Duration::from_secs(2),
            delay_jitter: Duration::from_secs(1),
            loss: 0.25,
            duplication: 0.25,
            seed: 7,
            ..EventOptions::default()
        };
        let run = || async {
            let q = queue(options.clone());
            let events: Vec<Published> = (1..=400).map(|n| call(&format!("sg-{n:x}"))).collect();
            q.publish(events, &Caller::in_process(), "1");
            assert!(
                q.receive(10, Duration::ZERO, Duration::from_secs(60)).await.is_empty(),
                "nothing before the delay"
            );
            assert_eq!(q.counts().delayed as u64, 400 - q.stats().lost + q.stats().duplicated);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut got = Vec::new();
            loop {
                let batch = q.receive(10, Duration::ZERO, Duration::from_secs(60)).await;
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.iter().map(event_name));
            }
            (q.stats(), got)
        };
        let (stats, got) = run().await;
        assert_eq!((stats, got.clone()), run().await, "the same seed gives the same deliveries");
        assert!((60..140).contains(&stats.lost), "{stats:?}");
        assert!((40..110).contains(&stats.duplicated), "{stats:?}");
        assert_eq!(got.len() as u64, 400 - stats.lost + stats.duplicated);
        let mut sorted = got.clone();
        sorted.sort_by_key(|g| u64::from_str_radix(g.trim_start_matches("sg-"), 16).unwrap());
        assert_ne!(got, sorted, "jitter reorders deliveries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_launch_announces_running_when_it_runs() {
        let q = queue(EventOptions::default());
        let instance = InstanceId::try_new("i-1").unwrap();
        let published = documents::run_instances(&[], 1, &[instance], Some(Duration::from_secs(10)));
        q.publish(published, &Caller::in_process(), "1");
        let now: Vec<String> =
            q.receive(10, Duration::ZERO, Duration::from_secs(60)).await.iter().map(|r| r.body.clone()).collect();
        assert_eq!(now.len(), 2, "the call and `pending`");
        assert!(now[1].contains("\"state\":\"pending\""));
        let later = q.receive(10, Duration::from_secs(11), Duration::from_secs(60)).await;
        assert!(later[0].body.contains(&format!("\"state\":\"{}\"", InstanceState::Running.as_ec2())));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_long_polls() {
        let q = queue(EventOptions::default());
        let poller = tokio::spawn({
            let q = q.clone();
            async move { q.receive(10, MAX_WAIT, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        q.close();
        assert!(poller.await.unwrap().is_empty());
    }
}
