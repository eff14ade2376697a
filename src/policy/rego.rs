//! Rego policies, evaluated in-process with Microsoft's `regorus` interpreter: a route's
//! `auth.rego` names a policy file, the rule whose value decides (`rule`, e.g.
//! `data.gateway.authz.allow`), an optional `data` JSON file and the request headers the
//! policy may read. The rule is evaluated after the credential and the route's requirements,
//! on an input document built from the request and the verified identity:
//!
//! ```json
//! { "method": "GET", "path": "/admin/users", "segments": ["admin", "users"],
//!   "query": {"page": "2"}, "headers": {"x-region": "eu"}, "client_ip": "10.0.0.7",
//!   "tls": false, "route": "admin", "time": {"unix": 1800000000, "ns": 1800000000000000000},
//!   "identity": {"subject": "alice", "method": "jwt", "provider": "corp", "roles": [..],
//!                "scopes": [..], "permissions": [..], "tenant": "acme", "client_id": null} }
//! ```
//!
//! `identity` is `null` on a public route. `Authorization` is never in `headers`, whatever the
//! policy asks for. The rule's value decides:
//! - `true` allows; `false`, or no value (undefined: no rule body held), refuses with `403
//!   policy_denied`;
//! - an object allows when its `allow` is `true`, and its `reason` (a string) becomes the
//!   refusal's message; an allowing object's `headers` (`{"X-User-Tier": "gold"}`) go to the
//!   backend, each one of the route's `result_headers` (identity-namespace headers, so the
//!   client's own copies were removed);
//! - anything else, or an evaluation error, is the gateway's failure: `500 policy_error`, never
//!   an allow (fail closed), counted in `portcullis_rego_errors_total{route}`.
//!
//! `time.ns` is what OPA's time builtins take: `time.clock([input.time.ns, "Europe/Berlin"])`
//! and `time.weekday(...)` give a time window in a policy. The files are read again when they
//! change and on `SIGHUP`; a policy that no longer loads is refused and the one in force stays.
//! An OPA server (`opa`) decides on the same input document.

use crate::auth::Identity;
use http::HeaderName;
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;
use thread_local::ThreadLocal;

/// An input document (the interpreter's JSON-like value).
pub type Input = regorus::Value;

/// A compiled policy and the rule that decides; its files are read again when they change
/// and on `SIGHUP` (`Reloadable`), and a policy that no longer loads leaves this one in force.
#[derive(Debug)]
pub struct RegoPolicy {
    /// Parsed, with its data loaded and its rules analysed: the engine in force, which each
    /// thread clones for its own evaluations (`decide_on`).
    engine: RwLock<regorus::Engine>,
    /// Bumped by a reload, so that each thread clones the new engine.
    generation: AtomicU64,
    threads: ThreadLocal<RefCell<ThreadState>>,
    /// Decisions are remembered for the rest of their second (`decide`), unless the policy
    /// calls a builtin whose answer is not a function of its input.
    memoize: bool,
    /// The key of the decision memo's hash (a random one, per policy).
    hasher: std::collections::hash_map::RandomState,
    pub rule: String,
    /// The policy file, for messages and reloads.
    pub file: String,
    /// The data file, when there is one.
    data_file: Option<String>,
    /// Request headers the policy may read (lower-case).
    pub headers: Vec<HeaderName>,
    /// Headers an allowing result may add to the upstream request.
    pub result_headers: Vec<HeaderName>,
    pub route: String,
    /// Size and modification time of the files last loaded.
    stamp: Mutex<Option<(u64, SystemTime)>>,
}

/// What the rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegoVerdict {
    /// Allowed, with the headers the result adds to the upstream request.
    Allow(Vec<(HeaderName, String)>),
    /// Refused, with the policy's reason when it gave one.
    Deny(Option<String>),
    /// The evaluation failed, or the rule's value is not a decision.
    Error(String),
}

/// The facts the input document is built from.
#[derive(Clone, Copy)]
pub struct RegoFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub client_ip: Option<IpAddr>,
    pub tls: bool,
    pub now: u64,
    pub identity: Option<&'a Identity>,
}

