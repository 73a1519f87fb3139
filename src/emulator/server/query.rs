//! EC2 Query-protocol parameters: a form-encoded body (or a GET query
//! string) decoded into a flat map, and the typed readers the actions use —
//! required scalars, numbers, and EC2's *flattened* indexed lists
//! (`GroupId.1`, `IpPermissions.1.IpRanges.2.CidrIp`, `Filter.1.Value.1`),
//! which `aws-sdk-ec2` writes for every list of the EC2 protocol.
//!
//! Every refusal is a [`Fail`] with EC2's code: `MalformedQueryString` for
//! broken percent-encoding, `MissingParameter` for a required parameter that
//! is absent, `InvalidParameterValue` for a bad number or a bad list index.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::model::{GroupId, InstanceId, VpcId};

use super::super::codes;
use super::super::describe::PageRequest;
use super::super::filters::Filter;
use super::super::state::Fail;

/// The decoded parameters of one request (or one element of an indexed
/// list, with the element's prefix removed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    map: BTreeMap<String, String>,
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, `%XX` a byte; the bytes must be UTF-8.
fn decode_component(text: &str) -> Result<String, Fail> {
    let malformed = || Fail::new(codes::MALFORMED_QUERY_STRING, format!("The query string is malformed near {text:?}"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex =
                    bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit)).ok_or_else(malformed)?;
                let hex = std::str::from_utf8(hex).map_err(|_| malformed())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| malformed())
}

/// `N` of an indexed parameter: a positive decimal without leading zeros,
/// so `GroupId.1` and `GroupId.01` cannot both name the first element.
fn parse_index(text: &str) -> Option<u32> {
    if text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| *n > 0)
}

fn bad_index(key: &str) -> Fail {
    Fail::new(
        codes::INVALID_PARAMETER_VALUE,
        format!("Invalid parameter {key:?}: list indexes are positive integers (Name.1, Name.2, ...)"),
    )
}

fn bad_value(key: &str, value: &str, expected: &str) -> Fail {
    Fail::new(codes::INVALID_PARAMETER_VALUE, format!("Invalid value {value:?} for parameter {key}: {expected}"))
}

