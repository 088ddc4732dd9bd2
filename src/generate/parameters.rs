//! The `parameters` text every generated PNG carries (AUTOMATIC1111's layout: the prompt, then
//! one line of `Key: value` pairs separated by `, `), and reading it back, so `dalle-ort info
//! IMAGE.png` can show it and `dalle-ort generate --from IMAGE.png` can make the image again.
//!
//! ```text
//! a large red circle on the left
//! Seed: 7, Candidate: 3, Candidates: 8, Top-k: 16, Temperature: 1, CFG scale: 3, Size: 32x32, Model hash: 3f2a9c01bd, Model: shapes-bundle, Version: dalle-ort 0.1.0
//! ```
//!
//! Candidate `c` of a seed is reproduced by sampling candidates `0..=c` with that seed (each
//! candidate draws from its own stream, so the others do not change it).

use crate::sampling::SamplingParams;

/// What the text says. Optional keys are left out when unset.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageParameters {
    /// The prompt (may span lines).
    pub prompt: String,
    /// Tokenizer ids, when the prompt was given as ids (`Text ids: 1 2 3`).
    pub text_ids: Option<Vec<u32>>,
    pub seed: u64,
    /// The candidate (= random stream) this image is; `None` for a grid of several.
    pub candidate: Option<usize>,
    /// Candidates the run sampled.
    pub candidates: usize,
    pub top_k: Option<usize>,
    pub filter_thres: Option<f64>,
    pub top_p: Option<f64>,
    pub temperature: f64,
    pub cond_scale: f64,
    /// Image tokens rows primed from an init image.
    pub init_rows: Option<u64>,
    /// Width × height in pixels.
    pub size: (u32, u32),
    /// The first 10 hex digits of the bundle manifest's SHA-256.
    pub model_hash: Option<String>,
    /// The bundle directory's name.
    pub model: Option<String>,
    /// The program that wrote it (`dalle-ort 0.1.0`).
    pub version: String,
}

/// Characters that would break the `Key: value, ` line are replaced in free-text values.
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if matches!(c, ',' | '\n' | '\r') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

impl ImageParameters {
    /// The sampling settings it records (for `generate --from`).
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            top_k: self.top_k,
            filter_thres: self.filter_thres,
            top_p: self.top_p,
            temperature: self.temperature,
            seed: self.seed,
            cond_scale: self.cond_scale,
        }
    }

    /// The text (see the module docs).
    pub fn to_text(&self) -> String {
        let mut pairs: Vec<(&str, String)> = vec![("Seed", self.seed.to_string())];
        if let Some(c) = self.candidate {
            pairs.push(("Candidate", c.to_string()));
        }
        pairs.push(("Candidates", self.candidates.to_string()));
        if let Some(ids) = &self.text_ids {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            pairs.push(("Text ids", ids.join(" ")));
        }
        if let Some(k) = self.top_k {
            pairs.push(("Top-k", k.to_string()));
        }
        if let Some(t) = self.filter_thres {
            pairs.push(("Filter thres", t.to_string()));
        }
        if let Some(p) = self.top_p {
            pairs.push(("Top-p", p.to_string()));
        }
        pairs.push(("Temperature", self.temperature.to_string()));
        pairs.push(("CFG scale", self.cond_scale.to_string()));
        if let Some(r) = self.init_rows {
            pairs.push(("Init rows", r.to_string()));
        }
        pairs.push(("Size", format!("{}x{}", self.size.0, self.size.1)));
        if let Some(h) = &self.model_hash {
            pairs.push(("Model hash", clean(h)));
        }
        if let Some(m) = &self.model {
            pairs.push(("Model", clean(m)));
        }
        pairs.push(("Version", clean(&self.version)));
        let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{}\n{}", self.prompt, line.join(", "))
    }

    /// Reads [`ImageParameters::to_text`]'s text back; the error says what is wrong.
    pub fn parse(text: &str) -> Result<ImageParameters, String> {
        let text = text.trim_end_matches(['\n', '\r']);
        let (prompt, line) = match text.rsplit_once('\n') {
            Some((p, l)) => (p.to_string(), l),
            None => (String::new(), text),
        };
        let mut p = ImageParameters {
            prompt,
            text_ids: None,
            seed: 0,
            candidate: None,
            candidates: 1,
            top_k: None,
            filter_thres: None,
            top_p: None,
            temperature: 1.0,
            cond_scale: 1.0,
            init_rows: None,
            size: (0, 0),
            model_hash: None,
            model: None,
            version: String::new(),
        };
        let mut seed = None;
        for pair in line.split(", ") {
            let (key, value) = pair
                .split_once(": ")
                .ok_or_else(|| format!("{pair:?} is not `Key: value`"))?;
            fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("{key}: {v:?} is not a valid number"))
            }
            match key {
                "Seed" => seed = Some(num(key, value)?),
                "Candidate" => p.candidate = Some(num(key, value)?),
                "Candidates" => p.candidates = num(key, value)?,
                "Text ids" => {
                    p.text_ids = Some(
                        value
                            .split_whitespace()
                            .map(|v| num(key, v))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "Top-k" => p.top_k = Some(num(key, value)?),
                "Filter thres" => p.filter_thres = Some(num(key, value)?),
                "Top-p" => p.top_p = Some(num(key, value)?),
                "Temperature" => p.temperature = num(key, value)?,
                "CFG scale" => p.cond_scale = num(key, value)?,
                "Init rows" => p.init_rows = Some(num(key, value)?),
                "Size" => {
                    let (w, h) = value
                        .split_once('x')
                        .ok_or_else(|| format!("Size: {value:?} is not WIDTHxHEIGHT"))?;
                    p.size = (num(key, w)?, num(key, h)?);
                }
                "Model hash" => p.model_hash = Some(value.to_string()),
                "Model" => p.model = Some(value.to_string()),
                "Version" => p.version = value.to_string(),
                // Keys of newer versions or other tools: kept readable, not needed here.
                _ => {}
            }
        }
        p.seed = seed.ok_or("no `Seed:` in the parameters line")?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn text_round_trips() {
        let p = ImageParameters {
            prompt: "a red circle,\non two lines".into(),
            text_ids: Some(vec![1, 20, 9]),
            seed: u64::MAX,
            candidate: Some(3),
            candidates: 8,
            top_k: Some(16),
            filter_thres: None,
            top_p: Some(0.9),
            temperature: 0.8,
            cond_scale: 3.0,
            init_rows: Some(3),
            size: (32, 32),
            model_hash: Some("0123456789".into()),
            model: Some("shapes, bundle".into()),
            version: "dalle-ort 0.1.0".into(),
        };
        let text = p.to_text();
        assert!(
            text.starts_with(
                "a red circle,\non two lines\nSeed: 18446744073709551615, Candidate: 3"
            )
        );
        let back = ImageParameters::parse(&text).unwrap();
        assert_eq!(back.model.as_deref(), Some("shapes_ bundle"));
        assert_eq!(
            back,
            ImageParameters {
                model: Some("shapes_ bundle".into()),
                ..p
            }
        );
        assert!(ImageParameters::parse("just a prompt\nSteps: 20").is_err());
    }
}
