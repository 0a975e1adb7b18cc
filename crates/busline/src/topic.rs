//! Topics and patterns: dot-separated tokens with NATS-style wildcards.
//!
//! The syntax is documented on [`Topic`].

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::TopicError;

/// Longest topic or pattern accepted, in bytes.
pub const MAX_LEN: usize = 1024;

/// A validated topic: the name an event is published under. Topics and
/// patterns are dot-separated tokens with NATS-style wildcards.
///
/// Cheap to clone: a topic of up to 30 bytes is stored inline (cloning it
/// copies 32 bytes and touches no shared counter, which matters on the
/// publish path, where every envelope carries its topic to other threads);
/// a longer one shares an `Arc<str>`.
///
/// A **topic** names what an event is about: `metrics.request`, `orders.eu.created`.
/// It is one or more non-empty tokens separated by `.`; tokens may hold any
/// character except whitespace, `.`, `*` and `>`.
///
/// A **pattern** is what a subscriber listens to. It has the same grammar, plus
/// two wildcard tokens, exactly as in NATS subjects (so topics map 1:1 to subjects):
///
/// | token | matches |
/// | --- | --- |
/// | `*` | exactly one token |
/// | `>` | one or more tokens; only as the last token |
///
/// ```
/// use busline::{Pattern, Topic};
///
/// let p = Pattern::new("metrics.*.latency").unwrap();
/// assert!(p.matches(&Topic::new("metrics.web.latency").unwrap()));
/// assert!(!p.matches(&Topic::new("metrics.web.db.latency").unwrap()));
///
/// let all = Pattern::new("metrics.>").unwrap();
/// assert!(all.matches(&Topic::new("metrics.web.db.latency").unwrap()));
/// assert!(!all.matches(&Topic::new("metrics").unwrap())); // `>` needs at least one token
///
/// // Malformed input is an error that names it and says what is wrong.
/// let err = Topic::new("metrics..latency").unwrap_err();
/// assert_eq!(err.to_string(), "invalid topic `metrics..latency`: token 2 is empty");
/// let err = Pattern::new("metrics.>.latency").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid pattern `metrics.>.latency`: `>` is only allowed as the last token"
/// );
/// ```
///
/// Topics starting with `$sys.` are reserved for busline's own events (module
/// lifecycle, transport status); `_INBOX.` is reserved for request/reply.
#[derive(Clone)]
pub struct Topic(Repr);

/// Bytes a topic may have and still be stored inline.
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Topic {
    /// Validates `s` as a topic.
    pub fn new(s: &str) -> Result<Self, TopicError> {
        validate(s, false)?;
        Ok(Topic::from_valid(s))
    }

    /// A topic from a string the caller made valid (see [`validate`]).
    pub(crate) fn from_valid(s: &str) -> Self {
        Topic::from_valid_parts(&[s])
    }

    /// The topic `parts` make joined, where the caller made the result
    /// valid; without a string in between when it is stored inline.
    pub(crate) fn from_valid_parts(parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let t = if len <= INLINE {
            let mut bytes = [0u8; INLINE];
            let mut at = 0;
            for p in parts {
                bytes[at..at + p.len()].copy_from_slice(p.as_bytes());
                at += p.len();
            }
            Topic(Repr::Inline {
                len: len as u8,
                bytes,
            })
        } else if let [s] = parts {
            Topic(Repr::Shared(Arc::from(*s)))
        } else {
            Topic(Repr::Shared(Arc::from(parts.concat())))
        };
        debug_assert!(
            validate(t.as_str(), false).is_ok(),
            "not a valid topic: {t:?}"
        );
        t
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..*len as usize];
                // Read on every publish and route lookup: not checked again.
                #[allow(unsafe_code)]
                // SAFETY: `from_valid` is the only maker of `Inline`; it
                // copies a whole `&str` into `bytes` and its length into
                // `len`, and nothing changes them after.
                unsafe {
                    std::str::from_utf8_unchecked(bytes)
                }
            }
            Repr::Shared(s) => s,
        }
    }

    /// The topic's tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('.')
    }
}

impl PartialEq for Topic {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Topic {}

impl std::hash::Hash for Topic {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Topic {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", self.as_str())
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, TopicError> {
        Topic::new(s)
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Topic::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One token of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Literal(&'a str),
    /// `*`
    One,
    /// `>`
    Rest,
}

/// A validated subscription pattern: a topic that may contain `*` and a trailing `>`.
///
/// One allocation, the text: its tokens are read from it when needed
/// (matching a topic goes through the bus's index, not through here).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
}

impl Pattern {
    /// Validates `s` as a pattern.
    pub fn new(s: &str) -> Result<Self, TopicError> {
        validate(s, true)?;
        Ok(Pattern { text: Arc::from(s) })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard, i.e. matches exactly one topic.
    pub fn is_literal(&self) -> bool {
        self.tokens().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_str(topic.as_str())
    }

    /// Whether the (already valid) topic string matches this pattern.
    pub fn matches_str(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for tok in self.tokens() {
            match tok {
                Token::Rest => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(l) => match parts.next() {
                    Some(p) if p == l => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// Its tokens, in order.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = Token<'_>> + Clone {
        self.text.split('.').map(|t| match t {
            "*" => Token::One,
            ">" => Token::Rest,
            lit => Token::Literal(lit),
        })
    }

    /// Whether some topic matches both this pattern and `other`.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let (mut a, mut b) = (self.tokens(), other.tokens());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                // `>` takes the one or more tokens the other has from here.
                (Some(Token::Rest), Some(_)) | (Some(_), Some(Token::Rest)) => return true,
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(Token::Literal(x)), Some(Token::Literal(y))) if x != y => return false,
                _ => {}
            }
        }
    }

