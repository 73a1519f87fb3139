//! # Event source: EC2 change events as hints
//!
//! Where the event path (docs/architecture.md, "Events") gets its input: an
//! SQS queue fed by an EventBridge rule with EC2's "AWS API Call via
//! CloudTrail" and "EC2 Instance State-change Notification" events. Events
//! are *hints*: they say which groups and instances may have changed so a
//! targeted pass can look at them soon; the periodic full pass stays the
//! authority, so a lost, late, duplicated or malformed event costs latency,
//! never correctness.
//!
//! - [`EventSource`] is the port: receive a batch (long polling), delete a
//!   batch, with domain types only; `ec2::aws::AwsEventSource` is the
//!   `aws-sdk-sqs` adapter (only `src/ec2/aws/` imports the AWS SDK).
//! - [`parse`] turns one message body into the groups and instances it marks
//!   dirty, or a reason to ignore it — pure, total, never panics.

pub mod dirty;
pub mod metrics;
pub mod parse;
pub mod runner;
pub mod targeted;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

/// The app name the daemon's AWS clients put in their `User-Agent`
/// (`app/classiclink-mirror`), which CloudTrail records as `userAgent`: how
/// the daemon recognises events caused by its own writes.
pub const OWN_APP_NAME: &str = "classiclink-mirror";

/// SQS's most messages per `ReceiveMessage` and per `DeleteMessageBatch`.
pub const MAX_BATCH: usize = 10;

/// SQS's longest long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A receipt handle: what deletes one delivery of a message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Receipt(pub String);

/// One message as the queue delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMessage {
    /// SQS's `MessageId`.
    pub message_id: String,
    /// The receipt handle of this delivery.
    pub receipt: Receipt,
    /// The body: an EventBridge event document, if all is well.
    pub body: String,
    /// How often the queue has delivered this message (1 the first time).
    pub receive_count: u32,
}

/// Where the queue is: the `[events]` settings the adapter needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
    pub queue_url: String,
    /// An SQS-compatible endpoint (the emulator, moto); `None`: AWS's.
    pub endpoint_url: Option<String>,
    /// The region of the client.
    pub region: String,
    /// A named profile; otherwise the standard credential chain.
    pub profile: Option<String>,
}

impl QueueSettings {
    /// The queue of `config`'s `[events]`, if one is configured: its
    /// endpoint defaults to `[aws] endpoint_url`, region and profile are
    /// `[aws]`'s.
    #[must_use]
    pub fn from_config(config: &crate::config::Config) -> Option<Self> {
        let queue_url = config.events.queue_url.clone()?;
        Some(Self {
            queue_url,
            endpoint_url: config.events.endpoint_url.clone().or_else(|| config.aws.endpoint_url.clone()),
            region: config.aws.region.clone(),
            profile: config.aws.profile.clone(),
        })
    }
}

/// The requests of the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOperation {
    /// `ReceiveMessage`.
    Receive,
    /// `DeleteMessageBatch`.
    Delete,
}

impl EventOperation {
    /// SQS's action name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receive => "ReceiveMessage",
            Self::Delete => "DeleteMessageBatch",
        }
    }
}

/// SQS error codes the daemon tells apart, as `aws-sdk-sqs` reports them
/// (SQS's query-compatible codes).
pub mod codes {
    /// The queue URL names no queue.
    pub const NON_EXISTENT_QUEUE: &str = "AWS.SimpleQueueService.NonExistentQueue";
    /// The JSON protocol's name of the same.
    pub const QUEUE_DOES_NOT_EXIST: &str = "QueueDoesNotExist";
    /// A receipt handle the queue never issued (or expired).
    pub const RECEIPT_HANDLE_IS_INVALID: &str = "ReceiptHandleIsInvalid";
    /// SQS throttled the request.
    pub const REQUEST_THROTTLED: &str = "RequestThrottled";
    /// Generic throttling code of AWS JSON services.
    pub const THROTTLING_EXCEPTION: &str = "ThrottlingException";
    /// Too many messages in flight.
    pub const OVER_LIMIT: &str = "OverLimit";
    /// The caller may not do this.
    pub const ACCESS_DENIED: &str = "AccessDenied";
    /// The JSON protocol's name of the same.
    pub const ACCESS_DENIED_EXCEPTION: &str = "AccessDeniedException";
    /// The access key is unknown.
    pub const INVALID_CLIENT_TOKEN_ID: &str = "InvalidClientTokenId";
    /// The signature does not match.
    pub const SIGNATURE_DOES_NOT_MATCH: &str = "SignatureDoesNotMatch";
    /// The queue's KMS key may not be used.
    pub const KMS_ACCESS_DENIED: &str = "KMS.AccessDeniedException";
    /// The request used an insecure transport or a bad signature.
    pub const INVALID_SECURITY: &str = "InvalidSecurity";
    /// A server-side failure.
    pub const INTERNAL_ERROR: &str = "InternalError";
    /// A server-side failure (JSON protocol).
    pub const INTERNAL_FAILURE: &str = "InternalFailure";
    /// The service is unavailable.
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    /// Credentials could not be loaded (set by the adapter).
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
    /// No answer in time (set by the adapter).
    pub const TIMEOUT: &str = "Timeout";
    /// The connection failed (set by the adapter).
    pub const CONNECTION_ERROR: &str = "ConnectionError";
}

