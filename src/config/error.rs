//! What a mapping file's problems look like: [`ConfigError`] (one problem,
//! at a key path and a [`Location`]), [`render_errors`] (what `validate`
//! prints) and [`ConfigLoadError`] (why [`super::Config::load`] failed).

use std::fmt::{self, Write as _};
use std::path::PathBuf;

/// A position in the mapping file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl Location {
    pub(super) fn of_offset(text: &str, offset: usize) -> Self {
        Self::of_offset_in(text, &LineStarts::of(text), offset)
    }

    /// [`Location::of_offset`] with the line starts computed once: a binary
    /// search for the line, so locating every error of a large file stays
    /// O(errors × log lines) rather than a scan of the text per error.
    pub(super) fn of_offset_in(text: &str, lines: &LineStarts, offset: usize) -> Self {
        let offset = offset.min(text.len());
        // The number of lines starting at or before the offset; the first starts at 0.
        let line = lines.0.partition_point(|&start| start <= offset);
        let start = lines.0.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let column = text.get(start..offset).map_or(0, |s| s.chars().count());
        Self { line, column: column + 1 }
    }
}

/// The byte offset where each line of a text starts.
pub(super) struct LineStarts(Vec<usize>);

impl LineStarts {
    pub(super) fn of(text: &str) -> Self {
        Self(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What kind of mistake a [`ConfigError`] is; see [`ConfigError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ErrorKind {
    Syntax,
    UnknownKey,
    WrongType,
    MissingKey,
    InvalidValue,
    Duplicate,
}

/// One problem in the mapping file, at a key path.
///
/// Displays as `path: message`, e.g. `mirror[1].vpc: "vpc-xyz" is not a VPC
/// id`. Indices in paths are 0-based. A TOML syntax error has an empty path
/// and displays as its message alone, which names the line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path of the offending key or value (`daemon.interval`,
    /// `mirror[0].vpc`); empty for a syntax error.
    pub path: String,
    /// What is wrong, e.g. `unknown key` or `"30 parsecs" is not a duration`.
    pub message: String,
    pub(super) kind: ErrorKind,
    pub(super) location: Option<Location>,
}

impl ConfigError {
    /// Stable label for metrics: `syntax`, `unknown_key`, `wrong_type`,
    /// `missing_key`, `invalid_value` or `duplicate`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self.kind {
            ErrorKind::Syntax => "syntax",
            ErrorKind::UnknownKey => "unknown_key",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::MissingKey => "missing_key",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::Duplicate => "duplicate",
        }
    }

    /// Where in the file the error is, when it is somewhere: a missing key of
    /// an absent section, or a bad `AWS_REGION`, has no location.
    #[must_use]
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for ConfigError {}

/// Renders errors one per line (each ending in `\n`), in the order they
/// appear in the file; errors without a location (see
/// [`ConfigError::location`]) come first. This is what `validate` prints.
#[must_use]
pub fn render_errors(errors: &[ConfigError]) -> String {
    let mut sorted: Vec<&ConfigError> = errors.iter().collect();
    sorted.sort_by_key(|e| e.location);
    let mut out = String::new();
    for error in sorted {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{error}");
    }
    out
}

/// Why [`Config::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid mapping file.
    #[error("invalid configuration file {} ({} error{}):\n{}", path.display(), errors.len(),
        if errors.len() == 1 { "" } else { "s" }, render_errors(errors).trim_end())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error, in file order.
        errors: Vec<ConfigError>,
    },
}

impl ConfigLoadError {
    /// Stable label for metrics: `read` or `invalid`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Invalid { .. } => "invalid",
        }
    }
}
