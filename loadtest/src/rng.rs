//! Seeded randomness the dataset depends on, written here so that the same seed gives
//! the same bytes forever: SplitMix64 to expand seeds, xoshiro256** for streams, and
//! skewed samplers built only from IEEE-exact operations (`+ - * / sqrt`), so that no
//! platform `libm` difference can change a generated dataset.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, used to seed other
/// generators and to hash small integers.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
}

/// The SplitMix64 finaliser: a bijective scramble of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman, Vigna 2018).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A stream for `(seed, stream, index)`: independent streams for independent parts
    /// of a dataset, so that changing one part does not reshuffle the others.
    pub fn new(seed: u64, stream: u64, index: u64) -> Self {
        let mut sm = SplitMix64::new(
            seed ^ mix64(stream.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ mix64(index)),
        );
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = sm.next_u64();
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`; 0 gives 0), by Lemire's multiply-shift; the bias is
    /// below 2^-32 for the sizes used here and the result is exact integer arithmetic.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `0..n` for `u32` sizes.
    pub fn below32(&mut self, n: u32) -> u32 {
        self.below(u64::from(n)) as u32
    }

    /// True with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// How steeply popularity falls with rank: weight of rank `k` (from 0) is
/// `1 / (k+1)^s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exponent {
    /// s = 0.5
    Half,
    /// s = 1 (classic Zipf)
    One,
    /// s = 1.5
    OneAndHalf,
}

impl Exponent {
    fn weight(self, rank: usize) -> f64 {
        let x = rank as f64 + 1.0;
        match self {
            Exponent::Half => 1.0 / x.sqrt(),
            Exponent::One => 1.0 / x,
            Exponent::OneAndHalf => 1.0 / (x * x.sqrt()),
        }
    }
}

/// A Zipf-like choice among `n` items: a cumulative table searched by bisection, then
/// the rank mapped to an item by a fixed permutation (`rank * stride + offset mod n`)
/// so that the popular items are spread over the id range instead of being the first
/// ones.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
    stride: u64,
    offset: u64,
}

impl Zipf {
    /// `n` must be at least 1; `salt` picks the permutation.
    pub fn new(n: usize, exponent: Exponent, salt: u64) -> Self {
        let n = n.max(1);
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += exponent.weight(k);
            cumulative.push(total);
        }
        let n64 = n as u64;
        // A stride coprime to n near n / golden ratio makes the map a permutation.
        let mut stride = ((n as f64 * 0.618_033_988_75) as u64).max(1);
        while gcd(stride, n64) != 1 {
            stride += 1;
        }
        Self {
            cumulative,
            stride,
            offset: mix64(salt) % n64,
        }
    }

    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    /// The rank drawn (0 is the most popular), before the permutation.
    pub fn rank(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.unit() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len().saturating_sub(1))
    }

    /// An item index in `0..n`.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let n = self.cumulative.len() as u64;
        let rank = self.rank(rng) as u64;
        ((u128::from(rank) * u128::from(self.stride) + u128::from(self.offset)) % u128::from(n))
            as usize
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A small discrete distribution over `0..weights.len()` with integer weights: how many
/// of something an object gets.
#[derive(Debug, Clone, Copy)]
pub struct Counts(pub &'static [u32]);

impl Counts {
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total: u64 = self.0.iter().map(|&w| u64::from(w)).sum();
        let mut x = rng.below(total);
        for (i, &w) in self.0.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        self.0.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7, 1, 0);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7, 1, 0);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(7, 1, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(1, 2, 3);
        for n in [1u64, 2, 3, 10, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
    }

    #[test]
    fn zipf_is_a_skewed_permutation() {
        let z = Zipf::new(1000, Exponent::One, 5);
        let mut r = Rng::new(1, 0, 0);
        let mut hits = vec![0u32; 1000];
        for _ in 0..100_000 {
            hits[z.sample(&mut r)] += 1;
        }
        let mut sorted = hits.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // Rank 0 of a Zipf(1) over 1000 items has about 1/7.5 of the mass.
        assert!(sorted[0] > 10_000, "top item had {}", sorted[0]);
        assert!(sorted[999] < 100);
        // The most popular item is not simply item 0.
        let top = hits.iter().position(|&h| h == sorted[0]).unwrap();
        assert_eq!(top as u64, mix64(5) % 1000);
    }

    #[test]
    fn counts_follow_weights() {
        let c = Counts(&[0, 1, 0]);
        let mut r = Rng::new(0, 0, 0);
        for _ in 0..100 {
            assert_eq!(c.sample(&mut r), 1);
        }
    }
}
