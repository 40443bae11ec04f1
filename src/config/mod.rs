//! Configuration: figment loading into serde structs at the edge, validated once
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

pub use load::{load_raw, load_raw_from};
pub use raw::*;
pub use settings::*;
pub use validate::{parse_duration, parse_public_url, parse_size, validate};

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
    let raw = load_raw(path)?;
    let settings = validate(&raw)?;
    Ok((raw, settings))
}
