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
pub(crate) type Id = u32;

/// The prefix of a name without a `.`.
pub(crate) const NO_PREFIX: Id = Id::MAX;

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

// === impl StatName ===

impl StatName {
    /// The name made of `prefix` ([`SymbolTable::intern_prefix`]) and the token `leaf`
    /// ([`SymbolTable::intern_leaf`]).
    pub(crate) fn new(prefix: Id, leaf: Id) -> StatName {
        StatName { prefix, leaf }
    }

    /// The prefix id: all tokens but the last.
    pub(crate) fn prefix(self) -> Id {
        self.prefix
    }

    /// The last token's id.
    pub(crate) fn leaf(self) -> Id {
        self.leaf
    }
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

    /// The prefix `prefix` extends (`NO_PREFIX` for a first token).
    pub(crate) fn parent(&self, prefix: Id) -> Id {
        self.prefixes.get(prefix as usize).map_or(NO_PREFIX, |&(parent, _)| parent)
    }

    /// A writer of full names that builds each prefix's text once.
    pub(crate) fn writer(&self) -> NameWriter<'_> {
        NameWriter { names: self, prefixes: String::new(), spans: vec![None; self.prefixes.len()], chain: Vec::new() }
    }

    /// The order in which `names` sort as full-name strings (byte order), as indices into
    /// `names`; equal names keep their order. No full name is built or compared: each name is
    /// a path in the tree of prefixes, and a depth-first walk that visits the children of each
    /// prefix in order yields the names sorted. A child is a last token (the name ends there)
    /// or a longer prefix (its names go on with `.`), and its names sort as its token, with `.`
    /// after it for a prefix: a token holds no `.`, so where two such keys differ decides for
    /// every name under them. This costs a sort of short tokens within each prefix instead of
    /// a sort of ~100,000s of long names sharing their first ~20 bytes.
    pub(crate) fn sorted_order(&self, names: &[StatName]) -> Vec<usize> {
        /// One child of a prefix: a name's last token or a longer prefix.
        #[derive(Clone, Copy)]
        enum Child {
            /// Index into `names`.
            Leaf(usize),
            Prefix(Id),
        }
        let root = self.prefixes.len();
        let node = |prefix: Id| if prefix == NO_PREFIX { root } else { prefix as usize };
        // (parent node, child), for every name and every prefix on the way to the root.
        let mut children: Vec<(usize, Child)> = Vec::with_capacity(names.len());
        let mut seen = vec![false; self.prefixes.len()];
        for (i, name) in names.iter().enumerate() {
            children.push((node(name.prefix), Child::Leaf(i)));
            let mut prefix = name.prefix;
            while let (Some(&(parent, _)), Some(seen)) =
                (self.prefixes.get(prefix as usize), seen.get_mut(prefix as usize))
            {
                if std::mem::replace(seen, true) {
                    break;
                }
                children.push((node(parent), Child::Prefix(prefix)));
                prefix = parent;
            }
        }
        // A child's key is its token, with `.` after it for a prefix: key id `token × 2 + dot`.
        // The few distinct keys (a cluster's name is one) are ranked once by their text, so
        // that the sort of the children compares integers.
        let key_id = |child: &Child| -> usize {
            match *child {
                Child::Leaf(i) => names.get(i).map_or(0, |name| name.leaf as usize * 2),
                Child::Prefix(prefix) => {
                    self.prefixes.get(prefix as usize).map_or(0, |&(_, token)| token as usize * 2 + 1)
                }
            }
        };
        let mut rank = vec![u32::MAX; self.ends.len() * 2];
        let mut keys: Vec<usize> = Vec::new();
        for (_, child) in &children {
            let id = key_id(child);
            if let Some(slot) = rank.get_mut(id).filter(|slot| **slot == u32::MAX) {
                *slot = 0;
                keys.push(id);
            }
        }
        let text = |id: usize| self.token((id / 2) as Id).bytes().chain((id % 2 == 1).then_some(b'.'));
        keys.sort_unstable_by(|&a, &b| text(a).cmp(text(b)));
        for (position, id) in keys.into_iter().enumerate() {
            if let Some(slot) = rank.get_mut(id) {
                *slot = position as u32;
            }
        }
        // A counter and a gauge of one name keep their order (a prefix never ties).
        let pushed = |child: &Child| match *child {
            Child::Leaf(i) => i,
            Child::Prefix(_) => 0,
        };
        children.sort_unstable_by_key(|(parent, child)| {
            (*parent, rank.get(key_id(child)).copied().unwrap_or(u32::MAX), pushed(child))
        });
        // Node → its run of children in `children`.
        let mut runs = vec![0..0; root + 1];
        let mut start = 0;
        while let Some(&(parent, _)) = children.get(start) {
            let end =
                start + children.get(start..).map_or(0, |rest| rest.iter().take_while(|(p, _)| *p == parent).count());
            if let Some(run) = runs.get_mut(parent) {
                *run = start..end;
            }
            start = end;
        }
        // Depth first, iteratively (a name may have many tokens).
        let mut order = Vec::with_capacity(names.len());
        let mut stack = vec![runs.get(root).cloned().unwrap_or(0..0)];
        while let Some(run) = stack.last_mut() {
            let Some(i) = run.next() else {
                stack.pop();
                continue;
            };
            match children.get(i).map(|(_, child)| *child) {
                Some(Child::Leaf(name)) => order.push(name),
                Some(Child::Prefix(prefix)) => stack.push(runs.get(prefix as usize).cloned().unwrap_or(0..0)),
                None => {}
            }
        }
        order
    }

    /// The full name as a new string.
    #[cfg(test)]
    pub(crate) fn full_name(&self, name: StatName) -> String {
        let mut out = String::new();
        self.writer().write(name, &mut out);
        out
    }
}