impl Params {
    /// Decodes a query string and a form body (`a=1&b=2`); a body parameter
    /// overrides a query-string parameter of the same name.
    pub(crate) fn decode(query: Option<&str>, body: &[u8]) -> Result<Self, Fail> {
        let body = std::str::from_utf8(body)
            .map_err(|_| Fail::new(codes::MALFORMED_QUERY_STRING, "The request body is not UTF-8"))?;
        let mut map = BTreeMap::new();
        for text in [query.unwrap_or_default(), body] {
            for pair in text.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                map.insert(decode_component(key)?, decode_component(value)?);
            }
        }
        Ok(Self { map })
    }

    /// Parameters from `(name, value)` pairs (tests).
    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { map: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    /// The value of `key`, if present (possibly empty).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// The value of `key`, or `MissingParameter`.
    pub(crate) fn required(&self, key: &str) -> Result<&str, Fail> {
        self.get(key).ok_or_else(|| missing(key))
    }

    /// A number, if present; `InvalidParameterValue` if it does not parse.
    pub(crate) fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, Fail> {
        self.get(key).map(|v| v.trim().parse().map_err(|_| bad_value(key, v, "expecting an integer"))).transpose()
    }

    /// A required number.
    pub(crate) fn required_number<T: FromStr>(&self, key: &str) -> Result<T, Fail> {
        self.number(key)?.ok_or_else(|| missing(key))
    }

    /// A boolean (`true`/`false`), if present.
    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, Fail> {
        self.get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad_value(key, v, "expecting true or false")),
            })
            .transpose()
    }

    /// A typed id, if present; `malformed` is EC2's code for an id of the
    /// wrong shape (`InvalidGroupId.Malformed`, …).
    pub(crate) fn id<T>(&self, key: &str, malformed: &'static str) -> Result<Option<T>, Fail>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.get(key).map(|v| parse_id(v, malformed)).transpose()
    }

    /// A required typed id.
    pub(crate) fn required_id<T>(&self, key: &str, malformed: &'static str) -> Result<T, Fail>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse_id(self.required(key)?, malformed)
    }

    /// Keys under `prefix.`, grouped by their index, in index order.
    fn indexed(&self, prefix: &str) -> Result<BTreeMap<u32, Element<'_>>, Fail> {
        let dotted = format!("{prefix}.");
        let mut out: BTreeMap<u32, Element<'_>> = BTreeMap::new();
        for (key, value) in self.map.range(dotted.clone()..) {
            let Some(rest) = key.strip_prefix(&dotted) else { break };
            let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let index = parse_index(index).ok_or_else(|| bad_index(key))?;
            out.entry(index).or_default().push((tail, value.as_str()));
        }
        Ok(out)
    }

    /// A flattened list of scalars: `prefix.1`, `prefix.2`, … in index order.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<String>, Fail> {
        self.indexed(prefix)?
            .into_iter()
            .map(|(index, entries)| match entries.as_slice() {
                [("", value)] => Ok((*value).to_owned()),
                _ => Err(bad_index(&format!("{prefix}.{index}.{}", entries[0].0))),
            })
            .collect()
    }

    /// A flattened list of typed ids.
    pub(crate) fn id_list<T>(&self, prefix: &str, malformed: &'static str) -> Result<Vec<T>, Fail>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.list(prefix)?.iter().map(|v| parse_id(v, malformed)).collect()
    }

    /// A flattened list of structures: `prefix.N.Field…`, each element's
    /// parameters with `prefix.N.` removed, in index order.
    pub(crate) fn structs(&self, prefix: &str) -> Result<Vec<Self>, Fail> {
        self.indexed(prefix)?
            .into_iter()
            .map(|(index, entries)| {
                let mut map = BTreeMap::new();
                for (tail, value) in entries {
                    if tail.is_empty() {
                        return Err(bad_index(&format!("{prefix}.{index}")));
                    }
                    map.insert(tail.to_owned(), value.to_owned());
                }
                Ok(Self { map })
            })
            .collect()
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub(crate) fn filters(&self) -> Result<Vec<Filter>, Fail> {
        self.structs("Filter")?
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let name = f.get("Name").ok_or_else(|| missing(&format!("Filter.{}.Name", i + 1)))?;
                Ok(Filter::new(name, f.list("Value")?))
            })
            .collect()
    }

    /// `MaxResults` and `NextToken`.
    pub(crate) fn page(&self) -> Result<PageRequest, Fail> {
        Ok(PageRequest {
            max_results: self.number("MaxResults")?,
            next_token: self.get("NextToken").map(str::to_owned),
        })
    }

    /// `Tag.N.Key` / `Tag.N.Value` (under `prefix`), in index order; a
    /// missing value is `None`.
    pub(crate) fn tags(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Fail> {
        self.structs(prefix)?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let key = t.get("Key").ok_or_else(|| missing(&format!("{prefix}.{}.Key", i + 1)))?;
                Ok((key.to_owned(), t.get("Value").map(str::to_owned)))
            })
            .collect()
    }

    /// Parameter names present, for the checks of unsupported parameters.
    pub(crate) fn has_prefix(&self, prefix: &str) -> bool {
        self.map.keys().any(|k| k == prefix || k.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')))
    }
}

/// One element of an indexed list: `(rest of the key, value)` pairs; the
/// rest is empty for a list of scalars.
type Element<'a> = Vec<(&'a str, &'a str)>;

fn missing(key: &str) -> Fail {
    Fail::new(codes::MISSING_PARAMETER, format!("The request must contain the parameter {key}"))
}

fn parse_id<T>(value: &str, malformed: &'static str) -> Result<T, Fail>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| Fail::new(malformed, format!("Invalid id: {value:?} ({e})")))
}

/// `GroupId`s are malformed as `InvalidGroupId.Malformed`.
pub(crate) fn group_ids(params: &Params, prefix: &str) -> Result<Vec<GroupId>, Fail> {
    params.id_list(prefix, codes::GROUP_ID_MALFORMED)
}

/// `InstanceId`s are malformed as `InvalidInstanceID.Malformed`.
pub(crate) fn instance_ids(params: &Params, prefix: &str) -> Result<Vec<InstanceId>, Fail> {
    params.id_list(prefix, codes::INSTANCE_ID_MALFORMED)
}

