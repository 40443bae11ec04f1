//! Reading the sources: defaults, the TOML file, the environment. Every
//! unknown key and every value of the wrong type is reported, each with the
//! source that set it (`file:line` or the variable's name), and the keys
//! that did parse still reach validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::raw::RawConfig;
use super::{ConfigError, DEFAULT_CONFIG_PATH};

/// Where a key's value came from (keys left at their default have none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of the configuration file (0: line unknown).
    File {
        /// The file as named on the command line.
        path: String,
        /// Line number, from 1.
        line: usize,
    },
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line: 0 } => f.write_str(path),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Env(name) => f.write_str(name),
        }
    }
}

/// The source of each key path that a file or variable set
/// (`server.public_url`, `consumers[0].lms_id`, `courses.C-1.grade_activity`).
#[derive(Clone, Debug, Default)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// The source of `key`, or of the nearest enclosing key that has one
    /// below the top-level sections (`consumers[0]` for a problem of the
    /// whole consumer or of a key it lacks). A key left at its default in
    /// a section has no source.
    pub fn of(&self, key: &str) -> Option<&Origin> {
        let mut k = key;
        loop {
            if let Some(o) = self.0.get(k) {
                return Some(o);
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
            if !k.contains(['.', '[']) {
                return None;
            }
        }
    }

    /// Prefixes a problem line (`key: message`) with the source of its key.
    pub fn locate(&self, line: &str) -> String {
        match problem_key(line).and_then(|k| self.of(k)) {
            Some(origin) => format!("{origin}: {line}"),
            None => line.to_string(),
        }
    }

    fn set(&mut self, key: String, origin: Origin) {
        // A later source replaces the whole value, nested keys included.
        let nested = |k: &str| {
            k.strip_prefix(key.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        self.0.retain(|k, _| !nested(k));
        self.0.insert(key, origin);
    }
}

/// The key path a problem line starts with (`server.listen: …`), or the key
/// named by `unknown key <path>`.
pub(super) fn problem_key(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("unknown key ") {
        return rest.split([' ', ':']).next();
    }
    let (key, _) = line.split_once(": ")?;
    let is_path = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
    is_path.then_some(key)
}

/// What the sources hold: the configuration with every key that parsed,
/// the problems of those that did not (one line each, without source), and
/// where each key came from.
pub struct Loaded {
    /// Defaults, overridden by every key that parsed.
    pub raw: RawConfig,
    /// Unknown keys and type errors, `key: message`.
    pub problems: Vec<String>,
    /// Sources of the keys set.
    pub origins: Origins,
}

impl Loaded {
    /// Keys with a problem of their own: validation says nothing more
    /// about them (their value is the default standing in).
    pub fn has_problem(&self, key: &str) -> bool {
        self.problems
            .iter()
            .filter_map(|p| problem_key(p))
            .any(|k| k == key)
    }
}

/// Reads the configuration: defaults → file → environment.
///
/// `path = None` reads [`DEFAULT_CONFIG_PATH`] when it exists. An explicit
/// path that does not exist is an error.
pub fn load_raw(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    load_raw_from(path, std::env::vars())
}

/// [`load_raw`] with an explicit environment (tests). Every problem is
/// reported, prefixed with its source.
pub fn load_raw_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigError> {
    let loaded = load_sources(path, env)?;
    if loaded.problems.is_empty() {
        Ok(loaded.raw)
    } else {
        let lines = loaded
            .problems
            .iter()
            .map(|p| loaded.origins.locate(p))
            .collect();
        Err(ConfigError(lines))
    }
}

/// Reads the file and the environment into a [`Loaded`]. Fails only when
/// nothing can be read: a missing file, a file that is not TOML, a
/// malformed variable name.
pub fn load_sources(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let mut tree = toml::Table::new();
    let mut origins = Origins::default();
    let file = match path {
        Some(p) if !p.is_file() => {
            return Err(ConfigError(vec![format!(
                "config file {}: not found",
                p.display()
            )]))
        }
        Some(p) => Some(p),
        None => Some(Path::new(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file()),
    };
    if let Some(p) = file {
        let name = p.display().to_string();
        let text = std::fs::read_to_string(p)
            .map_err(|e| ConfigError(vec![format!("config file {name}: {e}")]))?;
        tree = read_file(&name, &text, &mut origins)?;
    }
    read_env(env, &mut tree, &mut origins)?;
    let (raw, problems) = collect(&tree);
    Ok(Loaded {
        raw,
        problems,
        origins,
    })
}

// ---------------------------------------------------------------------------
// The file, with the line of every key
// ---------------------------------------------------------------------------

/// A TOML document with the position of every key (the values themselves
/// are read from the plain parse).
enum Node {
    Table(Vec<(toml::Spanned<String>, Node)>),
    Array(Vec<Node>),
    Value,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Value)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Value)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v)
                    .map(|_| Node::Value)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Value)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Value)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Table(entries))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses the file; records the line of every key (`file:0` when the
/// positions cannot be had, e.g. for a date-time value).
fn read_file(name: &str, text: &str, origins: &mut Origins) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| line_of(text, s.start))
            .map_or_else(String::new, |l| format!(":{l}"));
        ConfigError(vec![format!("{name}{line}: {}", e.message().trim())])
    })?;
    let at = |line: usize| Origin::File {
        path: name.to_string(),
        line,
    };
    match toml::from_str::<Node>(text) {
        Ok(node) => record_lines(&node, "", text, &at, origins),
        Err(_) => {
            for key in table.keys() {
                origins.set(key.clone(), at(0));
            }
        }
    }
    Ok(table)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn record_lines(
    node: &Node,
    path: &str,
    text: &str,
    at: &dyn Fn(usize) -> Origin,
    origins: &mut Origins,
) {
    match node {
        Node::Table(entries) => {
            for (key, value) in entries {
                let child = if path.is_empty() {
                    key.get_ref().clone()
                } else {
                    format!("{path}.{}", key.get_ref())
                };
                let line = line_of(text, key.span().start);
                origins.0.entry(child.clone()).or_insert_with(|| at(line));
                record_lines(value, &child, text, at, origins);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                // An array of tables: the line of the element's `[[…]]`
                // header (the first line above its first key that opens a
                // table), else of its first key.
                if let Node::Table(entries) = item {
                    if let Some((first, _)) = entries.first() {
                        let first_line = line_of(text, first.span().start);
                        let lines: Vec<&str> = text.lines().take(first_line).collect();
                        let header = lines
                            .iter()
                            .enumerate()
                            .rev()
                            .find(|(_, l)| l.trim_start().starts_with('['))
                            .filter(|(_, l)| l.trim_start().starts_with("[["))
                            .map_or(first_line, |(n, _)| n + 1);
                        origins.0.insert(child.clone(), at(header));
                    }
                }
                record_lines(item, &child, text, at, origins);
            }
        }
        Node::Value => {}
    }
}

