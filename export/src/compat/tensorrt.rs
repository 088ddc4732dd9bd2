//! TensorRT (through ONNX Runtime's TensorRT provider): is a node in the parser's operator
//! table, are its element types listed, do its attributes and inputs meet the quoted
//! restrictions (`tables::Rule`), and which of its inputs are TensorRT shape tensors?
//!
//! Which tensors the table's type list applies to: every input and output bound to one of the
//! op's data type constraints, taking the bindings from ONNX Runtime's CPU registration of the
//! op (the ONNX schema's constraint names); index, shape and bool-result constraints are left
//! out (`INDEX_CONSTRAINTS`). An op without a CPU row in the excerpt is checked on input 0.

use super::facts::{GraphFacts, Origin};
use super::tables::{Binding, KernelTable, Rule, TrtOp};
use crate::proto;

/// Constraints that never carry the op's data: indices, shapes, bool results.
const INDEX_CONSTRAINTS: &[(&str, &[&str])] = &[
    ("*", &["Tind", "I", "B", "M"]),
    ("Equal", &["T1"]),
    ("Less", &["T1"]),
    ("LessOrEqual", &["T1"]),
    ("Greater", &["T1"]),
    ("GreaterOrEqual", &["T1"]),
    ("And", &["T1"]),
    ("Or", &["T1"]),
    ("Xor", &["T1"]),
    ("ConstantOfShape", &["T1"]),
    ("Shape", &["T1"]),
    ("Size", &["T1"]),
    ("Tile", &["T1"]),
    ("IsNaN", &["T2"]),
    ("IsInf", &["T2"]),
];

/// Inputs TensorRT reads as shape tensors (their values size other tensors).
pub const SHAPE_INPUTS: &[(&str, &[usize])] = &[
    ("Reshape", &[1]),
    ("Expand", &[1]),
    ("Slice", &[1, 2, 3, 4]),
    ("ConstantOfShape", &[0]),
    ("Tile", &[1]),
    ("Range", &[0, 1, 2]),
    ("Resize", &[2, 3]),
    ("Pad", &[1, 3]),
    ("Split", &[1]),
    ("Squeeze", &[1]),
    ("Unsqueeze", &[1]),
    ("TopK", &[1]),
    ("OneHot", &[1]),
    ("ReduceMean", &[1]),
    ("ReduceSum", &[1]),
    ("ReduceMax", &[1]),
    ("ReduceMin", &[1]),
    ("ReduceProd", &[1]),
    ("ReduceL1", &[1]),
    ("ReduceL2", &[1]),
    ("ReduceLogSum", &[1]),
    ("ReduceLogSumExp", &[1]),
    ("ReduceSumSquare", &[1]),
    ("CumSum", &[1]),
];

fn is_index_constraint(op: &str, c: &str) -> bool {
    INDEX_CONSTRAINTS
        .iter()
        .filter(|(o, _)| *o == "*" || *o == op)
        .any(|(_, cs)| cs.contains(&c))
}

/// The problems that keep TensorRT from taking `node` (empty when it takes it), and warnings
/// for restrictions that are not machine-checked or could not be verified.
pub fn check_node(
    row: &TrtOp,
    kernels: &KernelTable,
    facts: &GraphFacts<'_>,
    node: &proto::NodeProto,
    opset: i64,
) -> (Vec<String>, Vec<String>) {
    let op = node.op_type.as_deref().unwrap_or("");
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    // Element types.
    let checked: Vec<(&String, bool)> = match kernels.find("CPU", "", op, opset) {
        Some(k) => node
            .input
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n, false))
            .chain(node.output.iter().enumerate().map(|(i, n)| (i, n, true)))
            .filter(|(i, n, out)| {
                !n.is_empty()
                    && matches!(k.binding(*i, *out), Some(Binding::Constraint(c))
                        if !is_index_constraint(op, c))
            })
            .map(|(_, n, out)| (n, out))
            .collect(),
        None => node.input.first().map(|n| (n, false)).into_iter().collect(),
    };
    for (name, _) in checked {
        match facts.value(name) {
            None => errors.push(format!("`{name}` has no declared type")),
            Some(v) if !row.types.contains(&v.elem) => errors.push(format!(
                "`{name}` is {}; TensorRT's {op} takes {}",
                v.elem,
                row.types.join(", ")
            )),
            Some(v) if v.elem == "uint8" && !facts.is_graph_io(name) => errors.push(format!(
                "`{name}` is uint8, which TensorRT takes only as a network input or output"
            )),
            Some(_) => {}
        }
    }
    for rule in &row.rules {
        match rule_problem(rule, facts, node) {
            Ok(None) => {}
            Ok(Some(p)) => errors.push(p),
            Err(w) => warnings.push(w),
        }
    }
    (errors, warnings)
}

fn input(node: &proto::NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

fn attr<'n>(node: &'n proto::NodeProto, name: &str) -> Option<&'n proto::AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

