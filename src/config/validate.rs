//! Validation: a [`RawConfig`] into [`Settings`], every problem collected.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    redact_url, OneOrMany, Quantity, RawConfig, RawConsumer, RawCourse, RawLaunch, RawOutcomes,
    RawSecret, RawServer, RawSession, RawStore, RawUpstream, RawWebhook,
};
use super::settings::*;
use super::warnings::example_secrets;
use super::{ConfigError, MIN_SESSION_KEY};
use crate::secret::Secret;

mod assertion;
mod lti13;

pub use assertion::assertion_key_der;
pub use lti13::tool_key_der;
use lti13::{lti13, platforms, tenants};

/// The grammar of durations, for error messages.
pub const DURATION_GRAMMAR: &str = "a duration is an integer followed by a unit (ms, s, m, h or d), with nothing between; several parts add up; a bare 0 is zero (examples: \"300ms\", \"30s\", \"8h\", \"1h30m\")";

/// Parses a duration: one or more parts, each an integer immediately
/// followed by `ms`, `s`, `m`, `h` or `d` (`300ms`, `30s`, `8h`, `1h30m`).
/// A bare `0` (string or integer) is zero; any other number without a unit
/// is refused, as are spaces and spelled-out units.
pub fn parse_duration(q: &Quantity) -> Result<Duration, String> {
    let text = match q {
        Quantity::Number(0) => return Ok(Duration::ZERO),
        Quantity::Number(n) => return Err(format!("`{n}` has no unit: {DURATION_GRAMMAR}")),
        Quantity::Text(t) => t.as_str(),
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("`{text}` is not a duration: {DURATION_GRAMMAR}");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let ms_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if unit_len == rest.len() => {
                return Err(format!("`{text}` has no unit: {DURATION_GRAMMAR}"))
            }
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses `32KiB`, `64KB`, `1MiB`, `512`, or a bare number of bytes.
pub fn parse_size(q: &Quantity) -> Result<usize, String> {
    let bad = |t: &str| format!("`{t}` is not a size (examples: \"64KiB\", \"1MiB\", \"4096\")");
    match q {
        Quantity::Number(n) => usize::try_from(*n).map_err(|_| bad(&n.to_string())),
        Quantity::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: usize = num.parse().map_err(|_| bad(t))?;
            let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1000,
                "kib" => 1024,
                "m" | "mb" => 1_000_000,
                "mib" => 1024 * 1024,
                _ => return Err(bad(t)),
            };
            n.checked_mul(mult).ok_or_else(|| bad(t))
        }
    }
}

