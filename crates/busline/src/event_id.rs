//! [`EventId`]: what names one event, across processes.

use std::fmt;

/// A unique event id: 128 bits, printed as 32 hex digits.
///
/// The high 64 bits are random per bus instance, the low 64 bits count up, so
/// ids are unique across processes (NATS de-duplicates on them) and cheap to make.
///
/// Stored as two `u64` halves (not a `u128`) so an envelope needs only 8-byte
/// alignment, which keeps its allocation on the allocator's fast path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    hi: u64,
    lo: u64,
}

impl EventId {
    /// The id with these 128 bits.
    pub const fn from_u128(v: u128) -> Self {
        EventId {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// The id's 128 bits.
    pub const fn as_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// The high 64 bits: for an event published on a [`Bus`](crate::Bus)
    /// without an id of its own, that bus's [`node`](crate::Bus::node).
    pub const fn node(self) -> u64 {
        self.hi
    }

    pub(crate) const fn from_parts(hi: u64, lo: u64) -> Self {
        EventId { hi, lo }
    }

    /// Parses 32 hex digits (as printed by `Display`).
    pub fn parse(s: &str) -> Option<EventId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(EventId::from_u128)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid event id `{s}`: want 32 hex digits"))
        })
    }
}
