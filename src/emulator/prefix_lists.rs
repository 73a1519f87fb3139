//! Managed prefix lists and network interfaces, as EC2 has them
//! (docs/emulator.md, "Managed prefix lists"): `CreateManagedPrefixList`,
//! `DescribeManagedPrefixLists`, `GetManagedPrefixListEntries`,
//! `ModifyManagedPrefixList` with its version check and entry limit,
//! `DeleteManagedPrefixList` (asynchronous in EC2: a list a rule still
//! references is left `delete-failed`), and `DescribeNetworkInterfaces` over
//! the primary interfaces of VPC instances.
//!
//! A list keeps every version of its entries (`GetManagedPrefixListEntries`
//! may ask for an old one); a change of entries makes a new version, a
//! rename or resize does not. A reference to a list in a rule counts as its
//! `MaxEntries` against the group's rules quota ([`World::rule_weight`]).
//!
//! Every world has its region's AWS-managed lists (`OwnerId` `AWS`:
//! `com.amazonaws.<region>.s3`, `….dynamodb`, and the global
//! `com.amazonaws.global.cloudfront.origin-facing`), under ids that are the
//! same in every account of the region, as in AWS; a customer's
//! modification or deletion of one is refused `UnauthorizedOperation`.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tokio::time::Instant;

use crate::ec2::{InterfaceFilter, PrefixListFilter};
use crate::model::{AWS_PREFIX_LIST_OWNER, GroupId, NetworkInterface, Peer, PrefixList, PrefixListEntry, PrefixListId};

use super::codes;
use super::describe::{Page, PageRequest, SizeRule, page_size, paginate, token_after};
use super::state::{Fail, InstanceRec, World};
use super::validate::{self, MAX_TAGS};

/// EC2's bounds on `MaxEntries`.
pub(crate) const MAX_ENTRIES_LIMIT: i64 = 1000;
/// Entries one request may add (or remove).
pub(crate) const ENTRIES_PER_REQUEST: usize = 100;
/// Name prefixes EC2 keeps for its own lists (the dot is part of each).
const RESERVED_NAME_PREFIXES: [&str; 3] = ["com.amazonaws.", "com.amazon.", "com.aws."];

const PREFIX_LISTS: SizeRule = SizeRule { min: 1, max: 100, clamp: false };
const ENTRIES: SizeRule = SizeRule { min: 1, max: 100, clamp: false };
const INTERFACES: SizeRule = SizeRule { min: 5, max: 1000, clamp: false };

/// The address family of a list: every entry must be of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn parse(text: &str) -> Result<Self, Fail> {
        match text {
            "IPv4" => Ok(Self::Ipv4),
            "IPv6" => Ok(Self::Ipv6),
            other => Err(Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                format!("Invalid value '{other}' for addressFamily. Valid values are IPv4 and IPv6."),
            )),
        }
    }

    fn as_ec2(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }
}

/// One managed prefix list.
#[derive(Clone, Debug)]
pub(crate) struct PrefixListRec {
    pub id: PrefixListId,
    pub name: String,
    pub family: Family,
    pub max_entries: u32,
    /// The entries of every version, oldest first: `versions[v - 1]` is version `v`.
    pub versions: Vec<BTreeMap<IpNet, Option<String>>>,
    pub state: &'static str,
    pub state_message: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub visible_at: Instant,
    /// An AWS-managed list (`OwnerId` `AWS`): every account of the region
    /// sees it, none may modify or delete it.
    pub aws_managed: bool,
}

impl PrefixListRec {
    pub(crate) fn version(&self) -> u64 {
        self.versions.len() as u64
    }

    pub(crate) fn entries(&self) -> &BTreeMap<IpNet, Option<String>> {
        self.versions.last().expect("a list always has its first version")
    }

    /// The list's `OwnerId`: `AWS` for an AWS-managed one, else the
    /// world's account `account`.
    fn owner<'a>(&self, account: &'a str) -> &'a str {
        if self.aws_managed { AWS_PREFIX_LIST_OWNER } else { account }
    }

    pub(crate) fn to_model(&self, owner: &str) -> PrefixList {
        PrefixList {
            id: self.id.clone(),
            name: self.name.clone(),
            address_family: self.family.as_ec2().to_owned(),
            max_entries: self.max_entries,
            version: self.version(),
            state: self.state.to_owned(),
            state_message: self.state_message.clone(),
            owner_id: self.owner(owner).to_owned(),
            tags: self.tags.clone(),
        }
    }
}

