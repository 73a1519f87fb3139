//! The [`Checker`]: collects every error while the file is walked and its
//! values are read, and the generic readers of a raw value (a string, a
//! boolean, a mode, a bounded duration, integer or rate) that the key
//! declarations of `config/sections.rs` name.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::Mode;
use super::bounds::Bounds;
use super::error::{ConfigError, ErrorKind, LineStarts, Location};

/// A leaf as written: any TOML value, with its position, so that checking it
/// is our job and not serde's (which would stop at the first bad one).
pub(super) type RawValue = Spanned<toml::Value>;

/// The path of a key as errors name it: `daemon.interval`, `mirror[0].vpc`.
/// Formatted only when an error is reported.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyPath<'a> {
    prefix: &'a str,
    key: &'static str,
}

impl<'a> KeyPath<'a> {
    /// `key` inside the section or entry at `prefix` (empty: top level).
    pub(super) fn new(prefix: &'a str, key: &'static str) -> Self {
        Self { prefix, key }
    }
}

impl fmt::Display for KeyPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() { f.write_str(self.key) } else { write!(f, "{}.{}", self.prefix, self.key) }
    }
}

/// An integer key's value (within its bounds) as the field's type.
pub(super) trait FromU64 {
    /// `value`, saturating (the bounds keep it far from any type's limit).
    fn from_u64(value: u64) -> Self;
}

impl FromU64 for u64 {
    fn from_u64(value: u64) -> Self {
        value
    }
}

impl FromU64 for u32 {
    fn from_u64(value: u64) -> Self {
        u32::try_from(value).unwrap_or(u32::MAX)
    }
}

impl FromU64 for usize {
    fn from_u64(value: u64) -> Self {
        usize::try_from(value).unwrap_or(usize::MAX)
    }
}

/// Collects errors while walking and checking; knows the text so it can turn
/// spans into locations and show values as written.
pub(super) struct Checker<'t> {
    text: &'t str,
    /// `AWS_REGION`, for a file without `aws.region`.
    pub(super) env_region: Option<&'t str>,
    pub(super) errors: Vec<ConfigError>,
    /// Computed at the first error.
    lines: Option<LineStarts>,
}

impl<'t> Checker<'t> {
    pub(super) fn new(text: &'t str, env_region: Option<&'t str>) -> Self {
        Self { text, env_region, errors: Vec::new(), lines: None }
    }

    pub(super) fn push(
        &mut self,
        kind: ErrorKind,
        path: impl fmt::Display,
        span: Option<Range<usize>>,
        message: String,
    ) {
        let text = self.text;
        let location =
            span.map(|s| Location::of_offset_in(text, self.lines.get_or_insert_with(|| LineStarts::of(text)), s.start));
        self.errors.push(ConfigError { path: path.to_string(), message, kind, location });
    }

    /// A required key is missing from the section or entry at `span`.
    pub(super) fn missing(&mut self, at: KeyPath<'_>, span: Option<Range<usize>>) {
        self.push(ErrorKind::MissingKey, at, span, "required key is missing".to_owned());
    }

    /// A value as the message shows it: strings quoted, scalars as written.
    pub(super) fn shown(&self, raw: &RawValue) -> String {
        match raw.get_ref() {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Array(_) => "an array".to_owned(),
            toml::Value::Table(_) => "a table".to_owned(),
            other => self.text.get(raw.span()).map_or_else(|| other.to_string(), |s| s.trim().to_owned()),
        }
    }

    pub(super) fn wrong_type(&mut self, at: impl fmt::Display, raw: &RawValue, what: &str) {
        let message = format!("{} is not {what}", self.shown(raw));
        self.push(ErrorKind::WrongType, at, Some(raw.span()), message);
    }

    pub(super) fn invalid(&mut self, at: impl fmt::Display, raw: &RawValue, message: String) {
        self.push(ErrorKind::InvalidValue, at, Some(raw.span()), message);
    }

