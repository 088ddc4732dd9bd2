//! [`DecoderStep`] on an ONNX Runtime session of the `decoder` graph, with the state kept in
//! ONNX Runtime values bound through an [`IoBinding`] (see the [module docs](super) for why).
//!
//! State pairs come from the manifest, never from a layer count: every input named `past_*` is a
//! state input, its output is [`present_for`]. Each state input's dims in the manifest are axis 0
//! = batch (rows), then either one `past_sequence_length` axis and fixed sizes (a *growing*
//! state: ONNX Runtime allocates a longer present every step, which replaces the past) or fixed
//! sizes only. A fixed-size `past_key_values.*` of a graph whose manifest says `kv_cache` =
//! `in-place` is an *in-place* cache: a buffer of the cache's capacity, allocated once per state
//! with ONNX Runtime's allocator and bound as both the past input and the present output, so the
//! graph writes the new tokens into it and nothing is copied; the graph then takes the tokens
//! already seen as `cache_length`. Any other fixed-size state (the shift-token windows of an
//! in-place graph) is *replaced*: its present is a new value of the same shape every call.
//!
//! Inputs named `cross_*` ([`is_constant_state`]) are *constant* state: per-row values with no
//! `present` output, set once per prompt state by the caller ([`OrtDecoder::set_constant`]:
//! min-dalle's cross-attention keys/values, computed once per prompt by `cross_kv` straight
//! into the state's memory, in the state's dtype) and fed unchanged every call; they are bound
//! once per state like the in-place caches and copied whole when rows move (joins), never per
//! step.
//!
//! `cache_length` is i64 `[batch]` (one length per row: rows of one state may sit at different
//! positions) in current bundles, or `[1]` in bundles exported before per-row positions (every
//! row at the same position; the engine then groups rows as for a concatenated cache).

use super::state_memory::StateMemory;
use super::step::{DecoderStep, StateRows};
use crate::ep::{DecoderMemoryPlan, DecoderPhase, route};
use crate::error::{Error, Result};
use dalle_bundle::KvCacheAttribute;
use dalle_bundle::attributes::decoder::PER_ROW_POSITIONS;
use dalle_bundle::io::decoder::{
    CACHE_LENGTH, IMAGE_LOGITS, INPUT_IDS, KV_CACHE_ATTRIBUTE, KV_CAPACITY_ATTRIBUTE, LOGITS,
    present_for,
};
use dalle_bundle::io::dims::{BATCH, PAST_SEQUENCE};
use dalle_bundle::io::min_dalle::is_constant_state;
use dalle_bundle::{DType, Dim, GraphRole, GraphSpec, TokenLayout};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, IxDyn};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor, ValueType};
use std::time::{Duration, Instant};

const ROLE: GraphRole = GraphRole::Decoder;

/// How a state input is carried from one call to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Update {
    /// `past_sequence_length` axis: the present is one call's tokens longer.
    Grow,
    /// Fixed-capacity KV cache bound as past and present: written in place.
    InPlace,
    /// Fixed size, replaced by a new present of the same shape.
    Replace,
    /// Fixed size, set by the caller, never written by the graph (no present).
    Constant,
}

/// One state input and the output that replaces it.
#[derive(Clone, Debug)]
struct StatePair {
    past: String,
    present: String,
    /// Dims after axis 0; `None` marks the past-length axis (only in growing states).
    dims: Vec<Option<usize>>,
    update: Update,
    /// The manifest's dtype of the state (`--precision fp16` decoders keep float16 caches).
    dtype: StateDType,
}

/// The element types a decoder state may have; the state is only ever zeroed and copied, so
/// the runtime never converts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateDType {
    F32,
    F16,
    BF16,
}

impl StateDType {
    fn element(self) -> ort::value::TensorElementType {
        match self {
            StateDType::F32 => ort::value::TensorElementType::Float32,
            StateDType::F16 => ort::value::TensorElementType::Float16,
            StateDType::BF16 => ort::value::TensorElementType::Bfloat16,
        }
    }

    fn of(d: DType) -> Option<StateDType> {
        match d {
            DType::F32 => Some(StateDType::F32),
            DType::F16 => Some(StateDType::F16),
            DType::BF16 => Some(StateDType::BF16),
            _ => None,
        }
    }
}

/// Runs `$body` with `$t` bound to the Rust element type of a [`StateDType`].
macro_rules! with_state_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            StateDType::F32 => {
                type $t = f32;
                $body
            }
            StateDType::F16 => {
                type $t = half::f16;
                $body
            }
            StateDType::BF16 => {
                type $t = half::bf16;
                $body
            }
        }
    };
}

impl StatePair {
    fn in_place(&self) -> bool {
        self.update == Update::InPlace
    }

    /// Bound once per state (in-place caches and constant state).
    fn bound_once(&self) -> bool {
        matches!(self.update, Update::InPlace | Update::Constant)
    }
}

