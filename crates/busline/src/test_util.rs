//! Small helpers for the workspace's tests and simulators (feature
//! `test-util`, never on by default).

/// A tiny deterministic random generator (xorshift64*): the same seed gives
/// the same sequence on every machine, so a failing seeded test replays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator starting at `state` as it is (it must not be 0).
    pub fn from_state(state: u64) -> Self {
        assert_ne!(state, 0, "xorshift's state must not be 0");
        Rng(state)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 if `n` is 0, without drawing).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
