//! The locks and atomics the bus's delivery protocol is built on, in one
//! place so that the loom tests (`tests/loom/`, built with
//! `RUSTFLAGS="--cfg busline_loom"`) can swap in loom's models and check
//! every interleaving of publishers, receivers and wake-ups. Normal builds
//! use `parking_lot` and the standard atomics.

#[cfg(not(busline_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock};
#[cfg(not(busline_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64};

#[cfg(busline_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// One round of waiting for another thread that will be done within a few
/// instructions (unless it was preempted: then the thread yields).
#[cfg(not(busline_loom))]
pub(crate) fn spin_wait(spins: &mut u32) {
    if *spins < 100 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// loom runs one thread at a time: waiting lets the other one run.
#[cfg(busline_loom)]
pub(crate) fn spin_wait(_spins: &mut u32) {
    loom::thread::yield_now();
}
#[cfg(busline_loom)]
pub(crate) use loom::sync::atomic::fence;

/// `std`'s cell with loom's signatures (loom's checks each access against
/// the others in its models).
#[cfg(not(busline_loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(busline_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(t: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(t))
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(busline_loom)]
pub(crate) use loom_shim::{AtomicBool, AtomicU32, AtomicU64, Mutex, MutexGuard, RwLock};

#[cfg(busline_loom)]
mod loom_shim {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    pub(crate) use loom::sync::MutexGuard;
    use loom::sync::{RwLockReadGuard, RwLockWriteGuard};

    /// loom's mutex with `parking_lot`'s signatures.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(t: T) -> Self {
            Mutex(loom::sync::Mutex::new(t))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("not poisoned")
        }
    }

    /// loom's read-write lock with `parking_lot`'s signatures.
    #[derive(Debug, Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(t: T) -> Self {
            RwLock(loom::sync::RwLock::new(t))
        }
        pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("not poisoned")
        }
        pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().expect("not poisoned")
        }
    }
}