/// `CreateManagedPrefixList` as the request carries it (text, checked here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CreateSpec {
    pub name: Option<String>,
    pub address_family: Option<String>,
    pub max_entries: Option<i64>,
    pub entries: Vec<(String, Option<String>)>,
    pub tags: BTreeMap<String, String>,
    pub client_token: Option<String>,
}

/// `ModifyManagedPrefixList` as the request carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModifySpec {
    pub current_version: Option<i64>,
    pub name: Option<String>,
    pub add: Vec<(String, Option<String>)>,
    pub remove: Vec<String>,
    pub max_entries: Option<i64>,
}

fn not_found(id: &str) -> Fail {
    Fail::new(codes::PREFIX_LIST_NOT_FOUND, format!("The prefix list ID '{id}' does not exist"))
}

fn check_name(name: &str) -> Result<(), Fail> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            "The prefix list name must be between 1 and 255 characters long.",
        ));
    }
    if RESERVED_NAME_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            "The prefix list name cannot begin with (com.amazonaws., com.amazon., com.aws.).",
        ));
    }
    Ok(())
}

fn check_max_entries(max: i64) -> Result<u32, Fail> {
    if (1..=MAX_ENTRIES_LIMIT).contains(&max) {
        Ok(u32::try_from(max).expect("checked range"))
    } else {
        Err(Fail::new(codes::INVALID_PARAMETER_VALUE, "Must specify a max size between 1 and 1000"))
    }
}

fn too_many_per_request() -> Fail {
    Fail::new(codes::INVALID_PARAMETER_VALUE, "The number of entries per request cannot exceeds limit (100).")
}

/// A CIDR of the list's family, canonical.
fn entry_cidr(text: &str, family: Family) -> Result<IpNet, Fail> {
    let bad = || Fail::new(codes::INVALID_PARAMETER_VALUE, format!("The CIDR '{text}' is invalid."));
    let net: IpNet = text.trim().parse().map_err(|_| bad())?;
    let matches = matches!((family, net), (Family::Ipv4, IpNet::V4(_)) | (Family::Ipv6, IpNet::V6(_)));
    if !matches {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("The CIDR '{text}' does not match the address family {} of the prefix list.", family.as_ec2()),
        ));
    }
    Ok(net.trunc())
}

fn entry_description(description: Option<&String>) -> Result<Option<String>, Fail> {
    match description.filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(d) if d.chars().count() > 255 => Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            "The description of a prefix list entry is at most 255 characters.",
        )),
        Some(d) => Ok(Some(d.clone())),
    }
}

/// AWS-managed lists are read-only to every customer: a modification or
/// deletion is refused as an operation the caller may not perform.
fn check_customer_list(list: &PrefixListRec) -> Result<(), Fail> {
    if list.aws_managed {
        return Err(Fail::new(
            codes::UNAUTHORIZED_OPERATION,
            format!("You are not authorized to perform this operation: {} is an AWS-managed prefix list.", list.id),
        ));
    }
    Ok(())
}

/// The AWS-managed lists every region has here: `(name, entries,
/// MaxEntries)`, `{region}` standing for the region (the S3 and DynamoDB
/// gateway lists are regional; CloudFront's is global, one name everywhere,
/// weighing 55 as AWS documents). Entries are a few of AWS's published
/// ranges; what matters to the daemon is the name and the weight.
const AWS_LISTS: [(&str, &[&str], u32); 3] = [
    ("com.amazonaws.{region}.s3", &["52.216.0.0/15", "54.231.0.0/16", "3.5.0.0/19"], 5),
    ("com.amazonaws.{region}.dynamodb", &["52.94.0.0/22", "52.119.224.0/20"], 5),
    ("com.amazonaws.global.cloudfront.origin-facing", &["130.176.0.0/18", "64.252.64.0/18"], 55),
];