    /// Whether every topic matching `other` matches this pattern too.
    pub fn covers(&self, other: &Pattern) -> bool {
        let (mut a, mut b) = (self.tokens(), other.tokens());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(Token::Rest), Some(_)) => return true,
                (Some(Token::One), Some(Token::One | Token::Literal(_))) => {}
                (Some(Token::Literal(x)), Some(Token::Literal(y))) if x == y => {}
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", &*self.text)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, TopicError> {
        Pattern::new(s)
    }
}

impl From<Topic> for Pattern {
    fn from(t: Topic) -> Self {
        // A valid topic is always a valid literal pattern.
        Pattern::new(t.as_str()).expect("a topic is a valid pattern")
    }
}

fn validate(s: &str, pattern: bool) -> Result<(), TopicError> {
    let err = |reason: String| {
        Err(TopicError {
            input: s.to_string(),
            pattern,
            reason,
        })
    };
    if s.is_empty() {
        return err("it is empty".into());
    }
    if s.len() > MAX_LEN {
        return err(format!(
            "it is {} bytes long, the limit is {MAX_LEN}",
            s.len()
        ));
    }
    let count = s.split('.').count();
    for (i, tok) in s.split('.').enumerate() {
        let n = i + 1;
        if tok.is_empty() {
            return err(format!("token {n} is empty"));
        }
        if let Some(c) = tok.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return err(format!("token {n} contains the character {c:?}"));
        }
        match tok {
            "*" | ">" if !pattern => {
                return err(format!(
                    "token {n} is the wildcard `{tok}`; wildcards are only allowed in patterns"
                ))
            }
            ">" if n != count => return err("`>` is only allowed as the last token".into()),
            "*" | ">" => {}
            _ if tok.contains(['*', '>']) => {
                return err(format!(
                    "token {n} (`{tok}`) mixes a wildcard with other characters"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topics() {
        for t in [
            "a",
            "a.b.c",
            "$sys.module.started",
            "metrics.web-1.latency_ms",
            "é.ü",
        ] {
            Topic::new(t).unwrap();
        }
    }

    #[test]
    fn invalid_topics_name_the_problem() {
        let cases = [
            ("", "it is empty"),
            (".a", "token 1 is empty"),
            ("a.", "token 2 is empty"),
            ("a b", "token 1 contains the character ' '"),
            (
                "a.*",
                "token 2 is the wildcard `*`; wildcards are only allowed in patterns",
            ),
            (
                "a.>",
                "token 2 is the wildcard `>`; wildcards are only allowed in patterns",
            ),
            (
                "a.b*",
                "token 2 (`b*`) mixes a wildcard with other characters",
            ),
        ];
        for (input, reason) in cases {
            let e = Topic::new(input).unwrap_err();
            assert_eq!(e.reason, reason, "{input}");
            assert_eq!(e.to_string(), format!("invalid topic `{input}`: {reason}"));
        }
        let long = "a".repeat(MAX_LEN + 1);
        assert!(Topic::new(&long).unwrap_err().reason.contains("limit"));
    }

    #[test]
    fn short_and_long_topics_behave_alike() {
        use std::collections::HashSet;
        let short = Topic::new("metrics.web.latency").unwrap();
        let long_s = "metrics.a-rather-long-service-name.latency.p99";
        let long = Topic::new(long_s).unwrap();
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert!(matches!(long.0, Repr::Shared(_)));
        assert_eq!(short.as_str(), "metrics.web.latency");
        assert_eq!(long.as_str(), long_s);
        assert_eq!(long.clone(), long);
        assert!(long < short); // ordered as strings, whatever the storage
        let set: HashSet<Topic> = [short.clone(), long.clone(), short.clone()].into();
        assert_eq!(set.len(), 2);
        assert!(set.contains("metrics.web.latency"));
        let edge = "a".repeat(INLINE);
        assert_eq!(Topic::new(&edge).unwrap().as_str(), edge);
        let multi = "é.ü.ß.漢字.tópico";
        assert_eq!(Topic::new(multi).unwrap().as_str(), multi);
    }

    #[test]
    fn parts_make_the_topic_their_joined_string_makes() {
        for parts in [
            &["_INBOX.", "0123456789abc", ".", "42"][..],
            &["é.ü.", "ß.漢字"],
            &["a".repeat(INLINE - 1).as_str(), "b"],
            &["a".repeat(INLINE).as_str(), ".", "b"],
        ] {
            let joined = parts.concat();
            let t = Topic::from_valid_parts(parts);
            assert_eq!(t.as_str(), joined);
            assert_eq!(t, Topic::new(&joined).unwrap());
            assert_eq!(matches!(t.0, Repr::Inline { .. }), joined.len() <= INLINE);
        }
    }

    #[test]
    fn pattern_matching() {
        let m = |p: &str, t: &str| Pattern::new(p).unwrap().matches_str(t);
        assert!(m("a", "a"));
        assert!(!m("a", "a.b"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "a"));
        assert!(m("*.b.>", "x.b.c.d"));
        assert!(!m("*.b.>", "x.c.c.d"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
    }

    #[test]
    fn invalid_patterns() {
        assert!(Pattern::new("a.>.b").is_err());
        assert!(Pattern::new("a.**").is_err());
        assert!(Pattern::new("a..b").is_err());
        assert!(Pattern::new("a.*").unwrap().matches_str("a.z"));
    }
}