/// Parses the `server.public_url`.
pub fn parse_public_url(url: &str) -> Result<PublicUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute http(s) URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{url}`: scheme must be http or https"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("`{url}`: must not carry a query or fragment"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}`: missing or invalid host"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("`{url}`: invalid IPv6 host"))?;
        let host = &authority[..end + 2];
        let after = &stripped[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("`{url}`: invalid host")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}`: missing host"));
    }
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| format!("`{url}`: invalid port"))?;
            let default = if scheme == "https" { 443 } else { 80 };
            (n != default).then_some(n)
        }
    };
    let prefix = path.trim_end_matches('/').to_string();
    Ok(PublicUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        prefix,
    })
}

/// Reads a `*_file` secret: trailing newline(s) trimmed, `base64:` decoded.
fn read_secret_file(path: &str) -> Result<Secret, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut end = bytes.len();
    while end > 0 && (bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r') {
        end -= 1;
    }
    let bytes = &bytes[..end];
    match std::str::from_utf8(bytes) {
        Ok(text) if text.starts_with("base64:") => Secret::parse(text),
        _ => Ok(Secret::new(bytes)),
    }
}

/// A secret read from a file's line, with the line's number (from 1).
type NumberedSecret = (usize, Result<Secret, String>);

/// Reads a file of secrets, one a line, newest first (a rotation): blank
/// lines skipped, a line's `\r` dropped, each line read as
/// [`read_secret_file`] reads a whole file. Each secret comes with its line
/// number, so a bad one can be named.
fn read_secret_lines(path: &str) -> Result<Vec<NumberedSecret>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let secret = match std::str::from_utf8(line) {
                Ok(text) if text.starts_with("base64:") => Secret::parse(text),
                _ => Ok(Secret::new(line)),
            };
            (i + 1, secret)
        })
        .collect())
}

/// Resolves an inline secret and its `_file` twin (at most one of them).
fn resolve_secret(
    key: &str,
    inline: Option<&RawSecret>,
    file: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key}: set either {key} or {key}_file, not both"));
            None
        }
        (Some(s), None) => match Secret::parse(&s.0) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        },
        (None, Some(f)) => match read_secret_file(f) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{key}_file: {e}"));
                None
            }
        },
        (None, None) => None,
    }
}

struct Check<'a> {
    problems: &'a mut Vec<String>,
}

impl Check<'_> {
    /// The duration, or `None` (and the problem noted) when it does not
    /// parse.
    fn parsed_duration(&mut self, key: &str, q: &Quantity) -> Option<Duration> {
        parse_duration(q)
            .map_err(|e| self.problems.push(format!("{key}: {e}")))
            .ok()
    }

    /// The duration; zero (and the problem noted) when it does not parse.
    fn duration(&mut self, key: &str, q: &Quantity) -> Duration {
        self.parsed_duration(key, q).unwrap_or_default()
    }

    fn size(&mut self, key: &str, q: &Quantity) -> usize {
        parse_size(q).unwrap_or_else(|e| {
            self.problems.push(format!("{key}: {e}"));
            0
        })
    }

    fn addr(&mut self, key: &str, s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "{key}: `{s}` is not an address:port (example: \"0.0.0.0:8080\")"
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn http_url(&mut self, key: &str, s: &str) -> String {
        let ok = (s.starts_with("http://") || s.starts_with("https://"))
            && s.split_once("://")
                .map(|(_, r)| !r.is_empty() && !r.starts_with('/'))
                .unwrap_or(false);
        if !ok {
            self.problems
                .push(format!("{key}: `{s}` is not an absolute http(s) URL"));
        }
        s.trim_end_matches('/').to_string()
    }

    fn path_template(&mut self, key: &str, s: &str, allowed: &[&str]) {
        if !s.starts_with('/') {
            self.problems
                .push(format!("{key}: `{s}` must start with `/`"));
        }
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                self.problems.push(format!("{key}: unclosed `{{` in `{s}`"));
                return;
            };
            let name = &rest[open + 1..open + close];
            if !allowed.contains(&name) {
                self.problems.push(format!(
                    "{key}: unknown placeholder `{{{name}}}` (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            rest = &rest[open + close + 1..];
        }
    }
}

/// Validates a raw configuration into [`Settings`], collecting every problem.
pub fn validate(raw: &RawConfig) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut c = Check {
        problems: &mut problems,
    };
    let server = server(&mut c, &raw.server);
    let upstream = upstream(&mut c, &raw.upstream);
    let launch = launch(&mut c, &raw.launch);
    let mut session = session(&mut c, &raw.session, server.as_ref().map(|s| &s.public_url));
    let store = store(&mut c, &raw.store, session.secret.is_some());
    session.assertion = assertion::assertion(&mut c, &raw.session, &store);
    let webhook = webhook(&mut c, &raw.webhook);
    let outcomes = outcomes(&mut c, &raw.outcomes);
    let lti13 = lti13(&mut c, &raw.lti13);
    let consumers = consumers(&mut c, &raw.consumers, &raw.launch.id_separator);
    let platforms = platforms(
        &mut c,
        &raw.platforms,
        &consumers,
        &raw.launch.id_separator,
        raw.outcomes.allow_insecure_targets,
    );
    if lti13.key.is_none()
        && !platforms.is_empty()
        && matches!(store, StoreSettings::Redis { .. })
        && raw.lti13.key.is_none()
        && raw.lti13.key_file.is_none()
    {
        c.problems.push(
            "lti13.key: required with Redis when [[platforms]] are configured (every replica must sign with, and publish, the same tool key); set lti13.key_file or lti13.key"
                .into(),
        );
    }
    let courses = courses(&mut c, &raw.courses);
    if server.as_ref().is_some_and(|s| s.public_url.is_https()) {
        for key in example_secrets(&upstream, &session, &webhook, &consumers) {
            c.problems.push(format!(
                "{key}: a published example secret (from the shipped configuration, the README or the demo) is refused when server.public_url is https; set a secret of your own"
            ));
        }
    }
    match server {
        Some(server) if problems.is_empty() => Ok(Settings {
            server,
            upstream,
            launch,
            session,
            store,
            webhook,
            outcomes,
            count_staff: raw.licences.count_staff,
            cartridge: raw.cartridge.clone(),
            lti13,
            tenants: tenants(&consumers, &platforms),
            consumers,
            platforms,
            courses,
        }),
        _ => Err(ConfigError(problems)),
    }
}

/// `[server]`; `None` without a usable `public_url`.
fn server(c: &mut Check<'_>, raw: &RawServer) -> Option<ServerSettings> {
    let listen = c.addr("server.listen", &raw.listen);
    let admin_listen = c.addr("server.admin_listen", &raw.admin_listen);
    let public_url = if raw.public_url.trim().is_empty() {
        c.problems.push(
            "server.public_url: required (the base URL the LMS launches, e.g. \"https://learn.example.com\")"
                .into(),
        );
        None
    } else {
        match parse_public_url(raw.public_url.trim()) {
            Ok(u) => Some(u),
            Err(e) => {
                c.problems.push(format!("server.public_url: {e}"));
                None
            }
        }
    };
    for p in &raw.public_paths {
        if !p.starts_with('/') {
            c.problems
                .push(format!("server.public_paths: `{p}` must start with `/`"));
        }
    }
    if raw.max_connections == 0 {
        c.problems
            .push("server.max_connections: must be at least 1".into());
    }
    let header_read_timeout = c.duration("server.header_read_timeout", &raw.header_read_timeout);
    let send_timeout = c.parsed_duration("server.send_timeout", &raw.send_timeout);
    if send_timeout.is_some_and(|t| t.is_zero()) {
        c.problems
            .push("server.send_timeout: must be longer than 0s".into());
    }
    let send_timeout = send_timeout.unwrap_or_default();
    let max_header_bytes = c.size("server.max_header_bytes", &raw.max_header_bytes);
    if max_header_bytes != 0 && max_header_bytes < 1024 {
        c.problems
            .push("server.max_header_bytes: must be at least 1KiB".into());
    }
    let shutdown_grace = c.duration("server.shutdown_grace", &raw.shutdown_grace);
    Some(ServerSettings {
        listen,
        admin_listen,
        public_url: public_url?,
        trust_forwarded_headers: raw.trust_forwarded_headers,
        public_paths: raw.public_paths.clone(),
        frame_ancestors: raw.frame_ancestors.clone(),
        max_connections: raw.max_connections,
        header_read_timeout,
        send_timeout,
        max_header_bytes,
        shutdown_grace,
        access_log: raw.access_log,
    })
}

/// `[upstream]`.
fn upstream(c: &mut Check<'_>, up: &RawUpstream) -> UpstreamSettings {
    let url = c.http_url("upstream.url", &up.url);
    let api_url = c.http_url("upstream.api_url", &up.api_url);
    c.path_template("upstream.user_path", &up.user_path, &["external_id"]);
    c.path_template(
        "upstream.subscription_path",
        &up.subscription_path,
        &["course", "external_id"],
    );
    c.path_template("upstream.landing_path", &up.landing_path, &["course"]);
    let course_path = if up.course_path.is_empty() {
        None
    } else {
        c.path_template("upstream.course_path", &up.course_path, &["course"]);
        if !up.course_path.contains("{course}") {
            c.problems
                .push("upstream.course_path: must contain `{course}`".into());
        }
        Some(up.course_path.clone())
    };
    let api_timeout = c.duration("upstream.api_timeout", &up.api_timeout);
    let api_token = resolve_secret(
        "upstream.api_token",
        up.api_token.as_ref(),
        up.api_token_file.as_ref(),
        c.problems,
    );
    let timeout = c.duration("upstream.timeout", &up.timeout);
    if up.api_retries > 10 {
        c.problems.push("upstream.api_retries: at most 10".into());
    }
    UpstreamSettings {
        url,
        api_url,
        api_token,
        api_timeout,
        api_retries: up.api_retries,
        user_path: up.user_path.clone(),
        subscription_path: up.subscription_path.clone(),
        landing_path: up.landing_path.clone(),
        course_path,
        pass_host_header: up.pass_host_header,
        timeout,
    }
}

/// `[launch]`.
fn launch(c: &mut Check<'_>, raw: &RawLaunch) -> LaunchSettings {
    let max_clock_skew = c.duration("launch.max_clock_skew", &raw.max_clock_skew);
    if raw.id_separator.is_empty() {
        c.problems
            .push("launch.id_separator: must not be empty".into());
    }
    LaunchSettings {
        max_clock_skew,
        id_separator: raw.id_separator.clone(),
    }
}

/// `[session]`; the cookie name is checked against the public URL's scheme.
fn session(c: &mut Check<'_>, s: &RawSession, public_url: Option<&PublicUrl>) -> SessionSettings {
    let mut lifetime = |key: &str, q: &Quantity| {
        let d = c.parsed_duration(key, q);
        if d.is_some_and(|d| d.is_zero()) {
            c.problems.push(format!("{key}: must be longer than zero"));
        }
        d.unwrap_or_default()
    };
    let ttl = lifetime("session.ttl", &s.ttl);
    let idle_ttl = lifetime("session.idle_ttl", &s.idle_ttl);
    if s.max_courses == 0 || s.max_courses > 50 {
        c.problems.push(
            "session.max_courses: must be between 1 and 50 (the cookie must stay under 4 KB)"
                .into(),
        );
    }
    if !is_token(&s.cookie_name) {
        c.problems.push(format!(
            "session.cookie_name: `{}` is not a valid cookie name",
            s.cookie_name
        ));
    }
    if s.cookie_name.starts_with("__Host-") || s.cookie_name.starts_with("__Secure-") {
        if let Some(u) = public_url {
            if !u.is_https() && !is_local_host(&u.host) {
                c.problems.push(format!(
                    "session.cookie_name: `{}` needs Secure cookies, which browsers only keep on https (or localhost); use https in server.public_url or another cookie name",
                    s.cookie_name
                ));
            }
        }
    }
    if s.header_prefix.is_empty() || !is_token(&s.header_prefix) {
        c.problems
            .push("session.header_prefix: must be a non-empty header name prefix".into());
    }
    let not_before = not_before(c, &s.not_before);
    let secret = resolve_secret(
        "session.secret",
        s.secret.as_ref(),
        s.secret_file.as_ref(),
        c.problems,
    );
    if let Some(k) = &secret {
        if k.len() < MIN_SESSION_KEY {
            c.problems.push(format!(
                "session.secret: must be at least {MIN_SESSION_KEY} bytes (got {})",
                k.len()
            ));
        }
    }
    SessionSettings {
        secret,
        previous_secrets: previous_session_secrets(c, s),
        cookie_name: s.cookie_name.clone(),
        header_prefix: s.header_prefix.clone(),
        ttl,
        idle_ttl,
        max_courses: s.max_courses,
        partitioned: s.partitioned,
        csrf: s.csrf,
        rewrite_upstream_cookies: s.rewrite_upstream_cookies,
        not_before,
        assertion: None,
    }
}

/// `session.not_before`: Unix seconds, `None` when empty.
fn not_before(c: &mut Check<'_>, text: &str) -> Option<u64> {
    if text.trim().is_empty() {
        return None;
    }
    match humantime::parse_rfc3339_weak(text.trim()) {
        Ok(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        Err(_) => {
            c.problems.push(format!(
                "session.not_before: `{text}` is not an RFC 3339 timestamp (example: \"2026-01-31T12:00:00Z\")"
            ));
            None
        }
    }
}

/// `session.previous_secrets` and `session.previous_secrets_file`.
fn previous_session_secrets(c: &mut Check<'_>, s: &RawSession) -> Vec<Secret> {
    let mut previous = Vec::new();
    for (i, p) in s.previous_secrets.iter().enumerate() {
        match Secret::parse(&p.0) {
            Ok(k) if k.len() >= MIN_SESSION_KEY => previous.push(k),
            Ok(_) => c.problems.push(format!(
                "session.previous_secrets[{i}]: must be at least {MIN_SESSION_KEY} bytes"
            )),
            Err(e) => c
                .problems
                .push(format!("session.previous_secrets[{i}]: {e}")),
        }
    }
    if let Some(f) = &s.previous_secrets_file {
        match read_secret_lines(f) {
            Ok(lines) => {
                for (n, line) in lines {
                    match line {
                        Ok(k) if k.len() >= MIN_SESSION_KEY => previous.push(k),
                        Ok(_) => c.problems.push(format!(
                            "session.previous_secrets_file: line {n}: must be at least {MIN_SESSION_KEY} bytes"
                        )),
                        Err(e) => c
                            .problems
                            .push(format!("session.previous_secrets_file: line {n}: {e}")),
                    }
                }
            }
            Err(e) => c
                .problems
                .push(format!("session.previous_secrets_file: {e}")),
        }
    }
    previous
}

/// `[store]`: embedded without a URL, else Redis (which needs a shared
/// session key).
fn store(c: &mut Check<'_>, raw: &RawStore, has_session_secret: bool) -> StoreSettings {
    let urls: Vec<String> = match &raw.url {
        OneOrMany::One(s) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        OneOrMany::Many(v) => v
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
    };
    let timeout = c.duration("store.timeout", &raw.timeout);
    if urls.is_empty() {
        if raw.cluster {
            c.problems
                .push("store.cluster: needs store.url (the Cluster's seed nodes)".into());
        }
        if raw.path.trim().is_empty() {
            c.problems
                .push("store.path: required for the embedded store".into());
        }
        return StoreSettings::Embedded {
            path: PathBuf::from(&raw.path),
        };
    }
    for u in &urls {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            c.problems.push(format!(
                "store.url: `{}` must start with redis:// or rediss://",
                redact_url(u)
            ));
        } else if redis::parse_redis_url(u).is_none() {
            c.problems.push(format!(
                "store.url: `{}` is not a valid Redis URL",
                redact_url(u)
            ));
        }
    }
    if urls.len() > 1 && !raw.cluster {
        c.problems
            .push("store.url: several URLs name a Redis Cluster; set store.cluster = true".into());
    }
    if !has_session_secret {
        c.problems.push(
            "session.secret: required with Redis (every replica must share the session key); set session.secret or session.secret_file"
                .into(),
        );
    }
    StoreSettings::Redis {
        urls,
        cluster: raw.cluster,
        timeout,
    }
}

/// `[webhook]`.
fn webhook(c: &mut Check<'_>, w: &RawWebhook) -> WebhookSettings {
    let secret = resolve_secret(
        "webhook.secret",
        w.secret.as_ref(),
        w.secret_file.as_ref(),
        c.problems,
    );
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        c.problems
            .push("webhook.secret: must be at least 16 bytes".into());
    }
    WebhookSettings {
        secret,
        tolerance: c.duration("webhook.tolerance", &w.tolerance),
        max_body: c.size("webhook.max_body", &w.max_body),
    }
}

/// `[outcomes]`.
fn outcomes(c: &mut Check<'_>, o: &RawOutcomes) -> OutcomeSettings {
    if o.max_attempts == 0 {
        c.problems
            .push("outcomes.max_attempts: must be at least 1".into());
    }
    let retry_initial = c.parsed_duration("outcomes.retry_initial", &o.retry_initial);
    let retry_max = c.parsed_duration("outcomes.retry_max", &o.retry_max);
    if let (Some(initial), Some(max)) = (retry_initial, retry_max) {
        if max < initial {
            c.problems
                .push("outcomes.retry_max: must not be shorter than outcomes.retry_initial".into());
        }
    }
    let lease = c.parsed_duration("outcomes.lease", &o.lease);
    let timeout = c.parsed_duration("outcomes.timeout", &o.timeout);
    if let (Some(lease), Some(timeout)) = (lease, timeout) {
        if lease <= timeout {
            c.problems.push(
                "outcomes.lease: must be longer than outcomes.timeout (a lease must outlive a delivery)"
                    .into(),
            );
        }
    }
    let (retry_initial, retry_max) = (
        retry_initial.unwrap_or_default(),
        retry_max.unwrap_or_default(),
    );
    let (lease, timeout) = (lease.unwrap_or_default(), timeout.unwrap_or_default());
    OutcomeSettings {
        max_attempts: o.max_attempts,
        retry_initial,
        retry_max,
        lease,
        timeout,
        allow_insecure_targets: o.allow_insecure_targets,
    }
}

/// `[[consumers]]`: names, keys and `lms_id`s unique, one secret source each.
fn consumers(c: &mut Check<'_>, raw: &[RawConsumer], id_separator: &str) -> Vec<Consumer> {
    let mut consumers = Vec::new();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let mut lms_ids = HashSet::new();
    for (i, rc) in raw.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if rc.name.trim().is_empty() {
            c.problems.push(format!("{at}.name: required"));
        } else if !names.insert(rc.name.clone()) {
            c.problems
                .push(format!("{at}.name: `{}` is used twice", rc.name));
        }
        if rc.key.is_empty() {
            c.problems.push(format!("{at}.key: required"));
        } else if !keys.insert(rc.key.clone()) {
            c.problems
                .push(format!("{at}.key: `{}` is used twice", rc.key));
        }
        if rc.lms_id.is_empty() {
            c.problems.push(format!("{at}.lms_id: required"));
        } else if !lms_ids.insert(rc.lms_id.clone()) {
            c.problems.push(format!(
                "{at}.lms_id: `{}` is used twice (it must namespace one LMS)",
                rc.lms_id
            ));
        } else if !id_separator.is_empty() && rc.lms_id.contains(id_separator) {
            c.problems.push(format!(
                "{at}.lms_id: `{}` must not contain launch.id_separator `{id_separator}`",
                rc.lms_id
            ));
        }
        if rc.max_licences == Some(0) {
            c.problems.push(format!(
                "{at}.max_licences: 0 would refuse every learner; omit it for no cap"
            ));
        }
        consumers.push(Consumer {
            tenant: Arc::new(Tenant {
                name: rc.name.clone(),
                lms_id: rc.lms_id.clone(),
                environment: rc.environment.clone().filter(|e| !e.is_empty()),
                max_licences: rc.max_licences,
                outcome_hosts: rc
                    .outcome_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            }),
            key: rc.key.clone(),
            secrets: consumer_secrets(c, &at, rc),
        });
    }
    consumers
}

/// A consumer's secrets, newest first, from exactly one of `secret`,
/// `secrets` and `secret_file`.
fn consumer_secrets(c: &mut Check<'_>, at: &str, rc: &RawConsumer) -> Vec<Secret> {
    let mut secrets = Vec::new();
    let given = usize::from(rc.secret.is_some())
        + usize::from(!rc.secrets.is_empty())
        + usize::from(rc.secret_file.is_some());
    if given > 1 {
        c.problems
            .push(format!("{at}: set one of secret, secrets or secret_file"));
    }
    if let Some(s) = resolve_secret(
        &format!("{at}.secret"),
        rc.secret.as_ref(),
        None,
        c.problems,
    ) {
        secrets.push(s);
    }
    for (j, s) in rc.secrets.iter().enumerate() {
        match Secret::parse(&s.0) {
            Ok(s) => secrets.push(s),
            Err(e) => c.problems.push(format!("{at}.secrets[{j}]: {e}")),
        }
    }
    if let Some(f) = &rc.secret_file {
        // One secret, or several during a rotation: one a line, newest first.
        match read_secret_lines(f) {
            Ok(lines) if lines.is_empty() => c
                .problems
                .push(format!("{at}.secret_file: `{f}` holds no secret")),
            Ok(lines) => {
                for (n, line) in lines {
                    match line {
                        Ok(s) => secrets.push(s),
                        Err(e) => c.problems.push(format!("{at}.secret_file: line {n}: {e}")),
                    }
                }
            }
            Err(e) => c.problems.push(format!("{at}.secret_file: {e}")),
        }
    }
    if given == 0 {
        c.problems.push(format!(
            "{at}: a secret is required (secret, secrets or secret_file)"
        ));
    }
    if secrets.iter().any(|s| s.is_empty()) {
        c.problems.push(format!("{at}: secrets must not be empty"));
    }
    secrets
}

/// `[courses.<id>]`.
fn courses(c: &mut Check<'_>, raw: &BTreeMap<String, RawCourse>) -> BTreeMap<String, Course> {
    let mut courses = BTreeMap::new();
    for (id, rc) in raw {
        if let Some(lp) = &rc.landing_path {
            if !lp.starts_with('/') {
                c.problems.push(format!(
                    "courses.{id}.landing_path: `{lp}` must start with `/`"
                ));
            }
        }
        courses.insert(
            id.clone(),
            Course {
                grade_activity: rc.grade_activity.clone(),
                landing_path: rc.landing_path.clone(),
            },
        );
    }
    courses
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_local_host(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "[::1]"
}
