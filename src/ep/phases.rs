//! One decoder session per phase on TensorRT: prefill and decode, each with its own
//! optimization profile.
//!
//! ONNX Runtime 1.31's TensorRT provider builds every profile it is given, but its execution
//! context stays on profile 0, so inputs that only fit another profile fail
//! (microsoft/onnxruntime#31624, open). A decoder's two kinds of call have very different
//! shapes — prefill feeds a whole prompt after an empty past, decode one token after a past of up
//! to the model's length — so on TensorRT each gets its own session with one profile narrowed
//! from the manifest's `dim_ranges` ([`phase_ranges`]), and its own engine-cache prefix
//! ([`DecoderPhase::cache_prefix`]), since the same graph with other profiles is another engine.
//! Every other provider, and every other graph, runs one session for all calls
//! ([`DecoderPhase::All`]).
//!
//! [`route`] says which session runs a call, and whether a call that feeds several tokens after a
//! past must be fed one token at a time (the decode profile takes one).

use super::ProviderKind;
use crate::error::{Error, Result};
use dalle_bundle::io::dims::{BATCH, PAST_SEQUENCE, SEQUENCE};
use dalle_bundle::{DimRange, GraphRole, GraphSpec};
use std::collections::BTreeMap;
use std::fmt;

/// Which calls a decoder session takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecoderPhase {
    /// Every call (one session).
    All,
    /// Calls after an empty past (a prompt).
    Prefill,
    /// One new token after a non-empty past.
    Decode,
}

impl DecoderPhase {
    pub fn name(self) -> &'static str {
        match self {
            DecoderPhase::All => "all",
            DecoderPhase::Prefill => "prefill",
            DecoderPhase::Decode => "decode",
        }
    }

    /// The engine-cache file prefix of this phase's session of the `role` graph.
    pub fn cache_prefix(self, role: GraphRole) -> String {
        match self {
            DecoderPhase::All => role.name().to_string(),
            phase => format!("{}_{}", role.name(), phase.name()),
        }
    }
}

impl fmt::Display for DecoderPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The decoder sessions a provider gets, in the order they are created.
pub fn decoder_phases(kind: ProviderKind) -> &'static [DecoderPhase] {
    match kind {
        ProviderKind::TensorRt => &[DecoderPhase::Prefill, DecoderPhase::Decode],
        ProviderKind::Cpu | ProviderKind::Cuda => &[DecoderPhase::All],
    }
}

/// How one decoder call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The session that runs it.
    pub phase: DecoderPhase,
    /// Feed the call's tokens one at a time (the decode profile takes a single token).
    pub one_token_at_a_time: bool,
}

/// The session for a call feeding `sequence` tokens after `past` (the longest row's) tokens,
/// among the sessions `phases` (from [`decoder_phases`]).
pub fn route(phases: &[DecoderPhase], past: usize, sequence: usize) -> Route {
    if phases.contains(&DecoderPhase::All) || phases.is_empty() {
        return Route {
            phase: DecoderPhase::All,
            one_token_at_a_time: false,
        };
    }
    if past == 0 {
        Route {
            phase: DecoderPhase::Prefill,
            one_token_at_a_time: false,
        }
    } else {
        Route {
            phase: DecoderPhase::Decode,
            one_token_at_a_time: sequence > 1,
        }
    }
}

