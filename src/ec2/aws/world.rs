//! World-building over the SDK: create a VPC, run, stop, start and terminate
//! instances. The demo and the tests use it to change an estate through EC2's
//! API (the emulator's or moto's); the daemon never does, so it is not part of
//! the [`crate::ec2::Ec2`] port.

use aws_sdk_ec2::Client;

use super::classify::{classify, parse_id};
use super::convert::id_strings;
use crate::ec2::{Ec2Error, Operation};
use crate::model::{GroupId, InstanceId, VpcId};

/// World-building calls on an SDK client ([`super::AwsEc2::world`]).
#[derive(Clone, Debug)]
pub struct AwsWorld {
    client: Client,
}

impl AwsWorld {
    pub(super) fn new(client: Client) -> Self {
        Self { client }
    }

    /// `CreateVpc` (world building for tests and demos).
    ///
    /// # Errors
    /// The classified EC2 error, or [`MALFORMED_RESPONSE`](crate::ec2::MALFORMED_RESPONSE) without a VPC id.
    pub async fn create_vpc(&self, cidr_block: &str) -> Result<VpcId, Ec2Error> {
        let op = Operation::CreateVpc;
        let out = self.client.create_vpc().cidr_block(cidr_block).send().await.map_err(|e| classify(op, e))?;
        let id = out.vpc().and_then(|v| v.vpc_id());
        parse_id(id, "Vpc.VpcId", VpcId::try_new).map_err(|m| m.error(op))
    }

    /// `RunInstances` of `count` instances of `image_id` in `groups`, without
    /// a subnet (Classic on an endpoint with Classic semantics). World
    /// building for tests and demos.
    ///
    /// # Errors
    /// The classified EC2 error, or [`MALFORMED_RESPONSE`](crate::ec2::MALFORMED_RESPONSE) without ids.
    pub async fn run_instances(
        &self,
        image_id: &str,
        groups: &[GroupId],
        count: i32,
    ) -> Result<Vec<InstanceId>, Ec2Error> {
        let op = Operation::RunInstances;
        let out = self
            .client
            .run_instances()
            .image_id(image_id)
            .min_count(count)
            .max_count(count)
            .set_security_group_ids(Some(groups.iter().map(|g| g.as_str().to_owned()).collect()))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        out.instances()
            .iter()
            .map(|i| parse_id(i.instance_id(), "Instances[].InstanceId", InstanceId::try_new))
            .collect::<Result<_, _>>()
            .map_err(|m| m.error(op))
    }

    /// `StopInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn stop_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::StopInstances;
        self.client
            .stop_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    /// `StartInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn start_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::StartInstances;
        self.client
            .start_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }

    /// `TerminateInstances` (world building).
    ///
    /// # Errors
    /// The classified EC2 error.
    pub async fn terminate_instances(&self, ids: &[InstanceId]) -> Result<(), Ec2Error> {
        let op = Operation::TerminateInstances;
        self.client
            .terminate_instances()
            .set_instance_ids(Some(id_strings(ids)))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        Ok(())
    }
}
