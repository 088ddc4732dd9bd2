//! Helpers shared by the integration tests: fixture paths, ONNX Runtime setup, tolerances.
