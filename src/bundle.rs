//! An opened bundle: its directory, validated manifest, and sessions created on demand.
//!
//! [`Bundle::open`] needs no ONNX Runtime (so manifest errors show even without the library);
//! [`Bundle::session`] creates a graph's session the first time it is asked for, with the
//! execution provider resolved once per bundle ([`crate::ep::register::resolve`]).

use crate::ep::{AutoDecision, EpOptions, plan_for_graph, provider_caveat, register};
use crate::error::{Error, Result};
use crate::ort_lib;
use crate::session::GraphSession;
use dalle_bundle::{GraphRole, Manifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

    fn load_session(&mut self, role: GraphRole) -> Result<GraphSession> {
        let kind = self.provider()?.kind;
        let spec = self.manifest.graph(role)?;
        if let Some(note) = provider_caveat(kind, role, spec) {
            tracing::warn!("{note}");
        }
        let plan = plan_for_graph(kind, &self.options, role, spec)?;
        let env = ort_lib::environment()?;
        GraphSession::load(&env, &self.dir, role, spec, &plan)
    }
}
