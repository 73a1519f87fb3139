//! The emulator's event queue driven by the real, unmodified `aws-sdk-sqs`
//! over HTTP on 127.0.0.1:0, fed by writes made through the real
//! `aws-sdk-ec2`: the EventBridge documents of each write, long polling,
//! visibility and batch deletes, queue attributes, and SQS's error codes
//! for bad requests (docs/emulator.md, "Event queue").

use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use serde_json::Value;

use classiclink_mirror::ec2::Ec2;
use classiclink_mirror::ec2::aws::AwsEventSource;
use classiclink_mirror::emulator::events::{DEFAULT_QUEUE_NAME, EventOptions};
use classiclink_mirror::emulator::{Emulator, NewGroup, NewVpc, RunInstances};
use classiclink_mirror::events::parse::{Expected, IgnoreReason, Verdict, parse};
use classiclink_mirror::events::{EventErrorKind, EventSource, Receipt};

use crate::common::served::ServedEmulator;
use crate::common::{local_event_source, raw_sqs};

/// The emulator served with its events on (or off), and the clients of
/// this module's tests.
struct Served(ServedEmulator);

impl std::ops::Deref for Served {
    type Target = ServedEmulator;
    fn deref(&self) -> &ServedEmulator {
        &self.0
    }
}

impl Served {
    async fn start(options: Option<EventOptions>) -> Self {
        let emulator = Emulator::default();
        if let Some(options) = options {
            emulator.enable_events(options);
        }
        Self(ServedEmulator::start(emulator).await)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        raw_sqs(&self.url)
    }

    /// An EC2 client of another app and account key than the daemon's.
    fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
            .endpoint_url(&self.url)
            .app_name(aws_sdk_ec2::config::AppName::new("events-test").expect("app name"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("AKIDEVENTS", "test", None, None, "test"))
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    async fn queue_url(&self) -> String {
        let answer = self.sqs().get_queue_url().queue_name(DEFAULT_QUEUE_NAME).send().await.expect("GetQueueUrl");
        answer.queue_url().expect("a queue URL").to_owned()
    }
}

/// Every message available now, deleted as read; the event documents.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = answer.messages();
        if messages.is_empty() {
            return documents;
        }
        let mut entries = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            documents.push(serde_json::from_str(m.body().expect("a body")).expect("a JSON body"));
            entries.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(m.receipt_handle().expect("a receipt handle"))
                    .build()
                    .expect("an entry"),
            );
        }
        let deleted =
            sqs.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await.expect("delete");
        assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
    }
}

#[tokio::test]
async fn ec2_writes_through_the_sdk_arrive_as_eventbridge_documents_over_sqs() {
    let served = Served::start(Some(EventOptions::default())).await;
    let url = served.queue_url().await;
    assert!(url.starts_with(&served.url) && url.ends_with("/123456789012/classiclink-mirror-events"), "{url}");
    let ec2 = served.ec2("eu-west-1");
    let group = ec2
        .create_security_group()
        .group_name("web")
        .description("web tier")
        .send()
        .await
        .expect("CreateSecurityGroup")
        .group_id()
        .expect("a group id")
        .to_owned();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("10.0.0.0/8").build())
                .build(),
        )
        .send()
        .await
        .expect("AuthorizeSecurityGroupIngress");
    let launched = ec2
        .run_instances()
        .image_id("ami-1")
        .min_count(1)
        .max_count(1)
        .security_group_ids(&group)
        .send()
        .await
        .expect("RunInstances");
    let instance = launched.instances()[0].instance_id().expect("an instance id").to_owned();

    let documents = drain(&served.sqs(), &url).await;
    let names: Vec<String> = documents
        .iter()
        .map(|d| match d["detail"]["eventName"].as_str() {
            Some(name) => name.to_owned(),
            None => format!("state:{}", d["detail"]["state"].as_str().unwrap_or_default()),
        })
        .collect();
    assert_eq!(
        names,
        ["CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RunInstances", "state:pending", "state:running"]
    );
    for d in &documents {
        assert_eq!(d["source"], "aws.ec2");
        assert_eq!(d["account"], "123456789012");
        assert_eq!(d["region"], "eu-west-1", "the region of the request's credential scope");
        assert!(d["id"].as_str().is_some_and(|id| id.len() == 36), "{d}");
        assert!(d["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{d}");
    }
    let call = &documents[1];
    assert_eq!(call["detail-type"], "AWS API Call via CloudTrail");
    assert_eq!(call["detail"]["eventSource"], "ec2.amazonaws.com");
    assert_eq!(call["detail"]["requestParameters"]["groupId"], group.as_str());
    assert_eq!(call["detail"]["userIdentity"]["accessKeyId"], "AKIDEVENTS");
    assert!(call["detail"]["userAgent"].as_str().is_some_and(|ua| ua.contains("app/events-test")), "{call}");
    assert_eq!(documents[0]["detail"]["responseElements"]["groupId"], group.as_str());
    assert_eq!(documents[2]["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"], instance.as_str());
    assert_eq!(documents[4]["detail-type"], "EC2 Instance State-change Notification");
    assert_eq!(documents[4]["detail"]["instance-id"], instance.as_str());
    assert_eq!(served.emulator.events().expect("events on").stats().deleted, 5);
}

