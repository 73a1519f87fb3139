//! The event queue over SQS's JSON protocol (AWS JSON 1.0), as the
//! unmodified `aws-sdk-sqs` speaks it: `POST` to the endpoint with
//! `X-Amz-Target: AmazonSQS.<Action>` and a JSON body; answers are JSON
//! (`application/x-amz-json-1.0`). Errors carry `__type`
//! (`com.amazonaws.sqs#QueueDoesNotExist`) and, as SQS does for its
//! query-compatible codes, `x-amzn-query-error: <code>;Sender`, from which
//! the SDK takes the error code (`AWS.SimpleQueueService.NonExistentQueue`).
//!
//! Served: `ReceiveMessage` (long polling), `DeleteMessage`,
//! `DeleteMessageBatch`, `GetQueueUrl`, `GetQueueAttributes`,
//! `SendMessage`, `PurgeQueue`, `ListQueues`. Other SQS actions answer
//! `AWS.SimpleQueueService.UnsupportedOperation`; other targets
//! `UnknownOperationException`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::super::Emulator;
use super::super::events::{EventQueue, MAX_MESSAGES, MAX_WAIT, Received};

/// The `X-Amz-Target` prefix of SQS's JSON protocol.
pub(super) const TARGET_PREFIX: &str = "AmazonSQS.";

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const QUERY_ERROR_HEADER: &str = "x-amzn-query-error";
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: u64 = 43_200;

/// An SQS error: HTTP status, `__type`, the query-compatible code (when SQS
/// sends one) and a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SqsError {
    status: StatusCode,
    kind: &'static str,
    query_code: Option<&'static str>,
    message: String,
}

impl SqsError {
    fn sender(kind: &'static str, query_code: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind, query_code: Some(query_code), message: message.into() }
    }

    fn no_queue() -> Self {
        Self::sender(
            "com.amazonaws.sqs#QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        )
    }

    fn invalid_value(message: impl Into<String>) -> Self {
        Self::sender("com.amazon.coral.validate#ValidationException", "InvalidParameterValue", message)
    }

    fn missing(name: &str) -> Self {
        Self::sender(
            "com.amazonaws.sqs#MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {name}."),
        )
    }

    fn serialization(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "com.amazon.coral.service#SerializationException",
            query_code: None,
            message: message.into(),
        }
    }

    /// The code the SDK reports: the query-compatible one, or `__type`'s name.
    #[cfg(test)]
    fn code(&self) -> &str {
        self.query_code.unwrap_or_else(|| self.kind.rsplit('#').next().unwrap_or(self.kind))
    }
}

/// Answers one SQS request.
pub(super) async fn handle(emulator: &Emulator, target: &str, body: &[u8], request_id: &str) -> Response {
    let result = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(input)) => run(emulator, target, &input).await,
        Ok(_) => Err(SqsError::serialization("The request body must be a JSON object.")),
        Err(e) => Err(SqsError::serialization(format!("The request body is not JSON: {e}"))),
    };
    let (status, body, query_error) = match result {
        Ok(output) => (StatusCode::OK, output, None),
        Err(error) => {
            tracing::debug!(error = error.kind, request_id, "SQS request refused");
            let query = error.query_code.map(|code| format!("{code};Sender"));
            (error.status, json!({ "__type": error.kind, "message": error.message }), query)
        }
    };
    let mut response = (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(super::REQUEST_ID_HEADER, value);
    }
    if let Some(value) = query_error.and_then(|q| HeaderValue::from_str(&q).ok()) {
        headers.insert(QUERY_ERROR_HEADER, value);
    }
    response
}

type Input = Map<String, Value>;

