//! Named, seeded random streams.
//!
//! Every random choice in posterior-lens comes from a ChaCha8 generator
//! keyed by the run seed and a purpose, on a stream number. Parallel work
//! is split into fixed-size chunks of particles, each with its own stream,
//! so the numbers a chunk sees do not depend on how many threads run or in
//! which order the chunks finish.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The number of particles in one chunk of parallel work.
///
/// Fixed (not derived from the thread count) so that results are
/// bit-identical whatever the machine.
pub const CHUNK: usize = 64;

/// What a stream is used for; keeps streams of different purposes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// Drawing samples of a mixture.
    Sample = 1,
    /// Drawing an observation for a case.
    Observation = 2,
    /// A sampler's own randomness.
    Sampler = 3,
    /// Statistical tests (random directions, permutations).
    Test = 4,
    /// The exact reverse transition.
    Transition = 5,
}

/// The generator for stream `stream` of one purpose under a seed.
///
/// The purpose goes into the key (so streams of different purposes never
/// meet) and `stream` selects one of ChaCha's 2^64 streams; callers that
/// need several indices pack them, e.g. `(step << 24) | chunk`.
pub fn stream(seed: u64, purpose: Purpose, stream: u64) -> ChaCha8Rng {
    let key = seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = ChaCha8Rng::seed_from_u64(key);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn streams_differ_by_purpose_and_chunk_and_repeat_by_seed() {
        let a: u64 = stream(1, Purpose::Sample, 0).random();
        let b: u64 = stream(1, Purpose::Sample, 1).random();
        let c: u64 = stream(1, Purpose::Sampler, 0).random();
        let again: u64 = stream(1, Purpose::Sample, 0).random();
        // A large stream index of one purpose does not reach another's.
        let far: u64 = stream(1, Purpose::Sample, 3 << 32).random();
        let other: u64 = stream(1, Purpose::Test, 0).random();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(far, other);
        assert_eq!(a, again);
    }
}