/// `VpcId`s are malformed as `InvalidVpcID.Malformed`.
pub(crate) fn vpc_ids(params: &Params, prefix: &str) -> Result<Vec<VpcId>, Fail> {
    params.id_list(prefix, codes::VPC_ID_MALFORMED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_and_query_strings_decode_with_plus_and_percent_escapes() {
        let params =
            Params::decode(Some("Action=DescribeVpcs&X=q"), b"Version=2016-11-15&Tag.1.Value=a+b%26c%3D%C3%A9&X=b")
                .unwrap();
        assert_eq!(params.get("Action"), Some("DescribeVpcs"));
        assert_eq!(params.get("Tag.1.Value"), Some("a b&c=\u{e9}"));
        assert_eq!(params.get("X"), Some("b"), "the body wins over the query string");
    }

    #[test]
    fn broken_percent_escapes_and_non_utf8_are_malformed_query_strings() {
        for body in [&b"Action=%4"[..], b"Action=%zz", b"Action=%+1", b"Action=%C3", b"Action=\xff"] {
            assert_eq!(Params::decode(None, body).unwrap_err().code, codes::MALFORMED_QUERY_STRING, "{body:?}");
        }
    }

    #[test]
    fn flattened_lists_come_in_index_order_not_text_order() {
        let params = Params::from_pairs([("GroupId.10", "sg-0a"), ("GroupId.2", "sg-02"), ("GroupId.1", "sg-01")]);
        assert_eq!(params.list("GroupId").unwrap(), vec!["sg-01", "sg-02", "sg-0a"]);
        assert!(params.list("InstanceId").unwrap().is_empty());
    }

    #[test]
    fn bad_list_indexes_are_invalid_parameter_values() {
        for key in ["GroupId.0", "GroupId.x", "GroupId.01", "GroupId.", "GroupId.-1"] {
            let params = Params::from_pairs([(key, "sg-1")]);
            assert_eq!(params.list("GroupId").unwrap_err().code, codes::INVALID_PARAMETER_VALUE, "{key}");
        }
        let nested = Params::from_pairs([("GroupId.1.Foo", "sg-1")]);
        assert_eq!(nested.list("GroupId").unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        let scalar = Params::from_pairs([("Filter.1", "x")]);
        assert_eq!(scalar.structs("Filter").unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn nested_structures_and_filters_parse() {
        let params = Params::from_pairs([
            ("Filter.1.Name", "group-name"),
            ("Filter.1.Value.2", "db"),
            ("Filter.1.Value.1", "web"),
            ("Filter.2.Name", "tag-key"),
            ("Filter.2.Value.1", "team"),
        ]);
        let filters = params.filters().unwrap();
        assert_eq!(filters, vec![Filter::new("group-name", ["web", "db"]), Filter::new("tag-key", ["team"])]);
        let no_name = Params::from_pairs([("Filter.1.Value.1", "web")]);
        assert_eq!(no_name.filters().unwrap_err().code, codes::MISSING_PARAMETER);
    }

    #[test]
    fn numbers_booleans_and_ids_are_checked() {
        let params = Params::from_pairs([
            ("MaxResults", "ten"),
            ("DryRun", "maybe"),
            ("GroupId", "web"),
            ("InstanceId.1", "i-0b3"),
        ]);
        assert_eq!(params.page().unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(params.boolean("DryRun").unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(
            params.required_id::<GroupId>("GroupId", codes::GROUP_ID_MALFORMED).unwrap_err().code,
            codes::GROUP_ID_MALFORMED
        );
        assert_eq!(params.required("VpcId").unwrap_err().code, codes::MISSING_PARAMETER);
        assert_eq!(instance_ids(&params, "InstanceId").unwrap(), vec![InstanceId::try_new("i-0b3").unwrap()]);
        let ok = Params::from_pairs([("MaxResults", "5"), ("NextToken", "sg:sg-1")]);
        assert_eq!(ok.page().unwrap(), PageRequest { max_results: Some(5), next_token: Some("sg:sg-1".into()) });
    }

    #[test]
    fn tags_keep_the_difference_between_no_value_and_an_empty_value() {
        let params = Params::from_pairs([("Tag.1.Key", "a"), ("Tag.2.Key", "b"), ("Tag.2.Value", "")]);
        assert_eq!(params.tags("Tag").unwrap(), vec![("a".into(), None), ("b".into(), Some(String::new()))]);
        let no_key = Params::from_pairs([("Tag.1.Value", "x")]);
        assert_eq!(no_key.tags("Tag").unwrap_err().code, codes::MISSING_PARAMETER);
    }

    #[test]
    fn has_prefix_matches_whole_segments() {
        let params = Params::from_pairs([("TagSpecification.1.ResourceType", "instance"), ("SubnetIds", "x")]);
        assert!(params.has_prefix("TagSpecification"));
        assert!(!params.has_prefix("SubnetId"));
    }
}
