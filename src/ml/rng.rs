//! The only source of randomness of `crate::ml`: SplitMix64 (Steele, Lea & Flood 2014) and a
//! Box-Muller Gaussian built on it. Used for `kmeans::random_centers` and the SGD
//! mini-batch sampler.
//!
//! This is deliberately NOT Spark's `XORShiftRandom` / `BernoulliCellSampler`, so
//! random centers and sampled mini-batches differ from Spark's for the same seed.
//! Limits: period 2^64; uniform doubles have 53 random bits. Must never: read any
//! global or time-based state — the same seed gives the same stream. (The Gaussian
//! uses `ln`, `sqrt`, `cos`, `sin` from the platform's libm, so its last bit may differ
//! between platforms; the uniform stream does not.)

/// SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
    spare_gaussian: Option<f64>,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 {
            state: seed,
            spare_gaussian: None,
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits of `next_u64` times 2^-53.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal deviate by Box-Muller: each pair of uniforms `u1`, `u2` gives
    /// `r cos(2 pi u2)` and then `r sin(2 pi u2)`, with `r = sqrt(-2 ln(1 - u1))`.
    pub(crate) fn next_gaussian(&mut self) -> f64 {
        if let Some(z) = self.spare_gaussian.take() {
            return z;
        }
        let u1 = 1.0 - self.next_f64(); // (0, 1], so ln is finite
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare_gaussian = Some(r * t.sin());
        r * t.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn gaussians_are_deterministic_and_plausible() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..10_000 {
            let z = a.next_gaussian();
            assert_eq!(z.to_bits(), b.next_gaussian().to_bits());
            sum += z;
            sq += z * z;
        }
        assert!((sum / 10_000.0).abs() < 0.05);
        assert!((sq / 10_000.0 - 1.0).abs() < 0.05);
    }
}
