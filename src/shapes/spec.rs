//! The evaluation set file (`models/shapes/heldout.json`, written by `models/train/train.py`):
//! the world's constants and the prompts with the scenes they ask for.

use crate::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The world's constants, as `world.world_spec()` writes them.
#[derive(Clone, Debug, Deserialize)]
pub struct World {
    /// Canvas side in pixels.
    pub canvas: u32,
    pub background: [u8; 3],
    /// Colour name → RGB.
    pub colours: BTreeMap<String, [u8; 3]>,
    pub shapes: Vec<String>,
    /// Single-object size name → extent in pixels.
    pub sizes: BTreeMap<String, f32>,
    /// Two-object size name → extent in pixels.
    pub pair_sizes: BTreeMap<String, f32>,
    /// Position name → anchor (centre x, y).
    pub positions: BTreeMap<String, [f32; 2]>,
    /// Position name → caption phrase (`left` → `on the left`).
    pub position_phrases: BTreeMap<String, String>,
    pub relations: Vec<String>,
    /// Relation name → caption phrase (`left of` → `to the left of`).
    pub relation_phrases: BTreeMap<String, String>,
    /// Caption openings, each ending with the article (`a`, `a picture of a`, ...).
    pub prefixes: Vec<String>,
}

impl World {
    /// [`World::parse_caption`], `None` for text that is not a caption of the world.
    pub fn parse_prompt(&self, text: &str) -> Option<EvalPrompt> {
        self.parse_caption(text).ok()
    }

    /// Every word a caption may use.
    pub fn words(&self) -> Vec<String> {
        let mut words: Vec<String> = self
            .prefixes
            .iter()
            .chain(self.position_phrases.values())
            .chain(self.relation_phrases.values())
            .flat_map(|p| p.split_whitespace().map(str::to_string))
            .chain(self.colours.keys().cloned())
            .chain(self.shapes.iter().cloned())
            .chain(self.sizes.keys().cloned())
            .chain(["a".to_string(), "and".to_string()])
            .collect();
        words.sort();
        words.dedup();
        words
    }

    /// Reads a caption of the world (every phrasing `models/train/world.py` renders) into the
    /// scene it asks for: `PREFIX [size] [colour] shape [position phrase]`, or `PREFIX [size]
    /// colour shape and a [size] colour shape`, or `PREFIX [size] colour shape RELATION PHRASE
    /// a [size] colour shape` (sizes on both objects or neither). Case and spacing do not
    /// matter. The error names the word or construction that is not the world's.
    pub fn parse_caption(&self, text: &str) -> Result<EvalPrompt, String> {
        let words: Vec<String> = text.split_whitespace().map(|w| w.to_lowercase()).collect();
        let vocabulary = self.words();
        if let Some(w) = words.iter().find(|w| !vocabulary.contains(w)) {
            return Err(format!(
                "{w:?} is not a word of the shape world (its words: {})",
                vocabulary.join(" ")
            ));
        }
        let text = words.join(" ");
        let mut prefixes: Vec<&String> = self.prefixes.iter().collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let rest = prefixes
            .iter()
            .find_map(|p| text.strip_prefix(p.as_str())?.strip_prefix(' '))
            .ok_or_else(|| {
                format!(
                    "a caption starts with one of {} and then an object",
                    quoted(self.prefixes.iter())
                )
            })?;
        let (first, rest) = self.noun_phrase(rest)?;
        let prompt = |category: &str, objects, relation| EvalPrompt {
            category: category.to_string(),
            prompt: text.clone(),
            objects,
            relation,
        };
        if rest.is_empty() {
            return Ok(prompt("single", vec![first], None));
        }
        if let Some((name, _)) = self
            .position_phrases
            .iter()
            .find(|(_, p)| p.as_str() == rest)
        {
            let mut o = first;
            o.position = Some(name.clone());
            return Ok(prompt("single", vec![o], None));
        }
        let second = |tail: &str| -> Result<ExpectedObject, String> {
            let tail = tail
                .strip_prefix("a ")
                .ok_or_else(|| format!("expected \"a\" and a second object, found {tail:?}"))?;
            let (o, end) = self.noun_phrase(tail)?;
            if !end.is_empty() {
                return Err(format!(
                    "{end:?} after the second object: two-object captions have no position"
                ));
            }
            if first.colour.is_none() || o.colour.is_none() {
                return Err("two-object captions name both objects' colours".into());
            }
            if first.size.is_some() != o.size.is_some() {
                return Err("two-object captions give a size to both objects or neither".into());
            }
            Ok(o)
        };
        if let Some(tail) = rest.strip_prefix("and ") {
            return Ok(prompt("binding", vec![first.clone(), second(tail)?], None));
        }
        if rest == "and" {
            return Err("\"and\" needs a second object (\"and a blue square\")".into());
        }
        for (name, phrase) in &self.relation_phrases {
            if let Some(tail) = rest
                .strip_prefix(phrase.as_str())
                .and_then(|t| t.strip_prefix(' '))
            {
                return Ok(prompt(
                    "relation",
                    vec![first.clone(), second(tail)?],
                    Some(name.clone()),
                ));
            }
        }
        Err(format!(
            "{rest:?} is neither a position ({}), \"and a …\", nor a relation ({})",
            quoted(self.position_phrases.values()),
            quoted(
                self.relation_phrases
                    .values()
                    .map(|p| format!("{p} a …"))
                    .collect::<Vec<_>>()
                    .iter()
            )
        ))
    }