/// The state pairs of a decoder graph, from its manifest entry (in manifest order).
fn state_pairs(spec: &GraphSpec) -> Result<Vec<StatePair>> {
    let in_place_layout = KvCacheAttribute::from_spec(spec)
        .map_err(|e| Error::tensor(ROLE, KV_CACHE_ATTRIBUTE, e.to_string()))?
        .in_place();
    let mut pairs = vec![];
    let states = spec
        .inputs
        .iter()
        .filter(|t| t.name.starts_with("past_") || is_constant_state(&t.name));
    for input in states {
        let name = &input.name;
        let constant = is_constant_state(name);
        let present = if constant {
            String::new()
        } else {
            present_for(name)
                .filter(|p| spec.output(p).is_some())
                .ok_or_else(|| {
                    Error::tensor(ROLE, name, "state input has no matching `present` output")
                })?
        };
        let dtype = StateDType::of(input.dtype).ok_or_else(|| {
            Error::tensor(
                ROLE,
                name,
                format!(
                    "state is {}; this runtime handles float32, float16 and bfloat16 state",
                    input.dtype
                ),
            )
        })?;
        let mut dims = vec![];
        for (axis, d) in input.dims.iter().enumerate().skip(1) {
            dims.push(match d {
                Dim::Symbolic(s) if s == PAST_SEQUENCE => None,
                Dim::Fixed(n) => Some(usize::try_from(*n).map_err(|_| {
                    Error::tensor(ROLE, name, format!("axis {axis} size {n} too large"))
                })?),
                Dim::Symbolic(s) => {
                    return Err(Error::tensor(
                        ROLE,
                        name,
                        format!(
                            "axis {axis} is `{s}`; state dims must be batch, \
                             `{PAST_SEQUENCE}` or fixed"
                        ),
                    ));
                }
            });
        }
        let growing = dims.iter().filter(|d| d.is_none()).count();
        if growing > 1 {
            return Err(Error::tensor(
                ROLE,
                name,
                format!("has more than one `{PAST_SEQUENCE}` axis"),
            ));
        }
        let update = match growing {
            1 if constant => {
                return Err(Error::tensor(
                    ROLE,
                    name,
                    format!("constant state cannot have a `{PAST_SEQUENCE}` axis"),
                ));
            }
            _ if constant => Update::Constant,
            1 => Update::Grow,
            _ if in_place_layout && name.starts_with("past_key_values.") => Update::InPlace,
            _ if in_place_layout => Update::Replace,
            // Older in-place bundles: every fixed-size state was an in-place cache.
            _ => Update::InPlace,
        };
        pairs.push(StatePair {
            past: name.clone(),
            present,
            dims,
            update,
            dtype,
        });
    }
    Ok(pairs)
}

/// Where the image-vocabulary logits of the last position come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogitsSource {
    /// `image_logits` `[batch, image_vocab]`: the graph computes nothing else.
    ImageLast,
    /// `logits` `[batch, sequence, total_vocab]`: the last position's `[offset, offset + image)`.
    Full { offset: usize, image_vocab: usize },
}

impl LogitsSource {
    fn of(spec: &GraphSpec, layout: &TokenLayout) -> Result<LogitsSource> {
        if spec.output(IMAGE_LOGITS).is_some() {
            return Ok(LogitsSource::ImageLast);
        }
        if spec.output(LOGITS).is_none() {
            return Err(Error::tensor(
                ROLE,
                IMAGE_LOGITS,
                format!("missing: the decoder must output `{IMAGE_LOGITS}` or `{LOGITS}`"),
            ));
        }
        let size = |v: u64, what: &str| {
            usize::try_from(v).map_err(|_| Error::InvalidInput(format!("token layout: {what} {v}")))
        };
        Ok(LogitsSource::Full {
            offset: size(layout.image_token_offset, "image_token_offset")?,
            image_vocab: size(layout.image_vocab_size, "image_vocab_size")?,
        })
    }

    fn name(self) -> &'static str {
        match self {
            LogitsSource::ImageLast => IMAGE_LOGITS,
            LogitsSource::Full { .. } => LOGITS,
        }
    }
}

/// An in-place cache's facts: its capacity (manifest attribute `kv_capacity`) and whether
/// `cache_length` has one entry per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InPlaceCache {
    capacity: usize,
    per_row: bool,
}

