//! The provider support tables, kept as data files in `export/data/` with their source and
//! version in each file's header, parsed once on first use.
//!
//! - `tensorrt-10.15-operators.tsv`: TensorRT's ONNX parser operator matrix (op, Y/N, types,
//!   quoted restrictions, and our machine-checkable reading of them as `rules`).
//! - `onnxruntime-kernels-opset18.tsv`: ONNX Runtime's CPU and CUDA kernel registrations
//!   (op, opset range, input/output type bindings, type constraints) for opset 18.
//!
//! The files are compiled in (`include_str!`), so the checker needs nothing at run time; a
//! malformed line is an error naming the file and line, never a panic.

use std::collections::HashMap;
use std::sync::OnceLock;

const TRT_FILE: &str = "tensorrt-10.15-operators.tsv";
const TRT_TEXT: &str = include_str!("../../data/tensorrt-10.15-operators.tsv");
const ORT_FILE: &str = "onnxruntime-kernels-opset18.tsv";
const ORT_TEXT: &str = include_str!("../../data/onnxruntime-kernels-opset18.tsv");

/// A table line that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("export/data/{file} line {line}: {message}")]
pub struct TableError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}

/// One restriction rule of the TensorRT table (see the file header for the spelling).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    ConstInput(usize),
    ConstInputLt(usize, i64),
    ConstAll(usize, i64),
    NoInput(usize),
    NoOutput(usize),
    InputRank(usize, Vec<usize>),
    InputDtype(usize, String),
    StaticInput(usize),
    AttrInt {
        name: String,
        value: i64,
        default: i64,
    },
    AttrIntsOnes(String),
    AttrStrIn {
        name: String,
        default: String,
        allowed: Vec<String>,
    },
    AttrIota(String, usize),
    AttrAbsent(String),
    Manual,
}

/// One row of the TensorRT operator matrix.
#[derive(Debug, Clone)]
pub struct TrtOp {
    pub supported: bool,
    /// ONNX element type names (`float`, `float16`, `int64`, …).
    pub types: Vec<String>,
    /// The restriction as quoted from the source (may be empty).
    pub restriction: String,
    pub rules: Vec<Rule>,
}

/// The TensorRT parser table.
#[derive(Debug)]
pub struct TrtTable {
    pub opset_min: i64,
    pub opset_max: i64,
    pub ops: HashMap<String, TrtOp>,
}

/// A type binding of one input or output position.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// A type constraint (`T`, `Tind`, …).
    Constraint(String),
    /// A fixed element type.
    Fixed(String),
}

/// One kernel registration: an op of a domain over an opset range on one provider.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub since: i64,
    /// Inclusive; `None` when open-ended.
    pub until: Option<i64>,
    pub inputs: Vec<Binding>,
    /// The last input binds every further position.
    pub variadic_input: bool,
    pub outputs: Vec<Binding>,
    pub variadic_output: bool,
    /// Allowed element types per constraint; a constraint missing here is not checked.
    pub constraints: HashMap<String, Vec<String>>,
}

impl Kernel {
    /// The binding of input (`output == false`) or output position `i`.
    pub fn binding(&self, i: usize, output: bool) -> Option<&Binding> {
        let (list, variadic) = if output {
            (&self.outputs, self.variadic_output)
        } else {
            (&self.inputs, self.variadic_input)
        };
        list.get(i)
            .or_else(|| if variadic { list.last() } else { None })
    }

    /// Whether this registration covers `opset`.
    pub fn covers(&self, opset: i64) -> bool {
        self.since <= opset && self.until.is_none_or(|u| opset <= u)
    }
}

/// ONNX Runtime kernel registrations, keyed by (provider, domain, op).
#[derive(Debug)]
pub struct KernelTable {
    kernels: HashMap<(String, String, String), Vec<Kernel>>,
}

impl KernelTable {
    /// The registration of `op` in `domain` (`""` is `ai.onnx`) covering `opset` on `ep`.
    pub fn find(&self, ep: &str, domain: &str, op: &str, opset: i64) -> Option<&Kernel> {
        let domain = if domain.is_empty() { "ai.onnx" } else { domain };
        self.kernels
            .get(&(ep.to_string(), domain.to_string(), op.to_string()))?
            .iter()
            .find(|k| k.covers(opset))
    }

    /// Whether the table has any row for `op` in `domain` on `ep` (whatever the opset).
    pub fn knows(&self, ep: &str, domain: &str, op: &str) -> bool {
        let domain = if domain.is_empty() { "ai.onnx" } else { domain };
        self.kernels
            .contains_key(&(ep.to_string(), domain.to_string(), op.to_string()))
    }
}

