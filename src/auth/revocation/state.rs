//! The list in memory: jti, subject and token entries, each a map from key to instant, merged
//! so that the later instant wins.

use super::{Check, Entry, Kind};
use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct State {
    pub(super) jti: HashMap<String, u64>,
    pub(super) subjects: HashMap<String, u64>,
    pub(super) tokens: HashMap<[u8; 32], u64>,
}

/// Stores `v` under `k` unless an equal or later instant is there; whether anything changed.
fn raise<K: Hash + Eq>(map: &mut HashMap<K, u64>, k: K, v: u64) -> bool {
    match map.entry(k) {
        Slot::Occupied(mut o) if *o.get() < v => {
            o.insert(v);
            true
        }
        Slot::Occupied(_) => false,
        Slot::Vacant(slot) => {
            slot.insert(v);
            true
        }
    }
}

impl State {
    pub(super) fn len(&self) -> usize {
        self.jti.len() + self.subjects.len() + self.tokens.len()
    }

    pub(super) fn revokes(&self, c: &Check<'_>) -> bool {
        if let Some(jti) = c.jti {
            if self.jti.get(jti).is_some_and(|&exp| c.now <= exp) {
                return true;
            }
        }
        if let Some(&before) = self.subjects.get(c.subject) {
            if c.issued_at.is_none_or(|iat| iat <= before) {
                return true;
            }
        }
        match c.token_sha256 {
            Some(h) => self.tokens.get(h).is_some_and(|&exp| c.now <= exp),
            None => false,
        }
    }

    /// Merges `e`; the entry when that changed the list (a new key or a later instant).
    pub(super) fn merge(&mut self, e: &Entry) -> Option<Entry> {
        let changed = match e {
            Entry::Jti { jti, expires_at } => raise(&mut self.jti, jti.clone(), *expires_at),
            Entry::Subject { subject, before } => {
                raise(&mut self.subjects, subject.clone(), *before)
            }
            Entry::Token { sha256, expires_at } => raise(&mut self.tokens, *sha256, *expires_at),
        };
        changed.then(|| e.clone())
    }

    pub(super) fn remove(&mut self, e: &Entry) -> bool {
        match e {
            Entry::Jti { jti, .. } => self.jti.remove(jti).is_some(),
            Entry::Subject { subject, .. } => self.subjects.remove(subject).is_some(),
            Entry::Token { sha256, .. } => self.tokens.remove(sha256).is_some(),
        }
    }

    /// The instant stored under `e`'s key.
    pub(super) fn get(&self, e: &Entry) -> Option<u64> {
        match e {
            Entry::Jti { jti, .. } => self.jti.get(jti).copied(),
            Entry::Subject { subject, .. } => self.subjects.get(subject).copied(),
            Entry::Token { sha256, .. } => self.tokens.get(sha256).copied(),
        }
    }

    pub(super) fn prune(&mut self, now: u64) {
        self.jti.retain(|_, exp| *exp >= now);
        self.tokens.retain(|_, exp| *exp >= now);
    }

    pub(super) fn counts(&self, now: u64) -> (usize, usize, usize) {
        let jti = self.jti.values().filter(|&&e| e >= now).count();
        let tokens = self.tokens.values().filter(|&&e| e >= now).count();
        (jti, self.subjects.len(), tokens)
    }

    /// Every entry, expired or not, in no particular order.
    pub(super) fn all(&self) -> impl Iterator<Item = Entry> + '_ {
        let jti = self.jti.iter().map(|(k, &t)| (Kind::Jti, k.clone(), t));
        let subjects = self
            .subjects
            .iter()
            .map(|(k, &t)| (Kind::Subject, k.clone(), t));
        let tokens = self
            .tokens
            .iter()
            .map(|(k, &t)| (Kind::Token, hex::encode(k), t));
        let all = jti.chain(subjects).chain(tokens);
        all.filter_map(|(kind, k, t)| Entry::from_parts(kind, &k, t).ok())
    }

    /// The current entries: jti, then subject, then token entries, each sorted by key.
    pub(super) fn entries(&self, now: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self.all().filter(|e| e.live(now)).collect();
        out.sort_by_cached_key(|e| (e.kind(), e.key()));
        out
    }

    /// Entries of `self` that `old` lacks or holds with an earlier instant.
    pub(super) fn gained_since(&self, old: &State) -> Vec<Entry> {
        let gained = |e: &Entry| old.get(e).is_none_or(|t| t < e.instant());
        self.all().filter(gained).collect()
    }
}