/// The in-place cache facts, required (with the `cache_length` input) exactly when some state
/// input is in place.
fn in_place_cache(spec: &GraphSpec, pairs: &[StatePair]) -> Result<Option<InPlaceCache>> {
    let in_place = pairs.iter().find(|p| p.in_place());
    let length = spec.input(CACHE_LENGTH);
    match (in_place, length) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::tensor(
            ROLE,
            CACHE_LENGTH,
            "is an input but no state input is a fixed-size (in-place) cache",
        )),
        (Some(p), None) => Err(Error::tensor(
            ROLE,
            &p.past,
            format!(
                "has no `{PAST_SEQUENCE}` axis (an in-place cache) but the graph has no `{CACHE_LENGTH}` input"
            ),
        )),
        (Some(p), Some(length)) => {
            let capacity = match KvCacheAttribute::from_spec(spec) {
                Ok(KvCacheAttribute::InPlace { capacity, .. }) => usize::try_from(capacity).ok(),
                // Bundles from before the layout attribute: the capacity alone.
                _ => spec
                    .attributes
                    .get(KV_CAPACITY_ATTRIBUTE)
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|c| usize::try_from(c).ok()),
            }
            .filter(|&c| c > 0)
            .ok_or_else(|| {
                Error::tensor(
                    ROLE,
                    &p.past,
                    format!(
                        "is an in-place cache but the manifest gives no positive \
                         `{KV_CAPACITY_ATTRIBUTE}`"
                    ),
                )
            })?;
            let per_row = match length.dims.as_slice() {
                [Dim::Symbolic(s)] if s == BATCH => true,
                [Dim::Fixed(1)] => false,
                other => {
                    return Err(Error::tensor(
                        ROLE,
                        CACHE_LENGTH,
                        format!("has dims {other:?}; expected [{BATCH}] (or [1])"),
                    ));
                }
            };
            if let Some(said) = spec
                .attributes
                .get(PER_ROW_POSITIONS)
                .and_then(serde_json::Value::as_bool)
                && said != per_row
            {
                return Err(Error::tensor(
                    ROLE,
                    CACHE_LENGTH,
                    format!(
                        "has dims {:?} but the manifest says {PER_ROW_POSITIONS} = {said}",
                        length.dims
                    ),
                ));
            }
            if per_row && pairs.iter().any(|p| p.update == Update::Grow) {
                return Err(Error::tensor(
                    ROLE,
                    CACHE_LENGTH,
                    "is per row but some state grows with a shared past length",
                ));
            }
            Ok(Some(InPlaceCache { capacity, per_row }))
        }
    }
}

/// One session of the decoder with its binding.
struct PhaseSession {
    session: Session,
    binding: IoBinding,
    /// The state whose in-place buffers are bound now (bindings persist between runs).
    bound_state: Option<u64>,
}

/// The decoder's sessions (one, or prefill and decode on TensorRT) with their bindings and the
/// memory its state lives in. See the module docs.
pub struct OrtDecoder {
    /// In the order of `phases`.
    sessions: Vec<PhaseSession>,
    phases: Vec<DecoderPhase>,
    memory: StateMemory,
    pairs: Vec<StatePair>,
    logits: LogitsSource,
    /// `Some` when the KV caches are updated in place.
    cache: Option<InPlaceCache>,
}

/// The `past_*` values of every row, in state-pair order, owned by ONNX Runtime after the
/// first step.
pub struct OrtState {
    values: Vec<DynValue>,
    rows: usize,
    /// Tokens seen by each row (all equal unless the decoder has per-row positions).
    lengths: Vec<usize>,
    /// Unique per state: the in-place buffers stay bound while the same state steps.
    id: u64,
}

/// A fresh [`OrtState::id`].
fn next_state_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl StateRows for OrtState {
    fn rows(&self) -> usize {
        self.rows
    }

    fn lengths(&self) -> &[usize] {
        &self.lengths
    }
}

impl OrtState {
    /// Rows (batch entries) of the state.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens seen by the longest row.
    pub fn past_length(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}

impl OrtDecoder {
    /// Wraps a `decoder` session (owned from now on) that keeps its state on the host (the CPU
    /// provider); `spec` is its manifest entry.
    pub fn new(session: Session, spec: &GraphSpec, layout: &TokenLayout) -> Result<OrtDecoder> {
        OrtDecoder::with_plan(
            vec![(DecoderPhase::All, session)],
            &DecoderMemoryPlan::host(spec),
            spec,
            layout,
        )
    }

    /// [`OrtDecoder::with_plan`] over the sessions [`crate::bundle::Bundle::take_decoder_sessions`]
    /// returns, paired with their plan's phases.
    pub fn from_sessions(
        decoder: crate::bundle::DecoderSessions,
        spec: &GraphSpec,
        layout: &TokenLayout,
    ) -> Result<OrtDecoder> {
        let sessions = decoder
            .plan
            .phases()
            .into_iter()
            .zip(decoder.sessions.into_iter().map(|s| s.into_session()))
            .collect();
        OrtDecoder::with_plan(sessions, &decoder.plan.memory, spec, layout)
    }

    /// Wraps the decoder's sessions, one per phase of its plan (`crate::ep::plan_decoder`),
    /// keeping the state where `memory` says.
    pub fn with_plan(
        sessions: Vec<(DecoderPhase, Session)>,
        memory: &DecoderMemoryPlan,
        spec: &GraphSpec,
        layout: &TokenLayout,
    ) -> Result<OrtDecoder> {
        let pairs = state_pairs(spec)?;
        let cache = in_place_cache(spec, &pairs)?;
        let logits = LogitsSource::of(spec, layout)?;
        let first = sessions.first().ok_or_else(|| {
            Error::InvalidInput("the decoder needs at least one session".to_string())
        })?;
        let memory = StateMemory::new(memory, &first.1)?;
        let mut phases = vec![];
        let mut wrapped = vec![];
        for (phase, session) in sessions {
            let binding = session
                .create_binding()
                .map_err(|e| Error::ort("graph `decoder`: cannot create an IoBinding", e))?;
            phases.push(phase);
            wrapped.push(PhaseSession {
                session,
                binding,
                bound_state: None,
            });
        }
        Ok(OrtDecoder {
            sessions: wrapped,
            phases,
            memory,
            pairs,
            logits,
            cache,
        })
    }

