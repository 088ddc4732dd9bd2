//! `--precision fp32|fp16|bf16|int8`: one pass over a finished float32 graph, for every family.
//!
//! Families build float32 graphs only (the reference's precision, checked against its outputs);
//! [`GraphBuilder::with_precision`] then wires the same nodes again into a new builder under the
//! same names, with other dtypes, and every op's wire-time inference runs again, so a dtype
//! mismatch anywhere is an export error naming the node. Nothing in a family knows about
//! precision: a new family gets it by adding its graphs through the bundle writer (which applies
//! the writer's policy to every graph). What a family must respect is listed under "opting in"
//! below.
//!
//! **fp16 / bf16** (after onnxruntime-genai's builder, `gpu-and-minidalle.md` §2.5): weights
//! and activations in the low type, except
//! - the ops in [`KEPT_FLOAT32_OPS`], which run in float32 between casts (their float
//!   initializers, LayerNorm's scale and bias, are stored float32), and in bfloat16 graphs
//!   the ops whose opset-18 schema has no bfloat16 ([`SCHEMA_FLOAT32_ONLY`]: convolutions);
//! - every float graph input and output that is not decoder state (`pixels`, the logits,
//!   the CLIP embeddings): float32 at the boundary, cast inside, so the I/O contract and the
//!   sampler's float32 logits do not change; decoder state (`past_*`/`present*`, and
//!   min-dalle's constant cross-attention state `cross_*`, on both `cross_kv` and the decoder)
//!   is stored in the low type (half the KV bytes; `GroupQueryAttention` on CUDA takes only
//!   fp16/bf16);
//! - inputs that are part of an op's contract ([`FIXED_DTYPE_INPUTS`]: `Resize`'s scales).
//!
//! Constants convert saturating: `−f32::MAX` mask fills become the low type's most negative
//! finite value (a mask still; float16's −65504 is far below any score).
//!
//! **int8** (weight-only, compute stays float32): each PyTorch `Linear` weight — the pattern
//! `MatMul(x, Transpose(W))` with `W` a 2-D initializer of at least
//! [`Int8Options::min_weights`] weights — is quantized symmetrically ([`quantize`]) and the
//! pair becomes one `com.microsoft.MatMulNBits` (block size [`Int8Options::block_size`],
//! CPU/CUDA) or `DequantizeLinear` + `MatMul` (per-channel, standard ONNX for TensorRT).
//! Convolutions, embeddings and small matrices stay float32.
//!
//! **Opting in**, for a family's graph builder:
//! 1. build float32 only, with float scalars from [`GraphBuilder::scalar_float`] and the
//!    default-domain ops in `graph/ops/`;
//! 2. name decoder state with the `bundle::io::decoder` names (`past_*` / `present*`, constant
//!    state `cross_*`; `is_state`): that is how the pass tells state from other float I/O;
//! 3. spell a `Linear` as [`crate::layers::linear`] (`Transpose` + `MatMul`) to get int8;
//! 4. an op whose attributes fix a float output dtype implements [`Op::retyped`](super::op::Op::retyped);
//! 5. add a test that runs the family's graphs at each precision the CPU provider runs
//!    (see `python-free-tests/tests/precision.rs`).

pub mod kernels;
pub mod quantize;

use super::op::Attr;
use super::ops::{Cast, DequantizeLinear, MatMul, MatMulNBits};
use super::{GraphBuilder, NodeRecord, Value, ValueKind};
use crate::error::{ExportError, Result};
use crate::tensor::TensorData;
use dalle_bundle::attributes::precision::{
    Precision, PrecisionAttributes, QuantFormat, Quantization, ScaleLayout,
};
use dalle_bundle::io::decoder::is_state;
use dalle_bundle::{DType, Dim};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Ops a float16/bfloat16 graph computes in float32, and why.
pub const KEPT_FLOAT32_OPS: [(&str, &str); 3] = [
    (
        "LayerNormalization",
        "mean and variance over the model width lose digits or overflow in float16 (TensorRT \
         warns about LayerNorm after attention); inputs cast up, scale and bias stored float32",
    ),
    (
        "GroupNormalization",
        "the same statistics over channel groups (VQGAN)",
    ),
    (
        "Softmax",
        "exp of scores near the masked −65504 fill; float16 softmax is the known source of NaN \
         and of drift in attention probabilities",
    ),
];

