//! The checker's findings and their text form.

use std::fmt;

/// How much a finding matters for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Information (e.g. shape computations TensorRT or ORT handle anyway).
    Note,
    /// Runs, but something could not be verified or deserves a look.
    Warning,
    /// The node would not run on the target (unsupported, or falls back to another provider).
    Error,
}

/// One finding, about a node when `node` is set, else about the graph.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub node: Option<String>,
    /// `op` or `domain::op`.
    pub op: Option<String>,
    pub message: String,
}

/// The findings for one graph.
#[derive(Debug, Clone)]
pub struct GraphReport {
    /// The graph file (or role) name.
    pub name: String,
    pub nodes: usize,
    pub opset: i64,
    pub findings: Vec<Finding>,
}

impl GraphReport {
    /// Number of findings of `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// The findings for every graph checked against one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: super::Target,
    pub graphs: Vec<GraphReport>,
}

impl Report {
    /// Errors over all graphs.
    pub fn errors(&self) -> usize {
        self.graphs.iter().map(|g| g.count(Severity::Error)).sum()
    }

    /// Whether every node of every graph runs on the target.
    pub fn passes(&self) -> bool {
        self.errors() == 0
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<7} ", self.severity)?;
        match (&self.node, &self.op) {
            (Some(n), Some(op)) => write!(f, "{n} ({op}): ")?,
            (Some(n), None) => write!(f, "{n}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target {}: {}",
            self.target.name(),
            self.target.describe()
        )?;
        for g in &self.graphs {
            let errors = g.count(Severity::Error);
            let verdict = if errors == 0 {
                "ok".to_string()
            } else {
                format!("{errors} node problem(s)")
            };
            writeln!(
                f,
                "{}: {} nodes, opset {}: {verdict}",
                g.name, g.nodes, g.opset
            )?;
            let mut findings: Vec<&Finding> = g.findings.iter().collect();
            findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
            for finding in findings {
                writeln!(f, "  {finding}")?;
            }
        }
        let errors = self.errors();
        if errors == 0 {
            write!(
                f,
                "result: every node of {} graph(s) runs on {}",
                self.graphs.len(),
                self.target.name()
            )
        } else {
            write!(
                f,
                "result: FAIL, {errors} node problem(s): the bundle would not run fully on {}",
                self.target.name()
            )
        }
    }
}
