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
