//! `dalle`: runs an exported DALL·E-1 bundle with ONNX Runtime (CPU, CUDA, TensorRT).
//!
//! Data flow:
//!
//! ```text
//! bundle dir ──► Bundle::open (manifest.json, validated by dalle-bundle)
//!                  │
//!   ort_lib::load  │  (libonnxruntime found via --ort-lib / ORT_DYLIB_PATH / .onnxruntime/)
//!                  ▼
//!   ep::register::resolve (--ep cpu|cuda|tensorrt|auto) ─► ep::plan_for_graph (per graph,
//!                  │                                        TensorRT profiles from dim_ranges)
//!                  ▼
//!   Bundle::session(role) ─► GraphSession::load ─► contract::check_graph (manifest vs file)
//!                  │
//!                  ├─► dvae::encode: image ─► preprocess (resize, crop, CHW) ─► image_tokens ─► npy
//!                  └─► dvae::decode: npy ─► image_tokens (range-checked) ─► pixels ─► PNG
//! ```
//!
//! Text-to-image generation runs on the [`engine`]: a request is validated once
//! ([`engine::RequestRules`]), its prompt prefilled once, and its candidates' rows stepped
//! together with any other request's in shared decoder calls (per-candidate sampling in
//! [`sampling`]; the decoder's state kept in ONNX Runtime values, on the GPU with CUDA and
//! TensorRT, as [`ep::plan_decoder`] plans it, [`generate::OrtDecoder`]) →
//! `dvae_decoder` → PNGs, grid and a JSON sidecar ([`generate`]); with `--rerank K`, [`clip`]
//! scores every candidate from the decoded pixels and only the best K are written. Every output
//! file is written atomically and never through a symlink ([`atomic`]); every PNG carries its
//! generation parameters in a text chunk ([`pngtext`], [`generate::ImageParameters`]).
//!
//! [`serve`] puts the engine behind an OpenAI-compatible HTTP API (`dalle-ort serve`): one engine
//! thread batching every client's rows, fed through a bounded queue.
//!
//! Library code returns [`Error`] (thiserror); the `dalle-ort` binary wraps it in `anyhow`.
//! Pure parts (execution-provider plans, the manifest/graph diff, `.npy` and image conversion)
//! are unit-tested without ONNX Runtime.

pub mod atomic;
pub mod bundle;
pub mod clip;
pub mod contract;
pub mod dvae;
pub mod engine;
pub mod ep;
pub mod error;
pub mod generate;
pub mod npy;
pub mod ort_lib;
pub mod pngtext;
pub mod preprocess;
pub mod sampling;
pub mod serve;
pub mod session;
pub mod shapes;
pub mod tokenizer;

pub use bundle::Bundle;
pub use ep::{EpChoice, EpOptions, ProviderKind};
pub use error::{Error, Result};
pub use session::GraphSession;
pub use tokenizer::{Encoded, TextCleanup, TextTokenizer};
