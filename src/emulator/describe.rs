//! The describe actions, one page at a time, as EC2 answers them: explicit
//! ids must exist, filters only narrow, `MaxResults` is range-checked per
//! action, and `NextToken` continues after the last id of the previous page.
//! Items come in id order, which for the emulator's counter ids is creation
//! order, so pagination is stable while the world changes underneath.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use tokio::time::Instant;

use crate::ec2::{GroupFilter, InstanceFilter, LinkFilter};
use crate::model::{GroupId, Instance, InstanceId, Link, SecurityGroup, Vpc, VpcId};

use super::codes;
use super::state::{Fail, GroupRec, World, vpc_not_found};

/// EC2's `MaxResults` / `NextToken` pair of one describe request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// `MaxResults`; `None` returns everything in one page.
    pub max_results: Option<i32>,
    /// `NextToken` from the previous page.
    pub next_token: Option<String>,
}

impl PageRequest {
    /// The first page of `max_results` items.
    #[must_use]
    pub fn first(max_results: i32) -> Self {
        Self { max_results: Some(max_results), next_token: None }
    }

    /// The page after the one that returned `next_token`.
    #[must_use]
    pub fn after(max_results: i32, next_token: Option<String>) -> Self {
        Self { max_results: Some(max_results), next_token }
    }
}

/// One page of a describe: the port's page type (items in id order).
pub use crate::ec2::Page;

/// How one action treats `MaxResults`.
pub(crate) struct SizeRule {
    pub min: i32,
    pub max: i32,
    /// Above `max`: clamp (DescribeClassicLinkInstances) instead of failing.
    pub clamp: bool,
}

const GROUPS: SizeRule = SizeRule { min: 5, max: 1000, clamp: false };
const INSTANCES: SizeRule = SizeRule { min: 5, max: 1000, clamp: false };
const LINKS: SizeRule = SizeRule { min: 5, max: 1000, clamp: true };
const VPCS: SizeRule = SizeRule { min: 5, max: 1000, clamp: false };

pub(crate) fn page_size(page: &PageRequest, rule: &SizeRule) -> Result<Option<usize>, Fail> {
    let Some(max) = page.max_results else {
        return Ok(None);
    };
    let max = if rule.clamp { max.min(rule.max) } else { max };
    if !(rule.min..=rule.max).contains(&max) {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!(
                "Value ( {max} ) for parameter maxResults is invalid. Expecting a value between {} and {}.",
                rule.min, rule.max
            ),
        ));
    }
    Ok(Some(usize::try_from(max).expect("checked positive")))
}

fn token(kind: &str, last: &str) -> String {
    format!("{kind}:{last}")
}

pub(crate) fn token_after<K>(
    page: &PageRequest,
    kind: &str,
    parse: impl Fn(&str) -> Option<K>,
) -> Result<Option<K>, Fail> {
    let Some(text) = page.next_token.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(parse)
        .map(Some)
        .ok_or_else(|| Fail::new(codes::INVALID_PAGINATION_TOKEN, format!("Invalid pagination token {text:?}")))
}

fn after<K: Ord>(key: Option<&K>) -> (Bound<&K>, Bound<&K>) {
    (key.map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded)
}

/// Takes up to `size` items; the token points after the last one taken when
/// more remain.
pub(crate) fn paginate<R, T>(
    iter: impl Iterator<Item = R>,
    size: Option<usize>,
    kind: &str,
    id_of: impl Fn(&R) -> String,
    render: impl Fn(R) -> T,
) -> Page<T> {
    let Some(size) = size else {
        return Page { items: iter.map(render).collect(), next_token: None };
    };
    let mut items = Vec::with_capacity(size.min(1024));
    let mut last = None;
    for item in iter {
        if items.len() == size {
            return Page { items, next_token: last.map(|id: String| token(kind, &id)) };
        }
        last = Some(id_of(&item));
        items.push(render(item));
    }
    Page { items, next_token: None }
}

/// Intersects an optional restriction with another id set.
fn restrict<K: Ord + Clone>(current: Option<BTreeSet<K>>, more: impl IntoIterator<Item = K>) -> BTreeSet<K> {
    let more: BTreeSet<K> = more.into_iter().collect();
    match current {
        Some(current) => current.intersection(&more).cloned().collect(),
        None => more,
    }
}

