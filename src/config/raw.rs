//! The file's raw form and the schema walk (steps 1 and 2 of
//! [`super::Config::from_toml_str`]): which sections exist, of which shape,
//! with which keys (each section's keys come from its declaration in
//! `config/sections.rs`); unknown keys and sections of the wrong shape are
//! reported with their location and pruned, so that what is left always
//! deserializes into [`RawConfig`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::check::Checker;
use super::error::ErrorKind;
use super::sections::{
    RawAccount, RawAws, RawDaemon, RawDiscovery, RawEvents, RawLimits, RawMirror, RawMirroring, RawRateLimit, RawSafety,
};

/// The shape of a top-level key and the keys allowed inside it.
pub(super) enum Shape {
    /// `[name]`.
    Table(&'static [&'static str]),
    /// `[[name]]`.
    ArrayOfTables(&'static [&'static str]),
    /// `[name.KEY]`: tables under names the file chooses.
    NamedTables(&'static [&'static str]),
}

/// Every section of the file, with the keys of each (from its declaration).
/// Must agree with the fields of [`RawConfig`]; a test checks it does.
pub(super) const SCHEMA: &[(&str, Shape)] = &[
    ("aws", Shape::Table(RawAws::KEYS)),
    ("daemon", Shape::Table(RawDaemon::KEYS)),
    ("safety", Shape::Table(RawSafety::KEYS)),
    ("rate_limit", Shape::Table(RawRateLimit::KEYS)),
    ("limits", Shape::Table(RawLimits::KEYS)),
    ("mirroring", Shape::Table(RawMirroring::KEYS)),
    ("discovery", Shape::Table(RawDiscovery::KEYS)),
    ("events", Shape::Table(RawEvents::KEYS)),
    ("accounts", Shape::NamedTables(RawAccount::KEYS)),
    ("mirror", Shape::ArrayOfTables(RawMirror::KEYS)),
];

/// The file after the schema walk: each section's raw form, with its
/// position (a missing required key is reported at its section's header).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) aws: Option<Spanned<RawAws>>,
    pub(super) daemon: Option<Spanned<RawDaemon>>,
    pub(super) safety: Option<Spanned<RawSafety>>,
    pub(super) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(super) limits: Option<Spanned<RawLimits>>,
    pub(super) mirroring: Option<Spanned<RawMirroring>>,
    pub(super) discovery: Option<Spanned<RawDiscovery>>,
    pub(super) events: Option<Spanned<RawEvents>>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, Spanned<RawAccount>>,
    #[serde(default)]
    pub(super) mirror: Vec<Spanned<RawMirror>>,
}

/// A key as it appears in a path: bare when TOML allows it bare, else quoted.
pub(super) fn key_segment(key: &str) -> Cow<'_, str> {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key_segment(key).into_owned() } else { format!("{prefix}.{}", key_segment(key)) }
}

fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Checker<'_> {
    /// Step 2: reports and removes unknown keys and sections of the wrong
    /// shape. Returns the indices of `mirror` entries that are not tables;
    /// they are replaced by empty tables so later indices keep their number,
    /// and skipped by the checks.
    pub(super) fn prune(&mut self, root: &mut DeTable<'_>) -> BTreeSet<usize> {
        let mut skipped = BTreeSet::new();
        let mut drop = Vec::new();
        for (key, value) in root.iter_mut() {
            let name = key.get_ref().as_ref();
            let Some((_, shape)) = SCHEMA.iter().find(|(known, _)| *known == name) else {
                self.push(ErrorKind::UnknownKey, join("", name), Some(key.span()), "unknown key".to_owned());
                drop.push(name.to_owned());
                continue;
            };
            let span = value.span();
            match (shape, value.get_mut()) {
                (Shape::Table(keys), DeValue::Table(table)) => self.prune_table(table, name, keys),
                (Shape::ArrayOfTables(keys), DeValue::Array(items)) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        let path = format!("{}[{i}]", key_segment(name));
                        let item_span = item.span();
                        if let DeValue::Table(table) = item.get_mut() {
                            self.prune_table(table, &path, keys);
                        } else {
                            let found = a_type(item.get_ref());
                            self.push(
                                ErrorKind::WrongType,
                                path,
                                Some(item_span),
                                format!("expected a table, found {found}"),
                            );
                            *item.get_mut() = DeValue::Table(DeTable::new());
                            skipped.insert(i);
                        }
                    }
                }
                (Shape::NamedTables(keys), DeValue::Table(table)) => {
                    let mut wrong = Vec::new();
                    for (entry, value) in table.iter_mut() {
                        let path = join(name, entry.get_ref().as_ref());
                        let span = value.span();
                        if let DeValue::Table(inner) = value.get_mut() {
                            self.prune_table(inner, &path, keys);
                        } else {
                            let message = format!("expected a table ([{path}]), found {}", a_type(value.get_ref()));
                            self.push(ErrorKind::WrongType, path, Some(span), message);
                            wrong.push(entry.get_ref().to_string());
                        }
                    }
                    for entry in wrong {
                        table.remove(&Spanned::new(0..0, Cow::Owned(entry)));
                    }
                }
                (Shape::Table(_) | Shape::NamedTables(_), other) => {
                    let message = format!("expected a table ([{name}]), found {}", a_type(other));
                    self.push(ErrorKind::WrongType, join("", name), Some(span), message);
                    drop.push(name.to_owned());
                }
                (Shape::ArrayOfTables(_), other) => {
                    let message = format!("expected an array of tables ([[{name}]]), found {}", a_type(other));
                    self.push(ErrorKind::WrongType, join("", name), Some(span), message);
                    drop.push(name.to_owned());
                }
            }
        }
        for name in drop {
            root.remove(&Spanned::new(0..0, Cow::Owned(name)));
        }
        skipped
    }

    fn prune_table(&mut self, table: &mut DeTable<'_>, path: &str, known: &[&str]) {
        let mut drop = Vec::new();
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if !known.contains(&name) {
                self.push(ErrorKind::UnknownKey, join(path, name), Some(key.span()), "unknown key".to_owned());
                drop.push(name.to_owned());
            }
        }
        for name in drop {
            table.remove(&Spanned::new(0..0, Cow::Owned(name)));
        }
    }
}
