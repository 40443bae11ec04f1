//! Reading the sources: defaults, the TOML file, the environment.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::Figment;

use super::raw::RawConfig;
use super::{ConfigError, DEFAULT_CONFIG_PATH};

/// Reads the configuration: defaults → file → environment.
///
/// `path = None` reads [`DEFAULT_CONFIG_PATH`] when it exists. An explicit
/// path that does not exist is an error.
pub fn load_raw(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    load_raw_from(path, std::env::vars())
}

/// [`load_raw`] with an explicit environment (tests).
pub fn load_raw_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, ConfigError> {
    let mut figment = Figment::new();
    match path {
        Some(p) => {
            if !p.is_file() {
                return Err(ConfigError(vec![format!(
                    "config file {}: not found",
                    p.display()
                )]));
            }
            figment = figment.merge(Toml::file(p));
        }
        None => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            if p.is_file() {
                figment = figment.merge(Toml::file(p));
            }
        }
    }
    // figment's Env reads the process environment; build the equivalent
    // explicitly so tests can pass their own.
    let mut env_toml = toml::Table::new();
    let mut problems = Vec::new();
    for (name, value) in env {
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
        insert_env_value(&mut env_toml, &path, parse_env_value(&value));
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    figment = figment.merge(Toml::string(&env_toml.to_string()));
    figment.extract::<RawConfig>().map_err(figment_errors)
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

fn figment_errors(err: figment::Error) -> ConfigError {
    let mut lines = Vec::new();
    for e in err {
        let path = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| format!(" (in {s})"))
            .unwrap_or_default();
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                // The path already ends with the unknown field when known.
                let full = if path.is_empty() {
                    field.clone()
                } else if path.ends_with(field.as_str()) {
                    path.clone()
                } else {
                    format!("{path}.{field}")
                };
                lines.push(format!("{full}: unknown key{source}"));
                continue;
            }
            other => other.to_string(),
        };
        if path.is_empty() {
            lines.push(format!("{what}{source}"));
        } else {
            lines.push(format!("{path}: {what}{source}"));
        }
    }
    if lines.is_empty() {
        lines.push("invalid configuration".into());
    }
    ConfigError(lines)
}