    /// The phases of its sessions.
    pub fn phases(&self) -> &[DecoderPhase] {
        &self.phases
    }

    /// Sets constant state input `name` of every row of `state` (see the module docs) to
    /// `value`, which becomes the state's own (no copy): `[rows, …]` in the input's shape and
    /// dtype, wherever ONNX Runtime allocated it (the `cross_kv` graph's output, bound to
    /// [`OrtDecoder::state_memory`]).
    pub fn set_constant(&self, state: &mut OrtState, name: &str, value: DynValue) -> Result<()> {
        let (pair, slot) = self
            .pairs
            .iter()
            .zip(state.values.iter_mut())
            .find(|(p, _)| p.past == name && p.update == Update::Constant)
            .ok_or_else(|| Error::tensor(ROLE, name, "is not a constant state input"))?;
        let want: Vec<i64> = std::iter::once(state.rows)
            .chain(pair.dims.iter().flatten().copied())
            .map(|d| d as i64)
            .collect();
        match value.dtype() {
            ValueType::Tensor { ty, shape, .. }
                if *ty == pair.dtype.element() && shape.iter().eq(want.iter()) => {}
            other => {
                return Err(Error::tensor(
                    ROLE,
                    name,
                    format!("given {other:?}; expected {:?} {want:?}", pair.dtype),
                ));
            }
        }
        *slot = value;
        // A new value: the state's bindings must be made again.
        state.id = next_state_id();
        Ok(())
    }

    /// Where the decoder's state lives (host or device memory): where a caller binds the
    /// outputs that become constant state, so they need no copy.
    pub fn state_memory(&self) -> &ort::memory::MemoryInfo<'static> {
        &self.memory.state
    }