/// `Ok(Some(problem))` when `rule` is broken, `Ok(None)` when it holds, `Err(warning)` when it
/// cannot be decided here.
fn rule_problem(
    rule: &Rule,
    facts: &GraphFacts<'_>,
    node: &proto::NodeProto,
) -> Result<Option<String>, String> {
    let rank = |name: &str| {
        facts
            .value(name)
            .and_then(|v| v.dims.as_ref())
            .map(Vec::len)
    };
    Ok(match rule {
        Rule::ConstInput(i) => input(node, *i)
            .filter(|n| !facts.is_constant(n))
            .map(|n| format!("input {i} (`{n}`) must be a constant")),
        Rule::ConstInputLt(i, max) => match input(node, *i) {
            None => None,
            Some(n) => match facts.const_ints(n) {
                Some(v) if v.iter().all(|x| x < max) => None,
                Some(_) => Some(format!("input {i} (`{n}`) must be < {max}")),
                None if facts.is_constant(n) => {
                    return Err(format!(
                        "cannot read input {i} (`{n}`) to check it is < {max}"
                    ));
                }
                None => Some(format!("input {i} (`{n}`) must be a constant < {max}")),
            },
        },
        Rule::ConstAll(i, value) => match input(node, *i) {
            None => None,
            Some(n) => match facts.const_ints(n) {
                Some(v) if v.iter().all(|x| x == value) => None,
                Some(_) => Some(format!("input {i} (`{n}`) must be all {value}")),
                None => Some(format!("input {i} (`{n}`) must be a constant, all {value}")),
            },
        },
        Rule::NoInput(i) => input(node, *i).map(|n| format!("input {i} (`{n}`) is not supported")),
        Rule::NoOutput(i) => node
            .output
            .get(*i)
            .filter(|n| !n.is_empty())
            .map(|n| format!("output {i} (`{n}`) is not supported")),
        Rule::InputRank(i, ranks) => match input(node, *i) {
            None => None,
            Some(n) => match rank(n) {
                Some(r) if ranks.contains(&r) => None,
                Some(r) => Some(format!("input {i} (`{n}`) has rank {r}, not {ranks:?}")),
                None => return Err(format!("rank of input {i} (`{n}`) unknown")),
            },
        },
        Rule::InputDtype(i, t) => input(node, *i).and_then(|n| match facts.value(n) {
            Some(v) if &v.elem == t => None,
            Some(v) => Some(format!("input {i} (`{n}`) is {}, must be {t}", v.elem)),
            None => Some(format!(
                "input {i} (`{n}`) has no declared type (must be {t})"
            )),
        }),
        Rule::StaticInput(i) => input(node, *i).and_then(|n| {
            let fixed = facts
                .value(n)
                .and_then(|v| v.dims.as_ref())
                .is_some_and(|d| d.iter().all(Option::is_some));
            (!fixed).then(|| format!("input {i} (`{n}`) must have static dims"))
        }),
        Rule::AttrInt {
            name,
            value,
            default,
        } => {
            let v = attr(node, name).and_then(|a| a.i).unwrap_or(*default);
            (v != *value).then(|| format!("attribute {name} = {v}, must be {value}"))
        }
        Rule::AttrIntsOnes(name) => attr(node, name)
            .filter(|a| a.ints.iter().any(|&d| d != 1))
            .map(|a| format!("attribute {name} = {:?}, must be empty or all 1", a.ints)),
        Rule::AttrStrIn {
            name,
            default,
            allowed,
        } => {
            let v = attr(node, name).and_then(|a| a.s.as_deref()).map_or_else(
                || default.clone(),
                |s| String::from_utf8_lossy(s).into_owned(),
            );
            (!allowed.contains(&v)).then(|| {
                format!(
                    "attribute {name} = {v:?}, must be one of {}",
                    allowed.join(", ")
                )
            })
        }
        Rule::AttrIota(name, i) => match attr(node, name) {
            None => None,
            Some(a) => {
                let r = input(node, *i).and_then(rank);
                let iota = r.is_some_and(|r| {
                    a.ints.len() == r && a.ints.iter().enumerate().all(|(k, &v)| v == k as i64)
                });
                (!iota).then(|| {
                    format!(
                        "attribute {name} = {:?}, must be 0..rank(input {i})",
                        a.ints
                    )
                })
            }
        },
        Rule::AttrAbsent(name) => {
            attr(node, name).map(|_| format!("attribute {name} is not supported"))
        }
        Rule::Manual => return Err("restriction not machine-checked (see the quote)".into()),
    })
}

/// One input of `node` that TensorRT reads as a shape tensor, and where its values come from.
pub struct ShapeTensor<'g> {
    pub index: usize,
    pub name: &'g str,
    pub elem: Option<&'g str>,
    pub origin: &'g Origin,
}

/// `node`'s non-constant shape-tensor inputs.
pub fn shape_tensors<'g>(
    facts: &'g GraphFacts<'g>,
    node: &'g proto::NodeProto,
) -> Vec<ShapeTensor<'g>> {
    let op = node.op_type.as_deref().unwrap_or("");
    let domain = node.domain.as_deref().unwrap_or("");
    if !(domain.is_empty() || domain == "ai.onnx") {
        return Vec::new();
    }
    SHAPE_INPUTS
        .iter()
        .filter(|(o, _)| *o == op)
        .flat_map(|(_, idx)| idx.iter())
        .filter_map(|&i| {
            let name = input(node, i)?;
            let origin = facts.origin(name);
            (*origin != Origin::Constant).then(|| ShapeTensor {
                index: i,
                name,
                elem: facts.value(name).map(|v| v.elem.as_str()),
                origin,
            })
        })
        .collect()
}
