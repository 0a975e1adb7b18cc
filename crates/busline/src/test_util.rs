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

/// A waker that counts its wake-ups, for tests that poll futures by hand.
#[derive(Debug, Default)]
pub struct CountingWaker(std::sync::atomic::AtomicUsize);

impl CountingWaker {
    /// A counter at 0 and a waker that counts into it.
    pub fn new() -> (std::sync::Arc<CountingWaker>, std::task::Waker) {
        let count = std::sync::Arc::new(CountingWaker::default());
        (count.clone(), std::task::Waker::from(count))
    }

    /// The wake-ups so far.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The wake-ups so far, counting from 0 again.
    pub fn take(&self) -> usize {
        self.0.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