/// A policy file and its data file, read, with the stamp they had before.
pub struct PolicyFiles {
    file: String,
    data_file: Option<String>,
    source: String,
    data: Option<Json>,
    stamp: Option<(u64, SystemTime)>,
}

/// A policy file's text and its data file's JSON; `Err` names the key (`policy` or `data`)
/// and what is wrong.
pub fn read_files(policy: &str, data: Option<&str>) -> Result<PolicyFiles, (&'static str, String)> {
    // Taken first: a change made while the files are read is seen at the next check.
    let stamp = stamp(policy, data);
    let source = std::fs::read_to_string(policy)
        .map_err(|e| ("policy", format!("cannot read \"{policy}\": {e}")))?;
    let json = match data {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("data", format!("cannot read \"{path}\": {e}")))?;
            let json = serde_json::from_str::<Json>(&text)
                .map_err(|e| ("data", format!("\"{path}\" is not JSON: {e}")))?;
            Some(json)
        }
    };
    Ok(PolicyFiles {
        file: policy.to_string(),
        data_file: data.map(str::to_string),
        source,
        data: json,
        stamp,
    })
}

/// Parse `source` (named `file`), load `data`, and evaluate `rule` once on an empty input:
/// an unknown builtin or a rule that cannot be evaluated is a configuration problem, not
/// every request's 500; and the engine is then prepared (its rules analysed), so each
/// request's clone is not. `Err` names the file and line.
fn engine(
    file: &str,
    source: String,
    data: Option<Json>,
    rule: &str,
    result_headers: &[HeaderName],
) -> Result<regorus::Engine, String> {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(file.to_string(), source)
        // regorus's messages begin with a line break (the source excerpt follows).
        .map_err(|e| e.to_string().trim().to_string())?;
    if let Some(data) = data {
        engine
            .add_data(regorus::Value::from(data))
            .map_err(|e| format!("data: {e}"))?;
    }
    engine.set_input(regorus::Value::from(json!({})));
    if let RegoVerdict::Error(e) = verdict(engine.eval_rule(rule.to_string()), rule, result_headers)
    {
        return Err(e);
    }
    Ok(engine)
}

impl RegoPolicy {
    /// A policy from its text (named `file`) and data, without files to reload.
    pub fn new(
        file: &str,
        source: String,
        data: Option<Json>,
        rule: &str,
        headers: Vec<HeaderName>,
        result_headers: Vec<HeaderName>,
        route: &str,
    ) -> Result<Self, String> {
        let memoize = deterministic(&source);
        Ok(Self {
            engine: RwLock::new(engine(file, source, data, rule, &result_headers)?),
            generation: AtomicU64::new(0),
            threads: ThreadLocal::new(),
            memoize,
            hasher: Default::default(),
            rule: rule.to_string(),
            file: file.to_string(),
            data_file: None,
            headers: headers
                .into_iter()
                .filter(|h| h != http::header::AUTHORIZATION)
                .collect(),
            result_headers,
            route: route.to_string(),
            stamp: Mutex::new(None),
        })
    }

    /// The policy of `files` (`read_files`), kept in force by reloads; `Err` names the file
    /// and line.
    pub fn load(
        files: PolicyFiles,
        rule: &str,
        headers: Vec<HeaderName>,
        result_headers: Vec<HeaderName>,
        route: &str,
    ) -> Result<Self, String> {
        let PolicyFiles {
            file,
            data_file,
            source,
            data,
            stamp,
        } = files;
        let mut policy = Self::new(&file, source, data, rule, headers, result_headers, route)?;
        policy.data_file = data_file;
        policy.stamp = Mutex::new(stamp);
        Ok(policy)
    }

    /// The input document for one request (see the module docs).
    pub fn input(&self, f: &RegoFacts<'_>) -> Input {
        input_document(f, &self.headers, &self.route)
    }

