//! What the checker knows about one ONNX graph: each value's element type and dims (from the
//! graph's inputs, outputs, `value_info` and initializers — the exporter writes `value_info` for
//! every intermediate), which values are constants (initializers and `Constant` outputs), and
//! where each value's contents come from: constants only, tensor shapes (`Shape`/`Size`
//! outputs and arithmetic on them), or the *values* of graph inputs.

use crate::proto;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Element type and dims of a value; a dim is `None` when symbolic or unknown.
#[derive(Debug, Clone)]
pub struct ValueFact {
    pub elem: String,
    pub dims: Option<Vec<Option<i64>>>,
}

/// Where a value's contents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Initializers and `Constant` nodes only.
    Constant,
    /// Constants and tensor shapes: fixed once the input shapes are.
    Shapes,
    /// The values of these graph inputs (indices into the graph's input list).
    Inputs(BTreeSet<usize>),
    /// Produced by a node the checker cannot place (out of order or undefined inputs).
    Unknown,
}

impl Origin {
    fn join(self, other: &Origin) -> Origin {
        use Origin::*;
        match (self, other) {
            (Unknown, _) | (_, Unknown) => Unknown,
            (Inputs(mut a), Inputs(b)) => {
                a.extend(b.iter().copied());
                Inputs(a)
            }
            (Inputs(a), _) => Inputs(a),
            (_, Inputs(b)) => Inputs(b.clone()),
            (Shapes, _) | (_, Shapes) => Shapes,
            (Constant, Constant) => Constant,
        }
    }
}

/// The index of one graph.
pub struct GraphFacts<'a> {
    pub graph: &'a proto::GraphProto,
    values: HashMap<&'a str, ValueFact>,
    constants: HashMap<&'a str, &'a proto::TensorProto>,
    io: HashSet<&'a str>,
    origin: HashMap<&'a str, Origin>,
}

/// ONNX element type name of a `TensorProto.DataType` code (`float`, `int64`, …).
pub fn elem_name(code: i32) -> String {
    proto::tensor_proto::DataType::try_from(code)
        .map(|t| t.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type#{code}"))
}

fn value_fact(v: &proto::ValueInfoProto) -> Option<ValueFact> {
    let proto::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()? else {
        return None;
    };
    let dims = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(proto::tensor_shape_proto::dimension::Value::DimValue(n)) => Some(n),
                _ => None,
            })
            .collect()
    });
    Some(ValueFact {
        elem: elem_name(t.elem_type.unwrap_or(0)),
        dims,
    })
}

