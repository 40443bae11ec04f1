//! The signed identity assertion (DESIGN §4, `session.assertion = true`):
//! with every request that has a session, the upstream also gets
//! `{header_prefix}Assertion` (default `X-LTI-Assertion`), a compact JWS
//! signed with ES256 that it verifies against the public keys the admin
//! listener serves at `GET /.well-known/jwks.json` ([`AssertionKeys`]).
//!
//! Signing costs tens of microseconds, so a proxied request does not pay
//! for one: an assertion is minted once per distinct set of claims and
//! reused until half its lifetime has passed ([`Assertions::header`]).
//! Each opened session keeps the assertion of each of its courses
//! ([`Slots`]), and the assertions of every session are kept by claim set,
//! so that the session's cookie, renewed every minute, finds its assertion
//! again. A relaunch with other roles is another claim set: it gets a new
//! assertion at once. None is ever valid past the session's own expiry.
//!
//! The claims: `iss` (the public URL), `aud`
//! (`session.assertion_audience`), `sub` (the external ID), `tenant`,
//! `course` and `roles` (the current course, as in `X-LTI-Course` and
//! `X-LTI-Roles`), `course_roles` (with `session.assertion_course_roles`),
//! `lti_version`, `email`, `given_name`, `family_name` and `upstream_user`
//! when known, `iat`, `nbf` (`iat` − 30 s), `exp` and `jti`. A token stays
//! within [`MAX_TOKEN`] bytes: the names are cut first, then the oldest
//! courses leave `course_roles`, then the email is left out; the IDs and
//! roles never are. Claims whose IDs alone do not fit get no assertion (and
//! a warning in the log): the upstream refuses such a request rather than
//! trusting it on headers alone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::ser::SerializeMap as _;
use serde::Serialize;

use super::model::{CourseRoles, Session};
use crate::config::{AssertionSettings, Settings, StoreSettings};
use crate::http::{respond, Body};
use crate::lti::jose::{EcPublicJwk, EcSigningKey};
use crate::secret::Secret;

/// Longest assertion, in bytes (DESIGN §4).
pub const MAX_TOKEN: usize = 2048;
/// How far `nbf` lies before `iat`: the clock skew an upstream may have.
pub const NOT_BEFORE_SKEW: u64 = 30;
/// How long the upstream may cache the key set.
pub const JWKS_MAX_AGE: &str = "public, max-age=300";
/// The file beside the embedded database that holds a generated key.
pub const GENERATED_KEY_FILE: &str = "assertion-key.pem";
/// Names are cut to this many bytes first when a token is too long.
const CUT_NAME: usize = 32;

/// The assertion's keys, built once at start-up: the key that signs, and
/// the public key set served on the admin listener — the current key, the
/// next ones (published ahead of a switch, so an upstream's cached copy
/// already holds them) and the previous ones (still published after a
/// switch, so assertions minted just before it still verify). Each `kid`
/// is the key's RFC 7638 thumbprint.
pub struct AssertionKeys {
    signing: EcSigningKey,
    jwks: Bytes,
}

impl std::fmt::Debug for AssertionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKeys")
            .field("kid", &self.signing.kid())
            .finish_non_exhaustive()
    }
}

/// The file a generated key is kept in, for the embedded store at `path`.
fn generated_key_path(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(GENERATED_KEY_FILE)
}

/// The signing key when none is configured: on the embedded store,
/// generated once (EC P-256, by `ring`) and kept beside the database,
/// readable by ltigate's user alone, as the session key is. With Redis,
/// start-up validation already refused the assertion without a key.
pub fn generated_key(settings: &Settings) -> anyhow::Result<Option<Secret>> {
    let Some(a) = &settings.session.assertion else {
        return Ok(None);
    };
    if a.key.is_some() {
        return Ok(None);
    }
    let StoreSettings::Embedded { path } = &settings.store else {
        return Ok(None);
    };
    let key_path = generated_key_path(path);
    if let Ok(pem) = std::fs::read_to_string(&key_path) {
        let der = crate::lti::jose::ec_private_key_pem_to_der(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; delete it to generate a new one",
                key_path.display()
            )
        })?;
        tracing::info!(path = %key_path.display(), "using the generated identity assertion key");
        return Ok(Some(Secret::new(der)));
    }
    let dir = key_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| anyhow::anyhow!("cannot generate an identity assertion key"))?;
    super::key::write_private(
        &key_path,
        crate::lti::rsa_keygen::pkcs8_pem(der.as_ref()).as_bytes(),
    )?;
    tracing::info!(
        path = %key_path.display(),
        "generated an identity assertion key (set session.assertion_key_file to manage it yourself)"
    );
    Ok(Some(Secret::new(der.as_ref())))
}