    /// `[size] [colour] shape` at the start of `text`, and what follows (trimmed).
    fn noun_phrase<'t>(&self, text: &'t str) -> Result<(ExpectedObject, &'t str), String> {
        let mut rest = text;
        let mut take = |known: &dyn Fn(&str) -> bool| -> Option<String> {
            let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if !word.is_empty() && known(word) {
                rest = tail;
                Some(word.to_string())
            } else {
                None
            }
        };
        let size = take(&|w| self.sizes.contains_key(w));
        let colour = take(&|w| self.colours.contains_key(w));
        let shape = take(&|w| self.shapes.iter().any(|s| s == w)).ok_or_else(|| {
            format!(
                "expected an object ([size] [colour] shape, shapes: {}) at {text:?}",
                self.shapes.join(", ")
            )
        })?;
        Ok((
            ExpectedObject {
                colour,
                shape,
                size,
                position: None,
            },
            rest.trim_start(),
        ))
    }
}

fn quoted<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    items
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One object a prompt asks for; size and position only for single-object prompts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ExpectedObject {
    /// `None`: any colour (single-object captions may leave it out).
    #[serde(default)]
    pub colour: Option<String>,
    pub shape: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub position: Option<String>,
}

/// A prompt and the scene it describes.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalPrompt {
    /// `single`, `binding` or `relation`.
    pub category: String,
    pub prompt: String,
    pub objects: Vec<ExpectedObject>,
    /// For `relation`: where the first object is relative to the second (`above`, `below`,
    /// `left of`, `right of`).
    #[serde(default)]
    pub relation: Option<String>,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalSet {
    pub world: World,
    pub prompts: Vec<EvalPrompt>,
}

impl EvalSet {
    /// Reads and checks a file: every prompt names known colours, shapes, sizes, positions and
    /// relations, and has one object (`single`) or two (`binding`, `relation`).
    pub fn load(path: &Path) -> Result<EvalSet> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let set: EvalSet = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        set.check()
            .map_err(|m| Error::InvalidInput(format!("{}: {m}", path.display())))?;
        Ok(set)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let w = &self.world;
        if w.canvas == 0 || w.colours.is_empty() || w.sizes.is_empty() {
            return Err("world: canvas, colours and sizes must be non-empty".into());
        }
        for (i, p) in self.prompts.iter().enumerate() {
            let at = |m: String| format!("prompt {i} ({:?}): {m}", p.prompt);
            let want = match p.category.as_str() {
                "single" => 1,
                "binding" | "relation" => 2,
                other => return Err(at(format!("unknown category {other:?}"))),
            };
            if p.objects.len() != want {
                return Err(at(format!("{} objects, expected {want}", p.objects.len())));
            }
            if (p.category == "relation") != p.relation.is_some() {
                return Err(at(
                    "a relation is given exactly for `relation` prompts".into()
                ));
            }
            if let Some(r) = &p.relation
                && !w.relations.contains(r)
            {
                return Err(at(format!("unknown relation {r:?}")));
            }
            for o in &p.objects {
                match &o.colour {
                    Some(c) if !w.colours.contains_key(c) => {
                        return Err(at(format!("unknown colour {c:?}")));
                    }
                    None if want == 2 => {
                        return Err(at("two-object prompts name both colours".into()));
                    }
                    _ => {}
                }
                if !w.shapes.contains(&o.shape) {
                    return Err(at(format!("unknown shape {:?}", o.shape)));
                }
                if let Some(s) = &o.size
                    && !w.sizes.contains_key(s)
                {
                    return Err(at(format!("unknown size {s:?}")));
                }
                if let Some(s) = &o.position
                    && !w.positions.contains_key(s)
                {
                    return Err(at(format!("unknown position {s:?}")));
                }
            }
        }
        Ok(())
    }
}
