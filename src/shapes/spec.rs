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
    /// Reads a prompt written in the world's caption language into the scene it asks for:
    /// `PREFIX [size] colour shape [position phrase]`, `PREFIX colour shape and a colour shape`
    /// or `PREFIX colour shape RELATION PHRASE a colour shape`. `None` when the text is not such
    /// a caption.
    pub fn parse_prompt(&self, text: &str) -> Option<EvalPrompt> {
        let words: Vec<String> = text.split_whitespace().map(|w| w.to_lowercase()).collect();
        let text = words.join(" ");
        let mut prefixes: Vec<&String> = self.prefixes.iter().collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let rest = prefixes
            .iter()
            .find_map(|p| text.strip_prefix(p.as_str())?.strip_prefix(' '))?;
        let (first, rest) = self.noun_phrase(rest)?;
        let prompt = |category: &str, objects, relation| EvalPrompt {
            category: category.to_string(),
            prompt: text.clone(),
            objects,
            relation,
        };
        if rest.is_empty() {
            return Some(prompt("single", vec![first], None));
        }
        if let Some((name, _)) = self
            .position_phrases
            .iter()
            .find(|(_, p)| p.as_str() == rest)
        {
            let mut o = first;
            o.position = Some(name.clone());
            return Some(prompt("single", vec![o], None));
        }
        if first.size.is_some() {
            return None; // two-object prompts do not name sizes
        }
        let second = |tail: &str| {
            let (o, end) = self.noun_phrase(tail.strip_prefix("a ")?)?;
            (end.is_empty() && o.size.is_none()).then_some(o)
        };
        if let Some(tail) = rest.strip_prefix("and ") {
            return Some(prompt("binding", vec![first, second(tail)?], None));
        }
        self.relation_phrases.iter().find_map(|(name, phrase)| {
            let tail = rest.strip_prefix(phrase.as_str())?.strip_prefix(' ')?;
            Some(prompt(
                "relation",
                vec![first.clone(), second(tail)?],
                Some(name.clone()),
            ))
        })
    }

    /// `[size] colour shape` at the start of `text`, and what follows (trimmed).
    fn noun_phrase<'t>(&self, text: &'t str) -> Option<(ExpectedObject, &'t str)> {
        let mut words = text.splitn(4, ' ').collect::<Vec<_>>();
        let size = if self.sizes.contains_key(*words.first()?) {
            Some(words.remove(0).to_string())
        } else {
            None
        };
        let colour = words.first().filter(|w| self.colours.contains_key(**w))?;
        let shape = words
            .get(1)
            .filter(|w| self.shapes.iter().any(|s| s == *w))?;
        let consumed = size.as_ref().map_or(0, |s| s.len() + 1) + colour.len() + 1 + shape.len();
        let rest = text.get(consumed..)?.trim_start();
        Some((
            ExpectedObject {
                colour: colour.to_string(),
                shape: shape.to_string(),
                size,
                position: None,
            },
            rest,
        ))
    }
}

/// One object a prompt asks for; size and position only for single-object prompts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ExpectedObject {
    pub colour: String,
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
                if !w.colours.contains_key(&o.colour) {
                    return Err(at(format!("unknown colour {:?}", o.colour)));
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
