//! One ONNX Runtime session per graph of a bundle, checked against the manifest when created.
//!
//! [`GraphSession::load`] builds the session with the graph's execution-provider plan (file
//! relative to the bundle directory; external data is resolved by ONNX Runtime next to the
//! `.onnx`), then compares the session's real inputs/outputs with the manifest
//! ([`crate::contract`]) and fails with the full list of differences.

use crate::contract::{self, ObservedDim, ObservedTensor, ObservedType};
use crate::ep::{DecoderPhase, EpPlan, ProviderKind, register};
use crate::error::{Error, Result};
use dalle_bundle::{DType, GraphRole, GraphSpec};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Outlet;
use ort::value::{TensorElementType, ValueType};
use std::path::{Path, PathBuf};

/// A loaded graph: its manifest entry, the session, and the provider it runs on.
pub struct GraphSession {
    role: GraphRole,
    spec: GraphSpec,
    path: PathBuf,
    provider: ProviderKind,
    session: Session,
}

impl GraphSession {
    /// Creates the session for `spec` (a graph of the bundle in `bundle_dir`) and checks it
    /// against the manifest.
    pub fn load(
        env: &Environment,
        bundle_dir: &Path,
        role: GraphRole,
        spec: &GraphSpec,
        plan: &EpPlan,
    ) -> Result<GraphSession> {
        let path = bundle_dir.join(&spec.file);
        if !path.is_file() {
            return Err(Error::GraphFileMissing { role, path });
        }
        if let Some(data) = &spec.external_data {
            let data_path = bundle_dir.join(data);
            if !data_path.is_file() {
                return Err(Error::GraphFileMissing {
                    role,
                    path: data_path,
                });
            }
        }
        let builder = Session::builder(env)
            .map_err(|e| Error::ort(format!("graph `{role}`: cannot create session options"), e))?;
        let mut builder = register::apply(builder, plan, role)?;
        let session = builder.commit_from_file(&path).map_err(|e| {
            Error::ort(format!("graph `{role}`: cannot load {}", path.display()), e)
        })?;
        let inputs: Vec<ObservedTensor> = session.inputs().iter().map(observe).collect();
        let outputs: Vec<ObservedTensor> = session.outputs().iter().map(observe).collect();
        contract::check_graph(role, path.clone(), spec, &inputs, &outputs)?;
        match plan.phase {
            DecoderPhase::All => {
                tracing::info!("graph {role}: loaded {} on {}", path.display(), plan.kind)
            }
            phase => tracing::info!(
                "graph {role}: loaded {} on {} ({phase} session)",
                path.display(),
                plan.kind
            ),
        }
        Ok(GraphSession {
            role,
            spec: spec.clone(),
            path,
            provider: plan.kind,
            session,
        })
    }

    pub fn role(&self) -> GraphRole {
        self.role
    }

    /// The graph's manifest entry.
    pub fn spec(&self) -> &GraphSpec {
        &self.spec
    }

    /// The `.onnx` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The execution provider the session was created for.
    pub fn provider(&self) -> ProviderKind {
        self.provider
    }

    /// The inputs as the ONNX file declares them.
    pub fn observed_inputs(&self) -> Vec<ObservedTensor> {
        self.session.inputs().iter().map(observe).collect()
    }

    /// The outputs as the ONNX file declares them.
    pub fn observed_outputs(&self) -> Vec<ObservedTensor> {
        self.session.outputs().iter().map(observe).collect()
    }

    /// The ONNX Runtime session, handed over.
    pub fn into_session(self) -> Session {
        self.session
    }

    /// The `ort` session, to run it.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// A session input/output in the contract's terms.
pub fn observe(outlet: &Outlet) -> ObservedTensor {
    match outlet.dtype() {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let dims = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match u64::try_from(d) {
                    Ok(n) => ObservedDim::Fixed(n),
                    Err(_) => ObservedDim::Dynamic(
                        dimension_symbols.get(i).filter(|s| !s.is_empty()).cloned(),
                    ),
                })
                .collect();
            ObservedTensor {
                name: outlet.name().to_string(),
                dtype: element_type(*ty),
                dims,
            }
        }
        other => ObservedTensor {
            name: outlet.name().to_string(),
            dtype: ObservedType::Other(match other {
                ValueType::Sequence(_) => "sequence".to_string(),
                ValueType::Map { .. } => "map".to_string(),
                ValueType::Optional(_) => "optional".to_string(),
                ValueType::Tensor { .. } => "tensor".to_string(),
            }),
            dims: vec![],
        },
    }
}

fn element_type(ty: TensorElementType) -> ObservedType {
    let dtype = match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float16 => DType::F16,
        TensorElementType::Bfloat16 => DType::BF16,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int8 => DType::I8,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        other => return ObservedType::Other(format!("{other:?}").to_lowercase()),
    };
    ObservedType::Tensor(dtype)
}