    /// Names of the constant state inputs.
    pub fn constant_inputs(&self) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|p| p.update == Update::Constant)
            .map(|p| p.past.as_str())
            .collect()
    }

    /// Names of the state inputs, in the order the state holds them.
    pub fn state_inputs(&self) -> Vec<&str> {
        self.pairs.iter().map(|p| p.past.as_str()).collect()
    }

    fn shape(&self, pair: &StatePair, rows: usize, past: usize) -> Vec<usize> {
        std::iter::once(rows)
            .chain(pair.dims.iter().map(|d| d.unwrap_or(past)))
            .collect()
    }

    /// A zeroed state buffer in the state's memory ([`StateMemory::allocate`]).
    fn allocate(&self, pair: &StatePair, shape: &[usize]) -> Result<DynValue> {
        with_state_type!(pair.dtype, T => self.memory.allocate::<T>(
            self.first_session()?,
            shape,
            &pair.past,
            true
        ))
    }

    /// A state buffer in the state's memory that is about to be overwritten whole (not zeroed
    /// on a device).
    fn allocate_uninit(&self, pair: &StatePair, shape: &[usize]) -> Result<DynValue> {
        with_state_type!(pair.dtype, T => self.memory.allocate::<T>(
            self.first_session()?,
            shape,
            &pair.past,
            false
        ))
    }

    fn first_session(&self) -> Result<&Session> {
        self.sessions
            .first()
            .map(|s| &s.session)
            .ok_or_else(|| Error::InvalidInput("the decoder has no session".to_string()))
    }

    fn bind(&mut self, at: usize, ids: Tensor<i64>, state: &mut OrtState) -> Result<()> {
        let err = |name: &str, e: ort::Error| {
            Error::ort(format!("graph `decoder`: cannot bind `{name}`"), e)
        };
        let PhaseSession {
            binding,
            bound_state,
            ..
        } = self
            .sessions
            .get_mut(at)
            .ok_or_else(|| Error::InvalidInput(format!("the decoder has no session {at}")))?;
        binding
            .bind_input(INPUT_IDS, &ids)
            .map_err(|e| err(INPUT_IDS, e))?;
        if let Some(cache) = self.cache {
            let lengths: Vec<i64> = if cache.per_row {
                state.lengths.iter().map(|&n| n as i64).collect()
            } else {
                vec![state.past_length() as i64]
            };
            let shape = [lengths.len()];
            let length = Tensor::from_array((shape, lengths)).map_err(|e| err(CACHE_LENGTH, e))?;
            binding
                .bind_input(CACHE_LENGTH, &length)
                .map_err(|e| err(CACHE_LENGTH, e))?;
        }
        let rebind_in_place = *bound_state != Some(state.id);
        for (pair, value) in self.pairs.iter().zip(state.values.iter_mut()) {
            if pair.bound_once() && !rebind_in_place {
                continue;
            }
            binding
                .bind_input(pair.past.as_str(), &*value)
                .map_err(|e| err(&pair.past, e))?;
            if pair.update == Update::Constant {
                continue;
            }
            if pair.in_place() {
                // The same buffer as the past: the graph writes the new tokens into it.
                binding
                    .bind_output(pair.present.as_str(), value)
                    .map_err(|e| err(&pair.present, e))?;
            } else {
                // Re-bound every step: ONNX Runtime allocates the (grown or replaced) present,
                // in the state's memory (the device's on a GPU).
                binding
                    .bind_output_to_device(pair.present.as_str(), &self.memory.state)
                    .map_err(|e| err(&pair.present, e))?;
            }
        }
        *bound_state = Some(state.id);
        // The host: on a GPU, ONNX Runtime copies just this output back.
        let logits = self.logits.name();
        binding
            .bind_output_to_device(logits, &self.memory.logits)
            .map_err(|e| err(logits, e))
    }

    /// One run of the graph on validated ids, by session `at`.
    fn run_step(
        &mut self,
        at: usize,
        input_ids: ArrayView2<'_, i64>,
        state: &mut OrtState,
        logits: &mut Array2<f32>,
    ) -> Result<Duration> {
        let (rows, sequence) = input_ids.dim();
        let ids = Tensor::from_array((
            [rows, sequence],
            input_ids.iter().copied().collect::<Vec<_>>(),
        ))
        .map_err(|e| Error::ort("graph `decoder`: cannot create `input_ids`", e))?;
        self.bind(at, ids, state)?;

        let started = Instant::now();
        let PhaseSession {
            session, binding, ..
        } = &mut self.sessions[at];
        let mut outputs = session
            .run_binding(binding)
            .map_err(|e| Error::ort("graph `decoder`: run failed", e))?;
        let model_time = started.elapsed();

        let total = state.past_length() + sequence;
        for (pair, slot) in self.pairs.iter().zip(state.values.iter_mut()) {
            if pair.update == Update::Constant {
                continue;
            }
            let value = outputs
                .remove(pair.present.as_str())
                .ok_or_else(|| Error::tensor(ROLE, &pair.present, "missing from the outputs"))?;
            if pair.in_place() {
                // `value` is the buffer in `slot`, already updated.
                continue;
            }
            let want: Vec<i64> = std::iter::once(rows)
                .chain(pair.dims.iter().map(|d| d.unwrap_or(total)))
                .map(|d| d as i64)
                .collect();
            match value.dtype() {
                ValueType::Tensor { shape, .. } if shape.iter().eq(want.iter()) => {}
                other => {
                    return Err(Error::tensor(
                        ROLE,
                        &pair.present,
                        format!("is {other:?}; expected {:?} {want:?}", pair.dtype),
                    ));
                }
            }
            *slot = value;
        }
        state.lengths.iter_mut().for_each(|n| *n += sequence);

        let name = self.logits.name();
        let value = outputs
            .get(name)
            .ok_or_else(|| Error::tensor(ROLE, name, "missing from the outputs"))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::tensor(ROLE, name, format!("cannot read it as float: {e}")))?;
        // row r's image logits start at `base + r * stride` in `data`
        let (width, base, stride) = match (self.logits, &shape[..]) {
            (LogitsSource::ImageLast, [r, v]) if *r == rows as i64 && *v > 0 => {
                let v = *v as usize;
                (v, 0, v)
            }
            (
                LogitsSource::Full {
                    offset,
                    image_vocab,
                },
                [r, s, v],
            ) if *r == rows as i64
                && *s == sequence as i64
                && usize::try_from(*v).ok() == offset.checked_add(image_vocab) =>
            {
                let v = *v as usize;
                (image_vocab, (sequence - 1) * v + offset, sequence * v)
            }
            _ => {
                let want = match self.logits {
                    LogitsSource::ImageLast => format!("[{rows}, image_vocab]"),
                    LogitsSource::Full {
                        offset,
                        image_vocab,
                    } => {
                        format!("[{rows}, {sequence}, {}]", offset + image_vocab)
                    }
                };
                return Err(Error::tensor(
                    ROLE,
                    name,
                    format!("has shape {shape:?}; expected {want}"),
                ));
            }
        };
        if logits.dim() != (rows, width) {
            *logits = Array2::zeros((rows, width));
        }
        let out = logits
            .as_slice_mut()
            .ok_or_else(|| Error::tensor(ROLE, name, "logits buffer is not contiguous"))?;
        if stride == width && base == 0 {
            let all = data
                .get(..rows * width)
                .ok_or_else(|| Error::tensor(ROLE, name, "is shorter than its shape"))?;
            out.copy_from_slice(all);
        } else {
            for (r, chunk) in out.chunks_exact_mut(width.max(1)).enumerate() {
                let start = base + r * stride;
                let last = data
                    .get(start..start + width)
                    .ok_or_else(|| Error::tensor(ROLE, name, "is shorter than its shape"))?;
                chunk.copy_from_slice(last);
            }
        }
        Ok(model_time)
    }

    fn check_rows(state: &OrtState, rows: &[usize], what: &str) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= state.rows) {
            return Err(Error::InvalidInput(format!(
                "{what}: row {bad} of a {}-row state",
                state.rows
            )));
        }
        Ok(())
    }

    /// Copies rows between states: in-place caches only their valid prefix (per head),
    /// replaced (fixed-size) states whole rows. Growing states cannot be copied row-wise into
    /// another state.
    fn copy_into(
        &self,
        src: &OrtState,
        src_rows: &[usize],
        dst: &mut OrtState,
        dst_rows: &[usize],
    ) -> Result<()> {
        for (pair, (s, d)) in self
            .pairs
            .iter()
            .zip(src.values.iter().zip(dst.values.iter_mut()))
        {
            if self.memory.moves_in_place() {
                copy_pair(pair, s, &src.lengths, src_rows, d, dst_rows)?;
                continue;
            }
            // Device state: move the rows on host copies, then write the target back.
            let from = StateMemory::to_host(s, &pair.past)?;
            let mut to = StateMemory::host_copy(d, &pair.past)?;
            copy_pair(pair, &from, &src.lengths, src_rows, &mut to, dst_rows)?;
            StateMemory::write_back(&to, d, &pair.past)?;
        }
        for (&sr, &dr) in src_rows.iter().zip(dst_rows) {
            dst.lengths[dr] = src.lengths[sr];
        }
        Ok(())
    }
}

