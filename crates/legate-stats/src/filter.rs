//! The admin `filter` parameter (Envoy's `StatsParams`): a regex searched in each full stat
//! name. Searching means writing each name first, and a config of 10,000 clusters has
//! ~400,000 names: tens of milliseconds of the main thread per render, for a scraper that
//! asked for one stat. When every match must begin where the name begins (each alternative
//! opens with `^`), the literal text a match begins with rules out whole scopes from their
//! prefix alone (`^cluster_manager\.` rules out `cluster.svc7.`), and a render skips their
//! names without writing them.

use regex::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::Look;

use crate::symbol_table::{Id, NameWriter, Names, StatName, NO_PREFIX};

/// A compiled `filter`.
#[derive(Clone, Debug)]
pub struct Filter {
    regex: Regex,
    /// When every match begins at the name's start: the texts one of which each match begins
    /// with. `None` when the regex may match anywhere, or begins with too many texts to list.
    starts: Option<Box<[Box<[u8]>]>>,
}

impl Filter {
    /// Compiles `pattern`; the error is the regex's own.
    pub fn new(pattern: &str) -> Result<Filter, regex::Error> {
        let regex = Regex::new(pattern)?;
        Ok(Filter { starts: anchored_starts(pattern), regex })
    }

    /// Whether the full name `name` passes.
    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// Whether some name `<prefix>.<leaf>` may pass, judged from `prefix` alone (a scope's
    /// text, `cluster.svc7`).
    pub fn may_match_under(&self, prefix: &str) -> bool {
        self.judge(prefix) != Verdict::RuledOut
    }

    fn judge(&self, prefix: &str) -> Verdict {
        let Some(starts) = &self.starts else { return Verdict::Inside };
        let prefix = prefix.as_bytes();
        let mut verdict = Verdict::RuledOut;
        for start in starts.iter() {
            match start.get(..prefix.len()) {
                // A start longer than the prefix goes on with the `.` before the leaf; the
                // names under a longer scope are judged by that scope's text.
                Some(head) if head == prefix && start.get(prefix.len()).is_none_or(|&c| c == b'.') => {
                    verdict = Verdict::Open;
                }
                Some(_) => {}
                None if prefix.starts_with(start) => return Verdict::Inside,
                None => {}
            }
        }
        verdict
    }
}

/// The literal starts of `pattern`'s matches, if every match begins at the text's start
/// (`^`, not the multi-line `(?m)^`) and they are few enough to list. Parsed again with the
/// regex crate's own parser and defaults, so that the two read the pattern alike.
fn anchored_starts(pattern: &str) -> Option<Box<[Box<[u8]>]>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let starts = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = starts.literals()?;
    Some(literals.iter().map(|literal| Box::<[u8]>::from(literal.as_bytes())).collect())
}

/// A render's verdicts on scopes, by prefix id: whether some name under the prefix may pass
/// the filter. A scope inherits its parent's verdict unless the parent's text is part of a
/// start (`cluster` for `^cluster\.svc1\.`): the text of only those few is written.
pub(crate) struct Scopes<'a> {
    /// `None` when no scope can be ruled out: every name is searched.
    filter: Option<&'a Filter>,
    names: &'a Names,
    /// Only with a filter: it holds a slot per prefix.
    writer: Option<NameWriter<'a>>,
    verdicts: Vec<Option<Verdict>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// No name under the scope can pass.
    RuledOut,
    /// Some start is a part of the scope's text: the scopes under it are judged by theirs.
    Open,
    /// A start is all within the scope's text: any name under it may pass.
    Inside,
}

impl<'a> Scopes<'a> {
    pub(crate) fn new(names: &'a Names, filter: Option<&'a Filter>) -> Scopes<'a> {
        let filter = filter.filter(|f| f.starts.is_some());
        Scopes { filter, names, writer: filter.map(|_| names.writer()), verdicts: Vec::new() }
    }

    /// Whether `name` may pass: `false` only when its scope is ruled out.
    pub(crate) fn may_pass(&mut self, name: StatName) -> bool {
        self.may_pass_under(name.prefix())
    }

    /// Whether some name under `prefix` may pass.
    pub(crate) fn may_pass_under(&mut self, prefix: Id) -> bool {
        match self.filter {
            Some(filter) if prefix != NO_PREFIX => self.verdict(filter, prefix) != Verdict::RuledOut,
            _ => true,
        }
    }

    fn verdict(&mut self, filter: &Filter, prefix: Id) -> Verdict {
        let index = prefix as usize;
        if let Some(&Some(known)) = self.verdicts.get(index) {
            return known;
        }
        let parent = self.names.parent(prefix);
        let inherited = if parent == NO_PREFIX { Verdict::Open } else { self.verdict(filter, parent) };
        let verdict = match inherited {
            Verdict::Open => match self.writer.as_mut().and_then(|writer| writer.prefix_text(prefix)) {
                Some(text) => filter.judge(text),
                None => Verdict::Inside,
            },
            known => known,
        };
        if self.verdicts.len() <= index {
            self.verdicts.resize(index + 1, None);
        }
        if let Some(slot) = self.verdicts.get_mut(index) {
            *slot = Some(verdict);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(pattern: &str) -> Option<Vec<String>> {
        Filter::new(pattern)
            .unwrap()
            .starts
            .map(|s| s.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect())
    }

    #[test]
    fn only_a_regex_anchored_at_the_start_rules_scopes_out() {
        assert_eq!(starts("^cluster_manager.active_clusters$").as_deref(), Some(&["cluster_manager".to_string()][..]));
        assert_eq!(starts("^cluster\\.svc1\\.").as_deref(), Some(&["cluster.svc1.".to_string()][..]));
        assert_eq!(
            starts("^(http|tcp)\\.").map(|mut s| {
                s.sort();
                s
            }),
            Some(vec!["http.".to_string(), "tcp.".to_string()])
        );
        // Searched anywhere, or only one alternative anchored: nothing is ruled out.
        assert_eq!(starts("cluster_manager"), None);
        assert_eq!(starts("^a|b"), None);
        assert_eq!(starts("(?m)^cluster"), None);
        // Anchored, but matching any start.
        assert_eq!(starts("^.*_rq_2xx"), None);
    }

    #[test]
    fn a_scope_is_ruled_out_only_when_no_name_under_it_can_begin_a_match() {
        let filter = Filter::new("^cluster_manager.active_clusters$").unwrap();
        assert!(!filter.may_match_under("cluster.svc7"));
        assert!(!filter.may_match_under("http"));
        assert!(filter.may_match_under("cluster_manager"));
        // `cluster_manager` as a prefix of a longer scope, or the filter's `.` standing for
        // the separator: both may still pass.
        assert!(filter.may_match_under("cluster_manager.cds"));
        let filter = Filter::new("^cluster\\.svc1\\.upstream").unwrap();
        assert!(filter.may_match_under("cluster"));
        assert!(filter.may_match_under("cluster.svc1"));
        assert!(!filter.may_match_under("cluster.svc10"), "the start goes on with `.` after svc1");
        assert!(!filter.may_match_under("cluster.svc2"));
        assert!(!filter.may_match_under("cluster.svc1.x"), "the start goes on with `upstream`");
        let filter = Filter::new("upstream").unwrap();
        assert!(filter.may_match_under("cluster.svc7"));
    }
}
