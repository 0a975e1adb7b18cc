//! Pattern index: finds the subscribers whose pattern matches a topic.
//!
//! A trie keyed by token. Matching a topic walks at most one literal child,
//! the `*` child and the `>` list per level, so its cost depends on the topic's
//! depth and on the subscribers that match, never on unrelated subscribers.

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::topic::{Pattern, Token};

/// Identifies one entry (a subscriber or a queue group) in the index.
pub(crate) type EntryId = u64;

#[derive(Default, Debug)]
pub(crate) struct Trie {
    root: Node,
    len: usize,
}

/// One level of the trie: 40 bytes (a parent's map or list holds its
/// literal children inline, so a subscriber on a pattern of its own pays
/// for a node or two).
#[derive(Default, Debug)]
struct Node {
    literal: Children,
    one: Option<Box<Node>>,
    /// Entries whose pattern ends here, exactly or with `>` (see [`mark`]).
    ends: Ids,
}

/// How `id` is kept in [`Node::ends`]: shifted left one bit, the low bit
/// set when its pattern ends there with `>` (ids count up from 0 and never
/// reach 2^63).
fn mark(id: EntryId, rest: bool) -> u64 {
    debug_assert!(id < 1 << 63);
    id << 1 | rest as u64
}

/// A node's literal children: a list while there are few (most nodes have
/// one or none, and a list of one costs one small allocation), a map once
/// there are more than [`FEW`] (looking a token up costs the same however
/// many there are). 16 bytes: the map's pointer sits beside the list's.
#[derive(Debug)]
enum Children {
    Few(Box<[(Box<str>, Node)]>),
    Many(Box<AHashMap<Box<str>, Node>>),
}

/// The most literal children a node keeps in a list.
const FEW: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Box::default())
    }
}

/// The entries whose pattern ends at a node (each as its [`mark`]): one
/// inline (most nodes have one or none), more in a slice. 16 bytes.
#[derive(Debug)]
enum Ids {
    One(u64),
    /// None or more than one.
    Many(Box<[u64]>),
}

impl Default for Ids {
    fn default() -> Self {
        Ids::Many(Box::default())
    }
}

impl Ids {
    fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(mark) => std::slice::from_ref(mark),
            Ids::Many(marks) => marks,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Appends to `out` the ids of the entries that end with `>` (`rest`),
    /// or of those that end exactly here.
    fn ids_to(&self, rest: bool, out: &mut Vec<EntryId>) {
        let marks = self.as_slice().iter();
        out.extend(marks.filter(|&m| m & 1 == rest as u64).map(|m| m >> 1));
    }

    fn push(&mut self, mark: u64) {
        *self = match std::mem::take(self) {
            Ids::Many(ids) if ids.is_empty() => Ids::One(mark),
            Ids::One(first) => Ids::Many(Box::new([first, mark])),
            Ids::Many(ids) => Ids::Many(pushed(ids, mark)),
        };
    }

    /// Removes `mark` (the last one takes its place); returns whether it was there.
    fn remove(&mut self, mark: u64) -> bool {
        let Some(i) = self.as_slice().iter().position(|&x| x == mark) else {
            return false;
        };
        *self = match std::mem::take(self) {
            Ids::One(_) => Ids::default(),
            Ids::Many(ids) => {
                let mut v = ids.into_vec();
                v.swap_remove(i);
                match v[..] {
                    [one] => Ids::One(one),
                    _ => Ids::Many(v.into_boxed_slice()),
                }
            }
        };
        true
    }
}

/// `items` with `item` after them, in a slice exactly that long.
fn pushed<I>(items: Box<[I]>, item: I) -> Box<[I]> {
    let mut v = items.into_vec();
    v.reserve_exact(1);
    v.push(item);
    v.into_boxed_slice()
}

