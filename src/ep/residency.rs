//! Where the decoder's tensors live between and during calls, as data.
//!
//! On the CPU everything is host memory, as before. On CUDA and TensorRT the decoder state
//! (`past_*` inputs and the `present_*` outputs that replace them) stays in device memory from
//! one step to the next: in-place caches and empty pasts are allocated with a device allocator
//! created on the session (`ort::memory::Allocator::new(&session, cuda memory info)`: a
//! session's own `allocator()` is always the CPU one), and every `present_*` is bound to the
//! device. Only the ids (and `cache_length`) go host → device each call, and only the logits
//! come back — with an `image_logits` output that is the last position's image logits alone
//! (`[rows, image_vocab]`), with a full `logits` output every position's whole vocabulary (the
//! plan says which). Moving rows between states (a prompt's rows into the running batch, a
//! concatenated layout's regrouping) goes through host memory on a device; that happens when
//! rows join or leave, not every step.
//!
//! A min-dalle decoder also takes **constant state** (`cross_*`: every layer's cross-attention
//! keys/values and the text padding bias, [`is_constant_state`]). It lives with the rest of the
//! state: the `cross_kv` graph's outputs are bound to the state's place (the device's on a
//! GPU) and become the prompt state's inputs as they are, bound to the decoder once per state
//! (not per step) and never written by it; only rows joining a running state copy them (through
//! the host on a device, as every row move).
//!
//! [`super::register::memory_info`] turns a [`MemoryPlace`] into `ort`'s `MemoryInfo`.

use super::ProviderKind;
use dalle_bundle::GraphSpec;
use dalle_bundle::io::decoder::{IMAGE_LOGITS, LOGITS};
use dalle_bundle::io::min_dalle::is_constant_state;
use std::fmt;

/// A memory location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryPlace {
    /// Host (CPU) memory.
    Host,
    /// CUDA device memory on device `device_id`.
    Cuda { device_id: u32 },
}

impl MemoryPlace {
    /// Whether the host can read it directly.
    pub fn is_host(self) -> bool {
        self == MemoryPlace::Host
    }
}

impl fmt::Display for MemoryPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryPlace::Host => f.write_str("host"),
            MemoryPlace::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

/// What crosses between host and device for one decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderMemoryPlan {
    /// Where the `past_*`/`present_*` state lives (allocated and bound there).
    pub state: MemoryPlace,
    /// Where `input_ids` and `cache_length` are created (ONNX Runtime copies them in).
    pub inputs: MemoryPlace,
    /// Where the logits output is bound: always the host, the sampler reads it.
    pub logits: MemoryPlace,
    /// The logits output the decoder graph has (`image_logits` or `logits`).
    pub logits_output: &'static str,
    /// True when that output is the last position's image logits only (`image_logits`).
    pub logits_last_position_only: bool,
    /// Rows moving between states pass through host memory (device state).
    pub row_moves_through_host: bool,
    /// Where the constant state (`cross_*` inputs) lives — the state's place, where the
    /// `cross_kv` graph's outputs are bound — when the decoder has any (see the module docs).
    pub constant_state: Option<MemoryPlace>,
}

/// The memory plan of a decoder graph on `kind`.
pub fn decoder_memory(kind: ProviderKind, device_id: u32, spec: &GraphSpec) -> DecoderMemoryPlan {
    let state = match kind {
        ProviderKind::Cpu => MemoryPlace::Host,
        ProviderKind::Cuda | ProviderKind::TensorRt => MemoryPlace::Cuda { device_id },
    };
    let last_only = spec.output(IMAGE_LOGITS).is_some() || spec.output(LOGITS).is_none();
    DecoderMemoryPlan {
        state,
        inputs: MemoryPlace::Host,
        logits: MemoryPlace::Host,
        logits_output: if last_only { IMAGE_LOGITS } else { LOGITS },
        logits_last_position_only: last_only,
        row_moves_through_host: !state.is_host(),
        constant_state: spec
            .inputs
            .iter()
            .any(|t| is_constant_state(&t.name))
            .then_some(state),
    }
}

impl DecoderMemoryPlan {
    /// The plan of a CPU decoder (everything on the host).
    pub fn host(spec: &GraphSpec) -> DecoderMemoryPlan {
        decoder_memory(ProviderKind::Cpu, 0, spec)
    }

