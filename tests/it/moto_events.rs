//! The `aws-sdk-sqs` adapter of the event source port
//! (`ec2::aws::AwsEventSource`) against moto's SQS, an independent SQS
//! emulator, over real HTTP: long polling, batch deletes, and the error
//! code of a missing queue — as the EC2 adapter is checked against moto's
//! EC2 (`moto_conformance.rs`). Skipped (loudly) when moto is not
//! installed; `scripts/test` installs it.

use std::time::{Duration, Instant};

use classiclink_mirror::ec2::aws::AwsEventSource;
use classiclink_mirror::events::parse::{Expected, Verdict, parse};
use classiclink_mirror::events::{EventErrorKind, EventSource};

use crate::common::moto::{Moto, moto};
use crate::common::{local_event_source, raw_sqs};

fn raw(moto: &Moto) -> aws_sdk_sqs::Client {
    raw_sqs(&moto.url)
}

async fn adapter(moto: &Moto, queue_url: &str) -> AwsEventSource {
    local_event_source(&moto.url, queue_url).await
}

async fn new_queue(moto: &Moto, name: &str) -> String {
    let created = raw(moto).create_queue().queue_name(name).send().await.expect("CreateQueue on moto");
    created.queue_url().expect("a queue URL").to_owned()
}

fn event(group: &str) -> String {
    serde_json::json!({
        "version": "0", "id": format!("ev-{group}"), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2", "account": "123456789012", "time": "2026-12-06T08:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": { "eventSource": "ec2.amazonaws.com", "eventName": "AuthorizeSecurityGroupIngress",
                    "userAgent": "console.ec2.amazonaws.com", "requestParameters": { "groupId": group } },
    })
    .to_string()
}

#[tokio::test]
async fn the_sqs_adapter_receives_and_batch_deletes_on_moto() {
    let Some(moto) = moto() else { return };
    let url = new_queue(moto, "events-receive").await;
    for n in 1..=12 {
        raw(moto).send_message().queue_url(&url).message_body(event(&format!("sg-{n:x}"))).send().await.expect("send");
    }
    let source = adapter(moto, &url).await;
    let expected = Expected { account: Some("123456789012".into()), region: "us-east-1".into() };
    let mut receipts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while receipts.len() < 12 {
        assert!(
            Instant::now() < deadline,
            "only {} of 12 messages received (moto log: {})",
            receipts.len(),
            moto.log.display()
        );
        let batch = source.receive(10, Duration::from_secs(1)).await.expect("ReceiveMessage on moto");
        assert!(batch.len() <= 10);
        for m in batch {
            assert_eq!(m.receive_count, 1);
            assert!(matches!(parse(&m.body, &expected), Verdict::Act(_)), "{}", m.body);
            receipts.push(m.receipt);
        }
    }
    let deleted = source.delete(&receipts).await.expect("DeleteMessageBatch on moto");
    assert_eq!((deleted.deleted, deleted.failed.len()), (12, 0));
    let started = Instant::now();
    assert!(source.receive(10, Duration::from_secs(1)).await.expect("receive").is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "moto honours the long poll's wait");
}

#[tokio::test]
async fn a_missing_queue_on_moto_is_no_queue() {
    let Some(moto) = moto() else { return };
    let source = adapter(moto, &format!("{}/123456789012/never-created", moto.url)).await;
    let error = source.receive(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(error.kind(), EventErrorKind::NoQueue, "{error} (moto log: {})", moto.log.display());
}