impl Children {
    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }

    fn get(&self, tok: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(k, _)| &**k == tok).map(|(_, n)| n),
            Children::Many(m) => m.get(tok),
        }
    }

    fn get_mut(&mut self, tok: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(k, _)| &**k == tok).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(tok),
        }
    }

    /// The child for `tok`, added if there is none.
    fn entry(&mut self, tok: &str) -> &mut Node {
        if let Children::Few(v) = self {
            if v.len() >= FEW && !v.iter().any(|(k, _)| &**k == tok) {
                let v = std::mem::take(v);
                *self = Children::Many(Box::new(v.into_vec().into_iter().collect()));
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(k, _)| &**k == tok) {
                    Some(i) => i,
                    None => {
                        // Grown one at a time: a node's list holds what it needs.
                        *v = pushed(std::mem::take(v), (tok.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(tok.into()).or_default(),
        }
    }

    fn remove(&mut self, tok: &str) {
        match self {
            Children::Few(v) => {
                if let Some(i) = v.iter().position(|(k, _)| &**k == tok) {
                    let mut list = std::mem::take(v).into_vec();
                    list.swap_remove(i);
                    *v = list.into_boxed_slice();
                }
            }
            Children::Many(m) => {
                m.remove(tok);
            }
        }
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.one.is_none() && self.ends.is_empty()
    }
}

impl Trie {
    pub(crate) fn insert(&mut self, pattern: &Pattern, id: EntryId) {
        let mut node = &mut self.root;
        for tok in pattern.tokens() {
            match tok {
                Token::Literal(l) => node = node.literal.entry(l),
                Token::One => node = node.one.get_or_insert_with(Default::default),
                Token::Rest => {
                    node.ends.push(mark(id, true));
                    self.len += 1;
                    return;
                }
            }
        }
        node.ends.push(mark(id, false));
        self.len += 1;
    }

    /// Removes `id` registered under `pattern`; returns whether it was there.
    pub(crate) fn remove(&mut self, pattern: &Pattern, id: EntryId) -> bool {
        let tokens: SmallVec<[Token<'_>; 8]> = pattern.tokens().collect();
        let removed = Self::remove_at(&mut self.root, &tokens, id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node, tokens: &[Token<'_>], id: EntryId) -> bool {
        let Some((first, rest)) = tokens.split_first() else {
            return node.ends.remove(mark(id, false));
        };
        match first {
            Token::Rest => node.ends.remove(mark(id, true)),
            Token::One => {
                let Some(child) = node.one.as_deref_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, id);
                if child.is_empty() {
                    node.one = None;
                }
                removed
            }
            Token::Literal(l) => {
                let Some(child) = node.literal.get_mut(l) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, id);
                if child.is_empty() {
                    node.literal.remove(l);
                }
                removed
            }
        }
    }

    /// Appends every entry matching `topic` (a valid topic) to `out`.
    pub(crate) fn matches(&self, topic: &str, out: &mut Vec<EntryId>) {
        let tokens: smallvec::SmallVec<[&str; 8]> = topic.split('.').collect();
        Self::match_at(&self.root, &tokens, out);
    }

    fn match_at(node: &Node, tokens: &[&str], out: &mut Vec<EntryId>) {
        let Some((first, rest)) = tokens.split_first() else {
            node.ends.ids_to(false, out);
            return;
        };
        node.ends.ids_to(true, out);
        if let Some(child) = node.literal.get(first) {
            Self::match_at(child, rest, out);
        }
        if let Some(child) = node.one.as_deref() {
            Self::match_at(child, rest, out);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(t: &Trie, topic: &str) -> Vec<EntryId> {
        let mut v = Vec::new();
        t.matches(topic, &mut v);
        v.sort();
        v
    }

    #[test]
    fn a_node_takes_40_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 40);
    }

    #[test]
    fn ids_hold_one_inline_and_more_in_a_slice() {
        let mut ids = Ids::default();
        for id in 0..4 {
            ids.push(id);
        }
        assert_eq!(ids.as_slice(), [0, 1, 2, 3]);
        assert!(ids.remove(1) && !ids.remove(1));
        assert_eq!(ids.as_slice(), [0, 3, 2]);
        assert!(ids.remove(0) && ids.remove(2));
        assert!(matches!(ids, Ids::One(3)));
        assert!(ids.remove(3));
        assert!(ids.is_empty());
    }

    #[test]
    fn insert_match_remove() {
        let mut t = Trie::default();
        let pats = ["a.b", "a.*", "a.>", ">", "*.b", "a.b.c", "a"];
        for (i, p) in pats.iter().enumerate() {
            t.insert(&Pattern::new(p).unwrap(), i as u64);
        }
        assert_eq!(ids(&t, "a.b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(ids(&t, "a.b.c"), vec![2, 3, 5]);
        assert_eq!(ids(&t, "a"), vec![3, 6]);
        // "a.>" (2) and "a" (6) end at one node: each is removed as itself.
        assert!(!t.remove(&Pattern::new("a").unwrap(), 2));
        assert!(!t.remove(&Pattern::new("a.>").unwrap(), 6));
        assert!(t.remove(&Pattern::new("a.*").unwrap(), 1));
        assert!(!t.remove(&Pattern::new("a.*").unwrap(), 1));
        assert_eq!(ids(&t, "a.b"), vec![0, 2, 3, 4]);
        for (i, p) in pats.iter().enumerate() {
            t.remove(&Pattern::new(p).unwrap(), i as u64);
        }
        assert_eq!(t.len(), 0);
        assert!(t.root.is_empty());
    }

    #[test]
    fn many_literal_children_are_found_and_removed() {
        let mut t = Trie::default();
        let pats: Vec<Pattern> = (0..3 * FEW)
            .map(|i| Pattern::new(&format!("a.t{i}")).unwrap())
            .collect();
        for (i, p) in pats.iter().enumerate() {
            t.insert(p, i as u64);
        }
        assert!(matches!(
            t.root.literal.get("a").unwrap().literal,
            Children::Many(_)
        ));
        for i in 0..pats.len() {
            assert_eq!(ids(&t, &format!("a.t{i}")), vec![i as u64]);
        }
        for (i, p) in pats.iter().enumerate() {
            assert!(t.remove(p, i as u64));
        }
        assert_eq!(t.len(), 0);
        assert!(t.root.is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string())
        ]
    }

    fn pattern_token() -> impl Strategy<Value = String> {
        prop_oneof![token(), Just("*".to_string())]
    }

    proptest! {
        /// The trie agrees with matching each pattern one by one.
        #[test]
        fn trie_agrees_with_linear_matching(
            pats in proptest::collection::vec(
                (proptest::collection::vec(pattern_token(), 1..4), any::<bool>()), 0..20),
            topics in proptest::collection::vec(proptest::collection::vec(token(), 1..5), 1..10),
        ) {
            let mut t = Trie::default();
            let pats: Vec<Pattern> = pats.into_iter().map(|(toks, rest)| {
                let mut s = toks.join(".");
                if rest { s.push_str(".>"); }
                Pattern::new(&s).unwrap()
            }).collect();
            for (i, p) in pats.iter().enumerate() { t.insert(p, i as u64); }
            for topic in topics {
                let topic = topic.join(".");
                let expect: Vec<u64> = pats.iter().enumerate()
                    .filter(|(_, p)| p.matches_str(&topic)).map(|(i, _)| i as u64).collect();
                prop_assert_eq!(ids(&t, &topic), expect);
            }
        }
    }
}