    /// The rule's decision for a request. The same request in the same second gets the
    /// decision its input document got before: the document is a function of the facts the
    /// memo compares (`Seen`), and a policy is a function of its input and data, unless it
    /// calls a builtin such as `time.now_ns` or `rand.intn` (then nothing is remembered).
    /// Each thread remembers its own decisions, for the current second only, at most
    /// `MEMO_ENTRIES` of them; a reload forgets them all.
    pub fn decide(&self, f: &RegoFacts<'_>) -> RegoVerdict {
        self.with_thread_state(|state| {
            if !self.memoize {
                return self.decide_with(&mut state.engine, self.input(f));
            }
            if state.second != f.now || state.memo.len() >= MEMO_ENTRIES {
                state.memo.clear();
                state.second = f.now;
            }
            let hash = self.hash_of(f);
            let seen = state
                .memo
                .get(&hash)
                .and_then(|same_hash| same_hash.iter().find(|(seen, _)| seen.is(f, &self.headers)));
            if let Some((_, verdict)) = seen {
                return verdict.clone();
            }
            let verdict = self.decide_with(&mut state.engine, self.input(f));
            state
                .memo
                .entry(hash)
                .or_default()
                .push((Seen::of(f, &self.headers), verdict.clone()));
            verdict
        })
    }

    /// The rule's decision for `input`, evaluated (no memo).
    pub fn decide_on(&self, input: Input) -> RegoVerdict {
        self.with_thread_state(|state| self.decide_with(&mut state.engine, input))
    }

    /// `f` on this thread's engine and memo. The engine is cloned from the one in force
    /// once per thread (and again after a reload), then reused, as regorus allows: each
    /// evaluation starts from a clean state, only the input changes. Cloning the engine for
    /// every request cost a third of a decision.
    fn with_thread_state(&self, f: impl FnOnce(&mut ThreadState) -> RegoVerdict) -> RegoVerdict {
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = || ThreadState {
            generation,
            engine: self.engine_in_force(),
            second: 0,
            memo: HashMap::new(),
        };
        let mine = self.threads.get_or(|| RefCell::new(fresh()));
        // A decision never awaits, so a thread's state is never borrowed twice.
        let Ok(mut mine) = mine.try_borrow_mut() else {
            return f(&mut fresh());
        };
        if mine.generation != generation {
            *mine = fresh();
        }
        f(&mut mine)
    }

    /// The memo's hash of what `Seen` compares.
    fn hash_of(&self, f: &RegoFacts<'_>) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.hasher.build_hasher();
        (f.method, f.path, f.query, f.client_ip, f.tls).hash(&mut h);
        for name in &self.headers {
            header_text(f.headers, name).hash(&mut h);
        }
        f.identity.map(caller).hash(&mut h);
        h.finish()
    }

    fn decide_with(&self, engine: &mut regorus::Engine, input: Input) -> RegoVerdict {
        engine.set_input(input);
        verdict(
            engine.eval_rule(self.rule.clone()),
            &self.rule,
            &self.result_headers,
        )
    }

    fn engine_in_force(&self) -> regorus::Engine {
        match self.engine.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Decisions a thread remembers within one second, at most.
const MEMO_ENTRIES: usize = 4096;

/// What one thread keeps for a policy: its engine, and the decisions of the current second by
/// the hash of their facts.
#[derive(Debug)]
struct ThreadState {
    generation: u64,
    engine: regorus::Engine,
    second: u64,
    memo: HashMap<u64, Vec<(Seen, RegoVerdict)>>,
}

/// Every fact the input document is built from, but the second (a memo holds one second's):
/// two requests with the same `Seen` have the same input document. Kept in step with
/// `input_document` (the test `the_memo_tells_apart_every_fact_of_the_input` changes each
/// fact in turn).
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<Option<String>>,
    client_ip: Option<IpAddr>,
    tls: bool,
    identity: Option<Identity>,
}

impl Seen {
    fn of(f: &RegoFacts<'_>, headers: &[HeaderName]) -> Self {
        Self {
            method: f.method.to_string(),
            path: f.path.to_string(),
            query: f.query.map(str::to_string),
            headers: headers
                .iter()
                .map(|name| header_text(f.headers, name).map(str::to_string))
                .collect(),
            client_ip: f.client_ip,
            tls: f.tls,
            // Only what the input document shows of the caller.
            identity: f.identity.map(|id| Identity {
                subject: id.subject.clone(),
                method: id.method,
                provider: id.provider.clone(),
                roles: id.roles.clone(),
                scopes: id.scopes.clone(),
                permissions: id.permissions.clone(),
                tenant: id.tenant.clone(),
                client_id: id.client_id.clone(),
                ..Identity::default()
            }),
        }
    }