/// The dim ranges of `phase`'s session: the manifest's, narrowed.
///
/// - prefill: the past is empty (`past_sequence_length` 0); the prompt length is optimized for
///   (`prefill_sequence`: BOS + the text, clamped into the `sequence` range) and the batch for
///   the 2 rows of a guided prompt (one prompt is prefilled at a time: 1 row, 2 with guidance);
/// - decode: one token (`sequence` 1) after a past of at least 1.
pub fn phase_ranges(
    phase: DecoderPhase,
    role: GraphRole,
    spec: &GraphSpec,
    prefill_sequence: Option<u64>,
) -> Result<BTreeMap<String, DimRange>> {
    let mut ranges = spec.dim_ranges.clone();
    let err = |message: String| Error::EpPlan { role, message };
    match phase {
        DecoderPhase::All => {}
        DecoderPhase::Prefill => {
            if let Some(past) = ranges.get_mut(PAST_SEQUENCE) {
                if past.min > 0 {
                    return Err(err(format!(
                        "dim_ranges.{PAST_SEQUENCE} starts at {}: the prefill session needs an \
                         empty past (0)",
                        past.min
                    )));
                }
                *past = DimRange::new(0, 0, 0);
            }
            if let Some(seq) = ranges.get_mut(SEQUENCE) {
                let opt = prefill_sequence.unwrap_or(seq.max);
                seq.opt = opt.clamp(seq.min, seq.max.max(seq.min));
            }
            if let Some(batch) = ranges.get_mut(BATCH) {
                batch.opt = 2u64.clamp(batch.min, batch.max.max(batch.min));
            }
        }
        DecoderPhase::Decode => {
            if let Some(seq) = ranges.get_mut(SEQUENCE) {
                if seq.min > 1 || seq.max < 1 {
                    return Err(err(format!(
                        "dim_ranges.{SEQUENCE} is {}..={}: the decode session feeds one token",
                        seq.min, seq.max
                    )));
                }
                *seq = DimRange::new(1, 1, 1);
            }
            if let Some(past) = ranges.get_mut(PAST_SEQUENCE) {
                let min = past.min.max(1);
                if min > past.max {
                    return Err(err(format!(
                        "dim_ranges.{PAST_SEQUENCE} ends at {}: the decode session needs a past \
                         of at least 1",
                        past.max
                    )));
                }
                *past = DimRange::new(min, past.opt.clamp(min, past.max), past.max);
            }
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(ranges: &[(&str, (u64, u64, u64))]) -> GraphSpec {
        GraphSpec {
            file: "decoder.onnx".into(),
            external_data: None,
            inputs: vec![],
            outputs: vec![],
            dim_ranges: ranges
                .iter()
                .map(|(n, (a, b, c))| (n.to_string(), DimRange::new(*a, *b, *c)))
                .collect(),
            attributes: BTreeMap::new(),
        }
    }

    /// The shipped model's decoder ranges.
    fn shapes_decoder() -> GraphSpec {
        decoder(&[
            (BATCH, (1, 8, 64)),
            (PAST_SEQUENCE, (0, 79, 79)),
            (SEQUENCE, (1, 1, 80)),
        ])
    }

    #[test]
    fn tensorrt_gets_a_prefill_and_a_decode_session_others_one() {
        assert_eq!(
            decoder_phases(ProviderKind::TensorRt),
            &[DecoderPhase::Prefill, DecoderPhase::Decode]
        );
        assert_eq!(decoder_phases(ProviderKind::Cuda), &[DecoderPhase::All]);
        assert_eq!(decoder_phases(ProviderKind::Cpu), &[DecoderPhase::All]);
    }

    #[test]
    fn prefill_has_an_empty_past_and_optimizes_for_the_prompt() {
        let r = phase_ranges(
            DecoderPhase::Prefill,
            GraphRole::Decoder,
            &shapes_decoder(),
            Some(17),
        )
        .unwrap();
        assert_eq!(r[PAST_SEQUENCE], DimRange::new(0, 0, 0));
        assert_eq!(r[SEQUENCE], DimRange::new(1, 17, 80));
        assert_eq!(r[BATCH], DimRange::new(1, 2, 64));
        // without a token layout the longest prompt is the opt; clamped into the range
        let r = phase_ranges(
            DecoderPhase::Prefill,
            GraphRole::Decoder,
            &shapes_decoder(),
            None,
        )
        .unwrap();
        assert_eq!(r[SEQUENCE].opt, 80);
        let r = phase_ranges(
            DecoderPhase::Prefill,
            GraphRole::Decoder,
            &shapes_decoder(),
            Some(500),
        )
        .unwrap();
        assert_eq!(r[SEQUENCE].opt, 80);
        let one_row = decoder(&[(BATCH, (1, 1, 1))]);
        let r = phase_ranges(DecoderPhase::Prefill, GraphRole::Decoder, &one_row, None).unwrap();
        assert_eq!(r[BATCH], DimRange::new(1, 1, 1));
    }

    #[test]
    fn decode_feeds_one_token_after_a_past_of_at_least_one() {
        let r = phase_ranges(
            DecoderPhase::Decode,
            GraphRole::Decoder,
            &shapes_decoder(),
            Some(17),
        )
        .unwrap();
        assert_eq!(r[SEQUENCE], DimRange::new(1, 1, 1));
        assert_eq!(r[PAST_SEQUENCE], DimRange::new(1, 79, 79));
        assert_eq!(r[BATCH], DimRange::new(1, 8, 64));
    }

    #[test]
    fn all_keeps_the_manifest_ranges() {
        let spec = shapes_decoder();
        let r = phase_ranges(DecoderPhase::All, GraphRole::Decoder, &spec, Some(17)).unwrap();
        assert_eq!(r, spec.dim_ranges);
    }

    #[test]
    fn impossible_phase_ranges_are_errors_naming_the_dim() {
        let e = phase_ranges(
            DecoderPhase::Prefill,
            GraphRole::Decoder,
            &decoder(&[(PAST_SEQUENCE, (3, 5, 9))]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("past_sequence_length") && e.contains("empty past"),
            "{e}"
        );
        let e = phase_ranges(
            DecoderPhase::Decode,
            GraphRole::Decoder,
            &decoder(&[(PAST_SEQUENCE, (0, 0, 0))]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = phase_ranges(
            DecoderPhase::Decode,
            GraphRole::Decoder,
            &decoder(&[(SEQUENCE, (2, 4, 8))]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("one token"), "{e}");
    }

    #[test]
    fn calls_route_to_prefill_on_an_empty_past_else_decode_one_token_at_a_time() {
        let trt = decoder_phases(ProviderKind::TensorRt);
        let r = route(trt, 0, 17);
        assert_eq!(r.phase, DecoderPhase::Prefill);
        assert!(!r.one_token_at_a_time);
        let r = route(trt, 17, 1);
        assert_eq!(r.phase, DecoderPhase::Decode);
        assert!(!r.one_token_at_a_time);
        let r = route(trt, 17, 3);
        assert_eq!(r.phase, DecoderPhase::Decode);
        assert!(r.one_token_at_a_time);
        for (past, sequence) in [(0, 17), (17, 1), (17, 3)] {
            let r = route(decoder_phases(ProviderKind::Cpu), past, sequence);
            assert_eq!(r.phase, DecoderPhase::All);
            assert!(!r.one_token_at_a_time);
        }
    }

    #[test]
    fn each_phase_has_its_own_engine_cache_prefix() {
        assert_eq!(
            DecoderPhase::All.cache_prefix(GraphRole::Decoder),
            "decoder"
        );
        assert_eq!(
            DecoderPhase::Prefill.cache_prefix(GraphRole::Decoder),
            "decoder_prefill"
        );
        assert_eq!(
            DecoderPhase::Decode.cache_prefix(GraphRole::Decoder),
            "decoder_decode"
        );
    }
}
