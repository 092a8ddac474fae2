//! Stat names stored once per distinct token: the role of Envoy's `Stats::SymbolTable`
//! (`source/common/stats/symbol_table.h`), in a simpler shape.
//!
//! A stat name is a list of `.`-separated tokens: `cluster.svc1.upstream_rq_total`. With
//! thousands of clusters the same few hundred last tokens and the same cluster names come back
//! in every name, so keeping each full name as a `String` (as the registry did) cost ~150 bytes
//! per stat. Here:
//! - the text of each distinct token is stored once, in one string ([`Names`]);
//! - each distinct prefix (`cluster`, `cluster.svc1`, `cluster.svc1.circuit_breakers`, …) is one
//!   8-byte node: its parent prefix and its last token;
//! - a stat's [`StatName`] is 8 bytes: its prefix node and its last token.
//!
//! Splitting at every `.` and joining with `.` give back any string exactly, empty tokens
//! included (`a..b`, `.a`, `a.`). Nothing is ever removed: stats live as long as their store.
//! Envoy differs: it encodes each name as a byte string of varint symbols with reference
//! counts, so that the symbols of removed stats can be freed.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// A token or prefix id; `NO_PREFIX` marks a name of one token.
type Id = u32;

/// The prefix of a name without a `.`.
const NO_PREFIX: Id = Id::MAX;

/// An interned stat name: its prefix (all tokens but the last) and its last token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StatName {
    prefix: Id,
    leaf: Id,
}

/// The text of the interned names, without the lookup tables: what writing a name needs.
/// Cloned by admin renders so that names are formatted outside the registry lock.
#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    /// The text of every token, concatenated.
    text: String,
    /// Token id → end of its text in `text` (its start is the previous token's end).
    ends: Vec<u32>,
    /// Prefix id → (parent prefix or `NO_PREFIX`, last token).
    prefixes: Vec<(Id, Id)>,
}

/// Interned stat names: [`Names`] plus the hash tables that find a token or prefix id.
#[derive(Debug, Default)]
pub(crate) struct SymbolTable {
    names: Names,
    /// Token ids, hashed by their text.
    tokens: HashTable<Id>,
    /// Prefix ids, hashed by (parent, last token).
    prefix_ids: HashTable<Id>,
}

// === impl Names ===

impl Names {
    /// The text of token `id` (empty for an unknown id, which no [`StatName`] holds).
    fn token(&self, id: Id) -> &str {
        let index = id as usize;
        let end = self.ends.get(index).copied().unwrap_or(0) as usize;
        let start = match index.checked_sub(1) {
            Some(previous) => self.ends.get(previous).copied().unwrap_or(0) as usize,
            None => 0,
        };
        self.text.get(start..end).unwrap_or("")
    }

    /// Appends the full name to `out`. `scratch` is reused between calls to hold the prefix
    /// chain (iterative: a name may have many tokens).
    pub(crate) fn write(&self, name: StatName, scratch: &mut Vec<Id>, out: &mut String) {
        scratch.clear();
        let mut prefix = name.prefix;
        while let Some(&(parent, token)) = self.prefixes.get(prefix as usize) {
            scratch.push(token);
            prefix = parent;
        }
        for &token in scratch.iter().rev() {
            out.push_str(self.token(token));
            out.push('.');
        }
        out.push_str(self.token(name.leaf));
    }

    /// The full name as a new string.
    #[cfg(test)]
    pub(crate) fn full_name(&self, name: StatName) -> String {
        let mut out = String::new();
        self.write(name, &mut Vec::new(), &mut out);
        out
    }
}

// === impl SymbolTable ===

impl SymbolTable {
    /// The id of `name`, interning whatever tokens and prefixes are new; `None` only when the
    /// table would exceed 4 GiB of text or 2³² − 1 ids.
    pub(crate) fn intern(&mut self, name: &str) -> Option<StatName> {
        let (prefix, leaf) = split_last(name);
        let mut parent = NO_PREFIX;
        if let Some(prefix) = prefix {
            for token in prefix.split('.') {
                let token = self.intern_token(token)?;
                parent = self.intern_prefix(parent, token)?;
            }
        }
        Some(StatName { prefix: parent, leaf: self.intern_token(leaf)? })
    }

    /// The id of `name` if its prefix and last token are interned (not necessarily as this
    /// name: whether a stat has it is for the registry's maps to say); never adds anything.
    pub(crate) fn find(&self, name: &str) -> Option<StatName> {
        let (prefix, leaf) = split_last(name);
        let mut parent = NO_PREFIX;
        if let Some(prefix) = prefix {
            for token in prefix.split('.') {
                let token = self.find_token(token)?;
                parent = self.find_prefix(parent, token)?;
            }
        }
        Some(StatName { prefix: parent, leaf: self.find_token(leaf)? })
    }

