//! Named consumers' offsets: one subject per consumer in the offsets
//! stream, holding the last committed offset.

/// Longest escaped consumer name used as it is in a subject; a longer one
/// (the server refuses a protocol line over 4 KiB) becomes a hash.
const KV_KEY_MAX: usize = 200;

/// A consumer name as a subject token: `[A-Za-z0-9_-]` as they are, other
/// bytes `=XX`; past [`KV_KEY_MAX`] bytes that way, `~` and a 128-bit hash
/// of the name (the stored value then also holds the name, see [`kv_value`]).
pub(super) fn kv_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    if out.len() > KV_KEY_MAX {
        return format!("~{:032x}", fnv1a_128(name.as_bytes()));
    }
    out
}

/// FNV-1a, 128 bits: stable across builds and platforms (a subject made
/// from it must mean the same after an upgrade).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

/// The value stored for a commit: the offset, and for a hashed key the
/// name after a space (so a read can tell another name with the same hash).
pub(super) fn kv_value(name: &str, offset: u64) -> String {
    if kv_key(name).starts_with('~') {
        format!("{offset} {name}")
    } else {
        offset.to_string()
    }
}

/// The offset in a stored commit value of consumer `name`.
pub(super) fn parse_kv_value(name: &str, value: &str) -> Result<u64, String> {
    let (offset, stored_name) = match value.split_once(' ') {
        Some((o, n)) => (o, Some(n)),
        None => (value, None),
    };
    if kv_key(name).starts_with('~') && stored_name != Some(name) {
        return Err(format!(
            "the stored commit belongs to another consumer name with the same hash ({:?})",
            stored_name.unwrap_or("")
        ));
    }
    offset
        .parse()
        .map_err(|_| format!("stored value {value:?} is not an offset"))
}