/// The parsed TensorRT table (parsed once).
pub fn tensorrt() -> Result<&'static TrtTable, TableError> {
    static T: OnceLock<Result<TrtTable, TableError>> = OnceLock::new();
    T.get_or_init(|| parse_trt(TRT_TEXT))
        .as_ref()
        .map_err(Clone::clone)
}

/// The parsed ONNX Runtime kernel table (parsed once).
pub fn onnxruntime() -> Result<&'static KernelTable, TableError> {
    static T: OnceLock<Result<KernelTable, TableError>> = OnceLock::new();
    T.get_or_init(|| parse_ort(ORT_TEXT))
        .as_ref()
        .map_err(Clone::clone)
}

/// Data lines with their 1-based numbers: comments (`#`) and blank lines skipped.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
}

/// TensorRT's type names → ONNX element type names.
fn trt_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "FP32" => "float",
        "FP16" => "float16",
        "BF16" => "bfloat16",
        "DOUBLE" => "double",
        "INT32" => "int32",
        "INT64" => "int64",
        "INT8" => "int8",
        "INT4" => "int4",
        "UINT8" => "uint8",
        "BOOL" => "bool",
        "FP8" => "float8e4m3fn",
        "FP4" => "float4e2m1",
        _ => return None,
    })
}

fn parse_trt(text: &str) -> Result<TrtTable, TableError> {
    let err = |line, message: String| TableError {
        file: TRT_FILE,
        line,
        message,
    };
    let mut opset = None;
    let mut ops = HashMap::new();
    for (line, l) in data_lines(text) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.first() == Some(&"opset_range") {
            let n = |i: usize| {
                f.get(i)
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| err(line, "opset_range needs two integers".into()))
            };
            opset = Some((n(1)?, n(2)?));
            continue;
        }
        let [op, supported, types, restriction, rules] = f.as_slice() else {
            return Err(err(
                line,
                format!("expected 5 tab-separated fields, got {}", f.len()),
            ));
        };
        let supported = match *supported {
            "Y" => true,
            "N" => false,
            other => {
                return Err(err(
                    line,
                    format!("supported must be Y or N, got `{other}`"),
                ));
            }
        };
        let types = types
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                trt_type(t)
                    .map(str::to_string)
                    .ok_or_else(|| err(line, format!("unknown TensorRT type `{t}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rules = rules
            .split(';')
            .filter(|r| !r.is_empty())
            .map(|r| parse_rule(r).map_err(|m| err(line, format!("rule `{r}`: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let row = TrtOp {
            supported,
            types,
            restriction: restriction.to_string(),
            rules,
        };
        if ops.insert(op.to_string(), row).is_some() {
            return Err(err(line, format!("`{op}` listed twice")));
        }
    }
    let (opset_min, opset_max) = opset.ok_or_else(|| err(0, "no opset_range line".into()))?;
    Ok(TrtTable {
        opset_min,
        opset_max,
        ops,
    })
}

fn parse_rule(r: &str) -> Result<Rule, String> {
    let f: Vec<&str> = r.split(':').collect();
    let idx = |i: usize| -> Result<usize, String> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("field {i} must be an index"))
    };
    let int = |i: usize| -> Result<i64, String> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("field {i} must be an integer"))
    };
    let text = |i: usize| -> Result<String, String> {
        f.get(i)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .ok_or_else(|| format!("field {i} is missing"))
    };
    let arity = |n: usize| -> Result<(), String> {
        if f.len() == n {
            Ok(())
        } else {
            Err(format!("expected {n} fields, got {}", f.len()))
        }
    };
    let rule = match f.first().copied().unwrap_or("") {
        "const_input" => Rule::ConstInput(idx(1)?),
        "const_input_lt" => Rule::ConstInputLt(idx(1)?, int(2)?),
        "const_all" => Rule::ConstAll(idx(1)?, int(2)?),
        "no_input" => Rule::NoInput(idx(1)?),
        "no_output" => Rule::NoOutput(idx(1)?),
        "input_rank" => {
            let ranks = text(2)?
                .split(',')
                .map(|s| s.parse().map_err(|_| format!("bad rank `{s}`")))
                .collect::<Result<Vec<usize>, _>>()?;
            Rule::InputRank(idx(1)?, ranks)
        }
        "input_dtype" => {
            let t = text(2)?;
            let t = trt_type(&t).ok_or_else(|| format!("unknown TensorRT type `{t}`"))?;
            Rule::InputDtype(idx(1)?, t.to_string())
        }
        "static_input" => Rule::StaticInput(idx(1)?),
        "attr_int" => Rule::AttrInt {
            name: text(1)?,
            value: int(2)?,
            default: int(3)?,
        },
        "attr_ints_ones" => Rule::AttrIntsOnes(text(1)?),
        "attr_str_in" => Rule::AttrStrIn {
            name: text(1)?,
            default: text(2)?,
            allowed: text(3)?.split(',').map(str::to_string).collect(),
        },
        "attr_iota" => Rule::AttrIota(text(1)?, idx(2)?),
        "attr_absent" => Rule::AttrAbsent(text(1)?),
        "manual" => Rule::Manual,
        other => return Err(format!("unknown rule `{other}`")),
    };
    let expected = match &rule {
        Rule::Manual => 1,
        Rule::ConstInput(_)
        | Rule::NoInput(_)
        | Rule::NoOutput(_)
        | Rule::StaticInput(_)
        | Rule::AttrIntsOnes(_)
        | Rule::AttrAbsent(_) => 2,
        Rule::ConstInputLt(..)
        | Rule::ConstAll(..)
        | Rule::InputRank(..)
        | Rule::InputDtype(..)
        | Rule::AttrIota(..) => 3,
        Rule::AttrInt { .. } | Rule::AttrStrIn { .. } => 4,
    };
    arity(expected)?;
    Ok(rule)
}