    /// The text of the names, for writing them.
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    fn find_token(&self, token: &str) -> Option<Id> {
        let names = &self.names;
        self.tokens.find(FxBuildHasher.hash_one(token), |&id| names.token(id) == token).copied()
    }

    fn intern_token(&mut self, token: &str) -> Option<Id> {
        if let Some(id) = self.find_token(token) {
            return Some(id);
        }
        let id = Id::try_from(self.names.ends.len()).ok().filter(|id| *id != NO_PREFIX)?;
        let end = u32::try_from(self.names.text.len().checked_add(token.len())?).ok()?;
        self.names.text.push_str(token);
        self.names.ends.push(end);
        let names = &self.names;
        self.tokens.insert_unique(FxBuildHasher.hash_one(token), id, |&id| FxBuildHasher.hash_one(names.token(id)));
        Some(id)
    }

    fn find_prefix(&self, parent: Id, token: Id) -> Option<Id> {
        let prefixes = &self.names.prefixes;
        self.prefix_ids
            .find(FxBuildHasher.hash_one((parent, token)), |&id| prefixes.get(id as usize) == Some(&(parent, token)))
            .copied()
    }

    fn intern_prefix(&mut self, parent: Id, token: Id) -> Option<Id> {
        if let Some(id) = self.find_prefix(parent, token) {
            return Some(id);
        }
        let id = Id::try_from(self.names.prefixes.len()).ok().filter(|id| *id != NO_PREFIX)?;
        self.names.prefixes.push((parent, token));
        let prefixes = &self.names.prefixes;
        let rehash = |&id: &Id| FxBuildHasher.hash_one(prefixes.get(id as usize).copied().unwrap_or_default());
        self.prefix_ids.insert_unique(FxBuildHasher.hash_one((parent, token)), id, rehash);
        Some(id)
    }
}

/// `a.b.c` → (`Some("a.b")`, `c`); `c` → (`None`, `c`).
fn split_last(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once('.') {
        Some((prefix, leaf)) => (Some(prefix), leaf),
        None => (None, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_exactly() {
        let mut table = SymbolTable::default();
        let cases = [
            "cluster.svc1.upstream_rq_total",
            "cluster.svc1.circuit_breakers.default.cx_open",
            "cluster.svc2.upstream_rq_total",
            "server.uptime",
            "uptime",
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "listener.0.0.0.0_10000.downstream_cx_total",
            "cluster.outbound|80||foo.default.svc.cluster.local.version",
        ];
        let ids: Vec<StatName> = cases.iter().map(|name| table.intern(name).unwrap()).collect();
        for (name, id) in cases.iter().zip(&ids) {
            assert_eq!(table.names().full_name(*id), *name);
            assert_eq!(table.find(name), Some(*id), "{name}");
            assert_eq!(table.intern(name), Some(*id), "interning again gives the same id: {name}");
        }
        // Distinct names, distinct ids.
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn tokens_and_prefixes_are_stored_once() {
        let mut table = SymbolTable::default();
        for i in 0..100 {
            for leaf in ["upstream_rq_total", "membership_total", "version"] {
                table.intern(&format!("cluster.svc{i}.{leaf}")).unwrap();
            }
        }
        // `cluster`, 100 cluster names, 3 leaves.
        assert_eq!(table.names.ends.len(), 104);
        // `cluster` and `cluster.svc<i>`.
        assert_eq!(table.names.prefixes.len(), 101);
        assert_eq!(table.tokens.len(), 104);
        assert_eq!(table.prefix_ids.len(), 101);
    }

    #[test]
    fn find_adds_nothing() {
        let mut table = SymbolTable::default();
        table.intern("a.b.c").unwrap();
        assert_eq!(table.find("a.b.d"), None);
        // Its parts are known: an id, though no stat may carry it (the registry's maps decide).
        assert!(table.find("a.c").is_some());
        assert_eq!(table.find("b.c"), None);
        assert_eq!(table.find("x"), None);
        assert!(table.find("a.b.c").is_some());
        assert_eq!(table.names.ends.len(), 3);
        assert_eq!(table.names.prefixes.len(), 2);
    }

    #[test]
    fn writing_reuses_the_scratch() {
        let mut table = SymbolTable::default();
        let a = table.intern("x.y.z").unwrap();
        let b = table.intern("x.w").unwrap();
        let mut scratch = Vec::new();
        let mut out = String::new();
        table.names().write(a, &mut scratch, &mut out);
        out.push(' ');
        table.names().write(b, &mut scratch, &mut out);
        assert_eq!(out, "x.y.z x.w");
    }
}