/// Ops whose opset-18 schema has no type constraint for a low type: they run in float32 in a
/// graph of that type (bfloat16 convolutions need opset 22), and the manifest lists them.
pub const SCHEMA_FLOAT32_ONLY: [(&str, DType); 3] = [
    ("Conv", DType::BF16),
    ("ConvTranspose", DType::BF16),
    ("MaxPool", DType::BF16),
];

/// Inputs whose dtype is part of the op's contract, never converted.
pub const FIXED_DTYPE_INPUTS: [(&str, &[usize]); 1] = [("Resize", &[1, 2])];

/// How `int8` quantizes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Options {
    pub format: QuantFormat,
    /// Inputs per scale for `MatMulNBits` (a power of two, at least 16).
    pub block_size: usize,
    /// Smaller matrices stay float32.
    pub min_weights: usize,
    /// `MatMulNBits`' `accuracy_level`.
    pub accuracy_level: i64,
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            format: QuantFormat::MatmulNbits,
            block_size: 32,
            min_weights: 4096,
            accuracy_level: 0,
        }
    }
}

/// The precision an export writes every graph in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrecisionPolicy {
    pub precision: Precision,
    pub int8: Int8Options,
}

impl PrecisionPolicy {
    /// A policy with the default int8 options.
    pub fn new(precision: Precision) -> Self {
        PrecisionPolicy {
            precision,
            int8: Int8Options::default(),
        }
    }

    fn check(&self) -> Result<()> {
        let b = self.int8.block_size;
        if self.precision == Precision::Int8
            && self.int8.format == QuantFormat::MatmulNbits
            && (b < 16 || !b.is_power_of_two())
        {
            return Err(ExportError::Unsupported(format!(
                "int8 block size {b}: MatMulNBits needs a power of two of at least 16"
            )));
        }
        Ok(())
    }
}

/// A `Linear` weight chosen for quantization: the `Transpose` feeding its `MatMul`s is dropped.
struct QuantTarget {
    weight: Value,
    n: usize,
    k: usize,
}

impl GraphBuilder {
    /// This graph at `policy`'s precision, and the graph's `precision` manifest attribute. See
    /// the module docs; float32 returns the graph unchanged.
    pub fn with_precision(
        self,
        policy: &PrecisionPolicy,
    ) -> Result<(GraphBuilder, PrecisionAttributes)> {
        policy.check()?;
        let (graph, quantization, kept) = match policy.precision {
            Precision::Fp32 => (self, None, Vec::new()),
            Precision::Fp16 | Precision::Bf16 => {
                let low = policy.precision.compute_dtype();
                let mut pass = Replay::new(&self, policy, HashMap::new());
                let kept = pass.kept_names(&self, low);
                (pass.run(self, low)?, None, kept)
            }
            Precision::Int8 => {
                let targets = quant_targets(&self, &policy.int8)?;
                let mut pass = Replay::new(&self, policy, targets);
                let q = pass.quantization();
                (pass.run(self, DType::F32)?, Some(q), Vec::new())
            }
        };
        let attributes = kernels::describe(&graph, policy.precision, kept, quantization);
        Ok((graph, attributes))
    }

    /// `(op type, dtype)` of every node: the dtype of its first float input or output.
    pub fn node_dtypes(&self) -> BTreeSet<(&'static str, DType)> {
        let mut out = BTreeSet::new();
        for n in &self.nodes {
            let float = n
                .inputs
                .iter()
                .flatten()
                .chain(&n.outputs)
                .map(|v| self.values[v.index()].dtype)
                .find(|d| d.is_float());
            if let Some(d) = float {
                out.insert((n.op_type, d));
            }
        }
        out
    }
}

/// Whether `op_type` computes in float32 in a graph whose low type is `low`.
fn kept(op_type: &str, low: DType) -> bool {
    KEPT_FLOAT32_OPS.iter().any(|(o, _)| *o == op_type)
        || SCHEMA_FLOAT32_ONLY
            .iter()
            .any(|&(o, d)| o == op_type && d == low)
}

fn fixed_input(op_type: &str, index: usize) -> bool {
    FIXED_DTYPE_INPUTS
        .iter()
        .any(|(o, idx)| *o == op_type && idx.contains(&index))
}

fn perm_of(n: &NodeRecord) -> Option<&[i64]> {
    n.attributes.iter().find_map(|(k, a)| match (k, a) {
        (&"perm", Attr::Ints(p)) => Some(p.as_slice()),
        _ => None,
    })
}