    fn is(&self, f: &RegoFacts<'_>, headers: &[HeaderName]) -> bool {
        self.identity.as_ref().map(caller) == f.identity.map(caller)
            && self.method == f.method
            && self.path == f.path
            && self.query.as_deref() == f.query
            && self.client_ip == f.client_ip
            && self.tls == f.tls
            && self.headers.len() == headers.len()
            && self
                .headers
                .iter()
                .zip(headers)
                .all(|(seen, name)| seen.as_deref() == header_text(f.headers, name))
    }
}

/// What the input document shows of a caller: what the memo hashes and compares of one.
type Caller<'a> = (
    &'a str,
    &'static str,
    &'a str,
    &'a [String],
    &'a [String],
    &'a [String],
    Option<&'a str>,
    Option<&'a str>,
);

fn caller(id: &Identity) -> Caller<'_> {
    (
        &id.subject,
        id.method,
        &id.provider,
        &id.roles,
        &id.scopes,
        &id.permissions,
        id.tenant.as_deref(),
        id.client_id.as_deref(),
    )
}

/// A request header's value as the input document shows it (text only).
fn header_text<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a policy's decision is a function of its input and data: not when it calls a
/// builtin that reads the clock, makes random values or reaches outside (then a decision is
/// never remembered). Read from the policy's text, so a name in a comment counts too.
fn deterministic(source: &str) -> bool {
    const UNSTABLE: [&str; 5] = ["time.now_ns", "rand.", "uuid.", "http.send", "opa.runtime"];
    !UNSTABLE.iter().any(|name| source.contains(name))
}

/// Size and modification time of the policy and data files together.
fn stamp(file: &str, data_file: Option<&str>) -> Option<(u64, SystemTime)> {
    let (len, modified) = crate::reload::file_stamp(std::path::Path::new(file))?;
    match data_file.map(|d| crate::reload::file_stamp(std::path::Path::new(d))) {
        None => Some((len, modified)),
        Some(None) => None,
        Some(Some((data_len, data_modified))) => {
            Some((len ^ data_len.rotate_left(32), modified.max(data_modified)))
        }
    }
}

impl crate::reload::Reloadable for RegoPolicy {
    fn what(&self) -> &'static str {
        "Rego policy"
    }

    fn path(&self) -> &std::path::Path {
        std::path::Path::new(&self.file)
    }

    fn stamp(&self) -> &Mutex<Option<(u64, SystemTime)>> {
        &self.stamp
    }

    fn stamp_now(&self) -> Option<(u64, SystemTime)> {
        stamp(&self.file, self.data_file.as_deref())
    }

    fn read_and_swap(&self) -> Result<usize, Vec<String>> {
        let files = read_files(&self.file, self.data_file.as_deref()).map_err(|(_, e)| vec![e])?;
        let engine = engine(
            &self.file,
            files.source,
            files.data,
            &self.rule,
            &self.result_headers,
        )
        .map_err(|e| vec![e])?;
        match self.engine.write() {
            Ok(mut e) => *e = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(1)
    }
}