/// What kind of failure, for handling and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventErrorKind {
    /// The queue does not exist: a configuration error, retried slowly.
    NoQueue,
    /// Not allowed (IAM, KMS, signature): a configuration error, retried slowly.
    Denied,
    /// No credentials could be loaded.
    Credentials,
    /// Throttled: retry after a backoff.
    Throttled,
    /// Server error, timeout, connection failure: retry after a backoff.
    Transient,
    /// A receipt handle the queue does not know: that delivery cannot be deleted.
    InvalidReceipt,
    /// Anything else.
    Other,
}

impl EventErrorKind {
    /// Classifies an SQS error code (never the message).
    #[must_use]
    pub fn from_code(code: &str) -> Self {
        use codes::*;
        match code {
            NON_EXISTENT_QUEUE | QUEUE_DOES_NOT_EXIST => Self::NoQueue,
            ACCESS_DENIED
            | ACCESS_DENIED_EXCEPTION
            | INVALID_CLIENT_TOKEN_ID
            | SIGNATURE_DOES_NOT_MATCH
            | KMS_ACCESS_DENIED
            | INVALID_SECURITY => Self::Denied,
            CREDENTIALS_UNAVAILABLE => Self::Credentials,
            REQUEST_THROTTLED | THROTTLING_EXCEPTION | OVER_LIMIT => Self::Throttled,
            INTERNAL_ERROR | INTERNAL_FAILURE | SERVICE_UNAVAILABLE | TIMEOUT | CONNECTION_ERROR => Self::Transient,
            RECEIPT_HANDLE_IS_INVALID => Self::InvalidReceipt,
            c if c.starts_with("HttpStatus5") => Self::Transient,
            _ => Self::Other,
        }
    }

    /// A metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoQueue => "no_queue",
            Self::Denied => "denied",
            Self::Credentials => "credentials",
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::InvalidReceipt => "invalid_receipt",
            Self::Other => "other",
        }
    }
}

/// A failed event-source request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} failed: {code}: {message}", operation.as_str())]
pub struct EventSourceError {
    /// The request.
    pub operation: EventOperation,
    /// SQS's error code, or one the adapter set (`Timeout`, `HttpStatus503`, …).
    pub code: String,
    /// What the message says.
    pub message: String,
}

impl EventSourceError {
    /// An error of `operation` with `code`.
    pub fn new(operation: EventOperation, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { operation, code: code.into(), message: message.into() }
    }

    /// Its kind, from the code.
    #[must_use]
    pub fn kind(&self) -> EventErrorKind {
        EventErrorKind::from_code(&self.code)
    }
}

/// What one batch delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Receipts deleted.
    pub deleted: usize,
    /// Receipts SQS refused, with why.
    pub failed: Vec<(Receipt, EventSourceError)>,
}

impl fmt::Display for Deleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} deleted, {} failed", self.deleted, self.failed.len())
    }
}

