//! The ONNX graph builder.
//!
//! Design (after tract's `wire_node` and onnxscript's `GraphBuilder`):
//! - **Typed handles.** [`Value`] is a `Copy` id; its [`ValueInfo`] (name, dtype, shape with
//!   symbolic dims) lives in the builder. Model code never passes value names around.
//! - **Wire-time inference.** [`GraphBuilder::node`] checks the op's arity, runs its
//!   [`Op::infer`] on the operands and records the outputs' dtypes and shapes; an error names the
//!   node (`in /blocks/group_1/block_1/res_path/Conv (Conv): ...`) and the operands.
//! - **Deterministic names.** Nodes are named from the scope stack (`/decoder/layers.3/attn/MatMul`,
//!   then `MatMul_1`, ... for repeats); node outputs are `{node}/output_{i}`; initializers keep the
//!   checkpoint's tensor names verbatim; constants are deduplicated and named
//!   `/constants/{dtype}/{shape}/{content}`.
//! - **Deterministic bytes.** Attributes are sorted by name, nodes keep wiring order, nothing
//!   depends on hash order or time: the same inputs give a byte-identical `.onnx`.
//! - **Validation before writing.** [`GraphBuilder::finish`] produces a `ModelProto` and runs
//!   [`check::validate`] on it; [`proto_io::write_model`] lays out external data.

pub mod check;
pub mod op;
pub mod ops;
pub mod precision;
pub mod proto_io;
pub mod text;
pub mod value;

use crate::error::{ExportError, Result};
use crate::proto;
use crate::tensor::TensorData;
use dalle_bundle::{DType, Dim, TensorSpec, dtype::format_dims};
use op::{Attr, InferCtx, InputFact, Op};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
pub use value::{Shape, Value, ValueInfo};

/// The ONNX opset (default domain) every graph imports. Opset 18 has LayerNormalization (17),
/// reductions with `axes` as an input, `Split` with `num_outputs`, and is parsed by TensorRT 8.6+
/// and every ORT execution provider.
pub const OPSET: i64 = 18;

/// The ONNX IR version written (IR 8 is the version that introduced opset 18).
pub const IR_VERSION: i64 = 8;

/// Producer name written into every model.
pub const PRODUCER: &str = "dalle-export";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    Input,
    Initializer,
    NodeOutput,
}

struct NodeRecord {
    /// The op itself, kept so that [`precision`] can wire it again with other dtypes.
    op: Box<dyn Op>,
    name: String,
    op_type: &'static str,
    domain: &'static str,
    attributes: Vec<(&'static str, Attr)>,
    inputs: Vec<Option<Value>>,
    outputs: Vec<Value>,
}

impl std::fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRecord")
            .field("name", &self.name)
            .field("op_type", &self.op_type)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

/// Builds one ONNX graph. See the module docs for the naming and inference rules.
#[derive(Debug)]
pub struct GraphBuilder {
    name: String,
    values: Vec<ValueInfo>,
    kinds: Vec<ValueKind>,
    /// Data of initializers and constants, by value index.
    data: HashMap<usize, TensorData>,
    initializer_order: Vec<Value>,
    nodes: Vec<NodeRecord>,
    inputs: Vec<Value>,
    outputs: Vec<Value>,
    /// Declared dims of graph outputs (defaults to the inferred shape).
    output_dims: HashMap<usize, Shape>,
    scope: Vec<String>,
    node_names: HashSet<String>,
    value_names: HashMap<String, Value>,
    constants: HashMap<(DType, Vec<usize>, Vec<u8>), Value>,
    namer: value::DimNamer,
    metadata: Vec<(String, String)>,
}

impl GraphBuilder {
    /// An empty graph named `name` (the name is written into the model).
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder {
            name: name.into(),
            values: Vec::new(),
            kinds: Vec::new(),
            data: HashMap::new(),
            initializer_order: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_dims: HashMap::new(),
            scope: Vec::new(),
            node_names: HashSet::new(),
            value_names: HashMap::new(),
            constants: HashMap::new(),
            namer: value::DimNamer::default(),
            metadata: Vec::new(),
        }
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn add_value(&mut self, info: ValueInfo, kind: ValueKind) -> Result<Value> {
        if self.value_names.contains_key(&info.name) {
            return Err(ExportError::node(
                &info.name,
                "a value with this name already exists",
            ));
        }
        let v = Value(
            u32::try_from(self.values.len())
                .map_err(|_| ExportError::node(&info.name, "too many values in one graph"))?,
        );
        self.value_names.insert(info.name.clone(), v);
        self.values.push(info);
        self.kinds.push(kind);
        Ok(v)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DType, dims: Shape) -> Result<Value> {
        let v = self.add_value(
            ValueInfo {
                name: name.to_string(),
                dtype,
                shape: dims,
            },
            ValueKind::Input,
        )?;
        self.inputs.push(v);
        Ok(v)
    }

