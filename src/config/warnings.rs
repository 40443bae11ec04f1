//! What is valid but likely wrong.

use super::settings::{Settings, MAX_PORTABLE_SECRET};

impl Settings {
    /// What is valid but likely wrong, one line each, for `check-config`
    /// and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.consumers {
            for (i, secret) in c.secrets.iter().enumerate() {
                let len = secret.expose().len();
                if len > MAX_PORTABLE_SECRET {
                    out.push(format!(
                        "consumer {:?}: secret {} is {len} characters; Brightspace keeps only the first {MAX_PORTABLE_SECRET} of a pasted secret, so its launches would fail as bad_signature",
                        c.name,
                        i + 1
                    ));
                }
            }
        }
        out
    }
}
