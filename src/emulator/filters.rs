//! EC2's generic `Filter.N.Name` / `Filter.N.Value.M` parameters, parsed into
//! the port's typed filters. The HTTP server hands every describe's filters
//! through here, so unknown filter names and malformed values are refused the
//! same way for every action.

use std::str::FromStr;

use crate::ec2::{GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter, PrefixListFilter};
use crate::model::InstanceState;

use super::codes;
use super::state::Fail;

/// One EC2 filter: a name and the values any of which may match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Filter name, e.g. `group-id` or `tag:Name`.
    pub name: String,
    /// Values; an item matches when it matches any of them.
    pub values: Vec<String>,
}

impl Filter {
    /// A filter from a name and values.
    #[must_use]
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { name: name.into(), values: values.into_iter().map(Into::into).collect() }
    }
}

fn unknown(name: &str) -> Fail {
    Fail::new(codes::INVALID_PARAMETER_VALUE, format!("The filter '{name}' is invalid"))
}

fn parse_all<T: FromStr>(filter: &Filter) -> Result<Vec<T>, Fail> {
    filter
        .values
        .iter()
        .map(|v| {
            v.parse().map_err(|_| {
                Fail::new(codes::INVALID_PARAMETER_VALUE, format!("Invalid value '{v}' for filter '{}'", filter.name))
            })
        })
        .collect()
}

/// `DescribeSecurityGroups` filters: `group-id`, `group-name`, `vpc-id`,
/// `tag-key`, `tag:<key>`.
pub(crate) fn group_filter(filters: &[Filter]) -> Result<GroupFilter, Fail> {
    let mut out = GroupFilter::default();
    for filter in filters {
        match filter.name.as_str() {
            "group-id" => out.group_ids.extend(parse_all(filter)?),
            "group-name" => out.group_names.extend(filter.values.iter().cloned()),
            "vpc-id" => out.vpc_ids.extend(parse_all(filter)?),
            "tag-key" => out.tag_keys.extend(filter.values.iter().cloned()),
            name => match name.strip_prefix("tag:") {
                Some(key) if !key.is_empty() => {
                    out.tags.entry(key.to_owned()).or_default().extend(filter.values.iter().cloned());
                }
                _ => return Err(unknown(name)),
            },
        }
    }
    Ok(out)
}

/// `DescribeManagedPrefixLists` filters: `prefix-list-id`,
/// `prefix-list-name`, `owner-id`, `tag-key`, `tag:<key>`.
pub(crate) fn prefix_list_filter(filters: &[Filter]) -> Result<PrefixListFilter, Fail> {
    let mut out = PrefixListFilter::default();
    for filter in filters {
        match filter.name.as_str() {
            "prefix-list-id" => out.prefix_list_ids.extend(parse_all(filter)?),
            "prefix-list-name" => out.names.extend(filter.values.iter().cloned()),
            "owner-id" => out.owner_ids.extend(filter.values.iter().cloned()),
            "tag-key" => out.tag_keys.extend(filter.values.iter().cloned()),
            name => match name.strip_prefix("tag:") {
                Some(key) if !key.is_empty() => {
                    out.tags.entry(key.to_owned()).or_default().extend(filter.values.iter().cloned());
                }
                _ => return Err(unknown(name)),
            },
        }
    }
    Ok(out)
}

/// `DescribeNetworkInterfaces` filters: `group-id`, `vpc-id`,
/// `attachment.instance-id`.
pub(crate) fn interface_filter(filters: &[Filter]) -> Result<InterfaceFilter, Fail> {
    let mut out = InterfaceFilter::default();
    for filter in filters {
        match filter.name.as_str() {
            "group-id" => out.group_ids.extend(parse_all(filter)?),
            "vpc-id" => out.vpc_ids.extend(parse_all(filter)?),
            "attachment.instance-id" => out.instance_ids.extend(parse_all(filter)?),
            name => return Err(unknown(name)),
        }
    }
    Ok(out)
}

/// `DescribeInstances` filters: `instance-id`, `instance.group-id` (alias
/// `group-id`), `instance-state-name`.
pub(crate) fn instance_filter(filters: &[Filter]) -> Result<InstanceFilter, Fail> {
    let mut out = InstanceFilter::default();
    for filter in filters {
        match filter.name.as_str() {
            "instance-id" => out.instance_ids.extend(parse_all(filter)?),
            "instance.group-id" | "group-id" => out.group_ids.extend(parse_all(filter)?),
            "instance-state-name" => {
                for value in &filter.values {
                    let state = InstanceState::from_ec2(value).ok_or_else(|| {
                        Fail::new(
                            codes::INVALID_PARAMETER_VALUE,
                            format!("Invalid value '{value}' for filter 'instance-state-name'"),
                        )
                    })?;
                    out.states.push(state);
                }
            }
            name => return Err(unknown(name)),
        }
    }
    Ok(out)
}

/// `DescribeClassicLinkInstances` filters: `instance-id`, `group-id`, `vpc-id`.
pub(crate) fn link_filter(filters: &[Filter]) -> Result<LinkFilter, Fail> {
    let mut out = LinkFilter::default();
    for filter in filters {
        match filter.name.as_str() {
            "instance-id" => out.instance_ids.extend(parse_all(filter)?),
            "group-id" => out.group_ids.extend(parse_all(filter)?),
            "vpc-id" => out.vpc_ids.extend(parse_all(filter)?),
            name => return Err(unknown(name)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupId;

    #[test]
    fn group_filters_parse_every_supported_name() {
        let f = group_filter(&[
            Filter::new("group-id", ["sg-00000001"]),
            Filter::new("group-name", ["web"]),
            Filter::new("vpc-id", ["vpc-00000001"]),
            Filter::new("tag-key", ["owner"]),
            Filter::new("tag:env", ["prod", "staging"]),
        ])
        .unwrap();
        assert_eq!(f.group_ids, vec![GroupId::try_new("sg-00000001").unwrap()]);
        assert_eq!(f.tags["env"], vec!["prod".to_owned(), "staging".to_owned()]);
        assert_eq!(f.tags.len(), 1);
    }

    #[test]
    fn unknown_filters_and_malformed_values_are_invalid_parameter_values() {
        assert_eq!(group_filter(&[Filter::new("owner-id", ["1"])]).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(group_filter(&[Filter::new("group-id", ["web"])]).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(
            instance_filter(&[Filter::new("instance-state-name", ["asleep"])]).unwrap_err().code,
            codes::INVALID_PARAMETER_VALUE
        );
        assert_eq!(link_filter(&[Filter::new("tag:x", ["1"])]).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn group_id_is_an_alias_of_instance_group_id() {
        let a = instance_filter(&[Filter::new("group-id", ["sg-00000002"])]).unwrap();
        let b = instance_filter(&[Filter::new("instance.group-id", ["sg-00000002"])]).unwrap();
        assert_eq!(a, b);
    }
}
