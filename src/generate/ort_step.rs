//! [`DecoderStep`] on an ONNX Runtime session of the `decoder` graph, with the state kept in
//! ONNX Runtime values bound through an [`IoBinding`] (see the [module docs](super) for why).
//!
//! State pairs come from the manifest, never from a layer count: every input named `past_*` is a
//! state input, its output is [`present_for`]. Each state input's dims in the manifest are axis 0
//! = batch (rows), then either one `past_sequence_length` axis and fixed sizes (a *growing*
//! state: ONNX Runtime allocates a longer present every step, which replaces the past) or fixed
//! sizes only (an *in-place* state, `--kv-cache in-place`: a buffer of the cache's capacity,
//! allocated once per state with ONNX Runtime's allocator and bound as both the past input and
//! the present output, so the graph writes the new tokens into it and nothing is copied; the
//! graph then takes the tokens already seen as `cache_length`).

use super::step::DecoderStep;
use crate::error::{Error, Result};
use dalle_bundle::io::decoder::{
    CACHE_LENGTH, IMAGE_LOGITS, INPUT_IDS, KV_CAPACITY_ATTRIBUTE, LOGITS, present_for,
};
use dalle_bundle::io::dims::PAST_SEQUENCE;
use dalle_bundle::{DType, Dim, GraphRole, GraphSpec, TokenLayout};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, IxDyn};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor, ValueType};
use std::time::{Duration, Instant};

const ROLE: GraphRole = GraphRole::Decoder;

/// One state input and the output that replaces it.
#[derive(Clone, Debug)]
struct StatePair {
    past: String,
    present: String,
    /// Dims after axis 0; `None` marks the past-length axis (none: an in-place state).
    dims: Vec<Option<usize>>,
}

impl StatePair {
    /// A fixed-size buffer bound as both past and present.
    fn in_place(&self) -> bool {
        self.dims.iter().all(Option::is_some)
    }
}