async fn run(emulator: &Emulator, target: &str, input: &Input) -> Result<Value, SqsError> {
    let Some(action) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(unknown_operation(target));
    };
    let account = emulator.account_id();
    match action {
        "GetQueueUrl" => get_queue_url(emulator, &account, input),
        "ListQueues" => Ok(list_queues(emulator, &account, input)),
        "ReceiveMessage" => receive_message(&queue(emulator, &account, input)?, input).await,
        "DeleteMessage" => delete_message(&queue(emulator, &account, input)?, input),
        "DeleteMessageBatch" => delete_message_batch(&queue(emulator, &account, input)?, input),
        "GetQueueAttributes" => get_queue_attributes(&queue(emulator, &account, input)?, &account, input),
        "SendMessage" => send_message(&queue(emulator, &account, input)?, input),
        "PurgeQueue" => {
            queue(emulator, &account, input)?.purge();
            Ok(json!({}))
        }
        "AddPermission"
        | "CancelMessageMoveTask"
        | "ChangeMessageVisibility"
        | "ChangeMessageVisibilityBatch"
        | "CreateQueue"
        | "DeleteQueue"
        | "ListDeadLetterSourceQueues"
        | "ListMessageMoveTasks"
        | "ListQueueTags"
        | "RemovePermission"
        | "SendMessageBatch"
        | "SetQueueAttributes"
        | "StartMessageMoveTask"
        | "TagQueue"
        | "UntagQueue" => Err(SqsError::sender(
            "com.amazonaws.sqs#UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("{action} is not modelled by the emulator (docs/emulator.md)"),
        )),
        _ => Err(unknown_operation(target)),
    }
}

fn unknown_operation(target: &str) -> SqsError {
    SqsError {
        status: StatusCode::BAD_REQUEST,
        kind: "com.amazon.coral.service#UnknownOperationException",
        query_code: None,
        message: format!("Unknown operation {target:?}."),
    }
}

fn string<'a>(input: &'a Input, name: &str) -> Result<Option<&'a str>, SqsError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SqsError::serialization(format!("{name} must be a string."))),
    }
}

fn required<'a>(input: &'a Input, name: &str) -> Result<&'a str, SqsError> {
    string(input, name)?.ok_or_else(|| SqsError::missing(name))
}

fn integer(input: &Input, name: &str) -> Result<Option<i64>, SqsError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| SqsError::serialization(format!("{name} must be an integer.")))
        }
        Some(_) => Err(SqsError::serialization(format!("{name} must be an integer."))),
    }
}

fn strings(input: &Input, name: &str) -> Result<Vec<String>, SqsError> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| SqsError::serialization(format!("{name} holds strings.")))
            })
            .collect(),
        Some(_) => Err(SqsError::serialization(format!("{name} must be a list."))),
    }
}

fn in_range(name: &str, value: Option<i64>, low: i64, high: i64) -> Result<Option<i64>, SqsError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(SqsError::invalid_value(format!(
            "Value {v} for parameter {name} is invalid. Reason: Must be between {low} and {high}, if provided."
        ))),
        other => Ok(other),
    }
}

