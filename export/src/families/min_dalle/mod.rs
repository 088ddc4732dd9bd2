//! DALL·E mini/mega as kuprel/min-dalle 0.4.11 runs them (facts: `shared/reference/models.md`
//! §3, `gpu-and-minidalle.md` §4): `encoder.pt` and `decoder.pt` (plain `torch.save`d state
//! dicts, fp16 in the released files), `vocab.json` and `merges.txt`; `detoker.pt` is the VQGAN
//! image decoder (its own family).
//!
//! Three graphs:
//! - `text_encoder` ([`encoder`]): the BART encoder with min-dalle's extra LayerNorms and GLU
//!   feed-forward, `input_ids [B, 64]` → `encoder_hidden_states`;
//! - `cross_kv` ([`cross_kv`]): every decoder layer's cross-attention keys and values (and the
//!   text padding bias) from the encoder states, **once per prompt** (min-dalle recomputes them
//!   every step in every layer);
//! - `decoder` ([`decoder`]): one step of the BART decoder with a self-attention KV cache in
//!   DALLE-pytorch's two layouts (`--kv-cache concat`, standard ONNX for CUDA/TensorRT, one past
//!   length per call; `in-place`, GroupQueryAttention with per-row positions) and the
//!   cross-attention state fed as constant inputs, returning the last position's logits over
//!   the image codes.
//!
//! Sizes are read from the tensor shapes ([`config`]); only the head count is not in the files
//! (head dim 64, as both released models, unless `--heads` says otherwise).

mod bundle;
pub mod config;
pub mod cross_kv;
pub mod decoder;
pub mod encoder;
pub mod names;
mod weights;

pub use bundle::{BundleOptions, ModelFiles, add_to_bundle, describe};
pub use config::MinDalleConfig;
pub use weights::{Model, load};