    /// Adds an initializer under `name` verbatim (use the checkpoint's tensor name).
    pub fn initializer(&mut self, name: &str, data: TensorData) -> Result<Value> {
        let info = ValueInfo {
            name: name.to_string(),
            dtype: data.dtype(),
            shape: data.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect(),
        };
        let v = self.add_value(info, ValueKind::Initializer)?;
        self.data.insert(v.index(), data);
        self.initializer_order.push(v);
        Ok(v)
    }

    /// A constant tensor, deduplicated by content: equal constants share one initializer.
    pub fn constant(&mut self, data: TensorData) -> Result<Value> {
        let key = (
            data.dtype(),
            data.shape().to_vec(),
            data.bytes()?.into_owned(),
        );
        if let Some(v) = self.constants.get(&key) {
            return Ok(*v);
        }
        let name = constant_name(&data);
        let v = self.initializer(&name, data)?;
        self.constants.insert(key, v);
        Ok(v)
    }

    /// A 1-D int64 constant.
    pub fn const_i64(&mut self, values: &[i64]) -> Result<Value> {
        self.constant(TensorData::from_i64(vec![values.len()], values)?)
    }

    /// A scalar (rank-0) int64 constant.
    pub fn scalar_i64(&mut self, value: i64) -> Result<Value> {
        self.constant(TensorData::from_i64(vec![], &[value])?)
    }

    /// A scalar (rank-0) float constant of `dtype` (f32, f16 or bf16).
    pub fn scalar_float(&mut self, value: f32, dtype: DType) -> Result<Value> {
        let t = TensorData::from_f32(vec![], &[value])?.to_float_dtype(dtype)?;
        self.constant(t)
    }

    /// An f32 constant of the given shape.
    pub fn const_f32(&mut self, shape: Vec<usize>, values: &[f32]) -> Result<Value> {
        self.constant(TensorData::from_f32(shape, values)?)
    }

    /// Runs `f` with `name` pushed on the scope stack (node names become `/.../name/Op`).
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    fn scoped_name(&self, leaf: &str) -> String {
        let mut s = String::new();
        for part in &self.scope {
            s.push('/');
            s.push_str(part);
        }
        s.push('/');
        s.push_str(leaf);
        s
    }

    /// Info (name, dtype, shape) of a value.
    pub fn info(&self, v: Value) -> Result<&ValueInfo> {
        self.values
            .get(v.index())
            .ok_or_else(|| ExportError::node(&self.name, format!("unknown value {v:?}")))
    }

    /// The value currently named `name` (an input, initializer or node output).
    pub fn value_named(&self, name: &str) -> Result<Value> {
        self.value_names
            .get(name)
            .copied()
            .ok_or_else(|| ExportError::node(&self.name, format!("no value named `{name}`")))
    }

    /// Shape of a value.
    pub fn shape(&self, v: Value) -> Result<&Shape> {
        Ok(&self.info(v)?.shape)
    }

    /// Dtype of a value.
    pub fn dtype(&self, v: Value) -> Result<DType> {
        Ok(self.info(v)?.dtype)
    }

