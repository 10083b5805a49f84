//! What is wrong in a config file, and the collector every section's compiler reports into.
//!
//! One compile pass reports *every* problem, each with the path of the field it concerns, so
//! one `portcullis check` run shows every mistake in a file. A compiler pushes into
//! [`Issues`] and goes on; it never stops at the first problem.

use std::fmt;
use std::time::Duration;

use super::{Dur, Lenient};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where in the file, e.g. `routes[2].upstream`.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// The problems found so far in one compile pass.
#[derive(Debug, Default)]
pub struct Issues(Vec<Issue>);

impl Issues {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// The parsed value of `value`, or `None` after recording why its text did not parse.
    pub fn value<T: Clone>(&mut self, path: impl Into<String>, value: &Lenient<T>) -> Option<T> {
        match value.error() {
            Some(e) => {
                let e = e.to_string();
                self.push(path, e);
                None
            }
            None => value.ok().cloned(),
        }
    }

    /// A duration that must be greater than zero; `None` after recording why not.
    pub fn positive(&mut self, path: impl Into<String>, value: &Lenient<Dur>) -> Option<Duration> {
        let path = path.into();
        let d = self.value(path.clone(), value)?.0;
        if d.is_zero() {
            self.push(path, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    /// Adds problems found elsewhere.
    pub fn extend(&mut self, issues: impl IntoIterator<Item = Issue>) {
        self.0.extend(issues);
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<Issue> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_is_recorded_with_its_path_and_a_good_one_returned() {
        let mut issues = Issues::default();
        assert_eq!(
            issues.value("a.timeout", &Lenient::<Dur>::new("2s")),
            Some(Dur(Duration::from_secs(2)))
        );
        assert_eq!(issues.value("a.bad", &Lenient::<Dur>::new("soon")), None);
        assert_eq!(issues.positive("a.zero", &Lenient::<Dur>::new("0s")), None);
        let found = issues.into_vec();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].path, "a.bad");
        assert_eq!(found[1].to_string(), "a.zero: must be greater than zero");
    }
}