/// The state pairs of a decoder graph, from its manifest entry (in manifest order).
fn state_pairs(spec: &GraphSpec) -> Result<Vec<StatePair>> {
    let mut pairs = vec![];
    for input in spec.inputs.iter().filter(|t| t.name.starts_with("past_")) {
        let name = &input.name;
        let present = present_for(name)
            .filter(|p| spec.output(p).is_some())
            .ok_or_else(|| {
                Error::tensor(ROLE, name, "state input has no matching `present` output")
            })?;
        if input.dtype != DType::F32 {
            return Err(Error::tensor(
                ROLE,
                name,
                format!(
                    "state is {}; this runtime handles float32 state",
                    input.dtype
                ),
            ));
        }
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
        if dims.iter().filter(|d| d.is_none()).count() > 1 {
            return Err(Error::tensor(
                ROLE,
                name,
                format!("has more than one `{PAST_SEQUENCE}` axis"),
            ));
        }
        pairs.push(StatePair {
            past: name.clone(),
            present,
            dims,
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

/// The capacity of an in-place cache: manifest attribute `kv_capacity`, required (with the
/// `cache_length` input) exactly when some state input is in place.
fn in_place_capacity(spec: &GraphSpec, pairs: &[StatePair]) -> Result<Option<usize>> {
    let in_place = pairs.iter().find(|p| p.in_place());
    let has_length = spec.input(CACHE_LENGTH).is_some();
    match (in_place, has_length) {
        (None, false) => Ok(None),
        (None, true) => Err(Error::tensor(
            ROLE,
            CACHE_LENGTH,
            "is an input but no state input is a fixed-size (in-place) cache",
        )),
        (Some(p), false) => Err(Error::tensor(
            ROLE,
            &p.past,
            format!(
                "has no `{PAST_SEQUENCE}` axis (an in-place cache) but the graph has no `{CACHE_LENGTH}` input"
            ),
        )),
        (Some(p), true) => {
            let capacity = spec
                .attributes
                .get(KV_CAPACITY_ATTRIBUTE)
                .and_then(serde_json::Value::as_u64)
                .and_then(|c| usize::try_from(c).ok())
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
            Ok(Some(capacity))
        }
    }
}

/// The decoder session with its binding. See the module docs.
pub struct OrtDecoder<'s> {
    session: &'s mut Session,
    binding: IoBinding,
    memory: MemoryInfo<'static>,
    pairs: Vec<StatePair>,
    logits: LogitsSource,
    /// `Some(tokens)` when the caches are updated in place.
    capacity: Option<usize>,
    /// The state whose in-place buffers are bound now (bindings persist between runs).
    bound_state: Option<u64>,
}

/// The `past_*` values of every row, in state-pair order, owned by ONNX Runtime after the
/// first step.
pub struct OrtState {
    values: Vec<DynValue>,
    rows: usize,
    past_length: usize,
    /// Unique per state: the in-place buffers stay bound while the same state steps.
    id: u64,
}

/// A fresh [`OrtState::id`].
fn next_state_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl OrtState {
    /// Rows (batch entries) of the state.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens seen so far.
    pub fn past_length(&self) -> usize {
        self.past_length
    }
}

impl<'s> OrtDecoder<'s> {
    /// Wraps a `decoder` session; `spec` is its manifest entry.
    pub fn new(
        session: &'s mut Session,
        spec: &GraphSpec,
        layout: &TokenLayout,
    ) -> Result<OrtDecoder<'s>> {
        let pairs = state_pairs(spec)?;
        let capacity = in_place_capacity(spec, &pairs)?;
        let logits = LogitsSource::of(spec, layout)?;
        let binding = session
            .create_binding()
            .map_err(|e| Error::ort("graph `decoder`: cannot create an IoBinding", e))?;
        let memory = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| Error::ort("graph `decoder`: cannot describe CPU memory", e))?;
        Ok(OrtDecoder {
            session,
            binding,
            memory,
            pairs,
            logits,
            capacity,
            bound_state: None,
        })
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

    /// A state buffer allocated by ONNX Runtime (only such values can be bound as outputs,
    /// which in-place states are), its contents written by `fill`.
    fn allocate(
        &self,
        pair: &StatePair,
        shape: &[usize],
        fill: impl FnOnce(&mut [f32]) -> Result<()>,
    ) -> Result<DynValue> {
        let err = |e| Error::ort(format!("graph `decoder`: allocating `{}`", pair.past), e);
        let mut t = Tensor::<f32>::new(self.session.allocator(), shape.to_vec()).map_err(err)?;
        fill(t.extract_tensor_mut().1)?;
        Ok(t.into_dyn())
    }

    fn bind(&mut self, ids: Tensor<i64>, state: &mut OrtState) -> Result<()> {
        let err = |name: &str, e: ort::Error| {
            Error::ort(format!("graph `decoder`: cannot bind `{name}`"), e)
        };
        self.binding
            .bind_input(INPUT_IDS, &ids)
            .map_err(|e| err(INPUT_IDS, e))?;
        if self.capacity.is_some() {
            let length = i64::try_from(state.past_length)
                .map_err(|_| Error::InvalidInput("past length overflows i64".into()))?;
            let length =
                Tensor::from_array(([1usize], vec![length])).map_err(|e| err(CACHE_LENGTH, e))?;
            self.binding
                .bind_input(CACHE_LENGTH, &length)
                .map_err(|e| err(CACHE_LENGTH, e))?;
        }
        let rebind_in_place = self.bound_state != Some(state.id);
        for (pair, value) in self.pairs.iter().zip(state.values.iter_mut()) {
            if pair.in_place() && !rebind_in_place {
                continue;
            }
            self.binding
                .bind_input(pair.past.as_str(), &*value)
                .map_err(|e| err(&pair.past, e))?;
            if pair.in_place() {
                // The same buffer as the past: the graph writes the new tokens into it.
                self.binding
                    .bind_output(pair.present.as_str(), value)
                    .map_err(|e| err(&pair.present, e))?;
            } else {
                // Re-bound every step: the present grows, so ONNX Runtime must allocate it anew.
                self.binding
                    .bind_output_to_device(pair.present.as_str(), &self.memory)
                    .map_err(|e| err(&pair.present, e))?;
            }
        }
        self.bound_state = Some(state.id);
        let logits = self.logits.name();
        self.binding
            .bind_output_to_device(logits, &self.memory)
            .map_err(|e| err(logits, e))
    }

    /// One run of the graph on validated ids.
    fn run_step(
        &mut self,
        input_ids: ArrayView2<'_, i64>,
        state: &mut OrtState,
        logits: &mut Array2<f32>,
    ) -> Result<Duration> {
        let (rows, sequence) = input_ids.dim();
        let ids = Tensor::from_array(input_ids.to_owned())
            .map_err(|e| Error::ort("graph `decoder`: cannot create `input_ids`", e))?;
        self.bind(ids, state)?;

        let started = Instant::now();
        let mut outputs = self
            .session
            .run_binding(&self.binding)
            .map_err(|e| Error::ort("graph `decoder`: run failed", e))?;
        let model_time = started.elapsed();

        let total = state.past_length + sequence;
        for (pair, slot) in self.pairs.iter().zip(state.values.iter_mut()) {
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
                        format!("is {other:?}; expected float32 {want:?}"),
                    ));
                }
            }
            *slot = value;
        }
        state.past_length = total;

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
        for (r, mut out) in logits.outer_iter_mut().enumerate() {
            let start = base + r * stride;
            let last = data
                .get(start..start + width)
                .ok_or_else(|| Error::tensor(ROLE, name, "is shorter than its shape"))?;
            out.iter_mut().zip(last).for_each(|(o, &x)| *o = x);
        }
        Ok(model_time)
    }
}