/// The port: the event queue as the daemon uses it.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// One `ReceiveMessage`: up to `max` (at most [`MAX_BATCH`]) messages,
    /// waiting up to `wait` (at most [`MAX_WAIT`]) for the first.
    ///
    /// # Errors
    /// The request failed; see [`EventSourceError::kind`].
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<EventMessage>, EventSourceError>;

    /// One `DeleteMessageBatch` of at most [`MAX_BATCH`] receipts.
    ///
    /// # Errors
    /// The whole request failed; per-receipt failures are in [`Deleted::failed`].
    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Deleted, EventSourceError>;

    /// Deletes any number of receipts, [`MAX_BATCH`] a request.
    ///
    /// # Errors
    /// The first request that failed as a whole (the batches before it are deleted).
    async fn delete(&self, receipts: &[Receipt]) -> Result<Deleted, EventSourceError> {
        let mut total = Deleted::default();
        for chunk in receipts.chunks(MAX_BATCH) {
            let done = self.delete_batch(chunk).await?;
            total.deleted += done.deleted;
            total.failed.extend(done.failed);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    #[test]
    fn error_codes_classify_by_code() {
        for (code, kind) in [
            (codes::NON_EXISTENT_QUEUE, EventErrorKind::NoQueue),
            (codes::QUEUE_DOES_NOT_EXIST, EventErrorKind::NoQueue),
            (codes::ACCESS_DENIED, EventErrorKind::Denied),
            (codes::KMS_ACCESS_DENIED, EventErrorKind::Denied),
            (codes::REQUEST_THROTTLED, EventErrorKind::Throttled),
            (codes::OVER_LIMIT, EventErrorKind::Throttled),
            (codes::TIMEOUT, EventErrorKind::Transient),
            ("HttpStatus503", EventErrorKind::Transient),
            ("HttpStatus403", EventErrorKind::Other),
            (codes::RECEIPT_HANDLE_IS_INVALID, EventErrorKind::InvalidReceipt),
            (codes::CREDENTIALS_UNAVAILABLE, EventErrorKind::Credentials),
            ("InvalidParameterValue", EventErrorKind::Other),
        ] {
            assert_eq!(EventErrorKind::from_code(code), kind, "{code}");
        }
    }

    fn settings(toml: &str) -> Result<Option<QueueSettings>, String> {
        let text = format!("[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:4566\"\n{toml}");
        crate::config::Config::from_toml_str(&text, None)
            .map(|c| QueueSettings::from_config(&c))
            .map_err(|e| crate::config::render_errors(&e))
    }

    #[test]
    fn events_config_is_off_by_default_and_its_endpoint_defaults_to_the_aws_one() {
        assert_eq!(settings(""), Ok(None));
        let url = "http://127.0.0.1:4566/123456789012/classiclink-mirror-events";
        let on = settings(&format!("[events]\nqueue_url = {url:?}\n")).unwrap().unwrap();
        assert_eq!(on.queue_url, url);
        assert_eq!(on.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(on.region, "eu-west-1");
        let own = settings(&format!("[events]\nqueue_url = {url:?}\nendpoint_url = \"http://localhost:9324\"\n"));
        assert_eq!(own.unwrap().unwrap().endpoint_url.as_deref(), Some("http://localhost:9324"));
    }

    #[test]
    fn events_config_values_are_validated_with_their_key_path() {
        for (toml, expected) in [
            ("queue_url = \"sqs/queue\"", "events.queue_url: \"sqs/queue\" is not an http:// or https:// URL"),
            ("queue_url = 3", "events.queue_url"),
            ("endpoint_url = \"ftp://x\"", "events.endpoint_url: \"ftp://x\" is not an http:// or https:// URL"),
            ("queue = \"x\"", "events.queue"),
        ] {
            let error = settings(&format!("[events]\n{toml}\n")).unwrap_err();
            assert!(error.contains(expected), "{toml}: {error}");
        }
    }

    struct Batches(Mutex<Vec<usize>>);

    #[async_trait]
    impl EventSource for Batches {
        async fn receive(&self, _: usize, _: Duration) -> Result<Vec<EventMessage>, EventSourceError> {
            Ok(Vec::new())
        }

        async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Deleted, EventSourceError> {
            self.0.lock().push(receipts.len());
            if receipts.len() > MAX_BATCH {
                return Err(EventSourceError::new(EventOperation::Delete, "TooMany", "batch too large"));
            }
            let failed = receipts
                .iter()
                .filter(|r| r.0 == "bad")
                .map(|r| (r.clone(), EventSourceError::new(EventOperation::Delete, "ReceiptHandleIsInvalid", "")))
                .collect::<Vec<_>>();
            Ok(Deleted { deleted: receipts.len() - failed.len(), failed })
        }
    }

    #[tokio::test]
    async fn deletes_go_out_ten_receipts_a_request() {
        let source = Batches(Mutex::new(Vec::new()));
        let mut receipts: Vec<Receipt> = (0..23).map(|i| Receipt(format!("r{i}"))).collect();
        receipts[4] = Receipt("bad".into());
        let done = source.delete(&receipts).await.unwrap();
        assert_eq!(*source.0.lock(), [10, 10, 3]);
        assert_eq!((done.deleted, done.failed.len()), (22, 1));
        assert_eq!(done.failed[0].1.kind(), EventErrorKind::InvalidReceipt);
    }
}