#[tokio::test]
async fn egress_writes_arrive_as_documents_the_daemon_acts_on() {
    let served = Served::start(Some(EventOptions::default())).await;
    let url = served.queue_url().await;
    let vpc = served.emulator.create_vpc(&NewVpc::default()).await.expect("a VPC");
    let group = served.emulator.create_group(&NewGroup::in_vpc(&vpc, "api", "api")).await.expect("a group");
    drain(&served.sqs(), &url).await;
    let ec2 = served.ec2("us-east-1");
    let permission = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("10.0.0.0/8").build())
        .build();
    ec2.authorize_security_group_egress()
        .group_id(group.as_str())
        .ip_permissions(permission.clone())
        .send()
        .await
        .expect("AuthorizeSecurityGroupEgress");
    ec2.revoke_security_group_egress()
        .group_id(group.as_str())
        .ip_permissions(permission)
        .send()
        .await
        .expect("RevokeSecurityGroupEgress");

    let documents = drain(&served.sqs(), &url).await;
    let names: Vec<&str> = documents.iter().filter_map(|d| d["detail"]["eventName"].as_str()).collect();
    assert_eq!(names, ["AuthorizeSecurityGroupEgress", "RevokeSecurityGroupEgress"]);
    let expected = Expected { account: Some("123456789012".into()), region: "us-east-1".into() };
    for document in &documents {
        match parse(&document.to_string(), &expected) {
            Verdict::Act(hint) => assert_eq!(hint.groups.iter().collect::<Vec<_>>(), [&group]),
            other => panic!("an egress change is a hint: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_long_poll_answers_when_the_write_happens_and_unacknowledged_messages_return() {
    let served = Served::start(Some(EventOptions::default())).await;
    let url = served.queue_url().await;
    let sqs = served.sqs();
    let poll = tokio::spawn({
        let (sqs, url) = (sqs.clone(), url.clone());
        async move {
            let started = std::time::Instant::now();
            let answer = sqs
                .receive_message()
                .queue_url(url)
                .wait_time_seconds(20)
                .visibility_timeout(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("ReceiveMessage");
            (answer, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    served.emulator.create_group(&NewGroup::classic("db", "db tier")).await.expect("create");
    let (answer, waited) = poll.await.expect("the poll");
    assert_eq!(answer.messages().len(), 1);
    assert!(waited < Duration::from_secs(5), "the long poll returned on arrival, not after 20 s: {waited:?}");
    let message = &answer.messages()[0];
    let attributes = message.attributes().expect("attributes asked for");
    assert_eq!(attributes[&MessageSystemAttributeName::ApproximateReceiveCount], "1");
    assert_eq!(message.md5_of_body().map(str::len), Some(32));

    // Not deleted: it comes back after its 1 s visibility timeout.
    let again = sqs.receive_message().queue_url(&url).wait_time_seconds(3).send().await.expect("again");
    assert_eq!(again.messages().len(), 1);
    assert_eq!(again.messages()[0].message_id(), message.message_id());
    let stale = sqs.delete_message().queue_url(&url).receipt_handle(message.receipt_handle().unwrap()).send().await;
    assert!(stale.is_ok(), "an outdated receipt handle is accepted and deletes nothing");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes");
    let attributes = attributes.attributes().expect("attributes");
    assert_eq!(attributes[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible], "1");
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(again.messages()[0].receipt_handle().unwrap())
        .send()
        .await
        .expect("delete");
    let empty = sqs.receive_message().queue_url(&url).wait_time_seconds(0).send().await.expect("empty");
    assert!(empty.messages().is_empty());
}

#[tokio::test]
async fn bad_requests_get_sqs_error_codes() {
    let served = Served::start(Some(EventOptions::default())).await;
    let url = served.queue_url().await;
    let sqs = served.sqs();
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(str::to_owned);

    let missing = sqs.get_queue_url().queue_name("nope").send().await.unwrap_err();
    assert!(missing.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "{missing:?}");
    let wrong_url = sqs.receive_message().queue_url(format!("{}/123456789012/nope", served.url)).send().await;
    assert_eq!(code(&wrong_url.unwrap_err()).as_deref(), Some("AWS.SimpleQueueService.NonExistentQueue"));
    let too_many = sqs.receive_message().queue_url(&url).max_number_of_messages(11).send().await;
    assert_eq!(code(&too_many.unwrap_err()).as_deref(), Some("InvalidParameterValue"));
    let too_long = sqs.receive_message().queue_url(&url).wait_time_seconds(21).send().await;
    assert_eq!(code(&too_long.unwrap_err()).as_deref(), Some("InvalidParameterValue"));
    let bad_handle = sqs.delete_message().queue_url(&url).receipt_handle("forged").send().await.unwrap_err();
    assert!(bad_handle.as_service_error().is_some_and(|e| e.is_receipt_handle_is_invalid()), "{bad_handle:?}");
    let empty = sqs.delete_message_batch().queue_url(&url).set_entries(Some(Vec::new())).send().await.unwrap_err();
    assert!(empty.as_service_error().is_some_and(|e| e.is_empty_batch_request()), "{empty:?}");
    let absent = sqs.delete_message_batch().queue_url(&url).send().await.unwrap_err();
    assert_eq!(code(&absent).as_deref(), Some("MissingParameter"));
    let unsupported = sqs.create_queue().queue_name("other").send().await.unwrap_err();
    assert_eq!(code(&unsupported).as_deref(), Some("AWS.SimpleQueueService.UnsupportedOperation"));

    let off = Served::start(None).await;
    let no_events = off.sqs().get_queue_url().queue_name(DEFAULT_QUEUE_NAME).send().await.unwrap_err();
    assert!(no_events.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "events off: no queue");
}

#[tokio::test]
async fn delivery_delay_holds_events_back_and_loss_drops_them() {
    let delayed =
        Served::start(Some(EventOptions { delay: Duration::from_millis(800), ..EventOptions::default() })).await;
    let url = delayed.queue_url().await;
    let started = std::time::Instant::now();
    delayed.emulator.run_instances(&RunInstances::classic([])).await.expect("run");
    let sqs = delayed.sqs();
    let first = sqs.receive_message().queue_url(&url).wait_time_seconds(5).send().await.expect("receive");
    assert_eq!(first.messages().len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());

    let lossy = Served::start(Some(EventOptions { loss: 1.0, ..EventOptions::default() })).await;
    let url = lossy.queue_url().await;
    lossy.emulator.create_group(&NewGroup::classic("db", "db")).await.expect("create");
    assert!(drain(&lossy.sqs(), &url).await.is_empty());
    assert_eq!(lossy.emulator.events().expect("events on").stats().lost, 1);
}

/// The daemon's adapter of the event source port, on the emulator's queue.
async fn adapter(served: &Served, queue_url: &str) -> AwsEventSource {
    local_event_source(&served.url, queue_url).await
}

#[tokio::test]
async fn the_adapter_long_polls_batch_deletes_and_recognises_the_daemons_own_writes() {
    let served = Served::start(Some(EventOptions::default())).await;
    let url = served.queue_url().await;
    let source = adapter(&served, &url).await;
    let expected = Expected { account: Some("123456789012".into()), region: "us-east-1".into() };

    // A human (another client) adds a rule; the daemon's own adapter tags a group.
    let group = served.emulator.create_group(&NewGroup::classic("app", "app")).await.expect("create");
    drain(&served.sqs(), &url).await;
    let human = served.ec2("us-east-1");
    human
        .create_tags()
        .resources(group.as_str())
        .tags(aws_sdk_ec2::types::Tag::builder().key("team").value("web").build())
        .send()
        .await
        .expect("CreateTags");
    let daemon = crate::common::local_port(&served.url).await;
    Ec2::create_tags(&daemon, &group, &[("owner".to_owned(), "me".to_owned())].into()).await.expect("tags");

    let mut messages = Vec::new();
    while messages.len() < 2 {
        let batch = source.receive(10, Duration::from_secs(2)).await.expect("receive");
        assert!(!batch.is_empty(), "two events expected, got {}", messages.len());
        messages.extend(batch);
    }
    assert!(messages.iter().all(|m| m.receive_count == 1));
    let verdicts: Vec<Verdict> = messages.iter().map(|m| parse(&m.body, &expected)).collect();
    match &verdicts[0] {
        Verdict::Act(hint) => assert_eq!(hint.groups.iter().collect::<Vec<_>>(), [&group]),
        other => panic!("the human's change is a hint: {other:?}"),
    }
    assert_eq!(verdicts[1], Verdict::Ignore(IgnoreReason::OwnEcho), "the daemon's own write is its echo");

    let mut receipts: Vec<Receipt> = messages.iter().map(|m| m.receipt.clone()).collect();
    receipts.push(Receipt("forged".into()));
    let deleted = source.delete(&receipts).await.expect("delete");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(deleted.failed.len(), 1);
    assert_eq!(deleted.failed[0].1.kind(), EventErrorKind::InvalidReceipt);
    assert!(source.receive(10, Duration::ZERO).await.expect("receive").is_empty());

    let missing = adapter(&served, &format!("{}/123456789012/nope", served.url)).await;
    let error = missing.receive(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(error.kind(), EventErrorKind::NoQueue, "{error}");
}
