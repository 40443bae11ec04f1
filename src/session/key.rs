//! The session key: configured, or (embedded store only) generated once and
//! kept beside the database, readable by ltigate's user alone.

use std::path::Path;

use anyhow::Context as _;

use crate::config::{self, Settings, StoreSettings};
use crate::secret::Secret;

/// The session key: configured, or (embedded store only) generated once and
/// kept beside the database.
pub fn session_key(settings: &Settings) -> anyhow::Result<Secret> {
    if let Some(k) = &settings.session.secret {
        return Ok(k.clone());
    }
    let StoreSettings::Embedded { path } = &settings.store else {
        anyhow::bail!("session.secret: required with Redis");
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key_path = dir.join("session.key");
    if let Ok(bytes) = std::fs::read(&key_path) {
        if bytes.len() >= config::MIN_SESSION_KEY {
            tracing::info!(path = %key_path.display(), "using the generated session key");
            return Ok(Secret::new(bytes));
        }
        anyhow::bail!(
            "{}: too short for a session key; delete it to generate a new one",
            key_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut key = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    write_private(&key_path, &key)?;
    tracing::info!(
        path = %key_path.display(),
        "generated a session key (set session.secret_file to manage it yourself)"
    );
    Ok(Secret::new(key))
}

/// Writes a new file readable by ltigate's user alone (it must not exist).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