impl AssertionKeys {
    /// The keys of `session.assertion*`, or the generated key
    /// ([`generated_key`]); `None` when the assertion is off.
    pub fn load(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let Some(a) = &settings.session.assertion else {
            return Ok(None);
        };
        let generated = generated_key(settings)?;
        let key = generated.as_ref().or(a.key.as_ref());
        Self::new(a, key).map(Some)
    }

    /// The keys of `a`, signing with `key` (validated at start-up; a key
    /// that still does not load is an error here).
    pub fn new(a: &AssertionSettings, key: Option<&Secret>) -> anyhow::Result<Self> {
        let load = |what: &str, der: &Secret| {
            EcSigningKey::from_pkcs8_der(der.expose())
                .map_err(|e| anyhow::anyhow!("session.{what}: {e}"))
        };
        let signing = load(
            "assertion_key_file",
            key.ok_or_else(|| anyhow::anyhow!("session.assertion_key: required"))?,
        )?;
        let next = a
            .next_keys
            .iter()
            .map(|k| load("assertion_next_key_files", k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let previous = a
            .previous_keys
            .iter()
            .map(|k| load("assertion_previous_key_files", k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut published: Vec<&EcPublicJwk> = Vec::new();
        for key in std::iter::once(&signing).chain(&next).chain(&previous) {
            if !published.iter().any(|p| p.kid() == key.kid()) {
                published.push(key.public_jwk());
            }
        }
        let keys: Vec<serde_json::Value> = published.iter().map(|k| k.to_json()).collect();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into();
        Ok(AssertionKeys { signing, jwks })
    }

    /// The key that signs.
    pub fn signing(&self) -> &EcSigningKey {
        &self.signing
    }

    /// `GET /.well-known/jwks.json` on the admin listener.
    pub fn jwks_response(&self) -> Response<Body> {
        let mut resp = respond::json_bytes(StatusCode::OK, self.jwks.clone());
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static(JWKS_MAX_AGE),
        );
        resp
    }
}

/// One minted assertion: its header value, when it should be replaced
/// (half its lifetime) and when it expires (unix seconds).
#[derive(Debug)]
pub struct Minted {
    /// The compact JWS as a header value (cloning it copies no bytes).
    pub value: HeaderValue,
    /// `iat` + half its lifetime: from then on a new one is minted.
    pub renew_at: u64,
    /// `exp`.
    pub exp: u64,
}

/// The assertions one opened session has used, one slot per course of the
/// session (in the session's order) and a last one for a session without
/// courses. Built with the session's identity header values; empty when
/// the assertion is off.
#[derive(Debug, Default)]
pub struct Slots(Box<[Mutex<Option<Arc<Minted>>>]>);

impl Slots {
    /// Slots for a session with `courses` courses.
    pub fn new(courses: usize) -> Self {
        Slots((0..=courses).map(|_| Mutex::new(None)).collect())
    }

    /// The slot of course `i` (`None`: the session's slot without a
    /// course), if there is one.
    fn get(&self, i: Option<usize>) -> Option<&Mutex<Option<Arc<Minted>>>> {
        match i {
            Some(i) => self.0.get(i),
            None => self.0.last(),
        }
    }
}

/// What the claims say, but for the times and `jti`: the key under which
/// an assertion is reused.
#[derive(Debug, Clone, Serialize)]
struct ClaimSet<'a> {
    sub: &'a str,
    tenant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    course: Option<&'a str>,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    course_roles: Option<CourseRolesClaim<'a>>,
    lti_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_user: Option<&'a str>,
}

/// `course_roles`: `{"<course>": ["<role>", …], …}`, oldest course first,
/// as the session keeps them.
#[derive(Debug, Clone, Copy)]
struct CourseRolesClaim<'a>(&'a [CourseRoles]);

impl Serialize for CourseRolesClaim<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for c in self.0 {
            map.serialize_entry(&c.id, &c.roles)?;
        }
        map.end()
    }
}

