//! Faults through the request pipeline: throttling, consistency window,
//! injected errors and latency; counters; sharing one world.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::ec2::{Ec2, ErrorKind, GroupFilter, InstanceFilter, Operation};
use crate::emulator::{Faults, RunInstances, Throttle, codes};

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_mutating_bucket_is_throttled_until_it_refills() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.set_faults(Faults::none().with_throttle(Throttle::ec2()));
    emu.reset_counters();
    let mut throttled = 0;
    for port in 0..60u16 {
        if let Err(e) = emu.authorize_ingress(&web, &[tcp(1000 + port, "10.0.0.0/8")]).await {
            assert_eq!(e.code, codes::REQUEST_LIMIT_EXCEEDED);
            assert_eq!(e.kind, ErrorKind::Throttled);
            throttled += 1;
        }
    }
    assert_eq!(throttled, 10, "the bucket holds 50");
    assert_eq!(emu.counters().throttled_total(), 10);
    // Describes have their own bucket.
    emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp(1, "10.0.0.0/8")]).await), codes::REQUEST_LIMIT_EXCEEDED);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for port in 0..5u16 {
        emu.authorize_ingress(&web, &[tcp(2000 + port, "10.0.0.0/8")]).await.unwrap();
    }
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp(3000, "10.0.0.0/8")]).await), codes::REQUEST_LIMIT_EXCEEDED);
}

#[tokio::test(start_paused = true)]
async fn describes_are_throttled_per_page_with_a_scaled_bucket() {
    let (emu, _) = world_with_vpc().await;
    emu.set_faults(Faults::none().with_throttle(Throttle::ec2().scaled(0.05)));
    // Bucket of 5 describes, refilled at 1 per second.
    for _ in 0..5 {
        emu.describe_instances(&InstanceFilter::default()).await.unwrap();
    }
    assert_eq!(code(emu.describe_instances(&InstanceFilter::default()).await), codes::REQUEST_LIMIT_EXCEEDED);
    tokio::time::sleep(Duration::from_secs(1)).await;
    emu.describe_instances(&InstanceFilter::default()).await.unwrap();
    assert_eq!(emu.counters().get(Operation::DescribeInstances).throttled, 1);
}

