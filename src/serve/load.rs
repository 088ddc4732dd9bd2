//! Loading the model for serving: open the bundle, read its request rules, create the decoder
//! and dVAE sessions (and the image encoder's and CLIP's when the bundle has them), and warm up:
//! one image decode (which also tells the image size the API advertises) and a few decoder steps
//! of a throw-away request. `/ready` answers 200 only after this, so the first client request
//! never pays for session creation.

use super::state::{ModelInfo, Settings};
use super::worker::Loaded;
use crate::engine::{
    Engine, EngineError, ImageTokenModel, OrtModel, PromptInput, Request, RequestRules,
    SamplingOverrides,
};
use crate::ep::EpOptions;
use crate::error::{Error, Result};
use crate::{Bundle, clip};
use dalle_bundle::GraphRole;
use std::path::Path;
use std::sync::Arc;

fn engine_error(e: EngineError) -> Error {
    match e {
        EngineError::Internal(e) => e,
        EngineError::Request(r) => Error::InvalidInput(format!("warm-up request: {r}")),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// See the module docs. ONNX Runtime must be loaded already.
pub fn load(dir: &Path, options: EpOptions, settings: &Settings) -> Result<Loaded> {
    let bundle = Bundle::open(dir, options)?;
    bundle.manifest().graph(GraphRole::Decoder)?;
    let mut rules = RequestRules::from_bundle(&bundle)?;
    rules.max_candidates = settings.max_candidates;
    let (model, _) = OrtModel::from_bundle(bundle, None)?;
    let mut engine = Engine::new(model, settings.max_batch_rows);
    let g = engine.model().geometry();
    let pixels = engine.model_mut().decode_images(&[vec![0; g.tokens()]])?;
    let (height, width) = (pixels.shape()[2], pixels.shape()[3]);
    if rules.image_encoder {
        engine
            .model_mut()
            .bundle_mut()
            .session(GraphRole::DvaeEncoder)?;
    }
    if rules.clip {
        clip::score(engine.model_mut().bundle_mut(), "warm-up", pixels.view())?;
    }
    let warm = Request {
        prompt: PromptInput::Ids(vec![]),
        candidates: 1,
        sampling: SamplingOverrides {
            seed: Some(0),
            cond_scale: Some(1.0),
            ..SamplingOverrides::default()
        },
        init: None,
        rerank: None,
    };
    let warm = rules
        .validate(warm)
        .map_err(|e| Error::InvalidInput(format!("warm-up request: {e}")))?;
    let id = engine.admit(warm).map_err(engine_error)?;
    for _ in 0..3 {
        engine.step().map_err(engine_error)?;
    }
    engine.cancel(id);
    engine.step().map_err(engine_error)?;
    engine.stats = Default::default();
    let size = |v: usize| {
        u32::try_from(v).map_err(|_| Error::InvalidInput(format!("image size {v} too large")))
    };
    let info = ModelInfo {
        rules,
        width: size(width)?,
        height: size(height)?,
        grid: g.grid,
        max_rows: engine.max_rows(),
        created: unix_now(),
    };
    Ok(Loaded {
        engine,
        info: Arc::new(info),
    })
}
