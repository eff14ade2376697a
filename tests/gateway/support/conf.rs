//! A small typed builder for the configuration a test's world is made of: a section (or a
//! whole file, such as a consumers file) held as a value, changed by path, and written back as
//! YAML. A test that needs "the usual provider, plus one setting" says so with `set` instead
//! of splicing lines into YAML text, so it cannot break on indentation or on the order in
//! which a helper happens to write its keys.
//!
//! A path is keys joined by `.` (`claims.headers.X-User-Department`). In a list, a number is
//! a position (`keys.1`, the second), `[acme]` the item whose `name` is `acme`
//! (`consumers[acme]`), and `[id=7q2m9x4k1c]` the item whose `id` is that. Keys holding a `.`
//! or `[` cannot be named; no test needs them.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

/// A piece of configuration: a YAML mapping held as a JSON value.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Conf(Value);

/// One step of a path: a key of a mapping (or a position in a list), or the list item whose
/// field (`name` unless the step says) has that value.
enum Step<'a> {
    Key(&'a str),
    Named { field: &'a str, value: &'a str },
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((key, rest)) => {
                let selector = rest
                    .strip_suffix(']')
                    .unwrap_or_else(|| panic!("`{part}` in `{path}`: `[` without `]`"));
                let (field, value) = selector.split_once('=').unwrap_or(("name", selector));
                if !key.is_empty() {
                    out.push(Step::Key(key));
                }
                out.push(Step::Named { field, value });
            }
            None => out.push(Step::Key(part)),
        }
    }
    out
}

/// `value` as a list.
fn list<'v>(value: &'v mut Value, path: &str) -> &'v mut Vec<Value> {
    value
        .as_array_mut()
        .unwrap_or_else(|| panic!("`{path}`: not a list"))
}

/// The item of `value` (a list) whose `field` is `want`.
fn named<'v>(value: &'v mut Value, field: &str, want: &str, path: &str) -> &'v mut Value {
    list(value, path)
        .iter_mut()
        .find(|item| item[field] == want)
        .unwrap_or_else(|| panic!("`{path}`: no item with {field} `{want}`"))
}

/// The position `key` names when `value` is a list and `key` a number (it must be in range).
fn position(value: &Value, key: &str, path: &str) -> Option<usize> {
    let i = key.parse::<usize>().ok().filter(|_| value.is_array())?;
    let len = value.as_array().map_or(0, Vec::len);
    assert!(i < len, "`{path}`: position {i} in a list of {len}");
    Some(i)
}

/// `value` as a mapping; nothing there becomes an empty one, so a path can be made.
fn mapping<'v>(value: &'v mut Value, path: &str) -> &'v mut Map<String, Value> {
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value
        .as_object_mut()
        .unwrap_or_else(|| panic!("`{path}`: not a mapping"))
}

impl Conf {
    /// An empty mapping.
    pub fn new() -> Self {
        Self(Value::Object(Map::new()))
    }

    /// From YAML text; empty text is an empty mapping.
    pub fn parse(yaml: &str) -> Self {
        let value: Value =
            serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"));
        if value.is_null() {
            Self::new()
        } else {
            Self(value)
        }
    }

    /// From a YAML file.
    pub fn read(file: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(file).unwrap())
    }

    /// `value` at `path`, replacing what was there; mappings missing on the way are made.
    pub fn set(mut self, path: impl AsRef<str>, value: impl Serialize) -> Self {
        let path = path.as_ref();
        let value = serde_json::to_value(value).unwrap();
        let mut steps = steps(path);
        let last = steps.pop().unwrap();
        let parent = self.walk(&steps, path);
        match last {
            Step::Key(key) => match position(parent, key, path) {
                Some(i) => list(parent, path)[i] = value,
                None => {
                    mapping(parent, path).insert(key.to_string(), value);
                }
            },
            Step::Named { field, value: want } => *named(parent, field, want, path) = value,
        }
        self
    }

    /// Every key of `other` set under `path` (a mapping), keeping the keys `other` lacks.
    pub fn merge(mut self, path: impl AsRef<str>, other: Conf) -> Self {
        let path = path.as_ref();
        let Value::Object(keys) = other.0 else {
            panic!("merging into `{path}`: not a mapping");
        };
        let target = mapping(self.walk(&steps(path), path), path);
        target.extend(keys);
        self
    }

    /// `path` gone (a key, or a list item); it must be there.
    pub fn remove(mut self, path: impl AsRef<str>) -> Self {
        let path = path.as_ref();
        let mut steps = steps(path);
        let last = steps.pop().unwrap();
        let parent = self.walk(&steps, path);
        match last {
            Step::Key(key) => match position(parent, key, path) {
                Some(i) => {
                    list(parent, path).remove(i);
                }
                None => {
                    mapping(parent, path)
                        .remove(key)
                        .unwrap_or_else(|| panic!("`{path}`: nothing to remove"));
                }
            },
            Step::Named { field, value: want } => {
                let items = list(parent, path);
                let before = items.len();
                items.retain(|item| item[field] != want);
                assert!(
                    items.len() < before,
                    "`{path}`: no item with {field} `{want}`"
                );
            }
        }
        self
    }

    /// As YAML text (ends with a newline, so more YAML can follow it).
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.0).unwrap()
    }

    /// Written as YAML to `file`.
    pub fn write(&self, file: &Path) {
        std::fs::write(file, self.yaml()).unwrap();
    }

    /// The value at the end of `steps`, making missing mappings on the way.
    fn walk(&mut self, steps: &[Step<'_>], path: &str) -> &mut Value {
        let mut at = &mut self.0;
        for step in steps {
            at = match *step {
                Step::Key(key) => match position(at, key, path) {
                    Some(i) => &mut list(at, path)[i],
                    None => mapping(at, path)
                        .entry(key.to_string())
                        .or_insert(Value::Null),
                },
                Step::Named { field, value } => named(at, field, value, path),
            };
        }
        at
    }
}

impl Default for Conf {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Value> for Conf {
    fn from(value: Value) -> Self {
        Self(value)
    }
}

/// The `identity_providers:` section holding these providers under their names, as YAML.
pub fn identity_providers<'a>(providers: impl IntoIterator<Item = (&'a str, Conf)>) -> String {
    providers
        .into_iter()
        .fold(Conf::new(), |all, (name, provider)| {
            all.set(format!("identity_providers.{name}"), provider)
        })
        .yaml()
}