/// The queue a `QueueUrl` names: the path must end `/<account>/<name>`
/// (any scheme and host, as SDKs may rewrite them).
fn queue(emulator: &Emulator, account: &str, input: &Input) -> Result<EventQueue, SqsError> {
    let url = required(input, "QueueUrl")?;
    let queue = emulator.events().ok_or_else(SqsError::no_queue)?;
    let path = url.split_once("://").map_or(url, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let (name, owner) = (segments.next(), segments.next());
    if name == Some(queue.options().queue_name.as_str()) && owner == Some(account) {
        Ok(queue)
    } else {
        Err(SqsError::no_queue())
    }
}

fn endpoint_of(url: &str) -> String {
    format!("http://{}", url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default())
}

fn get_queue_url(emulator: &Emulator, account: &str, input: &Input) -> Result<Value, SqsError> {
    let name = required(input, "QueueName")?;
    let owner = string(input, "QueueOwnerAWSAccountId")?.unwrap_or(account);
    match emulator.events() {
        Some(queue) if queue.options().queue_name == name && owner == account => {
            Ok(json!({ "QueueUrl": queue.url(&local_endpoint(), account) }))
        }
        _ => Err(SqsError::no_queue()),
    }
}

fn list_queues(emulator: &Emulator, account: &str, input: &Input) -> Value {
    let prefix = input.get("QueueNamePrefix").and_then(Value::as_str).unwrap_or_default();
    match emulator.events() {
        Some(queue) if queue.options().queue_name.starts_with(prefix) => {
            json!({ "QueueUrls": [queue.url(&local_endpoint(), account)] })
        }
        _ => json!({}),
    }
}

tokio::task_local! {
    /// The endpoint the current request came in on (`http://host:port`),
    /// for the queue URLs `GetQueueUrl` answers.
    pub(super) static ENDPOINT: String;
}

fn local_endpoint() -> String {
    ENDPOINT.try_with(Clone::clone).unwrap_or_else(|_| "http://127.0.0.1".to_owned())
}

/// `http://<Host header>`.
pub(super) fn endpoint_from_host(host: Option<&str>) -> String {
    endpoint_of(host.unwrap_or("127.0.0.1"))
}

fn message(received: Received, wanted: &BTreeSet<String>) -> Value {
    let mut m = json!({
        "MessageId": received.message_id,
        "ReceiptHandle": received.receipt_handle,
        "MD5OfBody": received.md5_of_body,
        "Body": received.body,
    });
    let all = wanted.contains("All");
    let attributes: BTreeMap<String, String> =
        received.attributes.into_iter().filter(|(k, _)| all || wanted.contains(k)).collect();
    if !attributes.is_empty()
        && let Some(object) = m.as_object_mut()
    {
        object.insert("Attributes".to_owned(), json!(attributes));
    }
    m
}

async fn receive_message(queue: &EventQueue, input: &Input) -> Result<Value, SqsError> {
    let max = in_range("MaxNumberOfMessages", integer(input, "MaxNumberOfMessages")?, 1, MAX_MESSAGES as i64)?;
    let max_wait = MAX_WAIT.as_secs() as i64;
    let wait = in_range("WaitTimeSeconds", integer(input, "WaitTimeSeconds")?, 0, max_wait)?;
    let visibility = in_range("VisibilityTimeout", integer(input, "VisibilityTimeout")?, 0, MAX_VISIBILITY as i64)?;
    let mut wanted: BTreeSet<String> = strings(input, "AttributeNames")?.into_iter().collect();
    wanted.extend(strings(input, "MessageSystemAttributeNames")?);
    let visibility = visibility.map_or(queue.options().visibility_timeout, |v| Duration::from_secs(v.unsigned_abs()));
    let wait = Duration::from_secs(wait.unwrap_or(0).unsigned_abs());
    let count = usize::try_from(max.unwrap_or(1)).unwrap_or(1);
    let received = queue.receive(count, wait, visibility).await;
    if received.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({ "Messages": received.into_iter().map(|r| message(r, &wanted)).collect::<Vec<_>>() }))
}

fn delete_message(queue: &EventQueue, input: &Input) -> Result<Value, SqsError> {
    let handle = required(input, "ReceiptHandle")?;
    queue.delete(handle).map_err(|e| {
        SqsError::sender("com.amazonaws.sqs#ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", e.to_string())
    })?;
    Ok(json!({}))
}

