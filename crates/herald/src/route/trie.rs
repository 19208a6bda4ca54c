//! The token trie behind `Routes`: pattern tokens down, subscription ids at the leaves,
//! laid out compactly (a node is 32 bytes) so that 100,000 subscriptions stay cheap.

use rustc_hash::FxHashMap;

use crate::message::pattern::Token;

/// Marks an id whose pattern ends in `>` at this node (it needs one or more further tokens).
const REST: u64 = 1 << 63;

/// One level of the trie.
#[derive(Default, Debug)]
pub(crate) struct Node {
    literal: Option<Box<FxHashMap<Box<str>, Node>>>,
    one: Option<Box<Node>>,
    /// Subscriptions ending here: exact ones, and `>` ones flagged with `REST`.
    ids: Box<[u64]>,
}

impl Node {
    pub(crate) fn insert<'a>(&mut self, mut tokens: impl Iterator<Item = Token<'a>>, id: u64) {
        match tokens.next() {
            None => self.add(id),
            Some(Token::Rest) => self.add(id | REST),
            Some(Token::One) => self
                .one
                .get_or_insert_with(Default::default)
                .insert(tokens, id),
            Some(Token::Literal(l)) => self
                .literal
                .get_or_insert_with(Default::default)
                .entry(l.into())
                .or_default()
                .insert(tokens, id),
        }
    }

    fn add(&mut self, flagged: u64) {
        let mut ids = std::mem::take(&mut self.ids).into_vec();
        ids.push(flagged);
        self.ids = ids.into_boxed_slice();
    }

    fn drop_id(&mut self, flagged: u64) -> bool {
        let before = self.ids.len();
        let ids: Vec<u64> = self.ids.iter().copied().filter(|&x| x != flagged).collect();
        self.ids = ids.into_boxed_slice();
        before != self.ids.len()
    }

    /// Removes `id` under `tokens`; returns whether it was found. Empty nodes are pruned.
    pub(crate) fn remove<'a>(
        &mut self,
        mut tokens: impl Iterator<Item = Token<'a>>,
        id: u64,
    ) -> bool {
        match tokens.next() {
            None => self.drop_id(id),
            Some(Token::Rest) => self.drop_id(id | REST),
            Some(Token::One) => {
                let Some(child) = self.one.as_mut() else {
                    return false;
                };
                let found = child.remove(tokens, id);
                if child.is_empty() {
                    self.one = None;
                }
                found
            }
            Some(Token::Literal(l)) => {
                let Some(map) = self.literal.as_mut() else {
                    return false;
                };
                let Some(child) = map.get_mut(l) else {
                    return false;
                };
                let found = child.remove(tokens, id);
                if child.is_empty() {
                    map.remove(l);
                    if map.is_empty() {
                        self.literal = None;
                    } else if map.len() * 4 < map.capacity() {
                        map.shrink_to_fit();
                    }
                }
                found
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_none() && self.one.is_none() && self.ids.is_empty()
    }

    /// Appends the ids of every pattern that matches `tokens` (unordered across branches).
    pub(crate) fn collect(&self, tokens: &[&str], out: &mut Vec<u64>) {
        match tokens.split_first() {
            None => out.extend(self.ids.iter().filter(|&&x| x & REST == 0)),
            Some((head, tail)) => {
                out.extend(
                    self.ids
                        .iter()
                        .filter(|&&x| x & REST != 0)
                        .map(|&x| x & !REST),
                );
                if let Some(child) = self.literal.as_ref().and_then(|m| m.get(*head)) {
                    child.collect(tail, out);
                }
                if let Some(child) = &self.one {
                    child.collect(tail, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::pattern::Pattern;

    fn insert(root: &mut Node, pattern: &str, id: u64) {
        let p = Pattern::new(pattern).expect("pattern");
        root.insert(p.tokens().expect("token pattern"), id);
    }

    fn matches(root: &Node, subject: &str) -> Vec<u64> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut out = Vec::new();
        root.collect(&tokens, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn literal_star_and_rest_collect_exactly_their_subjects() {
        let mut root = Node::default();
        insert(&mut root, "a.b", 1);
        insert(&mut root, "a.*", 2);
        insert(&mut root, "a.>", 3);
        insert(&mut root, ">", 4);
        insert(&mut root, "*.b.c", 5);
        assert_eq!(matches(&root, "a.b"), [1, 2, 3, 4]);
        assert_eq!(
            matches(&root, "a"),
            [4],
            "`a.>` needs at least one more token"
        );
        assert_eq!(matches(&root, "a.b.c"), [3, 4, 5]);
        assert_eq!(matches(&root, "x.y"), [4]);
    }

    #[test]
    fn removing_every_id_prunes_the_trie_back_to_empty() {
        let mut root = Node::default();
        let patterns = ["a.b", "a.*", "a.>", "*.b.c", "x.y.z"];
        for (id, p) in patterns.iter().enumerate() {
            insert(&mut root, p, id as u64);
        }
        for (id, p) in patterns.iter().enumerate() {
            let pattern = Pattern::new(p).expect("pattern");
            assert!(root.remove(pattern.tokens().expect("tokens"), id as u64));
            assert!(
                !root.remove(pattern.tokens().expect("tokens"), id as u64),
                "a second removal finds nothing"
            );
        }
        assert!(root.is_empty());
    }

    #[test]
    fn the_same_pattern_twice_keeps_both_ids() {
        let mut root = Node::default();
        insert(&mut root, "a.*", 7);
        insert(&mut root, "a.*", 8);
        assert_eq!(matches(&root, "a.z"), [7, 8]);
    }
}