/// The input document of a request: what a route's Rego policy and an OPA server decide on
/// (see the module docs). `headers` are the ones the policy declared; `Authorization` is
/// never among them. Built as the interpreter's own values: going through `serde_json` first
/// cost as much again as the values themselves (building, then converting).
pub fn input_document(f: &RegoFacts<'_>, headers: &[HeaderName], route: &str) -> Input {
    let segments: Vec<Input> = f
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(Input::from)
        .collect();
    let mut query = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(f.query.unwrap_or("").as_bytes()) {
        query
            .entry(Input::from(k.as_ref()))
            .or_insert_with(|| Input::from(v.as_ref()));
    }
    let mut declared = BTreeMap::new();
    for name in headers.iter().filter(|h| *h != http::header::AUTHORIZATION) {
        if let Some(v) = header_text(f.headers, name) {
            declared.insert(Input::from(name.as_str()), Input::from(v));
        }
    }
    let text = |s: Option<&str>| s.map_or(Input::Null, Input::from);
    let list = |l: &[String]| {
        Input::from(
            l.iter()
                .map(|s| Input::from(s.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let identity = f.identity.map_or(Input::Null, |id| {
        object([
            ("subject", Input::from(id.subject.as_str())),
            ("method", Input::from(id.method)),
            ("provider", Input::from(id.provider.as_str())),
            ("roles", list(&id.roles)),
            ("scopes", list(&id.scopes)),
            ("permissions", list(&id.permissions)),
            ("tenant", text(id.tenant.as_deref())),
            ("client_id", text(id.client_id.as_deref())),
        ])
    });
    object([
        ("method", Input::from(f.method)),
        ("path", Input::from(f.path)),
        ("segments", Input::from(segments)),
        ("query", Input::from(query)),
        ("headers", Input::from(declared)),
        (
            "client_ip",
            f.client_ip
                .map_or(Input::Null, |ip| Input::from(ip.to_string())),
        ),
        ("tls", Input::from(f.tls)),
        ("route", Input::from(route)),
        // Nanoseconds too, as OPA's `time.*` builtins take them.
        (
            "time",
            object([
                ("unix", Input::from(f.now)),
                ("ns", Input::from(f.now.saturating_mul(1_000_000_000))),
            ]),
        ),
        ("identity", identity),
    ])
}

/// An object of these members.
fn object<const N: usize>(members: [(&str, Input); N]) -> Input {
    Input::from(
        members
            .into_iter()
            .map(|(name, value)| (Input::from(name), value))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// The input document as JSON text (for `explain` and the OPA server).
pub fn input_json(input: &Input) -> String {
    serde_json::to_string(input).unwrap_or_default()
}

/// What the rule's value (or its evaluation's error) decides.
pub fn verdict<E: std::fmt::Display>(
    value: Result<regorus::Value, E>,
    rule: &str,
    result_headers: &[HeaderName],
) -> RegoVerdict {
    let value = match value {
        Ok(v) => v,
        Err(e) => return RegoVerdict::Error(e.to_string().trim().to_string()),
    };
    match value {
        regorus::Value::Bool(true) => RegoVerdict::Allow(Vec::new()),
        regorus::Value::Bool(false) | regorus::Value::Undefined => RegoVerdict::Deny(None),
        regorus::Value::Object(_) => {
            let allow = &value[&regorus::Value::from("allow")];
            let reason = value[&regorus::Value::from("reason")]
                .as_string()
                .ok()
                .map(|r| r.to_string());
            match allow {
                regorus::Value::Bool(true) => {
                    match added_headers(&value[&regorus::Value::from("headers")], result_headers) {
                        Ok(headers) => RegoVerdict::Allow(headers),
                        Err(e) => RegoVerdict::Error(e),
                    }
                }
                regorus::Value::Bool(false) | regorus::Value::Undefined => {
                    RegoVerdict::Deny(reason)
                }
                _ => RegoVerdict::Error("the result's `allow` is not a boolean".into()),
            }
        }
        _ => RegoVerdict::Error(format!(
            "{rule} is neither a boolean nor an object with `allow`"
        )),
    }
}

/// An allowing result's `headers` object: names among `allowed`, values that are strings a
/// header can carry. Anything else is the policy's error, never a header dropped quietly.
fn added_headers(
    headers: &regorus::Value,
    allowed: &[HeaderName],
) -> Result<Vec<(HeaderName, String)>, String> {
    let members = match headers {
        regorus::Value::Undefined | regorus::Value::Null => return Ok(Vec::new()),
        regorus::Value::Object(members) => members,
        _ => return Err("the result's `headers` is not an object".into()),
    };
    let mut out = Vec::new();
    for (name, value) in members.iter() {
        let name = name.as_string().map_err(|e| e.to_string())?;
        let Some(known) = allowed
            .iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(name))
        else {
            return Err(format!(
                "the result's header \"{name}\" is not one of `result_headers`"
            ));
        };
        let value = value
            .as_string()
            .map_err(|_| format!("the result's header \"{name}\" is not a string"))?;
        if http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "the result's header \"{name}\" has a value no header can carry"
            ));
        }
        out.push((known.clone(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "rego_tests.rs"]
mod tests;
