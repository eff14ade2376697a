//! The problem collector every section is checked with: it knows the key path it stands at
//! (`routes[2].match`), records each problem under that path, and tells whether anything was
//! wrong below it, so section code holds no `format!("{at}.key")` or `ok = false` bookkeeping.

use super::Problem;
use std::fs::File;
use std::ops::RangeBounds;

/// Problems found under one key path. A child (`at`, `index`) writes into the same list, so
/// a problem found in a child also makes its parents not `ok`.
pub(crate) struct Check<'a> {
    at: String,
    problems: &'a mut Vec<Problem>,
    /// How many problems the list held when this check was made.
    start: usize,
}

impl<'a> Check<'a> {
    /// The top of the file: keys are reported as given (`listeners`, `admin.address`).
    pub(crate) fn root(problems: &'a mut Vec<Problem>) -> Self {
        let start = problems.len();
        Check {
            at: String::new(),
            problems,
            start,
        }
    }

    /// The check of a key below this one: `at("tls")` under `listeners[0]` is
    /// `listeners[0].tls`. `key` may hold several levels (`hash_key.header`).
    pub(crate) fn at(&mut self, key: &str) -> Check<'_> {
        let at = self.path(key);
        self.child(at)
    }

    /// The check of a list item: `index("backends", 1)` is `<here>.backends[1]`.
    pub(crate) fn index(&mut self, key: &str, i: usize) -> Check<'_> {
        let at = format!("{}[{i}]", self.path(key));
        self.child(at)
    }

    /// Reports a problem with `key` below this path (`""`: this path itself).
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// Reports a problem with the key this check stands at.
    pub(crate) fn here(&mut self, message: impl Into<String>) {
        self.problem("", message);
    }

    /// Reports `message` unless `value` is in `range`; tells whether it is.
    pub(crate) fn range<T: PartialOrd>(
        &mut self,
        key: &str,
        value: T,
        range: impl RangeBounds<T>,
        message: &str,
    ) -> bool {
        let inside = range.contains(&value);
        if !inside {
            self.problem(key, message);
        }
        inside
    }

    /// Reports `key` unless the file at `path` can be opened for reading.
    pub(crate) fn readable(&mut self, key: &str, path: &str) {
        if let Err(e) = File::open(path) {
            self.problem(key, format!("cannot read \"{path}\": {e}"));
        }
    }

    /// No problem was reported through this check (or its children) since it was made.
    pub(crate) fn ok(&self) -> bool {
        self.problems.len() == self.start
    }

    fn child(&mut self, at: String) -> Check<'_> {
        let start = self.problems.len();
        Check {
            at,
            problems: self.problems,
            start,
        }
    }

    fn path(&self, key: &str) -> String {
        match (self.at.is_empty(), key.is_empty()) {
            (_, true) => self.at.clone(),
            (true, false) => key.to_string(),
            (false, false) => format!("{}.{key}", self.at),
        }
    }
}