/// [`OrtDecoder::copy_into`] for one state pair.
fn copy_pair(
    pair: &StatePair,
    s: &DynValue,
    lengths: &[usize],
    src_rows: &[usize],
    d: &mut DynValue,
    dst_rows: &[usize],
) -> Result<()> {
    if pair.update == Update::Grow {
        return Err(Error::tensor(
            ROLE,
            &pair.past,
            "a growing state cannot be copied row-wise",
        ));
    }
    with_state_type!(pair.dtype, T => copy_rows_of::<T>(pair, s, lengths, src_rows, d, dst_rows))
}

/// [`copy_pair`] for one element type.
fn copy_rows_of<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    pair: &StatePair,
    s: &DynValue,
    lengths: &[usize],
    src_rows: &[usize],
    d: &mut DynValue,
    dst_rows: &[usize],
) -> Result<()> {
    let (_, source) = s
        .try_extract_tensor::<T>()
        .map_err(|e| Error::tensor(ROLE, &pair.past, format!("cannot read it: {e}")))?;
    let (_, target) = d
        .try_extract_tensor_mut::<T>()
        .map_err(|e| Error::tensor(ROLE, &pair.past, format!("cannot write it: {e}")))?;
    let row_len: usize = pair.dims.iter().flatten().product();
    let short = || Error::tensor(ROLE, &pair.past, "state buffer is too short");
    for (&sr, &dr) in src_rows.iter().zip(dst_rows) {
        let from = source
            .get(sr * row_len..(sr + 1) * row_len)
            .ok_or_else(short)?;
        let to = target
            .get_mut(dr * row_len..(dr + 1) * row_len)
            .ok_or_else(short)?;
        match (pair.update, pair.dims.as_slice()) {
            // [heads, capacity, head_dim]: the first `len` tokens of each head.
            (Update::InPlace, &[Some(heads), Some(capacity), Some(head_dim)]) => {
                let valid = lengths.get(sr).copied().unwrap_or(0).min(capacity) * head_dim;
                let per_head = capacity * head_dim;
                for h in 0..heads {
                    let at = h * per_head;
                    to[at..at + valid].copy_from_slice(&from[at..at + valid]);
                }
            }
            _ => to.copy_from_slice(from),
        }
    }
    Ok(())
}

impl DecoderStep for OrtDecoder {
    type State = OrtState;

    fn per_row_positions(&self) -> bool {
        self.cache.is_some_and(|c| c.per_row)
    }

    fn capacity(&self) -> Option<usize> {
        self.cache.map(|c| c.capacity)
    }

    fn empty_state(&mut self, rows: usize) -> Result<OrtState> {
        let values = self
            .pairs
            .iter()
            .map(|pair| {
                let shape = self.shape(pair, rows, 0);
                if pair.update != Update::Grow {
                    return self.allocate(pair, &shape);
                }
                with_state_type!(pair.dtype, T => {
                    Tensor::from_array(ArrayD::<T>::from_elem(IxDyn(&shape), T::default()))
                        .map(|t| t.into_dyn())
                })
                .map_err(|e| Error::ort(format!("graph `decoder`: empty `{}`", pair.past), e))
            })
            .collect::<Result<_>>()?;
        Ok(OrtState {
            values,
            rows,
            lengths: vec![0; rows],
            id: next_state_id(),
        })
    }

