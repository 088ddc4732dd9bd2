//! Seeded random dVAE weights, for the demo bundle and tests: the reference's own init
//! (`w ~ N(0, 1/(n_in·kw²))`), plus small random biases so no path is trivially zero.

use super::config::{DecoderConfig, EncoderConfig, GROUP_COUNT};
use super::names;
use crate::error::Result;
use crate::tensor::TensorData;
use crate::weights::Weights;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

struct Init {
    rng: StdRng,
    tensors: BTreeMap<String, TensorData>,
}

impl Init {
    fn normal(&mut self) -> f32 {
        // Box–Muller; `1 - u` keeps the log argument in (0, 1].
        let u1: f32 = 1.0 - self.rng.random::<f32>();
        let u2: f32 = self.rng.random::<f32>();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    fn conv(&mut self, prefix: &str, n_in: usize, n_out: usize, kw: usize) -> Result<()> {
        let std = 1.0 / ((n_in * kw * kw) as f32).sqrt();
        let w: Vec<f32> = (0..n_out * n_in * kw * kw)
            .map(|_| self.normal() * std)
            .collect();
        let b: Vec<f32> = (0..n_out).map(|_| self.normal() * 0.1).collect();
        self.tensors.insert(
            names::weight(prefix),
            TensorData::from_f32(vec![n_out, n_in, kw, kw], &w)?,
        );
        self.tensors
            .insert(names::bias(prefix), TensorData::from_f32(vec![n_out], &b)?);
        Ok(())
    }

    fn block(
        &mut self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        kernels: [usize; 4],
    ) -> Result<()> {
        let h = n_out / 4;
        if n_in != n_out {
            self.conv(&names::id_path(prefix), n_in, n_out, 1)?;
        }
        let ch = [(n_in, h), (h, h), (h, h), (h, n_out)];
        for (j, ((a, b), k)) in ch.into_iter().zip(kernels).enumerate() {
            self.conv(&names::res_conv(prefix, j + 1), a, b, k)?;
        }
        Ok(())
    }
}

/// Random encoder weights for `cfg` from `seed`.
pub fn random_encoder(cfg: &EncoderConfig, seed: u64) -> Result<Weights> {
    let mut init = Init {
        rng: StdRng::seed_from_u64(seed),
        tensors: BTreeMap::new(),
    };
    init.conv(&names::input_conv(), cfg.input_channels, cfg.n_hid, 7)?;
    let mut width = cfg.n_hid;
    for g in 1..=GROUP_COUNT {
        let out = cfg.n_hid << (g - 1);
        for b in 1..=cfg.n_blk_per_group {
            init.block(
                &names::block(g, b),
                if b == 1 { width } else { out },
                out,
                super::blocks::ENCODER_KERNELS,
            )?;
        }
        width = out;
    }
    init.conv(&names::output_conv(), width, cfg.vocab_size, 1)?;
    Ok(Weights::new(
        format!("random encoder (seed {seed})"),
        init.tensors,
    ))
}

/// Random decoder weights for `cfg` from `seed`.
pub fn random_decoder(cfg: &DecoderConfig, seed: u64) -> Result<Weights> {
    let mut init = Init {
        rng: StdRng::seed_from_u64(seed),
        tensors: BTreeMap::new(),
    };
    init.conv(&names::input_conv(), cfg.vocab_size, cfg.n_init, 1)?;
    let mut width = cfg.n_init;
    for g in 1..=GROUP_COUNT {
        let out = (cfg.n_hid << (GROUP_COUNT - 1)) >> (g - 1);
        for b in 1..=cfg.n_blk_per_group {
            init.block(
                &names::block(g, b),
                if b == 1 { width } else { out },
                out,
                super::blocks::DECODER_KERNELS,
            )?;
        }
        width = out;
    }
    init.conv(&names::output_conv(), width, 2 * cfg.output_channels, 1)?;
    Ok(Weights::new(
        format!("random decoder (seed {seed})"),
        init.tensors,
    ))
}
