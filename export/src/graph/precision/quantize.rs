//! Symmetric round-to-nearest int8 quantization of a PyTorch `Linear` weight `[N, K]` (N
//! outputs, K inputs), in the two layouts `--precision int8` writes:
//!
//! - [`blockwise_u8`]: `MatMulNBits`' layout, one scale per row and block of `block` inputs,
//!   codes stored as unsigned bytes around the zero point 128: `w ≈ (q − 128) · scale`;
//! - [`per_channel_i8_transposed`]: `DequantizeLinear`'s, one scale per output channel,
//!   signed codes `[K, N]` (already transposed for `MatMul(x, ·)`): `w ≈ q · scale`.
//!
//! Both use `scale = max |w| / 127` over the block or channel and codes in `[−127, 127]`, so
//! every weight is off by at most `scale / 2`. An all-zero block gets scale 0 (codes 0).

/// The zero point of [`blockwise_u8`]'s unsigned codes (`MatMulNBits`' default for 8 bits).
pub const NBITS_ZERO_POINT: u8 = 128;

fn scale_of(values: impl Iterator<Item = f32>) -> f32 {
    values.fold(0.0f32, |m, v| m.max(v.abs())) / 127.0
}

fn code(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        0
    } else {
        (v / scale).round().clamp(-127.0, 127.0) as i8
    }
}

/// `(codes [N, k_blocks, block], scales [N, k_blocks])` of `w` `[N, K]`; the last block of a
/// row is padded with zero weights when `block` does not divide K.
pub fn blockwise_u8(w: &[f32], n: usize, k: usize, block: usize) -> (Vec<u8>, Vec<f32>) {
    let k_blocks = k.div_ceil(block);
    let mut codes = Vec::with_capacity(n * k_blocks * block);
    let mut scales = Vec::with_capacity(n * k_blocks);
    for row in w.chunks_exact(k).take(n) {
        for b in 0..k_blocks {
            let part = &row[b * block..((b + 1) * block).min(k)];
            let scale = scale_of(part.iter().copied());
            scales.push(scale);
            for i in 0..block {
                let q = part.get(i).map_or(0, |&v| code(v, scale));
                codes.push((i16::from(q) + i16::from(NBITS_ZERO_POINT)) as u8);
            }
        }
    }
    (codes, scales)
}

/// `(codes [K, N], scales [N])` of `w` `[N, K]`.
pub fn per_channel_i8_transposed(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = w
        .chunks_exact(k)
        .take(n)
        .map(|row| scale_of(row.iter().copied()))
        .collect();
    let mut codes = vec![0i8; n * k];
    for (r, row) in w.chunks_exact(k).take(n).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            codes[c * n + r] = code(v, scales[r]);
        }
    }
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockwise_round_trips_within_half_a_step() {
        let (n, k, block) = (3, 40, 16);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let (codes, scales) = blockwise_u8(&w, n, k, block);
        assert_eq!(codes.len(), n * 3 * block);
        assert_eq!(scales.len(), n * 3);
        for r in 0..n {
            for c in 0..k {
                let (b, i) = (c / block, c % block);
                let q = f32::from(codes[(r * 3 + b) * block + i]) - 128.0;
                let s = scales[r * 3 + b];
                assert!((q * s - w[r * k + c]).abs() <= s / 2.0 + 1e-7);
            }
            // padding of the last block is the zero point
            assert_eq!(codes[(r * 3 + 2) * block + 15], NBITS_ZERO_POINT);
        }
    }

    #[test]
    fn per_channel_is_transposed_and_symmetric() {
        let w = [1.0, -2.0, 0.5, 0.0, 0.0, 0.0];
        let (codes, scales) = per_channel_i8_transposed(&w, 2, 3);
        assert_eq!(scales, vec![2.0 / 127.0, 0.0]);
        assert_eq!(codes, vec![64, 0, -127, 0, 32, 0]);
    }
}
