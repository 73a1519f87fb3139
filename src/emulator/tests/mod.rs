//! Behaviour tests of the emulator through its public surface: the `Ec2`
//! port, the EC2-shaped actions and the describe pages. One file per area.

mod describe;
mod estates;
mod faults;
mod generate;
mod groups;
mod instances;
mod links;
mod prefix_lists;

use std::fmt::Debug;

use crate::ec2::Ec2Error;
use crate::model::{Grant, GroupId, Peer, Ports, Protocol, VpcId};

use super::{Emulator, EmulatorOptions, NewGroup, NewVpc};

/// The error code of a result that must have failed.
fn code<T: Debug>(result: Result<T, Ec2Error>) -> String {
    result.expect_err("the request must fail").code
}

/// A TCP grant from a CIDR.
fn tcp(port: u16, cidr: &str) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::Ipv4(cidr.parse().unwrap()), None)
}

/// A TCP grant from a same-account group.
fn tcp_from(port: u16, group: &GroupId) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::Group { group: group.clone(), owner: None },
        None,
    )
}

/// A fresh world with one ClassicLink-enabled VPC.
async fn world_with_vpc() -> (Emulator, VpcId) {
    let emu = Emulator::new(EmulatorOptions::default());
    let vpc = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
    (emu, vpc)
}

/// Creates a Classic group.
async fn classic_group(emu: &Emulator, name: &str) -> GroupId {
    emu.create_group(&NewGroup::classic(name, format!("{name} tier"))).await.unwrap()
}

/// Creates a VPC group.
async fn vpc_group(emu: &Emulator, vpc: &VpcId, name: &str) -> GroupId {
    emu.create_group(&NewGroup::in_vpc(vpc, name, format!("{name} mirror"))).await.unwrap()
}