/// The whole claims of one assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(flatten)]
    set: &'a ClaimSet<'a>,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The claims' JSON text for the times `iat` and `exp` and the id `jti`,
/// made to fit a token of [`MAX_TOKEN`] bytes (the module's order of
/// cuts); `None` when even the IDs do not fit. `token_len` gives a token's
/// length for claims of a given length.
fn claims_json(
    iss: &str,
    aud: &str,
    set: &ClaimSet<'_>,
    iat: u64,
    exp: u64,
    jti: &str,
    token_len: impl Fn(usize) -> usize,
) -> Option<Vec<u8>> {
    let mut set = set.clone();
    let mut step = 0;
    loop {
        let claims = Claims {
            iss,
            aud,
            set: &set,
            iat,
            nbf: iat.saturating_sub(NOT_BEFORE_SKEW),
            exp,
            jti,
        };
        let json = serde_json::to_vec(&claims).ok()?;
        if token_len(json.len()) <= MAX_TOKEN {
            return Some(json);
        }
        step += 1;
        match step {
            1 => {
                set.given_name = set.given_name.map(|n| cut(n, CUT_NAME));
                set.family_name = set.family_name.map(|n| cut(n, CUT_NAME));
            }
            2 => {
                set.given_name = None;
                set.family_name = None;
            }
            _ => match set.course_roles {
                Some(CourseRolesClaim([_, rest @ ..])) if !rest.is_empty() => {
                    set.course_roles = Some(CourseRolesClaim(rest));
                }
                Some(_) => set.course_roles = None,
                None if set.email.is_some() => set.email = None,
                None => return None,
            },
        }
    }
}

/// Shards of the cache by claim set (uncontended locks).
const SHARDS: usize = 16;
/// Assertions kept by claim set: ~1 KB each (the token and its key).
const CAPACITY: usize = 8192;

type Shard = HashMap<Box<[u8]>, Arc<Minted>>;

/// Mints and reuses the assertions: the signing key, the fixed claims, and
/// the assertions kept by claim set.
pub struct Assertions {
    keys: Arc<AssertionKeys>,
    name: HeaderName,
    iss: String,
    aud: String,
    ttl: u64,
    course_roles: bool,
    session_ttl: u64,
    idle_ttl: u64,
    by_claims: Vec<Mutex<Shard>>,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("name", &self.name)
            .field("kid", &self.keys.signing.kid())
            .finish_non_exhaustive()
    }
}

/// The current course of a request, as its identity headers name it.
#[derive(Debug, Clone, Copy)]
pub struct CurrentCourse<'a> {
    /// The course's index among the session's courses, when it is one of
    /// them (its assertion is kept in the session's [`Slots`]).
    pub index: Option<usize>,
    /// The course ID (`None`: a session without courses).
    pub id: Option<&'a str>,
    /// The roles in it (none for a course named by the path but not
    /// launched).
    pub roles: &'a [String],
}

