//! The engine against [`FakeDecoder`] in both decoder kinds: prefill once, rows joining and
//! leaving, CFG twins, priming, determinism whatever shares the batch, cancel, validation.

use super::*;
use crate::generate::fake::FakeDecoder;
use crate::generate::ids::tests::tiny_layout;
use image::RgbImage;
use ndarray::Array4;

/// A codec that decodes nothing (the engine tests look at tokens).
struct NoCodec;

impl ImageCodec for NoCodec {
    fn encode_prime(&mut self, _: &RgbImage, rows: usize, grid: usize) -> crate::Result<Vec<u32>> {
        Ok(vec![1; rows * grid])
    }

    fn decode(&mut self, grids: &[Vec<u32>], grid: usize) -> crate::Result<Array4<f32>> {
        Ok(Array4::zeros((grids.len(), 3, grid, grid)))
    }
}

type FakeModel = DallePytorch<FakeDecoder, NoCodec>;

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

fn engine(per_row: bool, max_rows: usize, logits: fake::LogitsFn) -> Engine<FakeModel> {
    let d = FakeDecoder::new(logits, 14, per_row);
    let model = DallePytorch::new(tiny_layout(), d, NoCodec, 64).unwrap();
    Engine::new(model, Some(max_rows))
}

use crate::generate::fake;

fn rules() -> RequestRules {
    let l = tiny_layout();
    RequestRules {
        geometry: ImageGeometry {
            grid: l.image_grid as usize,
            vocab: l.image_vocab_size as usize,
            total_vocab: l.total_vocab_size as usize,
        },
        text_length: l.text_length as usize,
        text_vocab: l.text_vocab_size as usize,
        defaults: None,
        tokenizer: None,
        image_encoder: true,
        clip: false,
        max_candidates: 16,
        strict_vocabulary: false,
    }
}

fn request(text: &[u32], candidates: usize, seed: u64) -> ValidatedRequest {
    let mut r = Request::text("");
    r.prompt = PromptInput::Ids(text.to_vec());
    r.candidates = candidates;
    r.sampling.seed = Some(seed);
    rules().validate(r).unwrap()
}

fn tokens_alone(per_row: bool, max_rows: usize, req: ValidatedRequest) -> Vec<Vec<u32>> {
    let mut e = engine(per_row, max_rows, Box::new(history_logits));
    let n = req.candidates;
    let mut sampled = 0;
    let g = generate(&mut e, req, &mut |k| sampled += k).unwrap();
    assert_eq!(sampled, n * 4);
    g.tokens
}

fn decoder(e: &Engine<FakeModel>) -> &FakeDecoder {
    e.model().batch().decoder()
}

#[test]
fn prefill_once_then_one_new_token_per_row_per_step() {
    for per_row in [true, false] {
        let mut e = engine(per_row, 2, Box::new(history_logits));
        let out = generate(&mut e, request(&[3, 4], 5, 7), &mut |_| {}).unwrap();
        let d = decoder(&e);
        assert_eq!(d.calls[0].ids.row(0).to_vec(), vec![0, 3, 4, 12, 13]);
        assert_eq!(d.calls[0].past_lengths, vec![0], "one prefill of one row");
        assert_eq!(
            d.calls.iter().filter(|c| c.ids.ncols() > 1).count(),
            1,
            "the prompt is prefilled once"
        );
        // 3 waves of candidates (2, 2, 1) × (4 image tokens − 1 fed) steps.
        assert_eq!(d.calls.len(), 1 + 3 * 3, "per_row {per_row}");
        for call in &d.calls[1..] {
            assert_eq!(call.ids.ncols(), 1, "only the new token is fed");
            assert!(call.ids.nrows() <= 2);
        }
        assert_eq!(out.batch, 2);
        assert_eq!(out.timings.sampling.steps, 9);
        assert!(
            out.tokens
                .iter()
                .all(|t| t.len() == 4 && t.iter().all(|&x| x < 5))
        );
        if per_row {
            // Later waves reuse the rows of the first: one state, no regrouping.
            assert_eq!(d.empty_states, vec![1, 2]);
            assert!(d.selections.is_empty());
        } else {
            assert_eq!(d.selections, vec![vec![0, 0], vec![0, 0], vec![0]]);
        }
    }
}

