//! Aggregates verdicts over prompts and candidates into the evaluation table.

use super::judge::Verdict;

/// One prompt's candidates: a verdict each and, when reranking, their CLIP scores.
#[derive(Clone, Debug)]
pub struct PromptResult {
    pub category: String,
    pub prompt: String,
    pub verdicts: Vec<Verdict>,
    pub clip_scores: Option<Vec<f32>>,
}

impl PromptResult {
    /// The candidate CLIP ranks first (ties: the lower index).
    pub fn reranked(&self) -> Option<usize> {
        self.clip_scores
            .as_ref()
            .and_then(|s| crate::clip::ranking(s).first().copied())
    }
}

/// One line of the table: a check over a category's prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub category: String,
    pub check: &'static str,
    pub prompts: usize,
    /// Share of all candidates passing (the expected rate of one sample).
    pub one_sample: f64,
    /// Share of prompts whose CLIP-best candidate passes.
    pub reranked: Option<f64>,
    /// Share of prompts with at least one passing candidate.
    pub any: f64,
}

/// All prompts' results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub results: Vec<PromptResult>,
}

const CATEGORY_ORDER: [&str; 3] = ["single", "binding", "relation"];

impl Report {
    /// Rows per category (single, binding, relation, then any other), checks in verdict order.
    pub fn rows(&self) -> Vec<Row> {
        let mut categories: Vec<&str> = Vec::new();
        for r in &self.results {
            if !categories.contains(&r.category.as_str()) {
                categories.push(&r.category);
            }
        }
        categories.sort_by_key(|c| CATEGORY_ORDER.iter().position(|o| o == c).unwrap_or(99));
        let mut rows = Vec::new();
        for cat in categories {
            let results: Vec<&PromptResult> = self
                .results
                .iter()
                .filter(|r| r.category == cat && !r.verdicts.is_empty())
                .collect();
            let Some(first) = results.first() else {
                continue;
            };
            for (k, (check, _)) in first.verdicts[0].checks.iter().enumerate() {
                let passed = |v: &Verdict| v.checks.get(k).is_some_and(|c| c.1);
                let (mut pass, mut total, mut any, mut best, mut ranked) = (0, 0, 0, 0, 0);
                for r in &results {
                    pass += r.verdicts.iter().filter(|v| passed(v)).count();
                    total += r.verdicts.len();
                    any += usize::from(r.verdicts.iter().any(passed));
                    if let Some(i) = r.reranked() {
                        ranked += 1;
                        best += usize::from(r.verdicts.get(i).is_some_and(passed));
                    }
                }
                let n = results.len();
                rows.push(Row {
                    category: cat.to_string(),
                    check,
                    prompts: n,
                    one_sample: pass as f64 / total.max(1) as f64,
                    reranked: (ranked == n).then(|| best as f64 / n.max(1) as f64),
                    any: any as f64 / n.max(1) as f64,
                });
            }
        }
        rows
    }

    /// The table in Markdown, rates in percent.
    pub fn markdown(&self, candidates: usize) -> String {
        let pct = |x: f64| format!("{:.0}%", 100.0 * x);
        let mut s = format!(
            "| prompts | check | one sample | CLIP best of {candidates} | any of {candidates} |\n\
             |---|---|---:|---:|---:|\n"
        );
        for r in self.rows() {
            s.push_str(&format!(
                "| {} ({}) | {} | {} | {} | {} |\n",
                r.category,
                r.prompts,
                r.check,
                pct(r.one_sample),
                r.reranked.map(pct).unwrap_or_else(|| "–".into()),
                pct(r.any)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ok: &[bool]) -> Verdict {
        const NAMES: [&str; 2] = ["a", "b"];
        Verdict {
            checks: ok.iter().enumerate().map(|(i, &b)| (NAMES[i], b)).collect(),
            correct: ok[ok.len() - 1],
        }
    }

    #[test]
    fn rates_one_sample_reranked_and_any() {
        let report = Report {
            results: vec![
                PromptResult {
                    category: "binding".into(),
                    prompt: "p".into(),
                    verdicts: vec![v(&[true, false]), v(&[true, true])],
                    clip_scores: Some(vec![0.1, 0.9]),
                },
                PromptResult {
                    category: "single".into(),
                    prompt: "q".into(),
                    verdicts: vec![v(&[false, false]), v(&[true, false])],
                    clip_scores: Some(vec![0.5, 0.2]),
                },
            ],
        };
        let rows = report.rows();
        assert_eq!(rows[0].category, "single");
        assert_eq!(
            (rows[0].one_sample, rows[0].reranked, rows[0].any),
            (0.5, Some(0.0), 1.0)
        );
        assert_eq!(
            (rows[3].one_sample, rows[3].reranked, rows[3].any),
            (0.5, Some(1.0), 1.0)
        );
        let md = report.markdown(2);
        assert!(
            md.contains("| binding (1) | b | 50% | 100% | 100% |"),
            "{md}"
        );
    }
}