/// The id of an AWS-managed list: the same in every account of a region,
/// as in AWS (FNV-1a of region and name: `pl-` and 8 hex digits).
fn aws_list_id(region: &str, name: &str) -> PrefixListId {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in region.bytes().chain([0]).chain(name.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    PrefixListId::try_new(format!("pl-{hash:08x}")).expect("well-formed")
}

fn list_matches(list: &PrefixListRec, owner: &str, filter: &PrefixListFilter) -> bool {
    (filter.prefix_list_ids.is_empty() || filter.prefix_list_ids.contains(&list.id))
        && (filter.names.is_empty() || filter.names.contains(&list.name))
        && (filter.owner_ids.is_empty() || filter.owner_ids.iter().any(|o| o == list.owner(owner)))
        && (filter.tag_keys.is_empty() || filter.tag_keys.iter().any(|k| list.tags.contains_key(k)))
        && filter
            .tags
            .iter()
            .all(|(key, values)| list.tags.get(key).is_some_and(|value| values.is_empty() || values.contains(value)))
}

fn interface_of(instance: &InstanceRec, now: Instant) -> Option<NetworkInterface> {
    let id = instance.interface.clone()?;
    let vpc_id = instance.vpc_id.clone()?;
    if instance.state_at(now) == crate::model::InstanceState::Terminated {
        // EC2 deletes an instance's primary interface with the instance.
        return None;
    }
    Some(NetworkInterface {
        id,
        vpc_id,
        status: "in-use".to_owned(),
        instance_id: Some(instance.id.clone()),
        groups: instance.groups.clone(),
        private_ip: instance.address_at(now),
    })
}

impl World {
    /// Adds the region's AWS-managed lists ([`AWS_LISTS`]), visible at once.
    pub(crate) fn seed_aws_prefix_lists(&mut self, now: Instant) {
        for (pattern, cidrs, max_entries) in AWS_LISTS {
            let name = pattern.replace("{region}", &self.region);
            let cidrs: Vec<String> = cidrs.iter().map(|c| (*c).to_owned()).collect();
            let added = self.add_aws_prefix_list(&name, &cidrs, i64::from(max_entries), now);
            debug_assert!(added.is_ok(), "the built-in lists are well-formed");
        }
    }

    /// Adds the AWS-managed list `name` of this world's region (an estate's
    /// `aws_managed` list).
    ///
    /// # Errors
    /// A name outside `com.amazonaws.`, a bad `MaxEntries` or entry, more
    /// entries than `MaxEntries`, as a message.
    pub(crate) fn add_aws_prefix_list(
        &mut self,
        name: &str,
        cidrs: &[String],
        max_entries: i64,
        now: Instant,
    ) -> Result<(), String> {
        if !name.starts_with("com.amazonaws.") {
            return Err(format!("{name:?} is not the name of an AWS-managed list (com.amazonaws.…)"));
        }
        let max_entries = check_max_entries(max_entries).map_err(|f| f.message)?;
        let entries: BTreeMap<IpNet, Option<String>> = cidrs
            .iter()
            .map(|c| entry_cidr(c, Family::Ipv4).map(|c| (c, None)).map_err(|f| f.message))
            .collect::<Result<_, _>>()?;
        if entries.len() > max_entries as usize {
            return Err(format!("{} entries are more than MaxEntries {max_entries}", entries.len()));
        }
        let id = aws_list_id(&self.region, name);
        let list = PrefixListRec {
            id: id.clone(),
            name: name.to_owned(),
            family: Family::Ipv4,
            max_entries,
            versions: vec![entries],
            state: "create-complete",
            state_message: None,
            tags: BTreeMap::new(),
            visible_at: now,
            aws_managed: true,
        };
        self.prefix_lists.insert(id, list);
        Ok(())
    }

    /// A list that exists and is visible at `now`.
    pub(crate) fn prefix_list(&self, now: Instant, id: &PrefixListId) -> Result<&PrefixListRec, Fail> {
        match self.prefix_lists.get(id) {
            Some(l) if l.visible_at <= now => Ok(l),
            _ => Err(not_found(id.as_str())),
        }
    }

    /// The groups whose rules reference `id`, in id order.
    fn referencing_groups(&self, id: &PrefixListId) -> Vec<GroupId> {
        self.groups
            .values()
            .filter(|g| g.ingress.keys().any(|k| matches!(&k.peer, Peer::PrefixList(p) if p == id)))
            .map(|g| g.id.clone())
            .collect()
    }

    /// `CreateManagedPrefixList`. A `ClientToken` seen before returns the
    /// list it created, or `IdempotentParameterMismatch` when the request
    /// differs.
    pub(crate) fn create_prefix_list(&mut self, now: Instant, spec: CreateSpec) -> Result<PrefixList, Fail> {
        let fingerprint = format!("{:?}", CreateSpec { client_token: None, ..spec.clone() });
        if let Some(token) = &spec.client_token {
            if token.chars().count() > 255 {
                return Err(Fail::new(codes::INVALID_PARAMETER_VALUE, "The client token is at most 255 characters."));
            }
            if let Some((id, seen)) = self.prefix_list_tokens.get(token) {
                if *seen != fingerprint {
                    return Err(Fail::new(
                        codes::IDEMPOTENT_PARAMETER_MISMATCH,
                        "The client token was already used with different parameters.",
                    ));
                }
                if let Some(list) = self.prefix_lists.get(id) {
                    return Ok(list.to_model(&self.account_id));
                }
            }
        }
        let name = spec.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| {
            Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter PrefixListName")
        })?;
        check_name(name)?;
        let family = Family::parse(spec.address_family.as_deref().ok_or_else(|| {
            Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter AddressFamily")
        })?)?;
        let max_entries = check_max_entries(spec.max_entries.ok_or_else(|| {
            Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter MaxEntries")
        })?)?;
        if spec.entries.len() > ENTRIES_PER_REQUEST {
            return Err(too_many_per_request());
        }
        let mut entries = BTreeMap::new();
        for (cidr, description) in &spec.entries {
            let net = entry_cidr(cidr, family)?;
            if entries.insert(net, entry_description(description.as_ref())?).is_some() {
                return Err(Fail::new(
                    codes::INVALID_PARAMETER_VALUE,
                    format!("The CIDR '{net}' appears more than once in the request."),
                ));
            }
        }
        if entries.len() > max_entries as usize {
            return Err(Fail::new(
                codes::PREFIX_LIST_MAX_ENTRIES,
                format!("The prefix list can have at most {max_entries} entries."),
            ));
        }
        if spec.tags.len() > MAX_TAGS {
            return Err(Fail::new(codes::TAG_LIMIT, format!("A resource can have at most {MAX_TAGS} tags")));
        }
        for (key, value) in &spec.tags {
            validate::check_tag(key, value)?;
        }
        let id = self.new_prefix_list_id();
        let list = PrefixListRec {
            id: id.clone(),
            name: name.to_owned(),
            family,
            max_entries,
            versions: vec![entries],
            state: "create-complete",
            state_message: None,
            tags: spec.tags,
            visible_at: now + self.consistency_window,
            aws_managed: false,
        };
        let model = list.to_model(&self.account_id);
        self.prefix_lists.insert(id.clone(), list);
        if let Some(token) = spec.client_token {
            self.prefix_list_tokens.insert(token, (id, fingerprint));
        }
        Ok(model)
    }

    /// One page of `DescribeManagedPrefixLists`. `ids` is `PrefixListId.N`
    /// (each must exist); `filter` only narrows.
    pub(crate) fn prefix_lists_page(
        &self,
        now: Instant,
        ids: &[PrefixListId],
        filter: &PrefixListFilter,
        page: &PageRequest,
    ) -> Result<Page<PrefixList>, Fail> {
        let size = page_size(page, &PREFIX_LISTS)?;
        let start = token_after(page, "pl", |t| PrefixListId::try_new(t).ok())?;
        for id in ids {
            self.prefix_list(now, id)?;
        }
        let range =
            (start.as_ref().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded), std::ops::Bound::Unbounded);
        let owner = self.account_id.as_str();
        let matching = self
            .prefix_lists
            .range::<PrefixListId, _>(range)
            .map(|(_, l)| l)
            .filter(|l| l.visible_at <= now && (ids.is_empty() || ids.contains(&l.id)))
            .filter(|l| list_matches(l, owner, filter));
        Ok(paginate(matching, size, "pl", |l| l.id.to_string(), |l| l.to_model(owner)))
    }

    /// One page of `GetManagedPrefixListEntries`: the entries of
    /// `target_version` (default: the current one), in CIDR order.
    pub(crate) fn prefix_list_entries_page(
        &self,
        now: Instant,
        id: &PrefixListId,
        target_version: Option<i64>,
        page: &PageRequest,
    ) -> Result<Page<PrefixListEntry>, Fail> {
        let size = page_size(page, &ENTRIES)?;
        let start = token_after(page, "ple", |t| t.parse::<IpNet>().ok())?;
        let list = self.prefix_list(now, id)?;
        let entries = match target_version {
            None => list.entries(),
            Some(v) => {
                usize::try_from(v).ok().and_then(|v| v.checked_sub(1)).and_then(|i| list.versions.get(i)).ok_or_else(
                    || {
                        Fail::new(
                            codes::INVALID_PARAMETER_VALUE,
                            format!("Version {v} does not exist for prefix list {id}."),
                        )
                    },
                )?
            }
        };
        let range =
            (start.as_ref().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded), std::ops::Bound::Unbounded);
        let matching = entries.range::<IpNet, _>(range);
        Ok(paginate(
            matching,
            size,
            "ple",
            |(net, _)| net.to_string(),
            |(net, description)| PrefixListEntry { cidr: *net, description: description.clone() },
        ))
    }

    /// `ModifyManagedPrefixList`: entries (under the version check), name,
    /// or size — entries and size never in one request, as in EC2. A resize
    /// that a referencing group's rules quota cannot take leaves the list as
    /// it was, in state `modify-failed`, naming those groups (EC2 resizes
    /// asynchronously and reports it so).
    pub(crate) fn modify_prefix_list(
        &mut self,
        now: Instant,
        id: &PrefixListId,
        spec: ModifySpec,
    ) -> Result<PrefixList, Fail> {
        let list = self.prefix_list(now, id)?;
        check_customer_list(list)?;
        let changes_entries = !spec.add.is_empty() || !spec.remove.is_empty();
        if changes_entries && spec.max_entries.is_some() {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_COMBINATION,
                "You cannot modify the entries and the maximum entries for the prefix list in the same request.",
            ));
        }
        if spec.add.len() > ENTRIES_PER_REQUEST || spec.remove.len() > ENTRIES_PER_REQUEST {
            return Err(too_many_per_request());
        }
        if let Some(name) = &spec.name {
            check_name(name)?;
        }
        if let Some(version) = spec.current_version {
            if u64::try_from(version).ok() != Some(list.version()) {
                return Err(Fail::new(
                    codes::PREFIX_LIST_VERSION_MISMATCH,
                    "The prefix list has the incorrect version number.",
                ));
            }
        } else if changes_entries {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter CurrentVersion"));
        }
        let mut entries = list.entries().clone();
        if changes_entries {
            for cidr in &spec.remove {
                let net = entry_cidr(cidr, list.family)?;
                if entries.remove(&net).is_none() {
                    return Err(Fail::new(
                        codes::PREFIX_LIST_MODIFICATION,
                        format!("The prefix list entry {net} does not exist."),
                    ));
                }
            }
            for (cidr, description) in &spec.add {
                let net = entry_cidr(cidr, list.family)?;
                if entries.insert(net, entry_description(description.as_ref())?).is_some() {
                    return Err(Fail::new(
                        codes::PREFIX_LIST_MODIFICATION,
                        format!("The prefix list entry {net} already exists."),
                    ));
                }
            }
            if entries.len() > list.max_entries as usize {
                return Err(Fail::new(
                    codes::PREFIX_LIST_MAX_ENTRIES,
                    format!("The prefix list can have at most {} entries.", list.max_entries),
                ));
            }
        }
        let resize = match spec.max_entries {
            None => None,
            Some(max) => {
                let max = check_max_entries(max)?;
                if (max as usize) < entries.len() {
                    return Err(Fail::new(
                        codes::INVALID_PARAMETER_VALUE,
                        format!("The prefix list has {} entries, more than the new maximum {max}.", entries.len()),
                    ));
                }
                Some(max)
            }
        };
        // Who cannot take the new size: groups whose weighted rules would
        // pass their quota.
        let old_max = list.max_entries as usize;
        let too_small: Vec<GroupId> = match resize {
            Some(max) if max as usize > old_max => self
                .referencing_groups(id)
                .into_iter()
                .filter(|g| {
                    let Some(group) = self.groups.get(g) else { return false };
                    let references =
                        group.ingress.keys().filter(|k| matches!(&k.peer, Peer::PrefixList(p) if p == id)).count();
                    let weight: usize = group.ingress.keys().map(|k| self.rule_weight(k)).sum();
                    weight - references * old_max + references * max as usize > self.rules_limit(group)
                })
                .take(10)
                .collect(),
            _ => Vec::new(),
        };
        let list = self.prefix_lists.get_mut(id).expect("checked above");
        if let Some(name) = spec.name {
            list.name = name;
        }
        if changes_entries {
            list.versions.push(entries);
        }
        match resize {
            Some(_) if !too_small.is_empty() => {
                let names: Vec<String> = too_small.iter().map(ToString::to_string).collect();
                list.state = "modify-failed";
                list.state_message =
                    Some(format!("The following resources do not support the new maximum size: {}", names.join(", ")));
            }
            Some(max) => {
                list.max_entries = max;
                list.state = "modify-complete";
                list.state_message = None;
            }
            None => {
                list.state = "modify-complete";
                list.state_message = None;
            }
        }
        Ok(list.to_model(&self.account_id))
    }

    /// `DeleteManagedPrefixList`. EC2 deletes asynchronously and answers
    /// `delete-in-progress`; a list that a rule still references is then not
    /// deleted but left `delete-failed`, its state message naming (up to
    /// ten of) the groups.
    pub(crate) fn delete_prefix_list(&mut self, now: Instant, id: &PrefixListId) -> Result<PrefixList, Fail> {
        check_customer_list(self.prefix_list(now, id)?)?;
        let users = self.referencing_groups(id);
        let owner = self.account_id.clone();
        if users.is_empty() {
            let mut list = self.prefix_lists.remove(id).expect("checked above").to_model(&owner);
            self.prefix_list_tokens.retain(|_, (listed, _)| listed != id);
            list.state = "delete-in-progress".to_owned();
            return Ok(list);
        }
        let names: Vec<String> = users.iter().take(10).map(ToString::to_string).collect();
        let list = self.prefix_lists.get_mut(id).expect("checked above");
        list.state = "delete-failed";
        list.state_message = Some(format!("The prefix list is referenced by: {}", names.join(", ")));
        let mut answer = list.to_model(&owner);
        answer.state = "delete-in-progress".to_owned();
        Ok(answer)
    }

    /// One page of `DescribeNetworkInterfaces`: the primary interface of
    /// every VPC instance that is not terminated, in interface id order.
    pub(crate) fn interfaces_page(
        &self,
        now: Instant,
        filter: &InterfaceFilter,
        page: &PageRequest,
    ) -> Result<Page<NetworkInterface>, Fail> {
        let size = page_size(page, &INTERFACES)?;
        let start = token_after(page, "eni", |t| t.starts_with("eni-").then(|| t.to_owned()))?;
        let candidates: Box<dyn Iterator<Item = &InstanceRec> + '_> = if filter.group_ids.is_empty() {
            Box::new(self.instances.values())
        } else {
            let mut ids: Vec<_> = filter.group_ids.iter().filter_map(|g| self.members.get(g)).flatten().collect();
            ids.sort();
            ids.dedup();
            Box::new(ids.into_iter().filter_map(|id| self.instances.get(id)))
        };
        let mut interfaces: Vec<NetworkInterface> = candidates
            .filter(|i| i.visible_at <= now)
            .filter(|i| filter.instance_ids.is_empty() || filter.instance_ids.contains(&i.id))
            .filter_map(|i| interface_of(i, now))
            .filter(|n| filter.vpc_ids.is_empty() || filter.vpc_ids.contains(&n.vpc_id))
            .filter(|n| start.as_ref().is_none_or(|s| n.id.as_str() > s.as_str()))
            .collect();
        interfaces.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(paginate(interfaces.into_iter(), size, "eni", |n| n.id.clone(), |n| n))
    }
}