    /// One line per fact, for `dalle-ort info` and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "state (past_*/present_*): {}{}",
                self.state,
                if self.state.is_host() {
                    ""
                } else {
                    ", device allocator on the session, presents bound to the device"
                }
            ),
            format!("inputs (input_ids, cache_length): {}", self.inputs),
            format!(
                "logits: `{}` bound to {}{}",
                self.logits_output,
                self.logits,
                if self.logits_last_position_only {
                    " (the last position's image logits only)"
                } else {
                    " (every position's full vocabulary: export with --logits last-image to \
                     bring back only the last position's image logits)"
                }
            ),
        ];
        if let Some(place) = self.constant_state {
            lines.push(format!(
                "constant state (cross_*): {place}, the cross_kv graph's outputs bound there and \
                 used as they are; bound once per prompt state, never copied per step"
            ));
        }
        if self.row_moves_through_host {
            lines.push("rows joining or leaving a state are moved through host memory".to_string());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dalle_bundle::{DType, TensorSpec};
    use std::collections::BTreeMap;

    fn decoder(outputs: &[&str]) -> GraphSpec {
        decoder_with(&[], outputs)
    }

    fn decoder_with(inputs: &[&str], outputs: &[&str]) -> GraphSpec {
        GraphSpec {
            file: "decoder.onnx".into(),
            external_data: None,
            inputs: inputs
                .iter()
                .map(|n| TensorSpec::new(*n, DType::F32, vec![]))
                .collect(),
            outputs: outputs
                .iter()
                .map(|n| TensorSpec::new(*n, DType::F32, vec![]))
                .collect(),
            dim_ranges: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn the_cpu_keeps_everything_on_the_host() {
        let plan = decoder_memory(ProviderKind::Cpu, 3, &decoder(&[IMAGE_LOGITS]));
        assert_eq!(plan.state, MemoryPlace::Host);
        assert_eq!(plan.inputs, MemoryPlace::Host);
        assert_eq!(plan.logits, MemoryPlace::Host);
        assert!(!plan.row_moves_through_host);
        assert_eq!(plan, DecoderMemoryPlan::host(&decoder(&[IMAGE_LOGITS])));
    }

    #[test]
    fn gpu_providers_keep_the_state_on_their_device_and_read_back_logits_only() {
        for kind in [ProviderKind::Cuda, ProviderKind::TensorRt] {
            let plan = decoder_memory(kind, 2, &decoder(&[IMAGE_LOGITS, "present.0.key"]));
            assert_eq!(plan.state, MemoryPlace::Cuda { device_id: 2 });
            assert_eq!(plan.inputs, MemoryPlace::Host);
            assert_eq!(plan.logits, MemoryPlace::Host);
            assert_eq!(plan.logits_output, IMAGE_LOGITS);
            assert!(plan.logits_last_position_only);
            assert!(plan.row_moves_through_host);
            let text = plan.describe().join("\n");
            assert!(
                text.contains("cuda:2") && text.contains("last position"),
                "{text}"
            );
        }
    }

    #[test]
    fn min_dalle_constant_state_lives_with_the_state_and_is_bound_once() {
        let spec = decoder_with(
            &[
                "input_ids",
                "past_key_values.0.key",
                "cross_key_values.0.key",
                "cross_attention_bias",
            ],
            &[IMAGE_LOGITS, "present.0.key"],
        );
        for (kind, place) in [
            (ProviderKind::Cpu, MemoryPlace::Host),
            (ProviderKind::Cuda, MemoryPlace::Cuda { device_id: 1 }),
            (ProviderKind::TensorRt, MemoryPlace::Cuda { device_id: 1 }),
        ] {
            let plan = decoder_memory(kind, 1, &spec);
            assert_eq!(plan.constant_state, Some(place));
            assert_eq!(plan.constant_state, Some(plan.state));
            let text = plan.describe().join("\n");
            assert!(
                text.contains(&format!("constant state (cross_*): {place}"))
                    && text.contains("never copied per step"),
                "{text}"
            );
        }
        // DALLE-pytorch decoders have none
        let plan = decoder_memory(ProviderKind::Cuda, 0, &decoder(&[IMAGE_LOGITS]));
        assert_eq!(plan.constant_state, None);
        assert!(!plan.describe().join("\n").contains("constant state"));
    }

    #[test]
    fn a_full_logits_output_is_said_to_come_back_whole() {
        let plan = decoder_memory(ProviderKind::Cuda, 0, &decoder(&[LOGITS]));
        assert_eq!(plan.logits_output, LOGITS);
        assert!(!plan.logits_last_position_only);
        assert!(
            plan.describe()
                .iter()
                .any(|l| l.contains("--logits last-image"))
        );
    }
}