#[test]
fn same_seed_same_tokens_whatever_the_batch_or_layout() {
    let want = tokens_alone(true, 64, request(&[3], 5, 11));
    for per_row in [true, false] {
        for rows in [1, 2, 3, 5, 8] {
            assert_eq!(
                tokens_alone(per_row, rows, request(&[3], 5, 11)),
                want,
                "per_row {per_row}, rows {rows}"
            );
        }
    }
    assert_ne!(tokens_alone(true, 8, request(&[3], 5, 12)), want);
    assert!(want.windows(2).any(|w| w[0] != w[1]), "candidates differ");
}

/// A request admitted while another runs joins at the next step, shares its decoder calls (rows
/// at different positions in one call), and gets exactly the tokens it gets alone.
#[test]
fn a_request_joining_mid_way_gets_the_same_tokens_as_alone() {
    let alone_a = tokens_alone(true, 64, request(&[3, 4], 3, 1));
    let alone_b = tokens_alone(true, 64, request(&[5], 2, 2));
    for per_row in [true, false] {
        let mut e = engine(per_row, 16, Box::new(history_logits));
        let a = e.admit(request(&[3, 4], 3, 1)).unwrap();
        e.step().unwrap();
        e.step().unwrap();
        let b = e.admit(request(&[5], 2, 2)).unwrap();
        let events = e.step().unwrap();
        assert!(
            events.contains(&Event::Started {
                request: b,
                candidate: 1
            }),
            "joins at the next step"
        );
        while !e.is_idle() {
            e.step().unwrap();
        }
        assert_eq!(e.take(a).unwrap().tokens, alone_a, "per_row {per_row}");
        assert_eq!(e.take(b).unwrap().tokens, alone_b, "per_row {per_row}");
        let d = decoder(&e);
        if per_row {
            let mixed = d
                .calls
                .iter()
                .any(|c| c.ids.ncols() == 1 && c.past_lengths.windows(2).any(|w| w[0] != w[1]));
            assert!(mixed, "rows at different positions shared a call");
        } else {
            assert!(
                d.calls
                    .iter()
                    .all(|c| c.past_lengths.windows(2).all(|w| w[0] == w[1])),
                "grouped: rows of one call started together"
            );
        }
    }
}

#[test]
fn cancel_removes_a_requests_rows_at_the_next_step_and_leaves_others_unchanged() {
    let alone = tokens_alone(true, 64, request(&[5], 2, 2));
    for per_row in [true, false] {
        let mut e = engine(per_row, 16, Box::new(history_logits));
        let a = e.admit(request(&[3, 4], 3, 1)).unwrap();
        let b = e.admit(request(&[5], 2, 2)).unwrap();
        e.step().unwrap();
        assert_eq!(e.active_rows(), 5);
        assert!(e.cancel(a));
        assert!(!e.cancel(a), "only once");
        let events = e.step().unwrap();
        assert!(events.contains(&Event::RequestFinished {
            request: a,
            cancelled: true
        }));
        assert!(
            !events
                .iter()
                .any(|ev| matches!(ev, Event::Token { request, .. } if *request == a)),
            "no token after cancel"
        );
        assert_eq!(e.active_rows(), 2);
        let last = decoder(&e).calls.last().unwrap();
        assert_eq!(
            last.ids.nrows(),
            if per_row { 5 } else { 2 },
            "per-row: freed rows ride idle; grouped: the group re-selected"
        );
        while !e.is_idle() {
            e.step().unwrap();
        }
        assert!(e.take(a).is_none());
        assert_eq!(e.take(b).unwrap().tokens, alone, "per_row {per_row}");
    }
}