impl Assertions {
    /// The minter of `settings` (whose `session.assertion` is on) with
    /// `keys`, sending the header `{prefix}Assertion`.
    pub fn new(settings: &Settings, keys: Arc<AssertionKeys>) -> anyhow::Result<Self> {
        let a = settings
            .session
            .assertion
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("session.assertion is off"))?;
        let prefix = &settings.session.header_prefix;
        let name =
            HeaderName::from_bytes(format!("{prefix}Assertion").to_ascii_lowercase().as_bytes())
                .map_err(|e| anyhow::anyhow!("session.header_prefix: {e}"))?;
        Ok(Assertions {
            keys,
            name,
            iss: settings.server.public_url.url_for(""),
            aud: a.audience.clone(),
            ttl: a.ttl.as_secs(),
            course_roles: a.course_roles,
            session_ttl: settings.session.ttl.as_secs(),
            idle_ttl: settings.session.idle_ttl.as_secs(),
            by_claims: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::hash::RandomState::new(),
        })
    }

    /// The header's name, `{prefix}Assertion` in lower case.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// When the session `s` expires, as far as is known now: its absolute
    /// lifetime, or its idle lifetime from its last request.
    pub fn session_expiry(&self, s: &Session) -> u64 {
        s.issued_at
            .saturating_add(self.session_ttl)
            .min(s.last_seen.saturating_add(self.idle_ttl))
    }

    /// The assertion for a request of session `s` whose current course is
    /// `course`, at `now`: the one in the session's slot while it is less
    /// than half its lifetime old; else one of the same claims minted for
    /// another of the learner's cookies, if it is as young and expires no
    /// later than this session; else a new one. `None` when none can be
    /// made (claims too long, or the session expires this second).
    pub fn header(
        &self,
        slots: &Slots,
        s: &Session,
        course: CurrentCourse<'_>,
        now: u64,
    ) -> Option<HeaderValue> {
        let slot = match course.index {
            Some(i) => slots.get(Some(i)),
            None if course.id.is_none() => slots.get(None),
            None => None,
        };
        if let Some(slot) = slot {
            if let Ok(held) = slot.lock() {
                if let Some(m) = held.as_ref().filter(|m| now < m.renew_at) {
                    return Some(m.value.clone());
                }
            }
        }
        let minted = self.for_claims(s, course, now)?;
        let value = minted.value.clone();
        if let Some(slot) = slot {
            if let Ok(mut held) = slot.lock() {
                *held = Some(minted);
            }
        }
        Some(value)
    }

    /// The claim set of a request.
    fn claim_set<'a>(&self, s: &'a Session, course: CurrentCourse<'a>) -> ClaimSet<'a> {
        ClaimSet {
            sub: &s.external_id,
            tenant: &s.tenant,
            course: course.id,
            roles: course.roles,
            course_roles: (self.course_roles && !s.courses.is_empty())
                .then_some(CourseRolesClaim(&s.courses)),
            lti_version: s.lti_version.as_str(),
            email: s.email.as_deref(),
            given_name: s.given_name.as_deref(),
            family_name: s.family_name.as_deref(),
            upstream_user: s.upstream_id.as_deref(),
        }
    }

    /// The shard holding the claim set `key`.
    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(key) as usize;
        &self.by_claims[h % self.by_claims.len()]
    }

    /// The assertion of a claim set: kept, or minted now and kept.
    fn for_claims(&self, s: &Session, course: CurrentCourse<'_>, now: u64) -> Option<Arc<Minted>> {
        let set = self.claim_set(s, course);
        let key: Box<[u8]> = serde_json::to_vec(&set).ok()?.into();
        let expiry = self.session_expiry(s);
        let shard = self.shard(&key);
        if let Ok(kept) = shard.lock() {
            if let Some(m) = kept
                .get(&key)
                .filter(|m| now < m.renew_at && m.exp <= expiry)
            {
                return Some(m.clone());
            }
        }
        let minted = Arc::new(self.mint(&set, now, expiry)?);
        if let Ok(mut kept) = shard.lock() {
            if kept.len() >= CAPACITY / SHARDS {
                kept.clear();
            }
            kept.insert(key, minted.clone());
        }
        Some(minted)
    }

    /// A new assertion of `set` at `now`, expiring after its lifetime or
    /// with the session, whichever comes first.
    fn mint(&self, set: &ClaimSet<'_>, now: u64, session_expiry: u64) -> Option<Minted> {
        let exp = now.saturating_add(self.ttl).min(session_expiry);
        if exp <= now {
            return None;
        }
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut jti);
        let jti = URL_SAFE_NO_PAD.encode(jti);
        let key = &self.keys.signing;
        let Some(json) = claims_json(&self.iss, &self.aud, set, now, exp, &jti, |n| {
            key.token_len(n)
        }) else {
            tracing::warn!(
                sub = set.sub,
                "no identity assertion: its IDs alone make it longer than 2 KB"
            );
            return None;
        };
        let token = match key.sign_json(&json) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign the identity assertion");
                return None;
            }
        };
        let value = HeaderValue::from_maybe_shared(Bytes::from(token)).ok()?;
        Some(Minted {
            value,
            renew_at: now + (exp - now) / 2,
            exp,
        })
    }

    /// A new assertion for a request of `s` whose current course is
    /// `course`, minted now whatever is kept (the criterion benches' mint
    /// cost).
    pub fn mint_now(&self, s: &Session, course: CurrentCourse<'_>, now: u64) -> Option<Minted> {
        self.mint(&self.claim_set(s, course), now, self.session_expiry(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::LtiVersion;

    const KEY: &str = "tests/vectors/assertion-key-p256.pem";
    const NEXT: &str = "tests/vectors/assertion-key-p256-next.pem";

    fn vector(name: &str) -> String {
        format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// Settings with the assertion on, `extra` appended to `[session]`.
    fn settings(dir: &Path, extra: &str) -> Settings {
        let toml = format!(
            r#"
[server]
public_url = "https://learn.example.com/lms"
[session]
secret = "0123456789abcdef0123456789abcdef"
ttl = "8h"
idle_ttl = "2h"
assertion = true
assertion_audience = "https://platform.internal/acme"
{extra}
[store]
path = "{db}"
[[consumers]]
name = "Acme"
key = "acme-key"
secret = "s3cret"
lms_id = "acme"
"#,
            db = dir.join("ltigate.db").display()
        );
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        crate::config::validate(&crate::config::load_raw_from(Some(&path), Vec::new()).unwrap())
            .unwrap()
    }

    fn minter(extra: &str) -> (Assertions, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(
            dir.path(),
            &format!("assertion_key_file = \"{}\"\n{extra}", vector(KEY)),
        );
        let keys = Arc::new(AssertionKeys::load(&s).unwrap().unwrap());
        (Assertions::new(&s, keys).unwrap(), dir)
    }

    /// A learner with two courses, launched at `at`.
    fn session(at: u64) -> Session {
        let mut s = Session::new_for_test("acme:42");
        s.tenant = "Acme".into();
        s.given_name = Some("Zoë".into());
        s.family_name = Some("van Dijk".into());
        s.email = Some("zoe@example.org".into());
        s.upstream_id = Some("up-7".into());
        s.lti_version = LtiVersion::V1p3;
        s.add_course("C-1", &["Learner".into()], 20);
        s.add_course("C-2", &["Instructor".into(), "inst:Faculty".into()], 20);
        s.issued_at = at;
        s.last_seen = at;
        s
    }

    fn latest(s: &Session) -> CurrentCourse<'_> {
        let i = s.courses.len() - 1;
        CurrentCourse {
            index: Some(i),
            id: Some(&s.courses[i].id),
            roles: &s.courses[i].roles,
        }
    }

    /// The token's header and claims, after checking its signature with
    /// `ring`'s verifier and the minter's public key.
    fn read(a: &Assertions, value: &HeaderValue) -> (serde_json::Value, serde_json::Value) {
        let token = value.to_str().unwrap();
        assert!(token.len() <= MAX_TOKEN, "{} bytes", token.len());
        let (input, sig) = token.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            a.keys.signing().public_jwk().uncompressed_point(),
        )
        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("the signature verifies");
        let (h, c) = input.split_once('.').unwrap();
        let json = |p: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        (json(h), json(c))
    }

    #[test]
    fn the_claims_and_the_signature() {
        let (a, _dir) = minter("");
        let s = session(1_000);
        let v = a.header(&Slots::new(2), &s, latest(&s), 1_010).unwrap();
        assert_eq!(a.name().as_str(), "x-lti-assertion");
        let (header, claims) = read(&a, &v);
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E"})
        );
        let jti = claims["jti"].as_str().unwrap().to_string();
        assert_eq!(URL_SAFE_NO_PAD.decode(&jti).unwrap().len(), 16);
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "https://learn.example.com/lms",
                "aud": "https://platform.internal/acme",
                "sub": "acme:42",
                "tenant": "Acme",
                "course": "C-2",
                "roles": ["Instructor", "inst:Faculty"],
                "lti_version": "1.3",
                "email": "zoe@example.org",
                "given_name": "Zoë",
                "family_name": "van Dijk",
                "upstream_user": "up-7",
                "iat": 1_010,
                "nbf": 980,
                "exp": 1_310,
                "jti": jti,
            })
        );
        // A course the path names but the session has not launched: no
        // roles; a session without courses: no course.
        let other = CurrentCourse {
            index: None,
            id: Some("C-9"),
            roles: &[],
        };
        let (_, claims) = read(&a, &a.header(&Slots::new(2), &s, other, 1_010).unwrap());
        assert_eq!(
            (&claims["course"], &claims["roles"]),
            (&serde_json::json!("C-9"), &serde_json::json!([]))
        );
        let mut bare = Session::new_for_test("acme:7");
        bare.issued_at = 1_000;
        bare.last_seen = 1_000;
        let none = CurrentCourse {
            index: None,
            id: None,
            roles: &[],
        };
        let (_, claims) = read(&a, &a.header(&Slots::new(0), &bare, none, 1_010).unwrap());
        assert!(claims.get("course").is_none() && claims.get("email").is_none());
        assert_eq!(claims["roles"], serde_json::json!([]));
        assert_eq!(claims["lti_version"], "1.1");
        assert!(claims.get("course_roles").is_none());
    }

    #[test]
    fn an_assertion_is_reused_until_half_its_lifetime_has_passed() {
        let (a, _dir) = minter("assertion_ttl = \"4s\"\n");
        let s = session(1_000);
        let slots = Slots::new(2);
        let first = a.header(&slots, &s, latest(&s), 1_000).unwrap();
        assert_eq!(a.header(&slots, &s, latest(&s), 1_001).unwrap(), first);
        let second = a.header(&slots, &s, latest(&s), 1_002).unwrap();
        assert_ne!(second, first);
        let (_, claims) = read(&a, &second);
        assert_eq!(
            (claims["iat"].as_u64(), claims["exp"].as_u64()),
            (Some(1_002), Some(1_006))
        );
        assert_eq!(a.header(&slots, &s, latest(&s), 1_003).unwrap(), second);

        // The same claims from another cookie of the session (renewed
        // last-seen): the kept assertion, not a new signature.
        let mut renewed = s.clone();
        renewed.last_seen = 1_003;
        assert_eq!(
            a.header(&Slots::new(2), &renewed, latest(&renewed), 1_003)
                .unwrap(),
            second
        );
        // Each course has its own.
        let c1 = CurrentCourse {
            index: Some(0),
            id: Some("C-1"),
            roles: &s.courses[0].roles,
        };
        let one = a.header(&slots, &s, c1, 1_003).unwrap();
        assert_ne!(one, second);
        assert_eq!(read(&a, &one).1["roles"], serde_json::json!(["Learner"]));
        assert_eq!(a.header(&slots, &s, latest(&s), 1_003).unwrap(), second);
    }

    #[test]
    fn a_relaunch_with_other_roles_gets_a_new_one_at_once() {
        let (a, _dir) = minter("");
        let s = session(1_000);
        let before = a.header(&Slots::new(2), &s, latest(&s), 1_000).unwrap();
        let mut relaunched = s.clone();
        relaunched.add_course("C-2", &["Learner".into()], 20);
        relaunched.issued_at = 1_001;
        relaunched.last_seen = 1_001;
        let after = a
            .header(&Slots::new(2), &relaunched, latest(&relaunched), 1_001)
            .unwrap();
        assert_ne!(after, before);
        assert_eq!(read(&a, &after).1["roles"], serde_json::json!(["Learner"]));
        // The same roles again (a relaunch): the kept one.
        let mut same = s.clone();
        same.issued_at = 1_001;
        same.last_seen = 1_001;
        assert_eq!(
            a.header(&Slots::new(2), &same, latest(&same), 1_001)
                .unwrap(),
            before
        );
    }

    #[test]
    fn none_is_valid_past_the_sessions_own_expiry() {
        let (a, _dir) = minter("");
        // 8 h after its launch the session ends: 100 s left at 28,700.
        let mut s = session(0);
        s.last_seen = 28_000;
        let (_, claims) = read(
            &a,
            &a.header(&Slots::new(2), &s, latest(&s), 28_700).unwrap(),
        );
        assert_eq!(claims["exp"], 28_800);
        // Idle for 2 h from its last request: that is when it ends, unless a
        // request renews the cookie (a new one, with its own assertion).
        let mut idle = session(20_000);
        idle.last_seen = 20_000;
        let (_, claims) = read(
            &a,
            &a.header(&Slots::new(2), &idle, latest(&idle), 27_100)
                .unwrap(),
        );
        assert_eq!(claims["exp"], 27_200);
        // An assertion kept for the same claims but expiring later than
        // this session is not handed to it.
        let mut longer = session(0);
        longer.issued_at = 28_000;
        longer.last_seen = 28_600;
        let kept = a
            .header(&Slots::new(2), &longer, latest(&longer), 28_700)
            .unwrap();
        assert_eq!(read(&a, &kept).1["exp"], 29_000);
        let mut shorter = longer.clone();
        shorter.issued_at = 0;
        let own = a
            .header(&Slots::new(2), &shorter, latest(&shorter), 28_700)
            .unwrap();
        assert_ne!(own, kept);
        assert_eq!(read(&a, &own).1["exp"], 28_800);
        // In its last second there is none.
        assert!(a.header(&Slots::new(2), &s, latest(&s), 28_800).is_none());
    }

    #[test]
    fn course_roles_only_when_asked() {
        let (a, _dir) = minter("assertion_course_roles = true\n");
        let s = session(1_000);
        let (_, claims) = read(
            &a,
            &a.header(&Slots::new(2), &s, latest(&s), 1_000).unwrap(),
        );
        assert_eq!(
            claims["course_roles"],
            serde_json::json!({"C-1": ["Learner"], "C-2": ["Instructor", "inst:Faculty"]})
        );
        let text = serde_json::to_string(&claims["course_roles"]).unwrap();
        assert!(text.find("C-1") < text.find("C-2"), "oldest first: {text}");
    }

    #[test]
    fn long_claims_are_cut_names_first_never_the_ids() {
        let (a, _dir) = minter("assertion_course_roles = true\n");
        let mut s = session(1_000);
        s.given_name = Some("G".repeat(64));
        s.family_name = Some("Ä".repeat(32));
        s.email = Some(format!("{}@example.org", "e".repeat(100)));
        s.external_id = format!("acme:{}", "u".repeat(128));
        for i in 0..20 {
            let roles: Vec<String> = (0..8)
                .map(|r| format!("urn:role:{r}-{}", "r".repeat(30)))
                .collect();
            s.add_course(&format!("COURSE-{i:02}-{}", "c".repeat(40)), &roles, 20);
        }
        let v = a.header(&Slots::new(20), &s, latest(&s), 1_000).unwrap();
        assert!(v.len() <= MAX_TOKEN, "{}", v.len());
        let (_, claims) = read(&a, &v);
        assert_eq!(claims["sub"], s.external_id.as_str());
        assert_eq!(claims["course"], s.courses[19].id.as_str());
        assert_eq!(claims["roles"].as_array().unwrap().len(), 8);
        assert!(claims.get("given_name").is_none() && claims.get("family_name").is_none());
        // The oldest courses left course_roles; the latest stayed.
        let kept = claims["course_roles"].as_object().unwrap();
        assert!(!kept.is_empty() && kept.len() < 20, "{}", kept.len());
        assert!(kept.contains_key(&s.courses[19].id));
        assert!(!kept.contains_key(&s.courses[0].id));
        assert_eq!(claims["email"], s.email.as_deref().unwrap());

        // Names alone too long: cut to 32 bytes at a character boundary.
        let set = ClaimSet {
            sub: "acme:1",
            tenant: "Acme",
            course: None,
            roles: &[],
            course_roles: None,
            lti_version: "1.1",
            email: None,
            given_name: Some(&"Ä".repeat(40)),
            family_name: Some("short"),
            upstream_user: None,
        };
        let len_of = |set: &ClaimSet<'_>| {
            let claims = Claims {
                iss: "i",
                aud: "a",
                set,
                iat: 1,
                nbf: 0,
                exp: 2,
                jti: "j",
            };
            serde_json::to_vec(&claims).unwrap().len()
        };
        let given = "Ä".repeat(16);
        let fits = len_of(&ClaimSet {
            given_name: Some(&given),
            ..set.clone()
        });
        let json = claims_json("i", "a", &set, 1, 2, "j", |n| n + MAX_TOKEN - fits).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(claims["given_name"], given);
        assert_eq!(claims["family_name"], "short");
        // IDs that cannot fit: no assertion at all.
        let ids = len_of(&ClaimSet {
            given_name: None,
            family_name: None,
            ..set.clone()
        });
        assert!(claims_json("i", "a", &set, 1, 2, "j", |n| n + MAX_TOKEN - ids).is_some());
        assert!(claims_json("i", "a", &set, 1, 2, "j", |n| n + MAX_TOKEN + 1 - ids).is_none());
    }

    #[test]
    fn the_key_set_has_the_current_next_and_previous_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(
            dir.path(),
            &format!(
                "assertion_key_file = \"{}\"\nassertion_next_key_files = [\"{}\"]\nassertion_previous_key_files = [\"{}\", \"{}\"]\n",
                vector(NEXT),
                vector(KEY),
                vector("tests/vectors/assertion-key-p256-sec1.pem"),
                vector(NEXT),
            ),
        );
        let keys = AssertionKeys::load(&s).unwrap().unwrap();
        assert_eq!(
            keys.signing().kid(),
            "Uy5DP1Qb7dUWO_PC2wshJ73KFYF3ajbcyOD_BDwb_ps"
        );
        let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        // Current first; a key listed twice is published once.
        assert_eq!(
            kids,
            [
                "Uy5DP1Qb7dUWO_PC2wshJ73KFYF3ajbcyOD_BDwb_ps",
                "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E"
            ]
        );
        for k in jwks["keys"].as_array().unwrap() {
            assert_eq!(
                (&k["alg"], &k["use"], &k["kty"], &k["crv"]),
                (
                    &serde_json::json!("ES256"),
                    &serde_json::json!("sig"),
                    &serde_json::json!("EC"),
                    &serde_json::json!("P-256")
                )
            );
            assert!(k.get("d").is_none(), "no private part");
        }
        let resp = keys.jwks_response();
        assert_eq!(resp.headers()["cache-control"], JWKS_MAX_AGE);
    }

    #[test]
    fn without_a_key_the_embedded_store_generates_one_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), "");
        let first = AssertionKeys::load(&s).unwrap().unwrap();
        let file = dir.path().join(GENERATED_KEY_FILE);
        let pem = std::fs::read_to_string(&file).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = AssertionKeys::load(&s).unwrap().unwrap();
        assert_eq!(again.signing().kid(), first.signing().kid());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), pem);
        // A configured key wins; the generated file is left alone.
        let s = settings(
            dir.path(),
            &format!("assertion_key_file = \"{}\"\n", vector(KEY)),
        );
        let configured = AssertionKeys::load(&s).unwrap().unwrap();
        assert_eq!(
            configured.signing().kid(),
            "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E"
        );
        // A damaged file is an error that says what to do.
        std::fs::write(&file, "not a key").unwrap();
        let err = AssertionKeys::load(&settings(dir.path(), ""))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("; delete it to generate a new one"), "{err}");
        // Off: nothing loaded, nothing generated.
        let off = tempfile::tempdir().unwrap();
        let mut s = settings(off.path(), "");
        s.session.assertion = None;
        assert!(AssertionKeys::load(&s).unwrap().is_none());
        assert!(!off.path().join(GENERATED_KEY_FILE).exists());
    }
}
