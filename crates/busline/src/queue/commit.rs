//! The publisher's side of delivery: lock every target queue (in id
//! order), check for room, and put the event in all of them or none.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use smallvec::SmallVec;

use super::{State, SubShared};
use crate::envelope::Envelope;
use crate::sync::{Mutex, MutexGuard};

/// The subscribers an event goes to: the whole route, or those whose filter took it.
pub(crate) enum Targets<'a, T> {
    All(&'a [Arc<SubShared<T>>]),
    Filtered(SmallVec<[&'a Arc<SubShared<T>>; 8]>),
}

impl<T> Targets<'_, T> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Targets::All(s) => s.len(),
            Targets::Filtered(v) => v.len(),
        }
    }

    pub(crate) fn get(&self, i: usize) -> &Arc<SubShared<T>> {
        match self {
            Targets::All(s) => &s[i],
            Targets::Filtered(v) => v[i],
        }
    }
}

/// The subscriber a publish found full, and in a ring the member it waits
/// on (the slowest one, as the room check just found it; otherwise the
/// subscriber's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) sub: u64,
    pub(crate) member: u64,
}

impl Full {
    fn at<T>(sub: &SubShared<T>, st: &State<T>) -> Full {
        Full {
            sub: sub.id,
            member: st.waits_on(sub.id),
        }
    }
}

/// The name of the subscriber a publisher found full in `sub`: for a
/// ring, of member `member` (the subscriber's own name if it left).
pub(crate) fn member_name<T>(sub: &SubShared<T>, member: u64) -> Arc<str> {
    let st = sub.state.lock();
    st.readers()
        .iter()
        .find(|m| m.id == member)
        .map_or_else(|| sub.name.clone(), |m| m.name.clone())
}

/// Charges `d` of waiting to the subscriber (for a ring, the member) the
/// publisher found full; nothing if that member has left since.
pub(crate) fn add_blocked<T>(targets: &Targets<'_, T>, full: Full, d: Duration) {
    let Some(s) = (0..targets.len())
        .map(|i| targets.get(i))
        .find(|s| s.id == full.sub)
    else {
        return;
    };
    let ns = d.as_nanos().min(u64::MAX as u128) as u64;
    if s.ring.is_none() {
        s.blocked_ns.fetch_add(ns, Ordering::Relaxed);
        return;
    }
    let mut st = s.state.lock();
    if let Some(m) = st.reader_mut(full.member) {
        m.blocked_ns += ns;
    }
}

/// Locks a queue for a publish: other holders (another publisher, a reader
/// parking or settling) hold it briefly, so spin on it a while before
/// parking_lot's slow path (which soon yields the thread to the kernel).
fn lock_spinning<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // (Not under loom: spinning only adds interleavings for it to explore,
    // none it cannot reach with a plain lock.)
    #[cfg(not(busline_loom))]
    for _ in 0..SPINS {
        if let Some(g) = m.try_lock() {
            return g;
        }
        std::hint::spin_loop();
    }
    m.lock()
}

#[cfg(not(busline_loom))]
const SPINS: usize = 64;

/// Delivers `env` to every target or to none: locks all targets (in id order),
/// and if a lossless one is full, registers `waker` there and gives up
/// (`Err` naming the full target, `env` left in place). Otherwise takes `env`
/// (it comes back only if every target had closed) and returns how many
/// subscribers received it.
pub(crate) fn commit<T>(
    targets: &Targets<'_, T>,
    env: &mut Option<Arc<Envelope<T>>>,
    waker: Option<&Waker>,
) -> Result<usize, Full> {
    let n = targets.len();
    if n == 1 {
        // The common case, without the guard list.
        let sub = targets.get(0);
        let mut st = lock_spinning(&sub.state);
        if st.closed {
            return Ok(0);
        }
        if !st.has_room(sub) && !st.wait_for_room(sub, waker) {
            return Err(Full::at(sub, &st));
        }
        let delivered = st.audience();
        let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
        let mut spent = Vec::new();
        let old = st.push(
            sub,
            env.take().expect("delivered once"),
            &mut wake,
            &mut spent,
        );
        drop(st);
        wake_all(wake);
        drop((old, spent));
        return Ok(delivered);
    }
    let mut guards: SmallVec<[MutexGuard<'_, State<T>>; 8]> = SmallVec::with_capacity(n);
    for i in 0..n {
        let sub = targets.get(i);
        let mut st = lock_spinning(&sub.state);
        if !st.closed && !st.has_room(sub) && !st.wait_for_room(sub, waker) {
            return Err(Full::at(sub, &st));
        }
        guards.push(st);
    }
    let Some(last) = guards.iter().rposition(|st| !st.closed) else {
        return Ok(0);
    };
    let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
    let mut old: SmallVec<[Arc<Envelope<T>>; 8]> = SmallVec::new();
    let mut spent = Vec::new();
    let mut delivered = 0;
    for (i, st) in guards.iter_mut().enumerate().take(last + 1) {
        if st.closed {
            continue;
        }
        let sub = targets.get(i);
        delivered += st.audience();
        // The last target gets the publisher's reference: one clone fewer.
        let e = if i == last {
            env.take().expect("delivered once")
        } else {
            env.clone().expect("delivered once")
        };
        old.extend(st.push(sub, e, &mut wake, &mut spent));
    }
    drop(guards);
    wake_all(wake);
    drop((old, spent));
    Ok(delivered)
}

/// Wakes the receivers a publish found parked. Usually there are none
/// (readers that keep up do not park): then the list, never grown onto
/// the heap, owns nothing and is forgotten rather than dropped (a call
/// every publish would pay for).
#[inline]
fn wake_all(wake: SmallVec<[Waker; 8]>) {
    if wake.is_empty() {
        debug_assert!(!wake.spilled());
        std::mem::forget(wake);
    } else {
        wake.into_iter().for_each(Waker::wake);
    }
}