#[tokio::test(start_paused = true)]
async fn new_groups_are_invisible_and_unusable_by_id_until_the_window_passes() {
    let (emu, vpc) = world_with_vpc().await;
    emu.set_faults(Faults::none().with_consistency_window(Duration::from_secs(2)));
    let web = vpc_group(&emu, &vpc, "web").await;
    let filter = GroupFilter { group_names: vec!["web".into()], ..Default::default() };
    assert!(emu.describe_security_groups(&filter).await.unwrap().is_empty());
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.create_tags(&web, &[("a".to_owned(), "b".to_owned())].into()).await), codes::GROUP_NOT_FOUND);
    let instance = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    assert_eq!(
        code(emu.attach_classic_link_vpc(&instance, &vpc, std::slice::from_ref(&web)).await),
        codes::INSTANCE_NOT_FOUND
    );
    // Creation itself is strongly consistent.
    assert_eq!(code(emu.create_group(&NewGroup::in_vpc(&vpc, "web", "again")).await), codes::GROUP_DUPLICATE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        code(emu.describe_security_groups_page(std::slice::from_ref(&web), &filter, &Default::default()).await),
        codes::GROUP_NOT_FOUND
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(emu.describe_security_groups(&filter).await.unwrap().len(), 1);
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    emu.attach_classic_link_vpc(&instance, &vpc, &[web]).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn new_instances_are_invisible_to_describes_until_the_window_passes() {
    let (emu, _) = world_with_vpc().await;
    emu.set_faults(Faults::none().with_consistency_window(Duration::from_secs(5)));
    let id = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    assert!(emu.describe_instances(&InstanceFilter::default()).await.unwrap().is_empty());
    assert_eq!(code(emu.stop_instances(std::slice::from_ref(&id)).await), codes::INSTANCE_NOT_FOUND);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(emu.describe_instances(&InstanceFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_request_with_a_server_error_and_changes_nothing() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.set_faults(Faults::none().with_error_rate(1.0).with_seed(3));
    emu.reset_counters();
    for _ in 0..10 {
        let error = emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap_err();
        assert!([codes::INTERNAL_ERROR, codes::UNAVAILABLE].contains(&error.code.as_str()));
        assert_eq!(error.kind, ErrorKind::Transient);
    }
    assert!(emu.peek_group(&web).unwrap().ingress.is_empty());
    let counts = emu.counters().get(Operation::AuthorizeSecurityGroupIngress);
    assert_eq!((counts.requests, counts.error_total(), counts.ok), (10, 10, 0));
}

#[tokio::test]
async fn a_per_action_error_rate_leaves_other_actions_alone() {
    let (emu, _) = world_with_vpc().await;
    emu.set_faults(Faults::none().with_operation_error_rate(Operation::DescribeInstances, 1.0));
    assert_eq!(
        ErrorKind::from_code(&code(emu.describe_instances(&InstanceFilter::default()).await)),
        ErrorKind::Transient
    );
    emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
}

#[tokio::test]
async fn an_error_after_effect_applies_the_write_then_fails_so_a_retry_sees_a_duplicate() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    let mut faults = Faults::none().with_operation_error_rate(Operation::AuthorizeSecurityGroupIngress, 1.0);
    faults.errors.after_effect = 1.0;
    emu.set_faults(faults);
    let first = emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap_err();
    assert_eq!(first.kind, ErrorKind::Transient);
    assert_eq!(emu.peek_group(&web).unwrap().ingress.len(), 1, "the write happened");
    emu.set_faults(Faults::none());
    assert_eq!(code(emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await), codes::PERMISSION_DUPLICATE);
}

#[tokio::test(start_paused = true)]
async fn every_request_waits_for_the_injected_latency() {
    let (emu, vpc) = world_with_vpc().await;
    emu.set_faults(Faults::none().with_latency(Duration::from_millis(250), Duration::ZERO));
    let start = Instant::now();
    emu.describe_vpc_classic_link(std::slice::from_ref(&vpc)).await.unwrap();
    emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test]
async fn counters_count_outcomes_per_action_and_reset() {
    let (emu, vpc) = world_with_vpc().await;
    let web = vpc_group(&emu, &vpc, "web").await;
    emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await.unwrap();
    let _ = emu.authorize_ingress(&web, &[tcp(443, "0.0.0.0/0")]).await;
    emu.describe_security_groups(&GroupFilter::default()).await.unwrap();
    let counters = emu.counters();
    assert_eq!(counters.requests(Operation::CreateVpc), 1);
    assert_eq!(counters.requests(Operation::CreateSecurityGroup), 1);
    let authorize = counters.get(Operation::AuthorizeSecurityGroupIngress);
    assert_eq!((authorize.requests, authorize.ok), (2, 1));
    assert_eq!(authorize.errors[codes::PERMISSION_DUPLICATE], 1);
    assert_eq!(counters.mutating_calls(), 4);
    assert_eq!(emu.mutating_calls(), 4);
    assert_eq!(counters.describe_calls(), 1);
    let json: serde_json::Value = serde_json::from_str(&counters.to_json()).unwrap();
    assert_eq!(json["AuthorizeSecurityGroupIngress"]["errors"][codes::PERMISSION_DUPLICATE], 1);
    emu.reset_counters();
    assert_eq!(emu.counters().total_requests(), 0);
    // Inspection is free.
    let _ = emu.peek_group(&web);
    let _ = emu.stats();
    assert_eq!(emu.counters().total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconcilers_share_one_world_and_only_one_create_wins() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Emulator>();
    let (emu, vpc) = world_with_vpc().await;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (emu, vpc) = (emu.clone(), vpc.clone());
            tokio::spawn(async move { emu.create_group(&NewGroup::in_vpc(&vpc, "web", "Mirror of web")).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    let loser = outcomes.into_iter().find_map(Result::err).unwrap();
    assert_eq!(loser.code, codes::GROUP_DUPLICATE);
    let port: &dyn Ec2 = &emu;
    assert_eq!(
        port.describe_security_groups(&GroupFilter { group_names: vec!["web".into()], ..Default::default() })
            .await
            .unwrap()
            .len(),
        1
    );
}
