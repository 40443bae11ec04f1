//! The upstream's side of the signed identity assertion: the README's
//! Python recipe (PyJWT), run by `tests/support/assertion_verifier.py` in a
//! child process, verifies each token against the key set it fetches from
//! ltigate's admin listener. Needs `python3` with PyJWT and cryptography
//! (tests/requirements.txt).

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The verifier process: one token in, one verdict out.
pub struct Verifier {
    child: Mutex<Child>,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether `python3` can import PyJWT with its crypto backend (see
/// [`super::python_with`]).
pub fn python_with_pyjwt() -> bool {
    super::python_with("jwt, cryptography")
}

impl Verifier {
    /// Starts the recipe for the deployment whose key set is at `jwks_url`.
    pub async fn start(jwks_url: &str, issuer: &str, audience: &str) -> Arc<Verifier> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/assertion_verifier.py"
        );
        let config = json!({"jwks_url": jwks_url, "issuer": issuer, "audience": audience});
        let mut child = Command::new("python3")
            .arg(script)
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            stdout.read_line(&mut line).map(|_| (line, stdout))
        })
        .await
        .unwrap();
        let (line, stdout) = ready.unwrap_or_else(|e| panic!("the verifier did not start: {e}"));
        assert_eq!(
            serde_json::from_str::<Value>(&line).ok(),
            Some(json!({"ready": true})),
            "the verifier printed {line:?}"
        );
        Arc::new(Verifier {
            child: Mutex::new(child),
            io: Mutex::new((stdin, stdout)),
        })
    }

    /// The token's claims as the recipe returns them, or its refusal
    /// (`"<exception class>: <message>"`). Runs on the blocking pool: the
    /// recipe fetches the key set from the gate, which must go on
    /// answering meanwhile.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Value, String> {
        let me = self.clone();
        let token = token.to_string();
        tokio::task::spawn_blocking(move || {
            let mut io = me.io.lock().unwrap();
            let (stdin, stdout) = &mut *io;
            writeln!(stdin, "{token}").unwrap();
            stdin.flush().unwrap();
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let verdict: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the verifier printed {line:?}: {e}"));
            if verdict["ok"] == true {
                Ok(verdict["claims"].clone())
            } else {
                Err(verdict["error"].as_str().unwrap_or("?").to_string())
            }
        })
        .await
        .unwrap()
    }
}