/// Writes full names, keeping the text of each prefix met (a render writes every name of
/// ~100,000s, which share a few ten thousand prefixes).
pub(crate) struct NameWriter<'n> {
    names: &'n Names,
    /// The text of the prefixes written so far.
    prefixes: String,
    /// Prefix id → its text in `prefixes`, once built.
    spans: Vec<Option<std::ops::Range<usize>>>,
    /// Reused to walk up a prefix chain.
    chain: Vec<Id>,
}

impl NameWriter<'_> {
    /// Appends the full name to `out`.
    pub(crate) fn write(&mut self, name: StatName, out: &mut String) {
        if let Some(span) = self.prefix_span(name.prefix) {
            out.push_str(self.prefixes.get(span).unwrap_or(""));
            out.push('.');
        }
        out.push_str(self.names.token(name.leaf));
    }

    /// The text of `prefix`; `None` for `NO_PREFIX`.
    pub(crate) fn prefix_text(&mut self, prefix: Id) -> Option<&str> {
        let span = self.prefix_span(prefix)?;
        self.prefixes.get(span)
    }

    /// The text of `prefix` in `self.prefixes`, built (with its ancestors) on first use;
    /// `None` for `NO_PREFIX`.
    fn prefix_span(&mut self, prefix: Id) -> Option<std::ops::Range<usize>> {
        if let Some(span) = self.spans.get(prefix as usize)?.clone() {
            return Some(span);
        }
        // The prefixes up the chain that have no text yet, nearest first.
        self.chain.clear();
        let mut next = prefix;
        while let Some(None) = self.spans.get(next as usize) {
            self.chain.push(next);
            next = self.names.prefixes.get(next as usize).map_or(NO_PREFIX, |&(parent, _)| parent);
        }
        let mut parent_span = self.spans.get(next as usize).cloned().flatten();
        while let Some(id) = self.chain.pop() {
            let token = self.names.prefixes.get(id as usize).map_or("", |&(_, token)| self.names.token(token));
            let start = self.prefixes.len();
            if let Some(parent) = parent_span {
                self.prefixes.extend_from_within(parent);
                self.prefixes.push('.');
            }
            self.prefixes.push_str(token);
            let span = start..self.prefixes.len();
            if let Some(slot) = self.spans.get_mut(id as usize) {
                *slot = Some(span.clone());
            }
            parent_span = Some(span);
        }
        parent_span
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
                parent = self.intern_prefix_id(parent, token)?;
            }
        }
        Some(StatName { prefix: parent, leaf: self.intern_token(leaf)? })
    }

    /// The prefix id of a scope's `prefix` (`a.b` for the names `a.b.<leaf>`; `NO_PREFIX` for
    /// an empty one, whose names have no `.`), interning what is new.
    pub(crate) fn intern_prefix(&mut self, prefix: &str) -> Option<Id> {
        let mut parent = NO_PREFIX;
        if !prefix.is_empty() {
            for token in prefix.split('.') {
                let token = self.intern_token(token)?;
                parent = self.intern_prefix_id(parent, token)?;
            }
        }
        Some(parent)
    }

    /// The id of a last token (`.`-free), interning it if new.
    pub(crate) fn intern_leaf(&mut self, leaf: &str) -> Option<Id> {
        self.intern_token(leaf)
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

    fn intern_prefix_id(&mut self, parent: Id, token: Id) -> Option<Id> {
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
    fn sorted_order_is_the_order_of_the_full_names() {
        let mut table = SymbolTable::default();
        // Prefixes nested in one another, tokens that are prefixes of others, bytes below `.`
        // (`-`, `!`, space) and above it, empty tokens, names without a dot, a repeated name.
        let cases = [
            "cluster.x.membership_total",
            "cluster.x.circuit_breakers.default.cx_open",
            "cluster.x.circuit_breakers.high.cx_open",
            "cluster.x.circuit_breakers",
            "cluster.x-y.version",
            "cluster.x",
            "cluster.x!.a",
            "cluster.x .a",
            "cluster.xa.b",
            "cluster.x.a",
            "cluster.x.bind_errors",
            "cluster",
            "cluster-a",
            "cluster.",
            "cluster..a",
            "a.b.c.d.e",
            "a.b",
            "a-b",
            "a.b-c",
            "a.b.c",
            "",
            ".",
            "z",
            "cluster.x.membership_total",
            "http.ingress.downstream_rq_5xx",
            "listener.0.0.0.0_10000.downstream_cx_total",
            "listener.0.0.0.0_1000.downstream_cx_total",
            "listener.0.0.0.0_10000.downstream_cx_active",
        ];
        let names: Vec<StatName> = cases.iter().map(|name| table.intern(name).unwrap()).collect();
        let order = table.names().sorted_order(&names);
        let sorted: Vec<&str> = order.iter().map(|&i| cases[i]).collect();
        let mut expected: Vec<(&str, usize)> = cases.iter().copied().zip(0..).collect();
        expected.sort();
        assert_eq!(sorted, expected.iter().map(|(name, _)| *name).collect::<Vec<_>>());
        // Equal names keep their order.
        let repeated: Vec<usize> =
            order.iter().copied().filter(|&i| cases[i] == "cluster.x.membership_total").collect();
        assert_eq!(repeated, [0, 23]);
        // Only the names asked for.
        assert_eq!(table.names().sorted_order(&names[..3]).len(), 3);
        assert!(table.names().sorted_order(&[]).is_empty());
    }

    #[test]
    fn the_writer_writes_what_write_does() {
        let mut table = SymbolTable::default();
        let cases = ["a.b.c.d", "a.b.x", "a.y", "a", "", ".", "a..b", "q.r.s", "a.b.c.e"];
        let ids: Vec<StatName> = cases.iter().map(|name| table.intern(name).unwrap()).collect();
        let mut writer = table.names().writer();
        for _ in 0..2 {
            for (name, id) in cases.iter().zip(&ids) {
                let mut out = String::from(">");
                writer.write(*id, &mut out);
                assert_eq!(out, format!(">{name}"));
            }
        }
    }
}