impl DecoderStep for OrtDecoder<'_> {
    type State = OrtState;

    fn empty_state(&mut self, rows: usize) -> Result<OrtState> {
        let values = self
            .pairs
            .iter()
            .map(|pair| {
                let shape = self.shape(pair, rows, 0);
                if pair.in_place() {
                    return self.allocate(pair, &shape, |data| {
                        data.fill(0.0);
                        Ok(())
                    });
                }
                Tensor::from_array(ArrayD::<f32>::zeros(IxDyn(&shape)))
                    .map(|t| t.into_dyn())
                    .map_err(|e| Error::ort(format!("graph `decoder`: empty `{}`", pair.past), e))
            })
            .collect::<Result<_>>()?;
        Ok(OrtState {
            values,
            rows,
            past_length: 0,
            id: next_state_id(),
        })
    }

    /// The one host copy of the state: the prefilled prompt's rows, repeated per candidate.
    fn select_rows(&mut self, state: &OrtState, rows: &[usize]) -> Result<OrtState> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= state.rows) {
            return Err(Error::InvalidInput(format!(
                "state row {bad} requested from a {}-row state",
                state.rows
            )));
        }
        let values = self
            .pairs
            .iter()
            .zip(&state.values)
            .map(|(pair, value)| {
                let view = value.try_extract_array::<f32>().map_err(|e| {
                    Error::tensor(ROLE, &pair.present, format!("cannot read it as float: {e}"))
                })?;
                if pair.in_place() {
                    // Whole rows (the full capacity) copied with memcpy: every element of the
                    // new buffer is written, so it needs no zeroing first.
                    let source = view.as_slice().ok_or_else(|| {
                        Error::tensor(ROLE, &pair.past, "state buffer is not contiguous")
                    })?;
                    let row_len = pair.dims.iter().flatten().product::<usize>();
                    let shape = self.shape(pair, rows.len(), 0);
                    return self.allocate(pair, &shape, |data| {
                        for (chunk, &r) in data.chunks_exact_mut(row_len.max(1)).zip(rows) {
                            let row =
                                source.get(r * row_len..(r + 1) * row_len).ok_or_else(|| {
                                    Error::tensor(ROLE, &pair.past, "state buffer is too short")
                                })?;
                            chunk.copy_from_slice(row);
                        }
                        Ok(())
                    });
                }
                Tensor::from_array(view.select(Axis(0), rows))
                    .map(|t| t.into_dyn())
                    .map_err(|e| Error::ort(format!("graph `decoder`: copying `{}`", pair.past), e))
            })
            .collect::<Result<_>>()?;
        Ok(OrtState {
            values,
            rows: rows.len(),
            past_length: state.past_length,
            id: next_state_id(),
        })
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
        if let Some(capacity) = self.capacity
            && state.past_length + sequence > capacity
        {
            return Err(Error::InvalidInput(format!(
                "the decoder's in-place cache holds {capacity} tokens; {} seen + {sequence} new \
                 would overflow it",
                state.past_length
            )));
        }
        if self.capacity.is_some() && rows > 1 && sequence > 1 && state.past_length > 0 {
            // GroupQueryAttention's CPU kernel takes several new tokens after a past for one
            // row only (priming a batch): feed them one at a time.
            let mut model_time = Duration::ZERO;
            for t in 0..sequence {
                let column = input_ids.slice_axis(Axis(1), ndarray::Slice::from(t..t + 1));
                model_time += self.run_step(column, state, logits)?;
            }
            return Ok(model_time);
        }
        self.run_step(input_ids, state, logits)
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
        assert_eq!(in_place_capacity(&s, &pairs).unwrap(), Some(5));

        let no_capacity = spec(vec![fixed(), length()], &outputs);
        let e = in_place_capacity(&no_capacity, &state_pairs(&no_capacity).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("kv_capacity"), "{e}");

        let no_length = spec(vec![fixed()], &outputs);
        let e = in_place_capacity(&no_length, &state_pairs(&no_length).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cache_length`"), "{e}");

        let stray = spec(vec![growing(), length()], &outputs);
        let e = in_place_capacity(&stray, &state_pairs(&stray).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no state input is a fixed-size"), "{e}");

        let concat = spec(vec![growing()], &outputs);
        assert_eq!(
            in_place_capacity(&concat, &state_pairs(&concat).unwrap()).unwrap(),
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
