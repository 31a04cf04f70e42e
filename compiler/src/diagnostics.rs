//! User-facing errors: what went wrong, where (file:line:column with the offending snippet), and how to fix it.
//!
//! Every error the compiler reports about its inputs is a [`Diagnostic`]. Library functions collect them in
//! [`Diagnostics`] so that one run reports every problem at once instead of the first.

use std::fmt;

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path of the file, relative to the repository root ('/'-separated).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// The offending line of the input, when known.
    pub snippet: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole file (no position).
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            snippet: None,
            hint: None,
        }
    }

    /// A problem at a position of `source`, the file's text; the snippet is taken from it.
    pub fn at(
        file: impl Into<String>,
        source: &str,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        let snippet = source
            .lines()
            .nth(line.saturating_sub(1))
            .map(|l| truncate_chars(l, 160));
        Diagnostic {
            file: file.into(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
            snippet,
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a position found later (for errors found after parsing).
    pub fn located(mut self, source: &str, position: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = position {
            let with = Diagnostic::at(self.file.clone(), source, line, column, String::new());
            self.line = with.line;
            self.column = with.column;
            self.snippet = with.snippet;
        }
        self
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": error: {}", self.message)?;
        if let (Some(snippet), Some(line)) = (&self.snippet, self.line) {
            let gutter = line.to_string();
            write!(f, "\n{} |\n{gutter} | {snippet}", " ".repeat(gutter.len()))?;
            if let Some(column) = self.column {
                let pad: String = snippet
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n{} | {pad}^", " ".repeat(gutter.len()))?;
            }
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found in one run, in a stable order (by file, then position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
    /// Sorts by file and position so that output is stable however the work was scheduled.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
        self.0.dedup();
        self
    }
    /// `Ok(value)` when there are no problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self.sorted())
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(v: Vec<Diagnostic>) -> Self {
        Diagnostics(v)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        write!(
            f,
            "{} error{}",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_snippet_caret_and_hint() {
        let src = "a: 1\ntier: gold\n";
        let d = Diagnostic::at("tenants/x/tenant.yaml", src, 2, 7, "unknown tier `gold`")
            .with_hint("use one of: starter, pro, team");
        let text = d.to_string();
        assert_eq!(
            text,
            "tenants/x/tenant.yaml:2:7: error: unknown tier `gold`\n  |\n2 | tier: gold\n  |       ^\n  = hint: use one of: starter, pro, team"
        );
    }
}