    /// Wires `op` on `inputs`, naming the node after its op type in the current scope.
    /// The default opset, plus version 1 of every other domain a node uses (only
    /// `com.microsoft`, see `ops/contrib.rs`).
    fn opset_imports(&self) -> Vec<proto::OperatorSetIdProto> {
        let mut imports = vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }];
        let mut others: Vec<&str> = self
            .nodes
            .iter()
            .map(|n| n.domain)
            .filter(|d| !d.is_empty())
            .collect();
        others.sort_unstable();
        others.dedup();
        imports.extend(others.into_iter().map(|d| proto::OperatorSetIdProto {
            domain: Some(d.to_string()),
            version: Some(1),
        }));
        imports
    }

    pub fn node(&mut self, op: impl Op, inputs: &[Value]) -> Result<Vec<Value>> {
        let inputs: Vec<Option<Value>> = inputs.iter().copied().map(Some).collect();
        let name = self.auto_name(op.op_type());
        self.wire(name, Box::new(op), inputs)
    }

    /// Like [`node`](Self::node) for single-output ops.
    pub fn node1(&mut self, op: impl Op, inputs: &[Value]) -> Result<Value> {
        let name = self.auto_name(op.op_type());
        let inputs = inputs.iter().copied().map(Some).collect();
        let outs = self.wire(name.clone(), Box::new(op), inputs)?;
        single(&name, outs)
    }

    /// Wires `op` with optional inputs (`None` = omitted, written as an empty name).
    pub fn node_opt(&mut self, op: impl Op, inputs: &[Option<Value>]) -> Result<Vec<Value>> {
        let name = self.auto_name(op.op_type());
        self.wire(name, Box::new(op), inputs.to_vec())
    }

    /// Wires `op` under an explicit node name relative to the scope; a duplicate is an error.
    pub fn named(&mut self, name: &str, op: impl Op, inputs: &[Value]) -> Result<Vec<Value>> {
        let full = self.scoped_name(name);
        if self.node_names.contains(&full) {
            return Err(ExportError::node(
                full,
                "a node with this name already exists",
            ));
        }
        self.wire(
            full,
            Box::new(op),
            inputs.iter().copied().map(Some).collect(),
        )
    }

    fn auto_name(&self, op_type: &str) -> String {
        let base = self.scoped_name(op_type);
        if !self.node_names.contains(&base) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.node_names.contains(n))
            .unwrap_or(base)
    }

    fn wire(
        &mut self,
        name: String,
        op: Box<dyn Op>,
        inputs: Vec<Option<Value>>,
    ) -> Result<Vec<Value>> {
        let label = format!("{name} ({})", op.op_type());
        let (min, max) = op.input_arity();
        if inputs.len() < min || inputs.len() > max {
            let expected = if max == usize::MAX {
                format!("at least {min}")
            } else if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(ExportError::node(
                label,
                format!("expects {expected} inputs, got {}", inputs.len()),
            ));
        }
        let mut facts = Vec::with_capacity(inputs.len());
        for v in &inputs {
            facts.push(match v {
                None => None,
                Some(v) => {
                    let info = self.values.get(v.index()).ok_or_else(|| {
                        ExportError::node(
                            &label,
                            format!("operand {v:?} is not a value of this graph"),
                        )
                    })?;
                    Some(InputFact {
                        info,
                        constant: self.data.get(&v.index()),
                    })
                }
            });
        }
        let mut ctx = InferCtx {
            inputs: &facts,
            namer: &mut self.namer,
        };
        let out_facts = op
            .infer(&mut ctx)
            .map_err(|m| ExportError::node(&label, m))?;
        drop(facts);
        let mut outputs = Vec::with_capacity(out_facts.len());
        for (i, (dtype, shape)) in out_facts.into_iter().enumerate() {
            let info = ValueInfo {
                name: format!("{name}/output_{i}"),
                dtype,
                shape,
            };
            outputs.push(self.add_value(info, ValueKind::NodeOutput)?);
        }
        let mut attributes = op.attributes();
        attributes.sort_by(|a, b| a.0.cmp(b.0));
        self.node_names.insert(name.clone());
        let (op_type, domain) = (op.op_type(), op.domain());
        self.nodes.push(NodeRecord {
            op,
            name,
            op_type,
            domain,
            attributes,
            inputs,
            outputs: outputs.clone(),
        });
        Ok(outputs)
    }

    /// Declares `v` as a graph output named `name`, with its inferred shape.
    pub fn output(&mut self, name: &str, v: Value) -> Result<()> {
        let dims = self.shape(v)?.clone();
        self.output_as(name, v, dims)
    }

    /// Declares `v` as a graph output named `name` with declared `dims` (e.g. to name symbolic
    /// dims for the manifest). Declared dims must agree with the inferred ones where both are
    /// fixed, and have the same rank.
    pub fn output_as(&mut self, name: &str, v: Value, dims: Shape) -> Result<()> {
        let info = self.info(v)?.clone();
        let compatible = info.shape.len() == dims.len()
            && info.shape.iter().zip(&dims).all(|(a, b)| match (a, b) {
                (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
                _ => true,
            });
        if !compatible {
            return Err(ExportError::node(
                format!("output `{name}`"),
                format!(
                    "declared shape {} does not match inferred {}",
                    format_dims(&dims),
                    format_dims(&info.shape)
                ),
            ));
        }
        let renameable = self.kinds[v.index()] == ValueKind::NodeOutput
            && !self.outputs.contains(&v)
            && !self.value_names.contains_key(name);
        let v = if renameable {
            self.value_names.remove(&info.name);
            self.value_names.insert(name.to_string(), v);
            self.values[v.index()].name = name.to_string();
            v
        } else {
            let id = self.scoped_name(&format!("outputs/{name}/Identity"));
            let out = self.wire(id.clone(), Box::new(ops::Identity), vec![Some(v)])?;
            let out = single(&id, out)?;
            let old = self.values[out.index()].name.clone();
            if self.value_names.contains_key(name) {
                return Err(ExportError::node(
                    format!("output `{name}`"),
                    "a value with this name already exists",
                ));
            }
            self.value_names.remove(&old);
            self.value_names.insert(name.to_string(), out);
            self.values[out.index()].name = name.to_string();
            out
        };
        self.output_dims.insert(v.index(), dims);
        self.outputs.push(v);
        Ok(())
    }

    /// Adds a `metadata_props` entry to the model.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.to_string(), value.to_string()));
    }

    /// The graph's inputs as manifest specs.
    pub fn input_specs(&self) -> Vec<TensorSpec> {
        self.inputs
            .iter()
            .map(|v| {
                let i = &self.values[v.index()];
                TensorSpec::new(i.name.clone(), i.dtype, i.shape.clone())
            })
            .collect()
    }

    /// The graph's outputs as manifest specs (declared dims).
    pub fn output_specs(&self) -> Vec<TensorSpec> {
        self.outputs
            .iter()
            .map(|v| {
                let i = &self.values[v.index()];
                let dims = self
                    .output_dims
                    .get(&v.index())
                    .cloned()
                    .unwrap_or_else(|| i.shape.clone());
                TensorSpec::new(i.name.clone(), i.dtype, dims)
            })
            .collect()
    }

    /// Builds the `ModelProto` (initializer data inline) and validates it.
    pub fn finish(self) -> Result<proto::ModelProto> {
        self.finish_streaming()?.into_inline()
    }

    /// Builds and validates the `ModelProto` with the initializers' data kept aside (file-backed
    /// tensors unread), for [`proto_io::write_finished`] to write one tensor at a time.
    pub fn finish_streaming(self) -> Result<FinishedModel> {
        let graph_name = self.name.clone();
        let finished = self.into_proto()?;
        check::validate(&finished.model).map_err(|message| ExportError::InvalidGraph {
            graph: graph_name,
            message,
        })?;
        Ok(finished)
    }

    fn into_proto(mut self) -> Result<FinishedModel> {
        use proto_io::{attribute_proto, tensor_header, value_info_proto};
        let name_of = |values: &[ValueInfo], v: Option<Value>| match v {
            Some(v) => values[v.index()].name.clone(),
            None => String::new(),
        };
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let attribute = n
                .attributes
                .iter()
                .map(|(k, a)| attribute_proto(k, a))
                .collect::<Result<Vec<_>>>()?;
            nodes.push(proto::NodeProto {
                input: n.inputs.iter().map(|v| name_of(&self.values, *v)).collect(),
                output: n
                    .outputs
                    .iter()
                    .map(|v| name_of(&self.values, Some(*v)))
                    .collect(),
                name: Some(n.name.clone()),
                op_type: Some(n.op_type.to_string()),
                domain: Some(n.domain.to_string()),
                attribute,
                ..Default::default()
            });
        }
        let mut initializer = Vec::with_capacity(self.initializer_order.len());
        let mut data = Vec::with_capacity(self.initializer_order.len());
        for v in &self.initializer_order {
            let tensor = self.data.remove(&v.index()).ok_or_else(|| {
                ExportError::node(&self.name, "internal: initializer data missing")
            })?;
            initializer.push(tensor_header(&self.values[v.index()].name, &tensor));
            data.push(tensor);
        }
        let input = self
            .inputs
            .iter()
            .map(|v| value_info_proto(&self.values[v.index()]))
            .collect();
        let output = self
            .outputs
            .iter()
            .map(|v| {
                let mut info = self.values[v.index()].clone();
                if let Some(d) = self.output_dims.get(&v.index()) {
                    info.shape = d.clone();
                }
                value_info_proto(&info)
            })
            .collect();
        let value_info = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter())
            .filter(|v| !self.outputs.contains(v))
            .map(|v| value_info_proto(&self.values[v.index()]))
            .collect();
        let graph = proto::GraphProto {
            node: nodes,
            name: Some(self.name.clone()),
            initializer,
            input,
            output,
            value_info,
            ..Default::default()
        };
        let model = proto::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: self.opset_imports(),
            producer_name: Some(PRODUCER.to_string()),
            producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            graph: Some(graph),
            metadata_props: self
                .metadata
                .iter()
                .map(|(k, v)| proto::StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            ..Default::default()
        };
        Ok(FinishedModel { model, data })
    }
}

