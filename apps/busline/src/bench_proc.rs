//! What this process has used, for the benchmarks: CPU time (from the
//! process's CPU clock), and context switches and resident memory (from
//! `/proc`, each zero where `/proc` is missing).

use std::time::Duration;

/// CPU time used by this process so far (user + system, all threads), to
/// the nanosecond: the process's CPU clock (`CLOCK_PROCESS_CPUTIME_ID`);
/// zero if it cannot be read. (`/proc/self/stat` counts it in clock ticks
/// of 10 ms, which a round of a few hundred milliseconds cannot split
/// finely enough.) Read through the C library, not rustix, whose reading
/// of the vDSO crashes under valgrind, where these benchmarks are profiled.
#[allow(unsafe_code)]
pub(crate) fn process_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable `timespec` for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Voluntary and involuntary context switches of every thread of this
/// process so far (each thread's own count is in its `status`; the
/// process's `status` holds only the main thread's). Zero where `/proc` is
/// missing.
pub(crate) fn ctxt_switches() -> (u64, u64) {
    let (mut vol, mut invol) = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let field = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let Some(v) = field("voluntary_ctxt_switches:") {
                vol += v;
            } else if let Some(v) = field("nonvoluntary_ctxt_switches:") {
                invol += v;
            }
        }
    }
    (vol, invol)
}

/// The process's resident memory in bytes (`VmRSS` in `/proc/self/status`);
/// zero where that file is missing.
pub(crate) fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