impl<'a> GraphFacts<'a> {
    pub fn new(graph: &'a proto::GraphProto) -> GraphFacts<'a> {
        let mut values = HashMap::new();
        let mut io = HashSet::new();
        for v in graph.input.iter().chain(&graph.output) {
            let name = v.name.as_deref().unwrap_or("");
            io.insert(name);
            if let Some(f) = value_fact(v) {
                values.insert(name, f);
            }
        }
        for v in &graph.value_info {
            if let Some(f) = value_fact(v) {
                values.entry(v.name.as_deref().unwrap_or("")).or_insert(f);
            }
        }
        let mut constants = HashMap::new();
        let mut origin: HashMap<&str, Origin> = HashMap::new();
        for t in &graph.initializer {
            let name = t.name.as_deref().unwrap_or("");
            constants.insert(name, t);
            origin.insert(name, Origin::Constant);
            values.insert(
                name,
                ValueFact {
                    elem: elem_name(t.data_type.unwrap_or(0)),
                    dims: Some(t.dims.iter().map(|&d| Some(d)).collect()),
                },
            );
        }
        for (i, v) in graph.input.iter().enumerate() {
            let name = v.name.as_deref().unwrap_or("");
            // An input that is also an initializer (a default) is still an input.
            origin.insert(name, Origin::Inputs(BTreeSet::from([i])));
        }
        for n in &graph.node {
            let op = n.op_type.as_deref().unwrap_or("");
            let domain = n.domain.as_deref().unwrap_or("");
            let default_domain = domain.is_empty() || domain == "ai.onnx";
            let o = if default_domain && op == "Constant" {
                if let Some(t) = n
                    .attribute
                    .iter()
                    .find(|a| a.name.as_deref() == Some("value"))
                    .and_then(|a| a.t.as_ref())
                    && let Some(out) = n.output.first()
                {
                    constants.insert(out.as_str(), t);
                    values.entry(out.as_str()).or_insert(ValueFact {
                        elem: elem_name(t.data_type.unwrap_or(0)),
                        dims: Some(t.dims.iter().map(|&d| Some(d)).collect()),
                    });
                }
                Origin::Constant
            } else if default_domain && (op == "Shape" || op == "Size") {
                let known = n
                    .input
                    .first()
                    .is_some_and(|i| origin.contains_key(i.as_str()));
                if known {
                    Origin::Shapes
                } else {
                    Origin::Unknown
                }
            } else {
                n.input
                    .iter()
                    .filter(|i| !i.is_empty())
                    .fold(Origin::Constant, |acc, i| {
                        acc.join(origin.get(i.as_str()).unwrap_or(&Origin::Unknown))
                    })
            };
            for out in n.output.iter().filter(|o| !o.is_empty()) {
                origin.insert(out.as_str(), o.clone());
            }
        }
        GraphFacts {
            graph,
            values,
            constants,
            io,
            origin,
        }
    }

    /// Type and dims of `name`, if the graph declares them.
    pub fn value(&self, name: &str) -> Option<&ValueFact> {
        self.values.get(name)
    }

    /// Whether `name` is an initializer or a `Constant` output (not a graph input).
    pub fn is_constant(&self, name: &str) -> bool {
        self.origin.get(name) == Some(&Origin::Constant)
    }

    /// Whether `name` is a graph input or output.
    pub fn is_graph_io(&self, name: &str) -> bool {
        self.io.contains(name)
    }

    /// Where `name`'s contents come from.
    pub fn origin(&self, name: &str) -> &Origin {
        self.origin.get(name).unwrap_or(&Origin::Unknown)
    }

    /// The name of graph input `i`.
    pub fn input_name(&self, i: usize) -> &str {
        self.graph
            .input
            .get(i)
            .and_then(|v| v.name.as_deref())
            .unwrap_or("?")
    }

    /// The integer contents of constant `name` (int8/uint8/int32/int64/bool), when stored
    /// inline; `None` for other types, external data or malformed sizes.
    pub fn const_ints(&self, name: &str) -> Option<Vec<i64>> {
        use proto::tensor_proto::DataType as T;
        let t = self.constants.get(name)?;
        let code = T::try_from(t.data_type.unwrap_or(0)).ok()?;
        if !t.int64_data.is_empty() {
            return Some(t.int64_data.clone());
        }
        if !t.int32_data.is_empty() {
            return Some(t.int32_data.iter().map(|&v| i64::from(v)).collect());
        }
        let raw = t.raw_data.as_deref()?;
        Some(match code {
            T::Int64 => raw
                .chunks_exact(8)
                .map(|c| c.try_into().map(i64::from_le_bytes))
                .collect::<Result<_, _>>()
                .ok()
                .filter(|_| raw.len() % 8 == 0)?,
            T::Int32 => raw
                .chunks_exact(4)
                .map(|c| c.try_into().map(i32::from_le_bytes).map(i64::from))
                .collect::<Result<_, _>>()
                .ok()
                .filter(|_| raw.len() % 4 == 0)?,
            T::Int8 => raw.iter().map(|&b| i64::from(b as i8)).collect(),
            T::Uint8 | T::Bool => raw.iter().map(|&b| i64::from(b)).collect(),
            _ => return None,
        })
    }
}