fn parse_bindings(s: &str) -> Result<(Vec<Binding>, bool), String> {
    let mut out = Vec::new();
    let mut variadic = false;
    let entries: Vec<&str> = s.split(',').filter(|e| !e.is_empty()).collect();
    for (i, e) in entries.iter().enumerate() {
        let (name, binding) = e
            .split_once(':')
            .ok_or_else(|| format!("`{e}` is not name:binding"))?;
        if name.starts_with('*') {
            if i + 1 != entries.len() {
                return Err(format!("variadic `{name}` must be last"));
            }
            variadic = true;
        }
        out.push(match binding.strip_prefix('=') {
            Some(t) => Binding::Fixed(t.to_string()),
            None => Binding::Constraint(binding.to_string()),
        });
    }
    Ok((out, variadic))
}

fn parse_ort(text: &str) -> Result<KernelTable, TableError> {
    let err = |line, message: String| TableError {
        file: ORT_FILE,
        line,
        message,
    };
    let mut kernels: HashMap<(String, String, String), Vec<Kernel>> = HashMap::new();
    for (line, l) in data_lines(text) {
        let f: Vec<&str> = l.split('\t').collect();
        let [ep, domain, op, since, until, inputs, outputs, types] = f.as_slice() else {
            return Err(err(
                line,
                format!("expected 8 tab-separated fields, got {}", f.len()),
            ));
        };
        let since = since
            .parse()
            .map_err(|_| err(line, format!("since `{since}` is not an integer")))?;
        let until = match *until {
            "-" => None,
            u => Some(
                u.parse()
                    .map_err(|_| err(line, format!("until `{u}` is not an integer or -")))?,
            ),
        };
        let (inputs, variadic_input) = parse_bindings(inputs).map_err(|m| err(line, m))?;
        let (outputs, variadic_output) = parse_bindings(outputs).map_err(|m| err(line, m))?;
        let mut constraints = HashMap::new();
        for c in types.split(';').filter(|c| !c.is_empty()) {
            let (name, list) = c
                .split_once('=')
                .ok_or_else(|| err(line, format!("constraint `{c}` is not NAME=types")))?;
            constraints.insert(
                name.to_string(),
                list.split(',').map(str::to_string).collect(),
            );
        }
        kernels
            .entry((ep.to_string(), domain.to_string(), op.to_string()))
            .or_default()
            .push(Kernel {
                since,
                until,
                inputs,
                variadic_input,
                outputs,
                variadic_output,
                constraints,
            });
    }
    Ok(KernelTable { kernels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_tables_parse() {
        let trt = tensorrt().map_err(|e| e.to_string());
        assert!(trt.is_ok(), "{trt:?}");
        let ort = onnxruntime().map_err(|e| e.to_string());
        assert!(ort.is_ok(), "{ort:?}");
    }

    #[test]
    fn table_facts_from_the_sources() {
        let (Ok(trt), Ok(ort)) = (tensorrt(), onnxruntime()) else {
            panic!("tables do not parse");
        };
        assert_eq!((trt.opset_min, trt.opset_max), (9, 24));
        let argmax = ort
            .find("CUDA", "", "ArgMax", 18)
            .map(|k| k.constraints["T"].clone());
        assert_eq!(
            argmax,
            Some(vec!["double".into(), "float".into(), "float16".into()])
        );
        assert!(ort.find("CUDA", "", "GroupNormalization", 18).is_none());
        assert!(trt.ops.get("Unique").is_some_and(|o| !o.supported));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let e = parse_trt("opset_range\t9\t24\nAbs\tY\tFP99\t\t\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("FP99"), "{e}");
        let e = parse_ort("CPU\tai.onnx\tAbs\tx\t-\tX:T\tY:T\tT=float\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(parse_rule("attr_int:sorted:1").is_err());
    }
}
