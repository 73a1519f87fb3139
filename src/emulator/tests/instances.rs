//! Instances: launching, lifecycle, and what stopping does to links.

use std::time::Duration;

use super::*;
use crate::ec2::{Ec2, InstanceFilter};
use crate::emulator::{RunInstances, codes};
use crate::model::{InstanceId, InstanceState};

#[tokio::test]
async fn instances_without_groups_join_their_networks_default_group() {
    let (emu, vpc) = world_with_vpc().await;
    let classic = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    let instance = emu.peek_instance(&classic).unwrap();
    assert_eq!(instance.vpc_id, None);
    assert_eq!(instance.state, InstanceState::Running);
    assert!(instance.groups.contains(&emu.default_group(None).unwrap()));
    let in_vpc = emu.run_instances(&RunInstances::in_vpc(&vpc, [])).await.unwrap().remove(0);
    assert!(emu.peek_instance(&in_vpc).unwrap().groups.contains(&emu.default_group(Some(&vpc)).unwrap()));
    assert_eq!(classic.as_str(), "i-00000001");
}

#[tokio::test]
async fn run_instances_launches_count_alike() {
    let (emu, _) = world_with_vpc().await;
    let web = classic_group(&emu, "web").await;
    let ids = emu.run_instances(&RunInstances::classic([web.clone()]).count(3)).await.unwrap();
    assert_eq!(ids.len(), 3);
    let described =
        emu.describe_instances(&InstanceFilter { group_ids: vec![web], ..Default::default() }).await.unwrap();
    assert_eq!(described.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(code(emu.run_instances(&RunInstances::classic([]).count(0)).await), codes::INVALID_PARAMETER_VALUE);
}

#[tokio::test]
async fn instances_cannot_use_groups_of_another_network() {
    let (emu, vpc) = world_with_vpc().await;
    let mirror = vpc_group(&emu, &vpc, "web").await;
    let classic = classic_group(&emu, "web").await;
    assert_eq!(code(emu.run_instances(&RunInstances::classic([mirror])).await), codes::GROUP_NOT_FOUND);
    assert_eq!(code(emu.run_instances(&RunInstances::in_vpc(&vpc, [classic])).await), codes::GROUP_NOT_FOUND);
    let missing = GroupId::try_new("sg-0badbad0").unwrap();
    assert_eq!(code(emu.run_instances(&RunInstances::classic([missing])).await), codes::GROUP_NOT_FOUND);
    let gone = VpcId::try_new("vpc-0badbad0").unwrap();
    assert_eq!(code(emu.run_instances(&RunInstances::in_vpc(&gone, [])).await), codes::VPC_NOT_FOUND);
}

#[tokio::test]
async fn a_vpc_instance_has_at_most_five_groups() {
    let (emu, vpc) = world_with_vpc().await;
    let mut groups = Vec::new();
    for i in 0..6 {
        groups.push(vpc_group(&emu, &vpc, &format!("g{i}")).await);
    }
    assert_eq!(code(emu.run_instances(&RunInstances::in_vpc(&vpc, groups)).await), codes::GROUPS_PER_INSTANCE_LIMIT);
}

#[tokio::test(start_paused = true)]
async fn pending_instances_become_running_after_their_pending_time() {
    let (emu, _) = world_with_vpc().await;
    let id =
        emu.run_instances(&RunInstances::classic([]).pending_for(Duration::from_secs(30))).await.unwrap().remove(0);
    assert_eq!(emu.peek_instance(&id).unwrap().state, InstanceState::Pending);
    let pending = InstanceFilter { states: vec![InstanceState::Pending], ..Default::default() };
    assert_eq!(emu.describe_instances(&pending).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(emu.peek_instance(&id).unwrap().state, InstanceState::Running);
    assert!(emu.describe_instances(&pending).await.unwrap().is_empty());
}

#[tokio::test]
async fn stop_start_and_terminate_report_state_changes() {
    let (emu, _) = world_with_vpc().await;
    let ids = emu.run_instances(&RunInstances::classic([]).count(2)).await.unwrap();
    let stopped = emu.stop_instances(&ids[..1]).await.unwrap();
    assert_eq!((stopped[0].previous, stopped[0].current), (InstanceState::Running, InstanceState::Stopped));
    let again = emu.stop_instances(&ids[..1]).await.unwrap();
    assert_eq!(again[0].current, InstanceState::Stopped, "stopping a stopped instance is a no-op");
    let started = emu.start_instances(&ids[..1]).await.unwrap();
    assert_eq!(started[0].current, InstanceState::Running);
    let terminated = emu.terminate_instances(&ids).await.unwrap();
    assert!(terminated.iter().all(|c| c.current == InstanceState::Terminated));
    assert_eq!(code(emu.start_instances(&ids[..1]).await), codes::INCORRECT_INSTANCE_STATE);
    assert_eq!(code(emu.stop_instances(&ids[..1]).await), codes::INCORRECT_INSTANCE_STATE);
}

#[tokio::test]
async fn lifecycle_calls_on_unknown_instances_are_not_found_and_change_nothing() {
    let (emu, _) = world_with_vpc().await;
    let id = emu.run_instances(&RunInstances::classic([])).await.unwrap().remove(0);
    let missing = InstanceId::try_new("i-0badbad0").unwrap();
    assert_eq!(code(emu.stop_instances(&[id.clone(), missing.clone()]).await), codes::INSTANCE_NOT_FOUND);
    assert_eq!(emu.peek_instance(&id).unwrap().state, InstanceState::Running, "all or nothing");
    assert_eq!(code(emu.terminate_instances(&[missing]).await), codes::INSTANCE_NOT_FOUND);
}

#[tokio::test]
async fn stopping_or_terminating_an_instance_removes_its_link() {
    let (emu, vpc) = world_with_vpc().await;
    let mirror = vpc_group(&emu, &vpc, "web").await;
    let ids = emu.run_instances(&RunInstances::classic([]).count(2)).await.unwrap();
    for id in &ids {
        emu.attach_classic_link_vpc(id, &vpc, std::slice::from_ref(&mirror)).await.unwrap();
    }
    emu.stop_instances(&ids[..1]).await.unwrap();
    emu.terminate_instances(&ids[1..]).await.unwrap();
    assert!(emu.peek_link(&ids[0]).is_none());
    assert!(emu.peek_link(&ids[1]).is_none());
    assert!(emu.describe_classic_link_instances(&Default::default()).await.unwrap().is_empty());
    // Starting again does not restore the link.
    emu.start_instances(&ids[..1]).await.unwrap();
    assert!(emu.peek_link(&ids[0]).is_none());
}
