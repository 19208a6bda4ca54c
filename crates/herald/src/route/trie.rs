//! The token trie behind `Routes`: pattern tokens down, subscription ids at the leaves.

use rustc_hash::FxHashMap;

use crate::message::subject::Token;

/// One level of the trie. Ids are kept in subscription order (ascending).
#[derive(Default, Debug)]
pub(crate) struct Node {
    literal: FxHashMap<Box<str>, Node>,
    one: Option<Box<Node>>,
    /// Subscriptions whose pattern ends here with `>`.
    rest: Vec<u64>,
    /// Subscriptions whose pattern ends exactly here.
    here: Vec<u64>,
}

impl Node {
    pub(crate) fn insert(&mut self, tokens: &[Token], id: u64) {
        match tokens.split_first() {
            None => self.here.push(id),
            Some((Token::Rest, _)) => self.rest.push(id),
            Some((Token::One, tail)) => self
                .one
                .get_or_insert_with(Default::default)
                .insert(tail, id),
            Some((Token::Literal(l), tail)) => {
                self.literal.entry(l.clone()).or_default().insert(tail, id)
            }
        }
    }

    /// Removes `id` under `tokens`; returns whether it was found.
    pub(crate) fn remove(&mut self, tokens: &[Token], id: u64) -> bool {
        fn drop_id(v: &mut Vec<u64>, id: u64) -> bool {
            let before = v.len();
            v.retain(|&x| x != id);
            if v.is_empty() {
                v.shrink_to_fit();
            }
            before != v.len()
        }
        match tokens.split_first() {
            None => drop_id(&mut self.here, id),
            Some((Token::Rest, _)) => drop_id(&mut self.rest, id),
            Some((Token::One, tail)) => {
                let Some(child) = self.one.as_mut() else {
                    return false;
                };
                let found = child.remove(tail, id);
                if child.is_empty() {
                    self.one = None;
                }
                found
            }
            Some((Token::Literal(l), tail)) => {
                let Some(child) = self.literal.get_mut(l) else {
                    return false;
                };
                let found = child.remove(tail, id);
                if child.is_empty() {
                    self.literal.remove(l);
                    if self.literal.is_empty() {
                        self.literal.shrink_to_fit();
                    }
                }
                found
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }

    /// Appends the ids of every pattern that matches `tokens` (unordered across branches).
    pub(crate) fn collect(&self, tokens: &[&str], out: &mut Vec<u64>) {
        match tokens.split_first() {
            None => out.extend_from_slice(&self.here),
            Some((head, tail)) => {
                out.extend_from_slice(&self.rest);
                if let Some(child) = self.literal.get(*head) {
                    child.collect(tail, out);
                }
                if let Some(child) = &self.one {
                    child.collect(tail, out);
                }
            }
        }
    }
}
