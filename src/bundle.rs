//! An opened bundle: its directory, validated manifest, and sessions created on demand.
//!
//! [`Bundle::open`] needs no ONNX Runtime (so manifest errors show even without the library);
//! [`Bundle::session`] creates a graph's session the first time it is asked for, with the
//! execution provider resolved once per bundle ([`crate::ep::register::resolve`]) and narrowed
//! per graph to what the graph suits ([`crate::ep::provider_for_graph`]);
//! [`Bundle::take_decoder_sessions`] creates the decoder's sessions (one per phase on TensorRT)
//! with their [`DecoderPlan`]. On TensorRT the engine and timing caches default to the bundle's
//! cache folder ([`crate::ep::cache`]), created here.

use crate::ep::{
    AutoDecision, DecoderMemoryPlan, DecoderPlan, EpOptions, EpPlan, ProviderKind, cache,
    plan_decoder, plan_for_graph, provider_for_graph, register,
};
use crate::error::{Error, Result};
use crate::ort_lib;
use crate::session::GraphSession;
use dalle_bundle::{GraphRole, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How one graph runs: its provider (with a note when it differs from the bundle's or runs
/// poorly there), its sessions' plans and, for the decoder, its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphPlan {
    pub role: GraphRole,
    pub kind: ProviderKind,
    pub note: Option<String>,
    pub sessions: Vec<EpPlan>,
    pub memory: Option<DecoderMemoryPlan>,
}

/// The decoder's sessions, in the order of its plan's sessions.
pub struct DecoderSessions {
    pub plan: DecoderPlan,
    pub sessions: Vec<GraphSession>,
}

/// A bundle directory with its manifest and the sessions created so far.
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    options: EpOptions,
    decision: Option<AutoDecision>,
    sessions: BTreeMap<GraphRole, GraphSession>,
}