    /// A string.
    pub(super) fn string<'r>(&mut self, at: KeyPath<'_>, raw: &'r RawValue) -> Option<&'r str> {
        if let toml::Value::String(s) = raw.get_ref() {
            Some(s)
        } else {
            self.wrong_type(at, raw, "a string");
            None
        }
    }

    /// `true` or `false`.
    pub(super) fn boolean(&mut self, at: KeyPath<'_>, raw: &RawValue) -> Option<bool> {
        if let toml::Value::Boolean(b) = raw.get_ref() {
            Some(*b)
        } else {
            self.wrong_type(at, raw, "a boolean (true or false)");
            None
        }
    }

    /// `"enforce"` or `"audit"`.
    pub(super) fn mode(&mut self, at: KeyPath<'_>, raw: &RawValue) -> Option<Mode> {
        match raw.get_ref() {
            toml::Value::String(s) if s == "enforce" => Some(Mode::Enforce),
            toml::Value::String(s) if s == "audit" => Some(Mode::Audit),
            toml::Value::String(s) => {
                self.invalid(at, raw, format!("{s:?} is not a mode (\"enforce\" or \"audit\")"));
                None
            }
            _ => {
                self.wrong_type(at, raw, "a mode (\"enforce\" or \"audit\")");
                None
            }
        }
    }

    /// A duration within `bounds`.
    pub(super) fn duration(&mut self, at: KeyPath<'_>, raw: &RawValue, bounds: &Bounds<Duration>) -> Option<Duration> {
        let toml::Value::String(text) = raw.get_ref() else {
            self.wrong_type(at, raw, "a duration (write it as a string, e.g. \"30s\")");
            return None;
        };
        let max = humantime::format_duration(bounds.max);
        let duration = match humantime::parse_duration(text) {
            Ok(duration) => duration,
            // More seconds than a u64 holds: a duration, and far too long.
            Err(humantime::DurationError::NumberOverflow) => {
                self.invalid(at, raw, format!("{text:?} is longer than the maximum {max}"));
                return None;
            }
            Err(_) => {
                self.invalid(at, raw, format!("{text:?} is not a duration"));
                return None;
            }
        };
        if duration < bounds.min {
            let min = humantime::format_duration(bounds.min);
            self.invalid(at, raw, format!("{text:?} is shorter than the minimum {min}"));
            return None;
        }
        if duration > bounds.max {
            self.invalid(at, raw, format!("{text:?} is longer than the maximum {max}"));
            return None;
        }
        Some(duration)
    }

    /// An integer within `bounds`.
    pub(super) fn integer(&mut self, at: KeyPath<'_>, raw: &RawValue, bounds: &Bounds<u64>) -> Option<u64> {
        let toml::Value::Integer(value) = raw.get_ref() else {
            self.wrong_type(at, raw, "an integer");
            return None;
        };
        match u64::try_from(*value) {
            Ok(v) if bounds.contains(&v) => Some(v),
            _ => {
                let shown = self.shown(raw);
                self.invalid(at, raw, format!("{shown} is outside {bounds}"));
                None
            }
        }
    }

    /// A number (integer or float) as `f64`.
    pub(super) fn number(&mut self, at: KeyPath<'_>, raw: &RawValue) -> Option<f64> {
        match raw.get_ref() {
            toml::Value::Float(f) => Some(*f),
            #[expect(clippy::cast_precision_loss, reason = "rates and fractions are small numbers")]
            toml::Value::Integer(i) => Some(*i as f64),
            _ => {
                self.wrong_type(at, raw, "a number");
                None
            }
        }
    }

    /// A rate within `bounds` (NaN and the infinities are outside any).
    pub(super) fn rate(&mut self, at: KeyPath<'_>, raw: &RawValue, bounds: &Bounds<f64>) -> Option<f64> {
        let rate = self.number(at, raw)?;
        if bounds.contains(&rate) {
            Some(rate)
        } else {
            let shown = self.shown(raw);
            self.invalid(at, raw, format!("{shown} is outside {bounds} requests a second"));
            None
        }
    }
}