/// The `Transpose` nodes (by index) whose weight is quantized: a 2-D float32 initializer of at
/// least `min_weights` weights, transposed `[1, 0]`, read only by `MatMul`s as their right
/// operand (a `Linear`).
fn quant_targets(g: &GraphBuilder, o: &Int8Options) -> Result<HashMap<usize, QuantTarget>> {
    let mut consumers: HashMap<Value, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for (slot, v) in n.inputs.iter().enumerate() {
            if let Some(v) = v {
                consumers.entry(*v).or_default().push((i, slot));
            }
        }
    }
    let mut out = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let ([Some(w)], [t]) = (n.inputs.as_slice(), n.outputs.as_slice()) else {
            continue;
        };
        if n.op_type != "Transpose" || perm_of(n) != Some(&[1, 0]) {
            continue;
        }
        let info = &g.values[w.index()];
        let (Some(data), [Dim::Fixed(rows), Dim::Fixed(cols)]) =
            (g.data.get(&w.index()), info.shape.as_slice())
        else {
            continue;
        };
        if g.kinds[w.index()] != ValueKind::Initializer || info.dtype != DType::F32 {
            continue;
        }
        let (nn, k) = (
            usize::try_from(*rows).unwrap_or(0),
            usize::try_from(*cols).unwrap_or(0),
        );
        let only_matmuls = consumers.get(t).is_some_and(|c| {
            c.iter()
                .all(|&(j, slot)| g.nodes[j].op_type == "MatMul" && slot == 1)
        });
        if only_matmuls && !g.outputs.contains(t) && data.numel() >= o.min_weights {
            out.insert(
                i,
                QuantTarget {
                    weight: *w,
                    n: nn,
                    k,
                },
            );
        }
    }
    Ok(out)
}

/// The replay of one graph into a new builder (see the module docs).
struct Replay {
    policy: PrecisionPolicy,
    /// Old value → new value.
    map: HashMap<Value, Value>,
    /// (new value, dtype) → its cast.
    casts: HashMap<(Value, DType), Value>,
    /// Transposes dropped by int8, by node index.
    targets: HashMap<usize, QuantTarget>,
    /// Old transpose output → (quantized weight(s), target index).
    quantized_outputs: HashMap<Value, usize>,
    /// Per quantized weight (old value): the new values it became.
    quantized: HashMap<Value, Vec<Value>>,
}

impl Replay {
    fn new(
        g: &GraphBuilder,
        policy: &PrecisionPolicy,
        targets: HashMap<usize, QuantTarget>,
    ) -> Self {
        let quantized_outputs = targets
            .keys()
            .filter_map(|&i| {
                g.nodes
                    .get(i)
                    .and_then(|n| n.outputs.first())
                    .map(|o| (*o, i))
            })
            .collect();
        Replay {
            policy: *policy,
            map: HashMap::new(),
            casts: HashMap::new(),
            targets,
            quantized_outputs,
            quantized: HashMap::new(),
        }
    }

    fn quantization(&self) -> Quantization {
        let mut weights = HashSet::new();
        let mut count = 0u64;
        for t in self.targets.values() {
            if weights.insert(t.weight) {
                count += (t.n * t.k) as u64;
            }
        }
        let o = self.policy.int8;
        let nbits = o.format == QuantFormat::MatmulNbits;
        Quantization {
            format: o.format,
            bits: 8,
            block_size: nbits.then_some(o.block_size as u64),
            scales: if nbits {
                ScaleLayout::PerBlock
            } else {
                ScaleLayout::PerChannel
            },
            zero_point: if nbits {
                i64::from(quantize::NBITS_ZERO_POINT)
            } else {
                0
            },
            accuracy_level: nbits.then_some(o.accuracy_level),
            matrices: weights.len() as u64,
            weights: count,
        }
    }

    /// What stays float32 in a low-precision graph: the kept ops present, and the float I/O.
    fn kept_names(&self, g: &GraphBuilder, low: DType) -> Vec<String> {
        let mut ops: Vec<&str> = g
            .nodes
            .iter()
            .map(|n| n.op_type)
            .filter(|op| kept(op, low))
            .collect();
        ops.sort_unstable();
        ops.dedup();
        let mut out: Vec<String> = ops.into_iter().map(str::to_string).collect();
        for (what, values) in [("input", &g.inputs), ("output", &g.outputs)] {
            for v in values {
                let info = &g.values[v.index()];
                if info.dtype == DType::F32 && !is_state(&info.name) {
                    out.push(format!("{what} {}", info.name));
                }
            }
        }
        out
    }