impl Bundle {
    /// Reads and validates `dir/manifest.json`; creates no session.
    pub fn open(dir: impl AsRef<Path>, options: EpOptions) -> Result<Bundle> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::BundleDir(dir));
        }
        let manifest = Manifest::read_from_dir(&dir)?;
        Ok(Bundle {
            dir,
            manifest,
            options,
            decision: None,
            sessions: BTreeMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn options(&self) -> &EpOptions {
        &self.options
    }

    /// The execution provider for this bundle's sessions (resolving `auto` on first use). Needs
    /// ONNX Runtime loaded ([`ort_lib::init`]).
    pub fn provider(&mut self) -> Result<&AutoDecision> {
        if self.decision.is_none() {
            let env = ort_lib::environment()?;
            self.decision = Some(register::resolve(
                &env,
                self.options.ep,
                self.options.device_id,
            )?);
        }
        self.decision.as_ref().ok_or(Error::OrtNotLoaded)
    }

    /// The session for `role`, created (and checked against the manifest) on first use.
    pub fn session(&mut self, role: GraphRole) -> Result<&mut GraphSession> {
        if !self.sessions.contains_key(&role) {
            let session = self.load_session(role)?;
            self.sessions.insert(role, session);
        }
        self.sessions.get_mut(&role).ok_or(Error::OrtNotLoaded)
    }

    /// The session for `role`, created if needed and handed over (the bundle no longer holds
    /// it; a later [`Bundle::session`] creates a new one). The engine owns its decoder this way.
    pub fn take_session(&mut self, role: GraphRole) -> Result<GraphSession> {
        match self.sessions.remove(&role) {
            Some(s) => Ok(s),
            None => self.load_session(role),
        }
    }

    /// Creates the sessions of every graph in the manifest (pipeline order).
    pub fn load_all(&mut self) -> Result<()> {
        let roles: Vec<GraphRole> = GraphRole::ALL
            .into_iter()
            .filter(|r| self.manifest.graphs.contains_key(r))
            .collect();
        for role in roles {
            self.session(role)?;
        }
        Ok(())
    }

    /// The sessions created so far.
    pub fn sessions(&self) -> impl Iterator<Item = &GraphSession> {
        self.sessions.values()
    }

    /// The TensorRT cache folder of this bundle ([`cache::bundle_cache_dir`]), when the
    /// environment names a cache root.
    pub fn default_trt_cache(&self) -> Option<PathBuf> {
        let root = cache::cache_root_from_env()?;
        let sha = crate::generate::manifest_sha256(&self.dir).ok()?;
        let version = crate::generate::onnxruntime_version().unwrap_or_default();
        Some(cache::bundle_cache_dir(&root, &self.dir, &sha, &version))
    }

    /// The options sessions on `kind` run with: on TensorRT the caches default to the bundle's
    /// folder. With `create`, every cache folder is created (a default one that cannot be is a
    /// warning, and no default).
    fn options_for(&self, kind: ProviderKind, create: bool) -> Result<EpOptions> {
        if kind != ProviderKind::TensorRt {
            return Ok(self.options.clone());
        }
        let default = match self.options.no_trt_cache {
            true => None,
            false => self.default_trt_cache(),
        }
        .filter(|dir| match create.then(|| std::fs::create_dir_all(dir)) {
            None | Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(
                    "TensorRT engines will not be cached: cannot create {} ({e}); give \
                     --trt-engine-cache DIR, or --no-trt-cache",
                    dir.display()
                );
                false
            }
        });
        let options = cache::with_default_caches(&self.options, default.as_deref());
        let dirs = [&options.trt_engine_cache, &options.trt_timing_cache];
        for dir in dirs.into_iter().flatten().filter(|_| create) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(options)
    }

    /// The prompt length a decoder prefill feeds (BOS + text), if the bundle has a layout; a
    /// min-dalle decoder's prefill is its start token alone (the text goes to its encoder).
    fn prefill_sequence(&self) -> Option<u64> {
        if self.manifest.family == dalle_bundle::ModelFamily::MinDalle {
            return Some(1);
        }
        self.manifest
            .token_layout
            .as_ref()
            .and_then(|t| t.text_length.checked_add(1))
    }

    /// `role`'s plan when the bundle's provider is `decided` (no folder is created; for
    /// `dalle-ort info`).
    pub fn plan(&self, decided: ProviderKind, role: GraphRole) -> Result<GraphPlan> {
        self.plan_with(decided, role, false)
    }

    fn plan_with(&self, decided: ProviderKind, role: GraphRole, create: bool) -> Result<GraphPlan> {
        let spec = self.manifest.graph(role)?;
        let (kind, note) = provider_for_graph(decided, self.options.ep, role, spec)?;
        let options = self.options_for(kind, create)?;
        let (sessions, memory) = match role {
            GraphRole::Decoder => {
                let plan = plan_decoder(kind, &options, spec, self.prefill_sequence())?;
                (plan.sessions, Some(plan.memory))
            }
            _ => (vec![plan_for_graph(kind, &options, role, spec)?], None),
        };
        Ok(GraphPlan {
            role,
            kind,
            note,
            sessions,
            memory,
        })
    }

    /// The plan the sessions of `role` are created with (cache folders created).
    fn plan_to_load(&mut self, role: GraphRole) -> Result<GraphPlan> {
        let decided = self.provider()?.kind;
        let plan = self.plan_with(decided, role, true)?;
        if let Some(note) = &plan.note {
            tracing::warn!("{note}");
        }
        Ok(plan)
    }

    /// The decoder's sessions, created as its plan says (a session of the decoder already
    /// created by [`Bundle::session`] is reused when the plan has just one) and handed over.
    pub fn take_decoder_sessions(&mut self) -> Result<DecoderSessions> {
        let plan = self.plan_to_load(GraphRole::Decoder)?;
        let memory = plan.memory.clone().ok_or(Error::EpPlan {
            role: GraphRole::Decoder,
            message: "the plan has no memory plan".into(),
        })?;
        let sessions = match (
            plan.sessions.as_slice(),
            self.sessions.remove(&GraphRole::Decoder),
        ) {
            ([_], Some(session)) => vec![session],
            _ => plan
                .sessions
                .iter()
                .map(|p| self.load_with(GraphRole::Decoder, p))
                .collect::<Result<_>>()?,
        };
        Ok(DecoderSessions {
            plan: DecoderPlan {
                kind: plan.kind,
                sessions: plan.sessions,
                memory,
            },
            sessions,
        })
    }

    /// One session per graph: the decoder's is its plan's last (the decode session on
    /// TensorRT; [`Bundle::take_decoder_sessions`] creates them all).
    fn load_session(&mut self, role: GraphRole) -> Result<GraphSession> {
        let plan = self
            .plan_to_load(role)?
            .sessions
            .pop()
            .ok_or(Error::EpPlan {
                role,
                message: "the plan has no session".into(),
            })?;
        self.load_with(role, &plan)
    }

    fn load_with(&self, role: GraphRole, plan: &EpPlan) -> Result<GraphSession> {
        let spec = self.manifest.graph(role)?;
        let env = ort_lib::environment()?;
        GraphSession::load(&env, &self.dir, role, spec, plan)
    }
}
