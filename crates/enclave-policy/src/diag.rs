//! Diagnostics: one problem of a network definition, with its position.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The definition is refused.
    Error,
    /// Legal but suspicious; the definition is accepted.
    Warning,
}

impl Severity {
    /// Whether this is an error.
    pub fn is_error(self) -> bool {
        self == Severity::Error
    }
}

/// One problem found in a network definition.
///
/// Displays as `FILE:LINE:COL: error: reason`, followed by an indented hint when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file name, as given to [`crate::load`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when we can tell.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file and turns byte offsets into line and column.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    file: &'a str,
    text: &'a str,
    pub(crate) items: Vec<(usize, Diagnostic)>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            text,
            items: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // A span from the parser always falls on a character boundary; be safe anyway.
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.position(span.start);
        self.items.push((
            span.start,
            Diagnostic {
                severity,
                file: self.file.to_owned(),
                line,
                column,
                message: message.into(),
                hint,
            },
        ));
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, span, message, None);
    }

    pub(crate) fn error_hint(
        &mut self,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(Severity::Error, span, message, Some(hint.into()));
    }

    pub(crate) fn warning(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, span, message, None);
    }

    pub(crate) fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|(_, d)| d.severity == Severity::Error)
            .count()
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items
            .iter()
            .any(|(_, d)| d.severity == Severity::Error)
    }

    /// The diagnostics in file order (stable for equal positions).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|(offset, _)| *offset);
        self.items.into_iter().map(|(_, d)| d).collect()
    }
}