    /// A new state from rows of `state`: in-place caches copy only each row's valid prefix
    /// (into a fresh buffer), growing states are gathered whole.
    fn select_rows(&mut self, state: &OrtState, rows: &[usize]) -> Result<OrtState> {
        Self::check_rows(state, rows, "select_rows")?;
        let to: Vec<usize> = (0..rows.len()).collect();
        let mut values = Vec::with_capacity(self.pairs.len());
        for (pair, value) in self.pairs.iter().zip(&state.values) {
            let shape = self.shape(pair, rows.len(), 0);
            if pair.update == Update::Grow {
                let host = StateMemory::to_host(value, &pair.past)?;
                let picked = with_state_type!(pair.dtype, T => {
                    let view = host.try_extract_array::<T>().map_err(|e| {
                        Error::tensor(ROLE, &pair.present, format!("cannot read it: {e}"))
                    })?;
                    Tensor::from_array(view.select(Axis(0), rows))
                        .map(|t| t.into_dyn())
                        .map_err(|e| {
                            Error::ort(format!("graph `decoder`: copying `{}`", pair.past), e)
                        })?
                });
                values.push(self.memory.to_state(picked, &pair.past)?);
            } else if self.memory.moves_in_place() {
                let mut fresh = self.allocate(pair, &shape)?;
                copy_pair(pair, value, &state.lengths, rows, &mut fresh, &to)?;
                values.push(fresh);
            } else {
                // Device state: gather on the host, then one copy into a buffer made by the
                // allocator (only those can be bound as in-place outputs).
                let from = StateMemory::to_host(value, &pair.past)?;
                let mut gathered = with_state_type!(pair.dtype, T => StateMemory::host_buffer::<T>(&shape, &pair.past))?;
                copy_pair(pair, &from, &state.lengths, rows, &mut gathered, &to)?;
                let mut fresh = self.allocate_uninit(pair, &shape)?;
                StateMemory::write_back(&gathered, &mut fresh, &pair.past)?;
                values.push(fresh);
            }
        }
        Ok(OrtState {
            values,
            rows: rows.len(),
            lengths: rows.iter().map(|&r| state.lengths[r]).collect(),
            id: next_state_id(),
        })
    }

    fn copy_rows(
        &mut self,
        src: &OrtState,
        src_rows: &[usize],
        dst: &mut OrtState,
        dst_rows: &[usize],
    ) -> Result<()> {
        if !self.per_row_positions() {
            return Err(Error::InvalidInput(
                "copy_rows needs a decoder with per-row positions".into(),
            ));
        }
        if src_rows.len() != dst_rows.len() {
            return Err(Error::InvalidInput(format!(
                "copy_rows: {} source rows for {} target rows",
                src_rows.len(),
                dst_rows.len()
            )));
        }
        Self::check_rows(src, src_rows, "copy_rows source")?;
        Self::check_rows(dst, dst_rows, "copy_rows target")?;
        self.copy_into(src, src_rows, dst, dst_rows)
    }

    fn clear_rows(&mut self, state: &mut OrtState, rows: &[usize]) -> Result<()> {
        if !self.per_row_positions() {
            return Err(Error::InvalidInput(
                "clear_rows needs a decoder with per-row positions".into(),
            ));
        }
        Self::check_rows(state, rows, "clear_rows")?;
        rows.iter().for_each(|&r| state.lengths[r] = 0);
        Ok(())
    }

    fn step(
        &mut self,
        input_ids: ArrayView2<'_, i64>,
        state: &mut OrtState,
        logits: &mut Array2<f32>,
    ) -> Result<Duration> {
        let (rows, sequence) = input_ids.dim();
        if rows != state.rows || sequence == 0 {
            return Err(Error::tensor(
                ROLE,
                INPUT_IDS,
                format!(
                    "has shape [{rows}, {sequence}] for a {}-row state",
                    state.rows
                ),
            ));
        }
        let past = state.past_length();
        if let Some(cache) = self.cache
            && past + sequence > cache.capacity
        {
            return Err(Error::InvalidInput(format!(
                "the decoder's in-place cache holds {} tokens; {past} seen + {sequence} new \
                 would overflow it",
                cache.capacity
            )));
        }
        let route = route(&self.phases, past, sequence);
        let at = self
            .phases
            .iter()
            .position(|&p| p == route.phase)
            .ok_or_else(|| {
                Error::InvalidInput(format!("the decoder has no {} session", route.phase))
            })?;
        // GroupQueryAttention's CPU kernel takes several new tokens after a past for one row
        // only (priming a batch), and a TensorRT decode session one token: feed them one at a
        // time.
        let in_place_batch = self.cache.is_some() && rows > 1 && sequence > 1 && past > 0;
        if in_place_batch || route.one_token_at_a_time {
            let mut model_time = Duration::ZERO;
            for t in 0..sequence {
                let column = input_ids.slice_axis(Axis(1), ndarray::Slice::from(t..t + 1));
                model_time += self.run_step(at, column, state, logits)?;
            }
            return Ok(model_time);
        }
        self.run_step(at, input_ids, state, logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dalle_bundle::TensorSpec;

    fn spec(inputs: Vec<TensorSpec>, outputs: &[&str]) -> GraphSpec {
        GraphSpec {
            file: "decoder.onnx".into(),
            external_data: None,
            inputs,
            outputs: outputs
                .iter()
                .map(|n| TensorSpec::new(*n, DType::F32, vec![]))
                .collect(),
            dim_ranges: Default::default(),
            attributes: Default::default(),
        }
    }

    fn kv(name: &str, dims: Vec<Dim>) -> TensorSpec {
        TensorSpec::new(name, DType::F32, dims)
    }

    #[test]
    fn state_pairs_come_from_the_manifest() {
        let s = spec(
            vec![
                TensorSpec::new(
                    INPUT_IDS,
                    DType::I64,
                    vec![Dim::sym("batch"), Dim::sym("sequence")],
                ),
                kv(
                    "past_key_values.0.key",
                    vec![
                        Dim::sym("batch"),
                        2.into(),
                        Dim::sym(PAST_SEQUENCE),
                        4.into(),
                    ],
                ),
                kv(
                    "past_shift.3.ff",
                    vec![Dim::sym("batch"), Dim::sym(PAST_SEQUENCE), 8.into()],
                ),
            ],
            &["logits", "present.0.key", "present_shift.3.ff"],
        );
        let pairs = state_pairs(&s).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].present, "present.0.key");
        assert_eq!(pairs[0].dims, vec![Some(2), None, Some(4)]);
        assert_eq!(pairs[1].present, "present_shift.3.ff");
        assert_eq!(pairs[1].dims, vec![None, Some(8)]);
    }