fn group_matches(group: &GroupRec, filter: &GroupFilter) -> bool {
    (filter.group_names.is_empty() || filter.group_names.contains(&group.name))
        && (filter.vpc_ids.is_empty() || group.vpc_id.as_ref().is_some_and(|v| filter.vpc_ids.contains(v)))
        && (filter.tag_keys.is_empty() || filter.tag_keys.iter().any(|k| group.tags.contains_key(k)))
        && filter
            .tags
            .iter()
            .all(|(key, values)| group.tags.get(key).is_some_and(|value| values.is_empty() || values.contains(value)))
}

impl World {
    /// One page of `DescribeSecurityGroups`. `ids` is `GroupId.N` (each must
    /// exist); `filter` only narrows.
    pub(crate) fn groups_page(
        &self,
        now: Instant,
        ids: &[GroupId],
        filter: &GroupFilter,
        page: &PageRequest,
    ) -> Result<Page<SecurityGroup>, Fail> {
        let size = page_size(page, &GROUPS)?;
        let start = token_after(page, "sg", |t| GroupId::try_new(t).ok())?;
        for id in ids {
            self.group(now, id)?;
        }
        let mut only = None;
        if !ids.is_empty() {
            only = Some(restrict(only, ids.iter().cloned()));
        }
        if !filter.group_ids.is_empty() {
            only = Some(restrict(only, filter.group_ids.iter().cloned()));
        }
        let candidates: Box<dyn Iterator<Item = &GroupRec> + '_> = match &only {
            Some(set) => Box::new(set.range::<GroupId, _>(after(start.as_ref())).filter_map(|id| self.groups.get(id))),
            None => Box::new(self.groups.range::<GroupId, _>(after(start.as_ref())).map(|(_, g)| g)),
        };
        let matching = candidates.filter(|g| g.visible_at <= now && group_matches(g, filter));
        Ok(paginate(matching, size, "sg", |g| g.id.to_string(), |g| g.to_model(&self.account_id)))
    }

    /// One page of `DescribeInstances`. `ids` is `InstanceId.N` (each must
    /// exist, and cannot be combined with `MaxResults`).
    pub(crate) fn instances_page(
        &self,
        now: Instant,
        ids: &[InstanceId],
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<Instance>, Fail> {
        if !ids.is_empty() && page.max_results.is_some() {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_COMBINATION,
                "The parameter instancesSet cannot be used with the parameter maxResults",
            ));
        }
        let size = page_size(page, &INSTANCES)?;
        let start = token_after(page, "i", |t| InstanceId::try_new(t).ok())?;
        for id in ids {
            self.instance(now, id)?;
        }
        let mut only = None;
        if !ids.is_empty() {
            only = Some(restrict(only, ids.iter().cloned()));
        }
        if !filter.instance_ids.is_empty() {
            only = Some(restrict(only, filter.instance_ids.iter().cloned()));
        }
        if !filter.group_ids.is_empty() {
            let members = filter.group_ids.iter().filter_map(|g| self.members.get(g)).flatten().cloned();
            only = Some(restrict(only, members));
        }
        let candidates: Box<dyn Iterator<Item = &InstanceId> + '_> = match &only {
            Some(set) => Box::new(set.range::<InstanceId, _>(after(start.as_ref()))),
            None => Box::new(self.instances.range::<InstanceId, _>(after(start.as_ref())).map(|(id, _)| id)),
        };
        let matching = candidates
            .filter_map(|id| self.instances.get(id))
            .filter(|i| i.visible_at <= now && (filter.states.is_empty() || filter.states.contains(&i.state_at(now))));
        Ok(paginate(matching, size, "i", |i| i.id.to_string(), |i| i.to_model(now)))
    }

    /// One page of `DescribeClassicLinkInstances`. `ids` is `InstanceId.N`
    /// (each must exist; unlinked ones are simply not listed).
    pub(crate) fn links_page(
        &self,
        now: Instant,
        ids: &[InstanceId],
        filter: &LinkFilter,
        page: &PageRequest,
    ) -> Result<Page<Link>, Fail> {
        if !ids.is_empty() && page.max_results.is_some() {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_COMBINATION,
                "The parameter instancesSet cannot be used with the parameter maxResults",
            ));
        }
        let size = page_size(page, &LINKS)?;
        let start = token_after(page, "cl", |t| InstanceId::try_new(t).ok())?;
        for id in ids {
            self.instance(now, id)?;
        }
        let mut only = None;
        if !ids.is_empty() {
            only = Some(restrict(only, ids.iter().cloned()));
        }
        if !filter.instance_ids.is_empty() {
            only = Some(restrict(only, filter.instance_ids.iter().cloned()));
        }
        let only: Option<BTreeSet<InstanceId>> = only.map(|only| self.linked.intersection(&only).cloned().collect());
        let candidates: Box<dyn Iterator<Item = &InstanceId> + '_> = match &only {
            Some(set) => Box::new(set.range::<InstanceId, _>(after(start.as_ref()))),
            None => Box::new(self.linked.range::<InstanceId, _>(after(start.as_ref()))),
        };
        let matching = candidates.filter_map(|id| {
            let instance = self.instances.get(id).filter(|i| i.visible_at <= now)?;
            let link = instance.link.as_ref()?;
            let vpc_ok = filter.vpc_ids.is_empty() || filter.vpc_ids.contains(&link.vpc_id);
            let group_ok = filter.group_ids.is_empty() || filter.group_ids.iter().any(|g| link.groups.contains(g));
            (vpc_ok && group_ok).then(|| Link {
                instance_id: instance.id.clone(),
                vpc_id: link.vpc_id.clone(),
                groups: link.groups.clone(),
            })
        });
        Ok(paginate(matching, size, "cl", |l| l.instance_id.to_string(), |l| l))
    }

    /// One page of `DescribeVpcs`. `ids` is `VpcId.N` (each must exist).
    pub(crate) fn vpcs_page(&self, ids: &[VpcId], page: &PageRequest) -> Result<Page<Vpc>, Fail> {
        let size = page_size(page, &VPCS)?;
        let start = token_after(page, "vpc", |t| VpcId::try_new(t).ok())?;
        for id in ids {
            self.vpc(id)?;
        }
        let wanted: BTreeSet<&VpcId> = ids.iter().collect();
        let matching = self
            .vpcs
            .range::<VpcId, _>(after(start.as_ref()))
            .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
            .map(|(_, v)| v);
        Ok(paginate(matching, size, "vpc", |v| v.id.to_string(), |v| v.to_model()))
    }

    /// `DescribeVpcClassicLink`: every VPC when `ids` is empty. An unknown id
    /// fails the request (`InvalidVpcID.NotFound`) unless `omit_missing`.
    pub(crate) fn vpc_classic_link(&self, ids: &[VpcId], omit_missing: bool) -> Result<Vec<Vpc>, Fail> {
        if ids.is_empty() {
            return Ok(self.vpcs.values().map(|v| v.to_model()).collect());
        }
        let mut found = BTreeMap::new();
        for id in ids {
            match self.vpcs.get(id) {
                Some(vpc) => {
                    found.insert(id.clone(), vpc.to_model());
                }
                None if omit_missing => {}
                None => return Err(vpc_not_found(id)),
            }
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_range_checked_and_link_pages_clamp() {
        let req = |n| PageRequest { max_results: Some(n), next_token: None };
        assert_eq!(page_size(&req(4), &GROUPS).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(page_size(&req(1001), &INSTANCES).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(page_size(&req(5000), &LINKS).unwrap(), Some(1000));
        assert_eq!(page_size(&PageRequest::default(), &VPCS).unwrap(), None);
    }

    #[test]
    fn tokens_of_another_action_are_rejected() {
        let page = PageRequest { max_results: Some(5), next_token: Some("i:i-00000001".into()) };
        assert!(token_after(&page, "i", |t| InstanceId::try_new(t).ok()).unwrap().is_some());
        let err = token_after(&page, "sg", |t| GroupId::try_new(t).ok()).unwrap_err();
        assert_eq!(err.code, codes::INVALID_PAGINATION_TOKEN);
    }

    #[test]
    fn paginate_sets_a_token_only_when_more_remain() {
        let page = paginate(1..=10, Some(5), "n", |n| n.to_string(), |n| n);
        assert_eq!(page.items, vec![1, 2, 3, 4, 5]);
        assert_eq!(page.next_token.as_deref(), Some("n:5"));
        let last = paginate(6..=10, Some(5), "n", |n| n.to_string(), |n| n);
        assert_eq!(last.next_token, None);
    }
}
