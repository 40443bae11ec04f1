//! Configuration: TOML and environment loading into serde structs at the edge, validated once
//! into the typed [`Settings`] the rest of ltigate uses.
//!
//! Sources, later ones winning: built-in defaults → the TOML file
//! (`config/ltigate.toml` or `--config PATH`) → environment variables
//! `LTIGATE_<SECTION>__<KEY>`. Only variable names containing `__` are read, so
//! Kubernetes service-link variables such as `LTIGATE_PORT` are ignored.
//! Unknown keys are rejected with their path. Every secret may be given inline
//! or through a `*_file` twin (trailing newline trimmed; `base64:` prefix
//! decoded). Durations are integers with a unit (`ms`, `s`, `m`, `h`, `d`),
//! several parts adding up (`1h30m`), or a bare `0`; sizes `64KiB`, `1MiB`.
//!
//! The parts: `raw` holds the serde structs as written, `load` reads
//! the sources, `validate` turns a [`RawConfig`] into [`Settings`],
//! `settings` holds the typed result and `warnings` what is valid but
//! likely wrong.

use std::fmt;
use std::path::Path;

mod load;
mod raw;
mod settings;
mod validate;
mod warnings;

#[cfg(test)]
mod tests;

pub use load::{load_raw, load_raw_from, load_sources, Loaded, Origin, Origins};
pub use raw::*;
pub use settings::*;
pub use validate::{
    assertion_key_der, parse_duration, parse_public_url, parse_size, tool_key_der, validate,
};
pub use warnings::EXAMPLE_SECRETS;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/ltigate.toml";

/// Minimum length of the session key, in bytes.
pub const MIN_SESSION_KEY: usize = 32;

/// Configuration problems, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Loads and validates: what `serve` and `check-config` call.
pub fn load(path: Option<&Path>) -> Result<(RawConfig, Settings), ConfigError> {
    load_from(path, std::env::vars())
}

/// [`load`] with an explicit environment (tests). Unknown keys, type errors
/// and validation problems are reported together, each line prefixed with
/// the source of its key (`file:line` or the variable), if any.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(RawConfig, Settings), ConfigError> {
    let loaded = load_sources(path, env)?;
    let mut problems = loaded.problems.clone();
    let settings = match validate(&loaded.raw) {
        Ok(settings) => Some(settings),
        Err(ConfigError(more)) => {
            // A key that did not parse stands at its default: what
            // validation says about that default is noise.
            problems.extend(
                more.into_iter()
                    .filter(|p| !load::problem_key(p).is_some_and(|k| loaded.has_problem(k))),
            );
            None
        }
    };
    match settings {
        Some(settings) if problems.is_empty() => Ok((loaded.raw, settings)),
        _ => Err(ConfigError(
            problems.iter().map(|p| loaded.origins.locate(p)).collect(),
        )),
    }
}