    #[test]
    fn malformed_state_inputs_are_named() {
        let past = |dims| spec(vec![kv("past_key_values.0.key", dims)], &["present.0.key"]);
        let e = state_pairs(&past(vec![Dim::sym("batch"), Dim::sym("heads")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`heads`"), "{e}");
        let e = state_pairs(&past(vec![
            Dim::sym("batch"),
            Dim::sym(PAST_SEQUENCE),
            Dim::sym(PAST_SEQUENCE),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than one"), "{e}");
        let missing = spec(vec![kv("past_x", vec![Dim::sym("batch")])], &["logits"]);
        let e = state_pairs(&missing).unwrap_err().to_string();
        assert!(e.contains("past_x") && e.contains("present"), "{e}");
    }

    #[test]
    fn fixed_size_states_are_in_place_and_need_cache_length_and_capacity() {
        let fixed = || {
            kv(
                "past_key_values.0.key",
                vec![Dim::sym("batch"), 2.into(), 5.into()],
            )
        };
        let growing = || {
            kv(
                "past_shift.0.ff",
                vec![Dim::sym("batch"), Dim::sym(PAST_SEQUENCE), 4.into()],
            )
        };
        let length = || TensorSpec::new(CACHE_LENGTH, DType::I64, vec![1.into()]);
        let outputs = ["image_logits", "present.0.key", "present_shift.0.ff"];

        let mut s = spec(vec![fixed(), growing(), length()], &outputs);
        s.attributes
            .insert("kv_capacity".into(), serde_json::json!(5));
        let pairs = state_pairs(&s).unwrap();
        assert!(pairs[0].in_place() && !pairs[1].in_place());
        assert_eq!(
            in_place_cache(&s, &pairs).unwrap(),
            Some(InPlaceCache {
                capacity: 5,
                per_row: false
            })
        );

        let no_capacity = spec(vec![fixed(), length()], &outputs);
        let e = in_place_cache(&no_capacity, &state_pairs(&no_capacity).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("kv_capacity"), "{e}");

        let no_length = spec(vec![fixed()], &outputs);
        let e = in_place_cache(&no_length, &state_pairs(&no_length).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cache_length`"), "{e}");

        let stray = spec(vec![growing(), length()], &outputs);
        let e = in_place_cache(&stray, &state_pairs(&stray).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no state input is a fixed-size"), "{e}");

        let concat = spec(vec![growing()], &outputs);
        assert_eq!(
            in_place_cache(&concat, &state_pairs(&concat).unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn logits_come_from_image_logits_else_from_the_full_output() {
        let layout = TokenLayout {
            text_length: 2,
            text_vocab_size: 3,
            bos_id: 0,
            pad_id_base: 3,
            image_grid: 2,
            image_vocab_size: 4,
            image_token_offset: 5,
            total_vocab_size: 9,
        };
        let both = spec(vec![], &["logits", "image_logits"]);
        assert_eq!(
            LogitsSource::of(&both, &layout).unwrap(),
            LogitsSource::ImageLast
        );
        let full = spec(vec![], &["logits"]);
        assert_eq!(
            LogitsSource::of(&full, &layout).unwrap(),
            LogitsSource::Full {
                offset: 5,
                image_vocab: 4
            }
        );
        let e = LogitsSource::of(&spec(vec![], &["present.0.key"]), &layout)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must output `image_logits` or `logits`"), "{e}");
    }
}