#[test]
fn guidance_runs_two_independent_rows_and_combines_them() {
    let mut r = Request::text("");
    r.prompt = PromptInput::Ids(vec![3, 4]);
    r.candidates = 3;
    r.sampling.top_k = Some(1);
    r.sampling.cond_scale = Some(3.0);
    r.sampling.seed = Some(0);
    for per_row in [true, false] {
        let mut e = engine(per_row, 4, Box::new(guided_logits));
        let out = generate(&mut e, rules().validate(r.clone()).unwrap(), &mut |_| {}).unwrap();
        let d = decoder(&e);
        assert_eq!(d.calls[0].ids.row(0).to_vec(), vec![0, 3, 4, 12, 13]);
        assert_eq!(
            d.calls[0].ids.row(1).to_vec(),
            vec![0, 10, 11, 12, 13],
            "unconditional row: pad ids for all text"
        );
        assert_eq!(out.tokens, vec![vec![0; 4]; 3], "per_row {per_row}");
        assert_eq!(out.batch, 2, "4 rows hold 2 guided candidates");
    }
    r.sampling.cond_scale = Some(1.0);
    let mut e = engine(true, 4, Box::new(guided_logits));
    let out = generate(&mut e, rules().validate(r).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(decoder(&e).calls[0].ids.nrows(), 1, "no unconditional row");
    assert_eq!(out.tokens, vec![vec![1; 4]; 3]);
}

#[test]
fn priming_fixes_the_first_codes() {
    let mut r = Request::text("");
    r.prompt = PromptInput::Ids(vec![3]);
    r.candidates = 3;
    r.sampling.seed = Some(5);
    r.init = Some(InitInput::Codes(vec![2, 3]));
    let mut e = engine(true, 8, Box::new(history_logits));
    let out = generate(&mut e, rules().validate(r.clone()).unwrap(), &mut |_| {}).unwrap();
    let d = decoder(&e);
    assert_eq!(
        d.calls[0].ids.row(0).to_vec(),
        vec![0, 3, 11, 12, 13, 16, 17]
    );
    assert_eq!(
        d.calls.len(),
        2,
        "prefill, then one step for the last token"
    );
    assert_eq!(out.primed, 2);
    for t in &out.tokens {
        assert_eq!(t[..2], [2, 3]);
        assert_eq!(t.len(), 4);
    }
    r.init = Some(InitInput::Image {
        image: RgbImage::new(2, 2),
        rows: Some(1),
    });
    let out = generate(&mut e, rules().validate(r).unwrap(), &mut |_| {}).unwrap();
    assert!(out.tokens.iter().all(|t| t[..2] == [1, 1]), "encoder rows");
}

#[test]
fn bad_requests_name_their_field() {
    let field = |f: &dyn Fn(&mut Request)| {
        let mut r = Request::text("");
        r.prompt = PromptInput::Ids(vec![3]);
        r.sampling.seed = Some(1);
        f(&mut r);
        rules().validate(r).unwrap_err().field
    };
    assert_eq!(field(&|r| r.candidates = 0), "candidates");
    assert_eq!(field(&|r| r.candidates = 17), "candidates");
    assert_eq!(field(&|r| r.sampling.top_k = Some(0)), "top_k");
    assert_eq!(
        field(&|r| r.sampling.temperature = Some(1e-39)),
        "temperature"
    );
    assert_eq!(field(&|r| r.sampling.cond_scale = Some(1e39)), "cond_scale");
    assert_eq!(field(&|r| r.rerank = Some(1)), "rerank");
    assert_eq!(
        field(&|r| r.prompt = PromptInput::Ids(vec![1; 5])),
        "prompt"
    );
    assert_eq!(field(&|r| r.prompt = PromptInput::Ids(vec![10])), "prompt");
    assert_eq!(
        field(&|r| r.prompt = PromptInput::Text("a".into())),
        "prompt"
    );
    assert_eq!(
        field(&|r| r.init = Some(InitInput::Codes(vec![0; 4]))),
        "init_codes"
    );
    assert_eq!(
        field(&|r| r.init = Some(InitInput::Codes(vec![5]))),
        "init_codes"
    );
    assert_eq!(
        field(&|r| r.init = Some(InitInput::Image {
            image: RgbImage::new(1, 1),
            rows: Some(2)
        })),
        "init_rows"
    );
    // Guidance needs two rows per call.
    let mut r = Request::text("");
    r.prompt = PromptInput::Ids(vec![3]);
    r.sampling.cond_scale = Some(2.0);
    let mut e = engine(true, 1, Box::new(history_logits));
    let err = e.admit(rules().validate(r).unwrap()).unwrap_err();
    assert!(err.is_client(), "{err}");
}

#[test]
fn previews_decode_the_partial_grid() {
    let mut e = engine(true, 8, Box::new(history_logits));
    let id = e.admit(request(&[3], 1, 3)).unwrap();
    assert_eq!(e.partial_tokens(id, 0), Some(&[][..]));
    e.step().unwrap();
    assert_eq!(e.partial_tokens(id, 0).map(<[u32]>::len), Some(1));
    let px = e.preview(id, 0, 0).unwrap().unwrap();
    assert_eq!(px.shape(), &[1, 3, 2, 2]);
    assert!(e.preview(id, 5, 0).unwrap().is_none() || e.partial_tokens(id, 5).is_none());
}
