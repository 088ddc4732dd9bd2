//! The integration test binary (one binary: one link, shared ONNX Runtime environment).
//! Each module states what it covers; fixtures live in `python-free-tests/fixtures/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Graph builder: small graphs run in ORT against hand-computed numbers, determinism,
/// external data, validation rules, wiring errors, text dump.
mod builder;

/// OpenAI dVAE: parity with the reference fixtures (pkl and safetensors), bad-input errors,
/// atomic bundles.
mod dvae;

/// Bundles: byte-identical re-export, external data through the runtime, manifest/session
/// mismatch reports, atomic replacement.
mod bundle;

/// Text tokenizer: the exporter's CLIP BPE `tokenizer.json` run by the runtime matches
/// DALLE-pytorch's `SimpleTokenizer` (cleaned text, ids, counts, truncation reports).
mod tokenizer;

/// DALLE-pytorch DiscreteVAE: parity of both graphs with train_vae.py and train_dalle.py fixtures.
mod discrete_vae;

/// DALLE-pytorch transformer: the KV-cache decoder graph reproduces the reference logits
/// teacher-forced and token by token, for every supported option.
mod dalle_pytorch;

/// Generation on ONNX Runtime: tiny decoder graph + random dVAE, batching, guidance, priming.
mod generate;

/// CLIP: exported text/image towers match Hugging Face `CLIPModel` (two configs), token ids
/// match `CLIPTokenizerFast`, preprocessing matches `CLIPImageProcessor`, bad inputs, reranking.
mod clip;

/// Shape-world evaluator: detection, judging and caption parsing on the world's own renders.
mod shapes;

/// The shared group-norm layer: parity with `torch.nn.GroupNorm`, symbolic dims kept, no
/// `GroupNormalization` op (CUDA-less in ONNX Runtime).
mod group_norm;
/// Hostile numbers, names and files: hyperparameters and manifest numbers past their limits,
/// corrupted tensor names, stale staging folders and `--force` recovery give clean errors.
mod hostile;
/// DALL·E mini/mega (min-dalle): encoder states, cross-attention K/V and teacher-forced decoder
/// logits against min-dalle's modules; the bundle tokenizer against min-dalle's `TextTokenizer`.
mod min_dalle;

/// VQGAN codecs: min-dalle's detokenizer and taming-transformers VQModel/GumbelVQ checkpoints
/// against their reference packages.
mod vqgan;

/// `dalle-export check`: exported bundles against the TensorRT / CUDA / CPU support tables,
/// deliberately unsupported graphs named.
mod compat;

/// `--precision`: every family at fp32/fp16/bf16/int8 on the CPU provider: loads exactly where
/// the manifest says, matches float32 within the stated tolerances where it runs.
mod precision;

/// Fuzz corpus replay on stable: every committed fuzz input and seeded mutants through the
/// libFuzzer targets' own functions, in a child under a memory cap (`fuzz/README.md`).
mod fuzz_replay;
