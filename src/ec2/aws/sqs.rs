//! The `aws-sdk-sqs` adapter of the event source port
//! ([`EventSource`]): one `ReceiveMessage` (long polling) or one
//! `DeleteMessageBatch` per port call, on the same SDK set-up as the EC2
//! client ([`super::sdk_config`]: region, endpoint, profile, the standard
//! credential chain, our app name, SDK retries off).
//!
//! Why SDK retries are off here too: the event loop above is itself the
//! retry loop — a failed receive is retried after a backoff and counted,
//! and while the queue is failing the daemon degrades to its periodic full
//! passes, so hidden SDK retries would only delay noticing. A failed
//! delete is harmless: the message comes back after its visibility
//! timeout and is a duplicate hint.
//!
//! Failures are classified by SQS error *code* ([`EventErrorKind::from_code`]);
//! answers without a code by HTTP status; no answer as `Timeout` /
//! `ConnectionError`.

use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::classify::find_source;
use super::{AwsOptions, sdk_config};
use crate::config::AwsConfig;
use crate::events::{
    Deleted, EventMessage, EventOperation, EventSource, EventSourceError, MAX_BATCH, MAX_WAIT, QueueSettings, Receipt,
    codes,
};

/// Time allowed beyond the long poll's wait for the answer to arrive.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// The event source port over `aws-sdk-sqs`.
#[derive(Clone, Debug)]
pub struct AwsEventSource {
    client: Client,
    queue_url: String,
}

impl AwsEventSource {
    /// A client for the queue of `settings`, with the daemon's default
    /// [`AwsOptions`] (the standard credential chain). Nothing is contacted
    /// until the first call.
    pub async fn from_settings(settings: &QueueSettings) -> Self {
        Self::from_settings_with(settings, AwsOptions::default()).await
    }

    /// [`Self::from_settings`] with explicit options (static credentials in
    /// tests). The operation timeout is raised to cover the longest long
    /// poll plus a margin.
    pub async fn from_settings_with(settings: &QueueSettings, mut options: AwsOptions) -> Self {
        options.operation_timeout = options.operation_timeout.max(MAX_WAIT + ANSWER_MARGIN);
        let aws = AwsConfig {
            region: settings.region.clone(),
            endpoint_url: settings.endpoint_url.clone(),
            profile: settings.profile.clone(),
        };
        let config = sdk_config(&aws, &options).await;
        Self { client: Client::new(&config), queue_url: settings.queue_url.clone() }
    }
}

fn classify<E>(operation: EventOperation, err: SdkError<E, HttpResponse>) -> EventSourceError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    if let Some(creds) = find_source::<CredentialsError>(&err) {
        let code = match creds {
            CredentialsError::ProviderTimedOut(_) => codes::TIMEOUT,
            _ => codes::CREDENTIALS_UNAVAILABLE,
        };
        return EventSourceError::new(operation, code, detail);
    }
    let by_status = |status: u16| match status {
        429 => codes::REQUEST_THROTTLED.to_owned(),
        _ => format!("HttpStatus{status}"),
    };
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().filter(|c| !c.is_empty()).map_or_else(|| by_status(status), str::to_owned);
            EventSourceError::new(operation, code, err.message().unwrap_or(&detail))
        }
        SdkError::ResponseError(response) => {
            EventSourceError::new(operation, by_status(response.raw().status().as_u16()), detail)
        }
        SdkError::TimeoutError(_) => EventSourceError::new(operation, codes::TIMEOUT, detail),
        SdkError::DispatchFailure(d) if d.is_timeout() => EventSourceError::new(operation, codes::TIMEOUT, detail),
        SdkError::DispatchFailure(d) if d.is_io() => EventSourceError::new(operation, codes::CONNECTION_ERROR, detail),
        SdkError::DispatchFailure(_) => EventSourceError::new(operation, "DispatchFailure", detail),
        SdkError::ConstructionFailure(_) => EventSourceError::new(operation, "RequestConstructionFailed", detail),
        _ => EventSourceError::new(operation, "UnknownSdkError", detail),
    }
}

fn whole_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.min(MAX_WAIT).as_secs()).unwrap_or(0)
}

#[async_trait]
impl EventSource for AwsEventSource {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<EventMessage>, EventSourceError> {
        let operation = EventOperation::Receive;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1))
            .wait_time_seconds(whole_seconds(wait))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| classify(operation, e))?;
        let mut messages = Vec::with_capacity(out.messages().len());
        for m in out.messages() {
            // A delivery without a receipt handle cannot be deleted, and one
            // without a body says nothing: neither can be acted on.
            let Some(receipt) = m.receipt_handle().filter(|r| !r.is_empty()) else {
                tracing::warn!(
                    message_id = m.message_id().unwrap_or_default(),
                    "SQS message without a receipt handle skipped"
                );
                continue;
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            messages.push(EventMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt: Receipt(receipt.to_owned()),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count,
            });
        }
        Ok(messages)
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Deleted, EventSourceError> {
        let operation = EventOperation::Delete;
        if receipts.is_empty() {
            return Ok(Deleted::default());
        }
        let receipts = &receipts[..receipts.len().min(MAX_BATCH)];
        let mut entries = Vec::with_capacity(receipts.len());
        for (i, receipt) in receipts.iter().enumerate() {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt.0.clone())
                .build()
                .map_err(|e| EventSourceError::new(operation, "RequestConstructionFailed", e.to_string()))?;
            entries.push(entry);
        }
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(operation, e))?;
        let failed: Vec<(Receipt, EventSourceError)> = out
            .failed()
            .iter()
            .filter_map(|f| {
                let receipt = f.id().parse::<usize>().ok().and_then(|i| receipts.get(i))?;
                Some((receipt.clone(), EventSourceError::new(operation, f.code(), f.message().unwrap_or_default())))
            })
            .collect();
        Ok(Deleted { deleted: out.successful().len(), failed })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::config::AppName;

    use super::*;
    use crate::events::{EventErrorKind, OWN_APP_NAME};

    #[test]
    fn our_app_name_is_a_valid_sdk_app_name() {
        assert!(AppName::new(OWN_APP_NAME).is_ok());
    }

    #[test]
    fn waits_are_whole_seconds_up_to_twenty() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(90)), 20);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_transient_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let settings = QueueSettings {
            queue_url: format!("{url}/123456789012/q"),
            endpoint_url: Some(url),
            region: "us-east-1".into(),
            profile: None,
        };
        let options = AwsOptions {
            credentials: Some(super::super::StaticCredentials {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            }),
            ..AwsOptions::default()
        };
        let source = AwsEventSource::from_settings_with(&settings, options).await;
        let error = source.receive(10, Duration::ZERO).await.unwrap_err();
        assert_eq!(error.kind(), EventErrorKind::Transient, "{error}");
    }
}