    /// `v` (new) as `dtype`, through one cast per value and dtype.
    fn ensure(&mut self, h: &mut GraphBuilder, v: Value, dtype: DType) -> Result<Value> {
        if h.dtype(v)? == dtype {
            return Ok(v);
        }
        if let Some(c) = self.casts.get(&(v, dtype)) {
            return Ok(*c);
        }
        let name = format!("{}/Cast_{}", h.info(v)?.name, dtype.name());
        let outs = h.wire(name.clone(), Box::new(Cast { to: dtype }), vec![Some(v)])?;
        let c = super::single(&name, outs)?;
        self.casts.insert((v, dtype), c);
        Ok(c)
    }

    fn new_of(&self, old: Value) -> Result<Value> {
        self.map
            .get(&old)
            .copied()
            .ok_or_else(|| ExportError::node("precision", format!("value {old:?} not replayed")))
    }

    fn run(&mut self, mut g: GraphBuilder, low: DType) -> Result<GraphBuilder> {
        let mut h = GraphBuilder::new(g.name.clone());
        h.metadata = std::mem::take(&mut g.metadata);
        for v in g.inputs.clone() {
            let info = g.values[v.index()].clone();
            let dtype = if info.dtype == DType::F32 && is_state(&info.name) {
                low
            } else {
                info.dtype
            };
            let nv = h.input(&info.name, dtype, info.shape)?;
            self.map.insert(v, nv);
        }
        self.add_initializers(&mut g, &mut h, low)?;
        let nodes = std::mem::take(&mut g.nodes);
        for (i, node) in nodes.into_iter().enumerate() {
            if self.targets.contains_key(&i) {
                continue;
            }
            self.replay_node(&g, &mut h, node, low)?;
        }
        for v in g.outputs.clone() {
            let info = &g.values[v.index()];
            let name = info.name.clone();
            let dims = g
                .output_dims
                .get(&v.index())
                .cloned()
                .unwrap_or(info.shape.clone());
            let mut nv = self.new_of(v)?;
            if h.dtype(nv)?.is_float() {
                let want = if is_state(&name) { low } else { DType::F32 };
                nv = self.ensure(&mut h, nv, want)?;
            }
            h.output_as(&name, nv, dims)?;
        }
        Ok(h)
    }

