//! The emulated world's instances: run, stop, start, terminate, and their
//! ClassicLink attach and detach (an `impl World` block beside the groups'
//! and VPCs' in `state.rs`).

use super::*;

impl World {
    /// `RunInstances`: Classic instances when `vpc_id` is `None`. Without
    /// groups an instance joins its network's `default` group.
    pub(crate) fn run_instances(&mut self, now: Instant, spec: RunSpec) -> Result<Vec<InstanceId>, Fail> {
        if spec.count == 0 {
            return Err(Fail::new(codes::INVALID_PARAMETER_VALUE, "MinCount and MaxCount must be at least 1"));
        }
        if spec.id.is_some() && spec.count != 1 {
            return Err(Fail::new(codes::INVALID_PARAMETER_VALUE, "An explicit instance id needs a count of 1"));
        }
        let default_group = match &spec.vpc_id {
            Some(vpc_id) => self.vpc(vpc_id)?.default_group.clone(),
            None => self.classic_default.clone(),
        };
        let groups: BTreeSet<GroupId> = if spec.groups.is_empty() {
            BTreeSet::from([default_group])
        } else {
            spec.groups.iter().cloned().collect()
        };
        for id in &groups {
            if self.group(now, id)?.vpc_id != spec.vpc_id {
                return Err(different_networks());
            }
        }
        if spec.vpc_id.is_some() && groups.len() > MAX_GROUPS_PER_LINK {
            return Err(Fail::new(
                codes::GROUPS_PER_INSTANCE_LIMIT,
                format!("An instance in a VPC can have at most {MAX_GROUPS_PER_LINK} security groups"),
            ));
        }
        if let Some(id) = &spec.id {
            self.claim(id.as_str())?;
        }
        let addresses =
            (0..spec.count).map(|_| self.new_address(spec.vpc_id.as_ref())).collect::<Result<Vec<_>, _>>()?;
        let mut ids = Vec::with_capacity(spec.count);
        for address in addresses {
            let interface = spec.vpc_id.is_some().then(|| self.new_interface_id());
            let id = match &spec.id {
                Some(id) => id.clone(),
                None => self.new_instance_id(),
            };
            for group in &groups {
                self.members.entry(group.clone()).or_default().insert(id.clone());
            }
            self.instances.insert(
                id.clone(),
                InstanceRec {
                    id: id.clone(),
                    vpc_id: spec.vpc_id.clone(),
                    groups: groups.clone(),
                    state: spec.state,
                    running_at: spec.running_at,
                    visible_at: now + self.consistency_window,
                    link: None,
                    private_ip: Some(address),
                    interface,
                },
            );
            ids.push(id);
        }
        Ok(ids)
    }

    fn unlink(&mut self, id: &InstanceId) {
        if let Some(instance) = self.instances.get_mut(id) {
            instance.link = None;
        }
        self.linked.remove(id);
    }

