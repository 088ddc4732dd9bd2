//! A seeded, deterministic mutator for the stable replay: the same corpus file, seed and index
//! always give the same bytes, so a failure reproduces from its printed coordinates.
//!
//! It is a small subset of libFuzzer's mutations (bit flips, byte sets to interesting values,
//! inserted and erased ranges, truncation, duplicated chunks, overwritten little-endian
//! integers); campaigns (`fuzz/`) do the real search.

/// SplitMix64: tiny, seedable and good enough to pick mutations.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that often sit on a reader's edge cases.
const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    1 << 40,
    4096,
];

/// The `index`-th mutant of `input` under `seed` (one to four stacked mutations).
pub fn mutant(input: &[u8], seed: u64, index: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut data = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate_once(&mut data, &mut rng);
    }
    data
}

fn mutate_once(data: &mut Vec<u8>, rng: &mut SplitMix64) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    let len = data.len();
    let at = rng.below(len);
    match rng.below(7) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = INTERESTING[rng.below(INTERESTING.len())] as u8,
        2 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 => {
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        4 => data.truncate(at),
        5 => {
            let n = 1 + rng.below((len - at).min(64));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len);
            data.splice(to..to, chunk);
        }
        _ => {
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let value = INTERESTING[rng.below(INTERESTING.len())];
            for (i, b) in value.to_le_bytes().iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
    }
}