fn valid_entry_id(id: &str) -> bool {
    (1..=80).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn delete_message_batch(queue: &EventQueue, input: &Input) -> Result<Value, SqsError> {
    let entries = match input.get("Entries") {
        None | Some(Value::Null) => return Err(SqsError::missing("Entries")),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(SqsError::serialization("Entries must be a list.")),
    };
    if entries.is_empty() {
        return Err(SqsError::sender(
            "com.amazonaws.sqs#EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one DeleteMessageBatchRequestEntry in the request.",
        ));
    }
    if entries.len() > MAX_MESSAGES {
        return Err(SqsError::sender(
            "com.amazonaws.sqs#TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!("Maximum number of entries per request are {MAX_MESSAGES}. You have sent {}.", entries.len()),
        ));
    }
    let mut parsed = Vec::with_capacity(entries.len());
    let mut seen = BTreeSet::new();
    for entry in entries {
        let Value::Object(entry) = entry else {
            return Err(SqsError::serialization("Entries holds objects."));
        };
        let id = required(entry, "Id")?;
        let handle = required(entry, "ReceiptHandle")?;
        if !valid_entry_id(id) {
            return Err(SqsError::sender(
                "com.amazonaws.sqs#InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::sender(
                "com.amazonaws.sqs#BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
        parsed.push((id, handle));
    }
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for (id, handle) in parsed {
        match queue.delete(handle) {
            Ok(()) => successful.push(json!({ "Id": id })),
            Err(e) => failed.push(json!({
                "Id": id,
                "SenderFault": true,
                "Code": "ReceiptHandleIsInvalid",
                "Message": e.to_string(),
            })),
        }
    }
    Ok(json!({ "Successful": successful, "Failed": failed }))
}

const QUEUE_ATTRIBUTES: [&str; 11] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "QueueArn",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "SqsManagedSseEnabled",
    "CreatedTimestamp",
];

fn get_queue_attributes(queue: &EventQueue, account: &str, input: &Input) -> Result<Value, SqsError> {
    let names = strings(input, "AttributeNames")?;
    if let Some(bad) = names.iter().find(|n| *n != "All" && !QUEUE_ATTRIBUTES.contains(&n.as_str())) {
        return Err(SqsError::sender(
            "com.amazonaws.sqs#InvalidAttributeName",
            "InvalidAttributeName",
            format!("Unknown Attribute {bad}."),
        ));
    }
    let all = names.iter().any(|n| n == "All");
    let counts = queue.counts();
    let options = queue.options();
    let value = |name: &str| -> String {
        match name {
            "ApproximateNumberOfMessages" => counts.visible.to_string(),
            "ApproximateNumberOfMessagesDelayed" => counts.delayed.to_string(),
            "ApproximateNumberOfMessagesNotVisible" => counts.in_flight.to_string(),
            "DelaySeconds" | "ReceiveMessageWaitTimeSeconds" | "CreatedTimestamp" => "0".to_owned(),
            "MaximumMessageSize" => "262144".to_owned(),
            "MessageRetentionPeriod" => "345600".to_owned(),
            "QueueArn" => format!("arn:aws:sqs:{}:{account}:{}", options.region, options.queue_name),
            "VisibilityTimeout" => options.visibility_timeout.as_secs().to_string(),
            _ => "false".to_owned(),
        }
    };
    let attributes: BTreeMap<&str, String> =
        QUEUE_ATTRIBUTES.iter().filter(|n| all || names.iter().any(|m| m == *n)).map(|n| (*n, value(n))).collect();
    if attributes.is_empty() {
        return Ok(json!({}));
    }
    Ok(json!({ "Attributes": attributes }))
}

fn send_message(queue: &EventQueue, input: &Input) -> Result<Value, SqsError> {
    let body = required(input, "MessageBody")?;
    if body.is_empty() {
        return Err(SqsError::missing("MessageBody"));
    }
    let (id, md5) = queue.send(body.to_owned());
    Ok(json!({ "MessageId": id, "MD5OfMessageBody": md5 }))
}

#[cfg(test)]
mod tests {
    use super::super::super::events::EventOptions;
    use super::*;

    fn input(value: Value) -> Input {
        value.as_object().cloned().unwrap()
    }

    fn emulator() -> (Emulator, String) {
        let e = Emulator::default();
        let queue = e.enable_events(EventOptions::default());
        let url = queue.url("http://localhost:4566", &e.account_id());
        (e, url)
    }

    #[tokio::test]
    async fn queue_urls_are_matched_by_account_and_name_whatever_the_host() {
        let (e, url) = emulator();
        let account = e.account_id();
        assert!(queue(&e, &account, &input(json!({ "QueueUrl": url }))).is_ok());
        let other_host = url.replace("localhost:4566", "sqs.us-east-1.amazonaws.com");
        assert!(queue(&e, &account, &input(json!({ "QueueUrl": other_host }))).is_ok());
        for bad in ["http://x/1/classiclink-mirror-events", "http://x/123456789012/other", "", "nonsense"] {
            assert_eq!(queue(&e, &account, &input(json!({ "QueueUrl": bad }))).unwrap_err(), SqsError::no_queue());
        }
        assert_eq!(queue(&e, &account, &input(json!({}))).unwrap_err().code(), "MissingParameter");
        let off = Emulator::default();
        assert_eq!(queue(&off, &account, &input(json!({ "QueueUrl": url }))).unwrap_err(), SqsError::no_queue());
    }

    #[tokio::test]
    async fn out_of_range_receive_parameters_are_invalid_parameter_values() {
        let (e, url) = emulator();
        for (name, value) in [
            ("MaxNumberOfMessages", 0),
            ("MaxNumberOfMessages", 11),
            ("WaitTimeSeconds", 21),
            ("VisibilityTimeout", -1),
        ] {
            let error =
                run(&e, "AmazonSQS.ReceiveMessage", &input(json!({ "QueueUrl": url, name: value }))).await.unwrap_err();
            assert_eq!(error.code(), "InvalidParameterValue", "{name}={value}");
        }
        let wrong_type = input(json!({ "QueueUrl": url, "WaitTimeSeconds": "5" }));
        let error = run(&e, "AmazonSQS.ReceiveMessage", &wrong_type).await.unwrap_err();
        assert_eq!(error.code(), "SerializationException");
    }

    #[tokio::test]
    async fn batch_deletes_check_their_entries_like_sqs() {
        let (e, url) = emulator();
        let batch = async |entries: Value| {
            run(&e, "AmazonSQS.DeleteMessageBatch", &input(json!({ "QueueUrl": url, "Entries": entries }))).await
        };
        assert_eq!(batch(json!([])).await.unwrap_err().code(), "AWS.SimpleQueueService.EmptyBatchRequest");
        let eleven: Vec<Value> = (0..11).map(|i| json!({ "Id": format!("m{i}"), "ReceiptHandle": "0.0" })).collect();
        assert_eq!(
            batch(json!(eleven)).await.unwrap_err().code(),
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
        );
        let twice = json!([{ "Id": "a", "ReceiptHandle": "x" }, { "Id": "a", "ReceiptHandle": "y" }]);
        assert_eq!(batch(twice).await.unwrap_err().code(), "AWS.SimpleQueueService.BatchEntryIdsNotDistinct");
        let bad_id = json!([{ "Id": "a b", "ReceiptHandle": "x" }]);
        assert_eq!(batch(bad_id).await.unwrap_err().code(), "AWS.SimpleQueueService.InvalidBatchEntryId");
        let answer = batch(json!([{ "Id": "a", "ReceiptHandle": "never-issued" }])).await.unwrap();
        assert_eq!(answer["Failed"][0]["Code"], "ReceiptHandleIsInvalid");
        assert_eq!(answer["Successful"], json!([]));
    }

    #[tokio::test]
    async fn unknown_and_unmodelled_actions_are_refused_by_name() {
        let (e, url) = emulator();
        let q = input(json!({ "QueueUrl": url }));
        assert_eq!(
            run(&e, "AmazonSQS.CreateQueue", &q).await.unwrap_err().code(),
            "AWS.SimpleQueueService.UnsupportedOperation"
        );
        assert_eq!(run(&e, "AmazonSQS.Nope", &q).await.unwrap_err().code(), "UnknownOperationException");
        let bogus = input(json!({ "QueueUrl": url, "AttributeNames": ["Bogus"] }));
        let error = run(&e, "AmazonSQS.GetQueueAttributes", &bogus).await.unwrap_err();
        assert_eq!(error.code(), "InvalidAttributeName");
    }
}