    fn change_states(
        &mut self,
        now: Instant,
        ids: &[InstanceId],
        transition: impl Fn(InstanceState) -> Result<Option<InstanceState>, &'static str>,
    ) -> Result<Vec<StateChange>, Fail> {
        if ids.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter InstanceId"));
        }
        let mut plan = Vec::with_capacity(ids.len());
        for id in ids {
            let previous = self.instance(now, id)?.state_at(now);
            match transition(previous) {
                Ok(next) => plan.push((id.clone(), previous, next)),
                Err(verb) => {
                    return Err(Fail::new(
                        codes::INCORRECT_INSTANCE_STATE,
                        format!("The instance '{id}' is not in a state from which it can be {verb}."),
                    ));
                }
            }
        }
        let mut changes = Vec::with_capacity(plan.len());
        for (id, previous, next) in plan {
            let current = match next {
                Some(state) => {
                    if matches!(state, InstanceState::Stopped | InstanceState::Terminated) {
                        self.unlink(&id);
                    }
                    let classic = self.instances.get(&id).is_some_and(|i| i.vpc_id.is_none());
                    if classic && state == InstanceState::Running && previous == InstanceState::Stopped {
                        // EC2-Classic gave a started instance a new address.
                        let address = self.new_address(None)?;
                        self.instances.get_mut(&id).expect("checked above").private_ip = Some(address);
                    }
                    self.instances.get_mut(&id).expect("checked above").set_state(state);
                    state
                }
                None => previous,
            };
            changes.push(StateChange { instance_id: id, previous, current });
        }
        Ok(changes)
    }

    /// `StopInstances`: stops at once and removes any ClassicLink link.
    pub(crate) fn stop_instances(&mut self, now: Instant, ids: &[InstanceId]) -> Result<Vec<StateChange>, Fail> {
        self.change_states(now, ids, |state| match state {
            InstanceState::Pending | InstanceState::Running | InstanceState::Stopping => {
                Ok(Some(InstanceState::Stopped))
            }
            InstanceState::Stopped => Ok(None),
            InstanceState::ShuttingDown | InstanceState::Terminated => Err("stopped"),
        })
    }

    /// `StartInstances`: a stopped instance runs again at once (unlinked).
    pub(crate) fn start_instances(&mut self, now: Instant, ids: &[InstanceId]) -> Result<Vec<StateChange>, Fail> {
        self.change_states(now, ids, |state| match state {
            InstanceState::Stopped => Ok(Some(InstanceState::Running)),
            InstanceState::Pending | InstanceState::Running => Ok(None),
            InstanceState::Stopping | InstanceState::ShuttingDown | InstanceState::Terminated => Err("started"),
        })
    }

    /// `TerminateInstances`: terminates at once and removes any link.
    pub(crate) fn terminate_instances(&mut self, now: Instant, ids: &[InstanceId]) -> Result<Vec<StateChange>, Fail> {
        self.change_states(now, ids, |state| match state {
            InstanceState::Terminated => Ok(None),
            _ => Ok(Some(InstanceState::Terminated)),
        })
    }

    // ----- ClassicLink -------------------------------------------------------

    /// `AttachClassicLinkVpc`.
    pub(crate) fn attach(
        &mut self,
        now: Instant,
        id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Fail> {
        let instance = self.instance(now, id)?;
        let vpc = self.vpc(vpc_id)?;
        if instance.vpc_id.is_some() {
            return Err(Fail::new(
                codes::INSTANCE_NOT_LINKABLE,
                format!("Only EC2-Classic instances can be linked to a VPC; '{id}' is in a VPC"),
            ));
        }
        let state = instance.state_at(now);
        if state != InstanceState::Running {
            return Err(Fail::new(
                codes::INSTANCE_NOT_LINKABLE,
                format!("The instance '{id}' is {} and cannot be linked; only running instances can", state.as_ec2()),
            ));
        }
        if let Some(link) = &instance.link {
            return Err(Fail::new(
                codes::INSTANCE_ALREADY_LINKED,
                format!("The instance '{id}' is already linked to {}", link.vpc_id),
            ));
        }
        if !vpc.classic_link {
            return Err(Fail::new(
                codes::INSTANCE_NOT_LINKABLE,
                format!("The instance '{id}' cannot be linked to '{vpc_id}': the VPC is not enabled for ClassicLink"),
            ));
        }
        let groups: BTreeSet<GroupId> = groups.iter().cloned().collect();
        if groups.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter SecurityGroupId"));
        }
        if groups.len() > MAX_GROUPS_PER_LINK {
            return Err(Fail::new(
                codes::GROUPS_PER_INSTANCE_LIMIT,
                format!("A ClassicLink link can have at most {MAX_GROUPS_PER_LINK} security groups"),
            ));
        }
        for group in &groups {
            if self.group(now, group)?.vpc_id.as_ref() != Some(vpc_id) {
                return Err(Fail::new(
                    codes::GROUP_NOT_FOUND,
                    format!("The security group '{group}' does not exist in VPC '{vpc_id}'"),
                ));
            }
        }
        let instance = self.instances.get_mut(id).expect("checked above");
        instance.link = Some(LinkRec { vpc_id: vpc_id.clone(), groups });
        self.linked.insert(id.clone());
        Ok(())
    }

    /// `DetachClassicLinkVpc`: `true` when a link to that VPC was removed;
    /// an instance not linked to it is left alone (no error).
    pub(crate) fn detach(&mut self, now: Instant, id: &InstanceId, vpc_id: &VpcId) -> Result<bool, Fail> {
        let instance = self.instance(now, id)?;
        self.vpc(vpc_id)?;
        if instance.link.as_ref().is_some_and(|l| &l.vpc_id == vpc_id) {
            self.unlink(id);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}
