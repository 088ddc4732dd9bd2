//! The loop against [`FakeDecoder`](super::fake::FakeDecoder): prefill once, broadcast, CFG
//! halves, priming, determinism, batch-size independence, one new token per step.

use super::fake::FakeDecoder;
use super::ids::tests::tiny_layout;
use super::sample_loop::{LoopConfig, TokenRun, sample_images};
use crate::sampling::SamplingParams;

/// Pseudo-random logits over the 19-id vocabulary, a function of the whole history.
fn history_logits(history: &[i64]) -> Vec<f32> {
    let mut h: u64 = 1469598103934665603;
    for &t in history {
        h = (h ^ t as u64).wrapping_mul(1099511628211);
    }
    (0..19)
        .map(|v| {
            let x = h.wrapping_mul(v + 1).rotate_left(17) % 1000;
            if v < 14 { -f32::MAX } else { x as f32 / 250.0 }
        })
        .collect()
}

fn config(candidates: usize, batch: usize, seed: u64) -> LoopConfig {
    LoopConfig {
        candidates,
        batch,
        params: SamplingParams {
            seed,
            ..SamplingParams::default()
        },
        prime: vec![],
    }
}

fn run(d: &mut FakeDecoder, text: &[u32], cfg: &LoopConfig) -> TokenRun {
    let mut sampled = 0;
    let run = sample_images(d, &tiny_layout(), text, cfg, &mut |n| sampled += n).unwrap();
    assert_eq!(sampled, cfg.candidates * (4 - cfg.prime.len()));
    run
}

#[test]
fn prefill_once_then_broadcast_and_one_new_token_per_step() {
    let mut d = FakeDecoder::new(Box::new(history_logits), 14);
    let out = run(&mut d, &[3, 4], &config(5, 2, 7));
    assert_eq!(d.empty_states, vec![1], "one prefill of one row");
    assert_eq!(d.calls[0].ids.row(0).to_vec(), vec![0, 3, 4, 12, 13]);
    assert_eq!(d.calls[0].past_lengths, vec![0]);
    assert_eq!(d.selections, vec![vec![0, 0], vec![0, 0], vec![0]]);
    // 3 batches × (4 image tokens − 1 fed) steps after the prefill.
    assert_eq!(d.calls.len(), 1 + 3 * 3);
    assert_eq!(out.timings.steps, 9);
    let mut c = 0;
    for (batch, rows) in [(0usize, 2usize), (2, 2), (4, 1)] {
        for step in 0..3 {
            let call = &d.calls[1 + batch / 2 * 3 + step];
            assert_eq!(call.ids.dim(), (rows, 1), "only the new token is fed");
            assert_eq!(
                call.past_lengths,
                vec![5 + step; rows],
                "state grows by one"
            );
            for r in 0..rows {
                let code = out.candidates[batch + r][step];
                assert_eq!(call.ids[[r, 0]], 14 + i64::from(code));
            }
            c += 1;
        }
    }
    assert_eq!(c, 9);
    assert!(
        out.candidates
            .iter()
            .all(|t| t.len() == 4 && t.iter().all(|&x| x < 5))
    );
}

#[test]
fn same_seed_same_tokens_whatever_the_batch() {
    let runs: Vec<Vec<Vec<u32>>> = [1, 2, 3, 5, 8]
        .iter()
        .map(|&b| {
            let mut d = FakeDecoder::new(Box::new(history_logits), 14);
            run(&mut d, &[3], &config(5, b, 11)).candidates
        })
        .collect();
    for r in &runs[1..] {
        assert_eq!(r, &runs[0]);
    }
    let mut d = FakeDecoder::new(Box::new(history_logits), 14);
    let other = run(&mut d, &[3], &config(5, 5, 12)).candidates;
    assert_ne!(other, runs[0], "another seed gives other tokens");
    assert!(
        runs[0].windows(2).any(|w| w[0] != w[1]),
        "candidates differ from each other"
    );
}

/// Conditional rows (text id 3 present) prefer code 1; unconditional rows prefer code 1 more
/// weakly and code 0 not at all: cond [1, 2, 0, 0, 0], uncond [0, 2.5, 0, 0, 0]. With scale 3 the
/// guided logits are [3, 1, 0, 0, 0] (argmax 0); without guidance, argmax 1.
fn guided_logits(history: &[i64]) -> Vec<f32> {
    let mut l = vec![-f32::MAX; 14];
    if history.get(1) == Some(&3) {
        l.extend([1.0, 2.0, 0.0, 0.0, 0.0]);
    } else {
        l.extend([0.0, 2.5, 0.0, 0.0, 0.0]);
    }
    l
}

#[test]
fn guidance_runs_two_independent_halves_and_combines_them() {
    let text = vec![3u32, 4];
    let mut cfg = config(3, 2, 0);
    cfg.params.top_k = Some(1);
    cfg.params.cond_scale = 3.0;
    let mut d = FakeDecoder::new(Box::new(guided_logits), 14);
    let out = run(&mut d, &text, &cfg);
    assert_eq!(text, vec![3, 4], "the caller's text is untouched");
    assert_eq!(d.empty_states, vec![2]);
    assert_eq!(d.calls[0].ids.row(0).to_vec(), vec![0, 3, 4, 12, 13]);
    assert_eq!(
        d.calls[0].ids.row(1).to_vec(),
        vec![0, 10, 11, 12, 13],
        "unconditional row: pad ids for all text"
    );
    assert_eq!(d.selections, vec![vec![0, 0, 1, 1], vec![0, 1]]);
    for call in &d.calls[1..] {
        let rows = call.ids.nrows() / 2;
        for j in 0..rows {
            assert_eq!(
                call.ids[[j, 0]],
                call.ids[[rows + j, 0]],
                "twins get the same token"
            );
        }
    }
    assert_eq!(out.candidates, vec![vec![0; 4]; 3]);

    cfg.params.cond_scale = 1.0;
    let mut d = FakeDecoder::new(Box::new(guided_logits), 14);
    let out = run(&mut d, &text, &cfg);
    assert_eq!(
        d.empty_states,
        vec![1],
        "no unconditional rows without guidance"
    );
    assert_eq!(out.candidates, vec![vec![1; 4]; 3]);
}

#[test]
fn priming_fixes_the_first_rows() {
    let mut cfg = config(3, 3, 5);
    cfg.prime = vec![2, 3];
    let mut d = FakeDecoder::new(Box::new(history_logits), 14);
    let out = run(&mut d, &[3], &cfg);
    assert_eq!(
        d.calls[0].ids.row(0).to_vec(),
        vec![0, 3, 11, 12, 13, 16, 17]
    );
    assert_eq!(
        d.calls.len(),
        2,
        "prefill, then one step for the last token"
    );
    for t in &out.candidates {
        assert_eq!(t[..2], [2, 3]);
        assert_eq!(t.len(), 4);
    }
}

#[test]
fn bad_loop_settings_are_errors() {
    let layout = tiny_layout();
    let mut d = FakeDecoder::new(Box::new(history_logits), 14);
    let mut bad = |cfg: LoopConfig| {
        sample_images(&mut d, &layout, &[], &cfg, &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    assert!(bad(config(0, 1, 0)).contains("candidates"));
    assert!(bad(config(1, 0, 0)).contains("batch"));
    let mut cfg = config(1, 1, 0);
    cfg.prime = vec![0; 4];
    assert!(bad(cfg).contains("nothing to sample"));
    let mut cfg = config(1, 1, 0);
    cfg.params.top_k = Some(0);
    assert!(bad(cfg).contains("top_k"));
}