/// A finished, validated graph whose initializers have no data yet: `data[i]` belongs to
/// `model.graph.initializer[i]` (name, dtype and dims set). File-backed tensors stay unread
/// until written.
#[derive(Debug)]
pub struct FinishedModel {
    pub model: proto::ModelProto,
    pub data: Vec<TensorData>,
}

impl FinishedModel {
    /// Total bytes of the initializers, without reading them.
    pub fn initializer_bytes(&self) -> usize {
        self.data.iter().map(TensorData::byte_len).sum()
    }

    /// The model with every initializer's data inline in `raw_data` (all read into memory).
    pub fn into_inline(self) -> Result<proto::ModelProto> {
        let FinishedModel { mut model, data } = self;
        if let Some(graph) = model.graph.as_mut() {
            for (t, d) in graph.initializer.iter_mut().zip(data) {
                t.raw_data = Some(d.into_bytes()?);
            }
        }
        Ok(model)
    }
}

fn single(name: &str, outs: Vec<Value>) -> Result<Value> {
    match outs.as_slice() {
        [v] => Ok(*v),
        _ => Err(ExportError::node(
            name,
            format!("expected one output, the op has {}", outs.len()),
        )),
    }
}

/// `/constants/{dtype}/{shape}/{content}`: the values for tiny constants, else a content hash.
fn constant_name(data: &TensorData) -> String {
    let shape = format!("{:?}", data.shape()).replace(' ', "");
    let content = if data.numel() <= 8 {
        let text = if data.dtype().is_float() {
            data.to_f32_vec().map(|v| {
                v.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        } else {
            data.to_i64_vec().map(|v| {
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        text.unwrap_or_default()
    } else {
        let digest = data.bytes().map(|b| Sha256::digest(&b)).unwrap_or_default();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    };
    format!("/constants/{}/{shape}/{content}", data.dtype())
}