    /// Initializers in their old order: float32 ones converted to `low` unless only kept ops
    /// read them; int8 weights replaced by their codes and scales.
    fn add_initializers(
        &mut self,
        g: &mut GraphBuilder,
        h: &mut GraphBuilder,
        low: DType,
    ) -> Result<()> {
        // Per initializer: whether some reader takes it in the low type.
        let mut readers: HashMap<Value, bool> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if self.targets.contains_key(&i) {
                continue;
            }
            for (slot, v) in n.inputs.iter().enumerate() {
                if let Some(v) = v {
                    let low_reader = !kept(n.op_type, low) && !fixed_input(n.op_type, slot);
                    *readers.entry(*v).or_default() |= low_reader;
                }
            }
        }
        let quant: HashMap<Value, (usize, usize)> = self
            .targets
            .values()
            .map(|t| (t.weight, (t.n, t.k)))
            .collect();
        for v in g.initializer_order.clone() {
            let info = g.values[v.index()].clone();
            let data = g.data.remove(&v.index()).ok_or_else(|| {
                ExportError::node(&info.name, "internal: initializer data missing")
            })?;
            if let Some(&(n, k)) = quant.get(&v) {
                let q = self.quantize(h, &info.name, &data, n, k)?;
                self.quantized.insert(v, q);
            }
            let read = readers.get(&v);
            let is_output = g.outputs.contains(&v);
            if read.is_none() && !is_output {
                continue; // only read by a dropped Transpose
            }
            let low_reader = read.copied().unwrap_or(false);
            let data = if data.dtype() == DType::F32 && low != DType::F32 && low_reader {
                data.to_float_dtype_saturating(low)?
            } else {
                data
            };
            let nv = h.initializer(&info.name, data)?;
            self.map.insert(v, nv);
        }
        Ok(())
    }

    fn quantize(
        &mut self,
        h: &mut GraphBuilder,
        name: &str,
        w: &TensorData,
        n: usize,
        k: usize,
    ) -> Result<Vec<Value>> {
        let values = w.to_f32_vec()?;
        match self.policy.int8.format {
            QuantFormat::MatmulNbits => {
                let block = self.policy.int8.block_size;
                let (codes, scales) = quantize::blockwise_u8(&values, n, k, block);
                let k_blocks = k.div_ceil(block);
                let b = TensorData::from_bytes(DType::U8, vec![n, k_blocks, block], codes)?;
                let s = TensorData::from_f32(vec![n, k_blocks], &scales)?;
                Ok(vec![
                    h.initializer(&format!("{name}.int8"), b)?,
                    h.initializer(&format!("{name}.scales"), s)?,
                ])
            }
            QuantFormat::Qdq => {
                let (codes, scales) = quantize::per_channel_i8_transposed(&values, n, k);
                let bytes = codes.iter().map(|&c| c as u8).collect();
                let q = TensorData::from_bytes(DType::I8, vec![k, n], bytes)?;
                let s = TensorData::from_f32(vec![n], &scales)?;
                Ok(vec![
                    h.initializer(&format!("{name}.int8"), q)?,
                    h.initializer(&format!("{name}.scales"), s)?,
                ])
            }
        }
    }

    fn replay_node(
        &mut self,
        g: &GraphBuilder,
        h: &mut GraphBuilder,
        node: NodeRecord,
        low: DType,
    ) -> Result<()> {
        let NodeRecord {
            op,
            name,
            op_type,
            inputs,
            outputs,
            ..
        } = node;
        // int8: MatMul(x, Transpose(W)) of a quantized W.
        if let (Some(Some(x)), Some(Some(wt))) = (inputs.first(), inputs.get(1))
            && op_type == "MatMul"
            && let Some(&t) = self.quantized_outputs.get(wt)
        {
            let target = &self.targets[&t];
            let (n, k, weight) = (target.n, target.k, target.weight);
            let q =
                self.quantized.get(&weight).cloned().ok_or_else(|| {
                    ExportError::node(&name, "internal: quantized weight missing")
                })?;
            let x = self.new_of(*x)?;
            let out = match (self.policy.int8.format, q.as_slice()) {
                (QuantFormat::MatmulNbits, [b, s]) => {
                    let op = MatMulNBits {
                        k: k as i64,
                        n: n as i64,
                        bits: 8,
                        block_size: self.policy.int8.block_size as i64,
                        accuracy_level: self.policy.int8.accuracy_level,
                    };
                    h.wire(
                        name.clone(),
                        Box::new(op),
                        vec![Some(x), Some(*b), Some(*s)],
                    )?
                }
                (QuantFormat::Qdq, [qw, s]) => {
                    let key = (*qw, DType::F32);
                    let w = match self.casts.get(&key) {
                        Some(w) => *w,
                        None => {
                            let dq = format!("{}/DequantizeLinear", g.values[weight.index()].name);
                            let outs = h.wire(
                                dq.clone(),
                                Box::new(DequantizeLinear { axis: 1 }),
                                vec![Some(*qw), Some(*s)],
                            )?;
                            let w = super::single(&dq, outs)?;
                            self.casts.insert(key, w);
                            w
                        }
                    };
                    h.wire(name.clone(), Box::new(MatMul), vec![Some(x), Some(w)])?
                }
                _ => {
                    return Err(ExportError::node(
                        &name,
                        "internal: quantized weight layout",
                    ));
                }
            };
            return self.map_outputs(&name, &outputs, out);
        }
        let keep = kept(op_type, low);
        let mut new_inputs = Vec::with_capacity(inputs.len());
        for (i, v) in inputs.iter().enumerate() {
            let Some(v) = v else {
                new_inputs.push(None);
                continue;
            };
            let mut nv = self.new_of(*v)?;
            if low != DType::F32 && h.dtype(nv)?.is_float() {
                let want = if fixed_input(op_type, i) {
                    g.values[v.index()].dtype
                } else if keep {
                    DType::F32
                } else {
                    low
                };
                nv = self.ensure(h, nv, want)?;
            }
            new_inputs.push(Some(nv));
        }
        let op = match op.retyped(DType::F32, low) {
            Some(retyped) if low != DType::F32 && !keep => retyped,
            _ => op,
        };
        let out = h.wire(name.clone(), op, new_inputs)?;
        self.map_outputs(&name, &outputs, out)
    }

    fn map_outputs(&mut self, name: &str, old: &[Value], new: Vec<Value>) -> Result<()> {
        if old.len() != new.len() {
            return Err(ExportError::node(name, "internal: output count changed"));
        }
        for (o, n) in old.iter().zip(new) {
            self.map.insert(*o, n);
        }
        Ok(())
    }
}