// ---------------------------------------------------------------------------
// The environment
// ---------------------------------------------------------------------------

/// Overlays `LTIGATE_<SECTION>__<KEY>` variables (only names with `__`).
fn read_env(
    env: impl IntoIterator<Item = (String, String)>,
    tree: &mut toml::Table,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = env.into_iter().collect();
    vars.sort();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("LTIGATE_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|s| s.is_empty()) {
            problems.push(format!("{name}: malformed variable name"));
            continue;
        }
        insert_env_value(tree, &path, parse_env_value(&value));
        origins.set(path.join("."), Origin::Env(name));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems))
    }
}

/// Environment values: TOML scalars and arrays where they parse, else strings.
fn parse_env_value(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        if let Ok(t) = format!("v = {trimmed}").parse::<toml::Table>() {
            if let Some(v) = t.get("v") {
                return v.clone();
            }
        }
    }
    match trimmed {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if let Ok(n) = trimmed.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    toml::Value::String(value.to_string())
}

fn insert_env_value(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                insert_env_value(t, rest, value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Against the schema: every key on its own
// ---------------------------------------------------------------------------

/// Deserializes the merged tree section by section and key by key, so
/// that one bad key neither hides another nor takes its section's good
/// keys with it.
fn collect(tree: &toml::Table) -> (RawConfig, Vec<String>) {
    let mut raw = RawConfig::default();
    let mut problems = Vec::new();
    let p = &mut problems;
    for (name, value) in tree {
        match name.as_str() {
            "server" => raw.server = section(name, value, p),
            "upstream" => raw.upstream = section(name, value, p),
            "launch" => raw.launch = section(name, value, p),
            "session" => raw.session = section(name, value, p),
            "store" => raw.store = section(name, value, p),
            "webhook" => raw.webhook = section(name, value, p),
            "outcomes" => raw.outcomes = section(name, value, p),
            "licences" => raw.licences = section(name, value, p),
            "cartridge" => raw.cartridge = section(name, value, p),
            "lti13" => raw.lti13 = section(name, value, p),
            "consumers" => match value {
                toml::Value::Array(items) => {
                    raw.consumers = items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| section(&format!("consumers[{i}]"), v, p))
                        .collect();
                }
                _ => p.push("consumers: expected an array of tables ([[consumers]])".into()),
            },
            "platforms" => match value {
                toml::Value::Array(items) => {
                    raw.platforms = items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| section(&format!("platforms[{i}]"), v, p))
                        .collect();
                }
                _ => p.push("platforms: expected an array of tables ([[platforms]])".into()),
            },
            "courses" => match value {
                toml::Value::Table(courses) => {
                    for (id, v) in courses {
                        let course = section(&format!("courses.{id}"), v, p);
                        raw.courses.insert(id.clone(), course);
                    }
                }
                _ => p.push("courses: expected a table ([courses.<id>])".into()),
            },
            _ => p.push(format!(
                "unknown key {name} (known: server, upstream, launch, session, store, webhook, outcomes, licences, cartridge, lti13, consumers, platforms, courses)"
            )),
        }
    }
    (raw, problems)
}

/// One table of the schema: each key deserialized alone (its problem
/// named by its path), then the good ones together over the defaults.
fn section<T: DeserializeOwned + Default>(
    path: &str,
    value: &toml::Value,
    problems: &mut Vec<String>,
) -> T {
    let toml::Value::Table(table) = value else {
        problems.push(format!(
            "{path}: expected a table, found {}",
            value.type_str()
        ));
        return T::default();
    };
    let mut good = toml::Table::new();
    for (key, v) in table {
        let mut one = toml::Table::new();
        one.insert(key.clone(), v.clone());
        match T::deserialize(toml::Value::Table(one)) {
            Ok(_) => {
                good.insert(key.clone(), v.clone());
            }
            Err(e) => problems.push(key_problem(&format!("{path}.{key}"), e.message())),
        }
    }
    T::deserialize(toml::Value::Table(good)).unwrap_or_else(|e| {
        problems.push(format!("{path}: {}", e.message()));
        T::default()
    })
}

/// `unknown key <path> (known: …)` for serde's unknown field, else
/// `<path>: <message>`.
fn key_problem(path: &str, message: &str) -> String {
    if message.starts_with("unknown field") {
        let known = message
            .split_once("expected one of ")
            .or_else(|| message.split_once("expected "))
            .map(|(_, k)| format!(" (known: {})", k.replace('`', "")))
            .unwrap_or_default();
        format!("unknown key {path}{known}")
    } else {
        format!("{path}: {message}")
    }
}
