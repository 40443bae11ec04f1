//! JOSE for LTI 1.3: compact JWS with RS256 only (RFC 7515, RFC 7518 §3.3),
//! RSA public keys as JWKs and key sets (RFC 7517), and the RFC 7638 key
//! thumbprint that names the tool's keys. And ES256 signing (RFC 7518
//! §3.4, P-256) for the signed identity assertion ([`EcSigningKey`]), with
//! its EC public JWK; ltigate never verifies an ES256 token itself.
//!
//! Hostile input is cheap: a token is refused by length before it is
//! decoded, each part is bounded, and the signature check is one RSA
//! public-key operation. Only `RS256` is ever accepted (never `none`, never
//! an HMAC algorithm keyed with a public key), and a token must name its key
//! (`kid`).
//!
//! ```
//! use ltigate::lti::jose::{CompactJws, JwkSet, SigningKey};
//! # let pem = include_str!("../../tests/keys/platform-test-key.pem");
//! let key = SigningKey::from_pem(pem).unwrap();
//! let token = key.sign(&serde_json::json!({"sub": "u1"})).unwrap();
//! let keys = JwkSet::parse(key.public_jwk().to_jwks_json(&[]).to_string().as_bytes()).unwrap();
//! let jws = CompactJws::parse(&token).unwrap();
//! assert!(jws.verify(&keys).is_ok());
//! assert_eq!(jws.claims()["sub"], "u1");
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents};

/// Longest compact JWS accepted, in bytes (an id_token is a few KiB).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Longest encoded JOSE header accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 4 * 1024;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 8192;
/// The one signature algorithm of LTI 1.3.
pub const RS256: &str = "RS256";
/// The signature algorithm of the identity assertion: ECDSA on P-256 with
/// SHA-256.
pub const ES256: &str = "ES256";

/// Why a compact JWS was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts, too long, or a header or payload that is
    /// not a JSON object (a malformed request, not a forgery).
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not `RS256`.
    #[error("the token's alg is not RS256")]
    UnsupportedAlgorithm,
    /// The header carries `crit`: no extension is understood here.
    #[error("the token's header has a crit parameter")]
    CriticalHeader,
    /// The header names no key (`kid`).
    #[error("the token's header has no kid")]
    MissingKid,
    /// No key of the set has the token's `kid`.
    #[error("no key of the platform's key set has the token's kid")]
    UnknownKid,
    /// The signature does not verify with the key.
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// The JOSE header fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    /// `alg`, as sent.
    pub alg: String,
    /// `kid`, when it is a string.
    pub kid: Option<String>,
    /// Whether the header has a `crit` parameter.
    pub crit: bool,
}

/// A compact JWS split and decoded, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct CompactJws {
    header: JwsHeader,
    claims: serde_json::Map<String, serde_json::Value>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`, what the signature covers.
    signing_input: String,
    signature: Vec<u8>,
}

/// Decodes one base64url part (no padding, canonical trailing bits).
fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed(what))
}

/// A JSON object from bytes.
fn json_object(
    bytes: &[u8],
    what: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, JwsError> {
    match serde_json::from_slice(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(JwsError::Malformed(what)),
    }
}

impl CompactJws {
    /// Splits `token` into its three base64url parts and decodes the header
    /// and the claims (each a JSON object). Refuses only what is malformed;
    /// the algorithm, `kid` and signature are checked by [`Self::verify`].
    pub fn parse(token: &str) -> Result<Self, JwsError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwsError::Malformed("longer than the limit"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("not three parts"));
        };
        if h.len() > MAX_HEADER_LEN {
            return Err(JwsError::Malformed("header longer than the limit"));
        }
        if s.len() > (MAX_RSA_BITS / 8).div_ceil(3) * 4 {
            return Err(JwsError::Malformed("signature longer than the limit"));
        }
        let header = json_object(
            &b64(h, "header is not base64url")?,
            "header is not a JSON object",
        )?;
        let claims = json_object(
            &b64(p, "payload is not base64url")?,
            "payload is not a JSON object",
        )?;
        let signature = b64(s, "signature is not base64url")?;
        let header = JwsHeader {
            alg: match header.get("alg") {
                Some(serde_json::Value::String(alg)) => alg.clone(),
                _ => return Err(JwsError::Malformed("header has no alg")),
            },
            kid: match header.get("kid") {
                Some(serde_json::Value::String(kid)) => Some(kid.clone()),
                _ => None,
            },
            crit: header.contains_key("crit"),
        };
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The claims, not yet authenticated.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.claims
    }

    /// The header's `kid` when the header is one this module can verify
    /// (`RS256`, a `kid`, no `crit`): what to look up in the platform's key
    /// set. A caller may skip fetching keys when this fails: [`Self::verify`]
    /// refuses the token the same way.
    pub fn key_id(&self) -> Result<&str, JwsError> {
        if self.header.alg != RS256 {
            return Err(JwsError::UnsupportedAlgorithm);
        }
        if self.header.crit {
            return Err(JwsError::CriticalHeader);
        }
        self.header.kid.as_deref().ok_or(JwsError::MissingKid)
    }

    /// Checks the header ([`Self::key_id`]) and the RS256 signature with the
    /// key of the header's `kid` in `keys`.
    pub fn verify(&self, keys: &JwkSet) -> Result<(), JwsError> {
        let kid = self.key_id()?;
        let key = keys.find(kid).ok_or(JwsError::UnknownKid)?;
        verify_rs256(self.signing_input.as_bytes(), &self.signature, key)
    }
}

/// Verifies an RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature over
/// `signing_input` with `key`, a modulus of [`MIN_RSA_BITS`] to
/// [`MAX_RSA_BITS`].
pub fn verify_rs256(
    signing_input: &[u8],
    signature: &[u8],
    key: &RsaPublicJwk,
) -> Result<(), JwsError> {
    RsaPublicKeyComponents {
        n: key.n.as_slice(),
        e: key.e.as_slice(),
    }
    .verify(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        signing_input,
        signature,
    )
    .map_err(|_| JwsError::BadSignature)
}

/// An RSA public key of a JWK: modulus and exponent as big-endian bytes
/// without leading zeros, and the key's `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublicJwk {
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Big-endian bytes without leading zero bytes.
fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text holds no PEM private key block of an accepted kind
    /// (`PRIVATE KEY` for PKCS#8, `RSA PRIVATE KEY` for PKCS#1 RSA, `EC
    /// PRIVATE KEY` for SEC1 EC keys, each where its loader accepts it).
    #[error("the text holds no PEM private key block of an accepted kind")]
    NotPem,
    /// The PEM block is an encrypted key (`ENCRYPTED PRIVATE KEY`, or a
    /// PKCS#1 or SEC1 block with `Proc-Type: 4,ENCRYPTED`).
    #[error("the key is encrypted")]
    Encrypted,
    /// The PEM block is a private key of another kind (its label, such as
    /// `EC PRIVATE KEY` for an RSA loader or `OPENSSH PRIVATE KEY`).
    #[error("the key is a PEM \"{0}\" block, a kind of key not accepted here")]
    OtherKind(String),
    /// The PEM block's body is not base64.
    #[error("the key's PEM body is not base64")]
    NotBase64,
    /// The DER is not a PKCS#8 private key of the expected kind that `ring`
    /// accepts (RSA of 2048 to 8192 bits, or EC on P-256, with consistent
    /// components).
    #[error("the key is not a usable PKCS#8 private key of the expected kind: {0}")]
    Rejected(String),
    /// A JWK or key set is not what is expected.
    #[error("the key set is malformed: {0}")]
    BadJwks(&'static str),
}

/// The number of significant bits of a big-endian unsigned integer whose
/// leading zero bytes are stripped (0 for an empty one).
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

impl RsaPublicJwk {
    /// A key from its `kid` and the base64url `n` and `e` of a JWK. The
    /// modulus must have [`MIN_RSA_BITS`] to [`MAX_RSA_BITS`] bits and the
    /// exponent be odd, at least 3 and at most 2^33 − 1 (what `ring` accepts).
    pub fn from_components(kid: &str, n: &str, e: &str) -> Result<Self, KeyError> {
        let n = strip_zeros(
            &URL_SAFE_NO_PAD
                .decode(n)
                .map_err(|_| KeyError::BadJwks("n is not base64url"))?,
        );
        let e = strip_zeros(
            &URL_SAFE_NO_PAD
                .decode(e)
                .map_err(|_| KeyError::BadJwks("e is not base64url"))?,
        );
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bit_length(&n)) {
            return Err(KeyError::BadJwks("n is not 2048 to 8192 bits"));
        }
        if bit_length(&e) > 33 || e.last().is_none_or(|b| b & 1 == 0) || e == [1] {
            return Err(KeyError::BadJwks(
                "e is not an odd exponent of at most 33 bits",
            ));
        }
        Ok(Self {
            kid: kid.to_string(),
            n,
            e,
        })
    }

    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.n.len() * 8 - self.n.first().map_or(8, |b| b.leading_zeros() as usize)
    }

    /// The RFC 7638 thumbprint: base64url (no padding) of the SHA-256 of
    /// `{"e":…,"kty":"RSA","n":…}` with no whitespace.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.n, &self.e)
    }

    /// The JWK a tool publishes: `kty`, `n`, `e`, `alg` `RS256`, `use`
    /// `sig` and `kid` (Canvas requires `alg` and `use`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
            "alg": RS256,
            "use": "sig",
            "kid": self.kid,
        })
    }

    /// `{"keys": [...]}` with this key first, then `others` (the next and
    /// previous keys a tool keeps published).
    pub fn to_jwks_json(&self, others: &[&RsaPublicJwk]) -> serde_json::Value {
        let keys: Vec<_> = std::iter::once(self)
            .chain(others.iter().copied())
            .map(RsaPublicJwk::to_json)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// RFC 7638 thumbprint of the RSA key `n`, `e` (big-endian bytes without
/// leading zeros).
fn thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(e),
        URL_SAFE_NO_PAD.encode(n)
    );
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// A platform's key set: its usable RSA signing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<RsaPublicJwk>,
}

/// Most keys kept from one key set (platforms publish a handful).
pub const MAX_JWKS_KEYS: usize = 64;

impl JwkSet {
    /// Reads a JWKS document (`{"keys": [...]}`). Keys of a `kty` other than
    /// `RSA` are ignored; RSA keys whose `use` is present and not `sig`,
    /// whose `alg` is present and not `RS256`, that have no `kid`, or whose
    /// `n`/`e` are not a usable key are skipped (a JWK without `alg` is
    /// accepted: D2L publishes such keys). At most [`MAX_JWKS_KEYS`] are kept.
    /// Refused only when the document is not a JSON object with a `keys`
    /// array.
    pub fn parse(document: &[u8]) -> Result<Self, KeyError> {
        let value: serde_json::Value =
            serde_json::from_slice(document).map_err(|_| KeyError::BadJwks("not JSON"))?;
        let Some(entries) = value.get("keys").and_then(serde_json::Value::as_array) else {
            return Err(KeyError::BadJwks("no keys array"));
        };
        let str_of = |jwk: &serde_json::Value, name: &str| {
            jwk.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let mut keys = Vec::new();
        for jwk in entries {
            if keys.len() == MAX_JWKS_KEYS {
                break;
            }
            if str_of(jwk, "kty").as_deref() != Some("RSA") {
                continue;
            }
            if jwk.get("use").is_some_and(|u| u != "sig") {
                continue;
            }
            if jwk.get("alg").is_some_and(|a| a != RS256) {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) =
                (str_of(jwk, "kid"), str_of(jwk, "n"), str_of(jwk, "e"))
            else {
                continue;
            };
            if let Ok(key) = RsaPublicJwk::from_components(&kid, &n, &e) {
                keys.push(key);
            }
        }
        Ok(Self { keys })
    }

    /// A set of the given keys.
    pub fn from_keys(keys: Vec<RsaPublicJwk>) -> Self {
        Self { keys }
    }

    /// The key named `kid` (the first, should a set repeat one).
    pub fn find(&self, kid: &str) -> Option<&RsaPublicJwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The usable keys.
    pub fn keys(&self) -> &[RsaPublicJwk] {
        &self.keys
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Decodes the first PEM private key block of `pem` to PKCS#8 DER: a
/// `PRIVATE KEY` block (PKCS#8) as it is, an `RSA PRIVATE KEY` block
/// (PKCS#1, as `openssl rsa -traditional` and Helm's `genPrivateKey` write
/// it) wrapped by [`pkcs1_to_pkcs8`]. Encrypted keys and blocks of other
/// kinds are refused. The key itself is checked by whoever loads the DER.
pub fn private_key_pem_to_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    pem_private_key(
        pem,
        &[
            ("PRIVATE KEY", Wrap::Pkcs8),
            ("RSA PRIVATE KEY", Wrap::Pkcs1),
        ],
    )
}

/// Decodes the first PEM EC private key block of `pem` to PKCS#8 DER: a
/// `PRIVATE KEY` block (PKCS#8) as it is, an `EC PRIVATE KEY` block (SEC1,
/// RFC 5915, as `openssl ec` and Helm's `genPrivateKey "ecdsa"` write it)
/// wrapped by [`sec1_p256_to_pkcs8`]. Encrypted keys and blocks of other
/// kinds are refused. The key itself is checked by whoever loads the DER.
pub fn ec_private_key_pem_to_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    pem_private_key(
        pem,
        &[("PRIVATE KEY", Wrap::Pkcs8), ("EC PRIVATE KEY", Wrap::Sec1)],
    )
}

/// How the DER of an accepted PEM block becomes PKCS#8.
#[derive(Clone, Copy)]
enum Wrap {
    /// Already PKCS#8.
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey`: [`pkcs1_to_pkcs8`].
    Pkcs1,
    /// SEC1 `ECPrivateKey`: [`sec1_p256_to_pkcs8`].
    Sec1,
}

/// The first PEM block of `pem` whose label is one of `accepted`, decoded
/// and wrapped into PKCS#8 DER.
fn pem_private_key(pem: &str, accepted: &[(&str, Wrap)]) -> Result<Vec<u8>, KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let mut labels = Vec::new();
    let mut rest = pem;
    while let Some(at) = rest.find(BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let Some(len) = after.find(DASHES) else {
            break;
        };
        let label = &after[..len];
        let body = &after[len + DASHES.len()..];
        rest = body;
        let Some(&(_, wrap)) = accepted.iter().find(|(l, _)| *l == label) else {
            labels.push(label);
            continue;
        };
        let end = format!("-----END {label}-----");
        let body = &body[..body.find(&end).ok_or(KeyError::NotPem)?];
        if body.contains("Proc-Type:") {
            // PEM headers before the body: `Proc-Type: 4,ENCRYPTED` and
            // `DEK-Info` (RFC 1421) of an encrypted PKCS#1 or SEC1 key.
            return Err(KeyError::Encrypted);
        }
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::NotBase64)?;
        return Ok(match wrap {
            Wrap::Pkcs8 => der,
            Wrap::Pkcs1 => pkcs1_to_pkcs8(&der),
            Wrap::Sec1 => sec1_p256_to_pkcs8(&der),
        });
    }
    if labels.contains(&"ENCRYPTED PRIVATE KEY") {
        return Err(KeyError::Encrypted);
    }
    match labels.iter().find(|l| l.ends_with("PRIVATE KEY")) {
        Some(label) => Err(KeyError::OtherKind((*label).to_string())),
        None => Err(KeyError::NotPem),
    }
}

/// The DER object identifier of `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Wraps a PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2) into the PKCS#8
/// `PrivateKeyInfo` (RFC 5208 §5) that carries it: version 0, the
/// algorithm `rsaEncryption` with NULL parameters, and the PKCS#1 DER as
/// the private key's OCTET STRING. The bytes are not parsed here: a
/// malformed `RSAPrivateKey` is refused when the PKCS#8 key is loaded.
pub fn pkcs1_to_pkcs8(rsa_private_key: &[u8]) -> Vec<u8> {
    let mut algorithm = vec![0x06, RSA_ENCRYPTION_OID.len() as u8];
    algorithm.extend_from_slice(&RSA_ENCRYPTION_OID);
    algorithm.extend_from_slice(&[0x05, 0x00]);
    let mut body = vec![0x02, 0x01, 0x00];
    der_tlv(0x30, &algorithm, &mut body);
    der_tlv(0x04, rsa_private_key, &mut body);
    let mut out = Vec::with_capacity(body.len() + 6);
    der_tlv(0x30, &body, &mut out);
    out
}

/// The DER object identifier of `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY_OID: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// The DER object identifier of the curve P-256, `prime256v1`
/// (1.2.840.10045.3.1.7).
const P256_OID: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Wraps a SEC1 `ECPrivateKey` (RFC 5915) of a P-256 key into the PKCS#8
/// `PrivateKeyInfo` (RFC 5208 §5) that carries it: version 0, the
/// algorithm `id-ecPublicKey` with the named curve `prime256v1`, and the
/// SEC1 DER as the private key's OCTET STRING. The bytes are not parsed
/// here: when the key is loaded, `ring` refuses a malformed `ECPrivateKey`,
/// one without its public key, and one whose own curve parameter names
/// another curve.
pub fn sec1_p256_to_pkcs8(ec_private_key: &[u8]) -> Vec<u8> {
    let mut algorithm = vec![0x06, EC_PUBLIC_KEY_OID.len() as u8];
    algorithm.extend_from_slice(&EC_PUBLIC_KEY_OID);
    algorithm.extend_from_slice(&[0x06, P256_OID.len() as u8]);
    algorithm.extend_from_slice(&P256_OID);
    let mut body = vec![0x02, 0x01, 0x00];
    der_tlv(0x30, &algorithm, &mut body);
    der_tlv(0x04, ec_private_key, &mut body);
    let mut out = Vec::with_capacity(body.len() + 6);
    der_tlv(0x30, &body, &mut out);
    out
}

/// Appends a DER tag, length and value to `out`: the length in one byte
/// below 128, otherwise in long form (0x80 | number of length bytes, then
/// the length big-endian without leading zeros).
fn der_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// The tool's RSA private key: signs RS256 JWTs (client assertions) under
/// its RFC 7638 thumbprint as `kid`.
pub struct SigningKey {
    pair: ring::rsa::KeyPair,
    public: RsaPublicJwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("bits", &self.public.bits())
            .finish_non_exhaustive()
    }
}

/// Why signing failed (in practice: never, for a key `ring` accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

impl SigningKey {
    /// A key from PEM text, PKCS#8 or PKCS#1 (see
    /// [`private_key_pem_to_der`]).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_pkcs8_der(&private_key_pem_to_der(pem)?)
    }

    /// A key from PKCS#8 DER: RSA, 2048 to 8192 bits.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            ring::rsa::KeyPair::from_pkcs8(der).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let components: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let n = strip_zeros(&components.n);
        let e = strip_zeros(&components.e);
        let kid = thumbprint(&n, &e);
        Ok(Self {
            pair,
            public: RsaPublicJwk { kid, n, e },
        })
    }

    /// The key's `kid`: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, as published in the tool's JWKS.
    pub fn public_jwk(&self) -> &RsaPublicJwk {
        &self.public
    }

    /// The RS256 signature of `signing_input`. RSASSA-PKCS1-v1_5 is
    /// deterministic: the same input gives the same signature.
    pub fn sign_bytes(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        // PKCS#1 v1.5 padding draws no random bytes; `ring` only asks for a
        // source because other paddings do.
        let rng = ring::rand::SystemRandom::new();
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input,
                &mut signature,
            )
            .map_err(|_| SignError)?;
        Ok(signature)
    }

    /// A compact JWS of `claims` with the header
    /// `{"alg":"RS256","typ":"JWT","kid":<kid>}`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, SignError> {
        let header = serde_json::json!({"alg": RS256, "typ": "JWT", "kid": self.kid()});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }
}

/// An EC P-256 public key as a JWK: the coordinates of its point and its
/// `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcPublicJwk {
    kid: String,
    x: [u8; 32],
    y: [u8; 32],
}

impl EcPublicJwk {
    /// The key of an uncompressed P-256 point (`0x04 || x || y`, 65 bytes,
    /// as `ring` gives it), named by its RFC 7638 thumbprint.
    pub fn from_uncompressed_point(point: &[u8]) -> Result<Self, KeyError> {
        let [0x04, coordinates @ ..] = point else {
            return Err(KeyError::BadJwks("not an uncompressed point"));
        };
        let (Ok(x), Ok(y)) = (
            <[u8; 32]>::try_from(coordinates.get(..32).unwrap_or_default()),
            <[u8; 32]>::try_from(coordinates.get(32..).unwrap_or_default()),
        ) else {
            return Err(KeyError::BadJwks("not a P-256 point"));
        };
        let mut key = EcPublicJwk {
            kid: String::new(),
            x,
            y,
        };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// The key's `kid`: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed point, `0x04 || x || y`: what an ECDSA verifier
    /// takes.
    pub fn uncompressed_point(&self) -> Vec<u8> {
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(&self.x);
        point.extend_from_slice(&self.y);
        point
    }

    /// The RFC 7638 thumbprint: base64url (no padding) of the SHA-256 of
    /// `{"crv":"P-256","kty":"EC","x":…,"y":…}` with no whitespace.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(self.x),
            URL_SAFE_NO_PAD.encode(self.y)
        );
        URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// The published JWK: `kty` `EC`, `crv` `P-256`, `x`, `y`, `alg`
    /// `ES256`, `use` `sig` and `kid`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(self.x),
            "y": URL_SAFE_NO_PAD.encode(self.y),
            "alg": ES256,
            "use": "sig",
            "kid": self.kid,
        })
    }
}

/// An EC P-256 private key that signs ES256 JWTs under its RFC 7638
/// thumbprint as `kid`: the key of the signed identity assertion.
///
/// ECDSA needs a fresh secret nonce per signature: `ring` draws it from the
/// operating system's random source, hedged with the key and the message
/// (the one randomness of this module). Two signatures of the same input
/// therefore differ, and both verify.
pub struct EcSigningKey {
    pair: signature::EcdsaKeyPair,
    public: EcPublicJwk,
    /// `BASE64URL({"alg":"ES256","typ":"JWT","kid":…})`, made once.
    header: String,
}

impl std::fmt::Debug for EcSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcSigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

/// Length of an ES256 signature in a JWS: `r || s`, 32 bytes each (RFC
/// 7518 §3.4), base64url without padding.
pub const ES256_SIGNATURE_B64_LEN: usize = 86;

/// The length of `n` bytes in base64url without padding.
pub const fn base64url_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

impl EcSigningKey {
    /// A key from PEM text, PKCS#8 or SEC1 (see
    /// [`ec_private_key_pem_to_der`]).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        Self::from_pkcs8_der(&ec_private_key_pem_to_der(pem)?)
    }

    /// A key from PKCS#8 DER: EC on P-256, with its public key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let public =
            EcPublicJwk::from_uncompressed_point(signature::KeyPair::public_key(&pair).as_ref())?;
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"alg": ES256, "typ": "JWT", "kid": public.kid}).to_string());
        Ok(Self {
            pair,
            public,
            header,
        })
    }

    /// The key's `kid`: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, as published.
    pub fn public_jwk(&self) -> &EcPublicJwk {
        &self.public
    }

    /// The length of the compact JWS [`Self::sign_json`] makes of claims
    /// whose JSON text is `claims_len` bytes long.
    pub fn token_len(&self, claims_len: usize) -> usize {
        self.header.len() + 1 + base64url_len(claims_len) + 1 + ES256_SIGNATURE_B64_LEN
    }

    /// A compact JWS of the claims' JSON text `claims_json` with the header
    /// `{"alg":"ES256","typ":"JWT","kid":<kid>}`: the signature is `r || s`
    /// (RFC 7518 §3.4).
    pub fn sign_json(&self, claims_json: &[u8]) -> Result<String, SignError> {
        let mut token = String::with_capacity(self.token_len(claims_json.len()));
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), token.as_bytes())
            .map_err(|_| SignError)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// [`Self::sign_json`] of a JSON value.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, SignError> {
        self.sign_json(claims.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOOL_PEM: &str = include_str!("../../tests/keys/tool-test-key.pem");
    const PLATFORM_PEM: &str = include_str!("../../tests/keys/platform-test-key.pem");

    /// RFC 7515 Appendix A.2 (RS256), the published values: the JWS of
    /// §A.2.1 and the public part of its key (the JWK of §A.2.1, also RFC
    /// 7517 Appendix A.1's second key).
    const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const RFC7515_A2_E: &str = "AQAB";
    const RFC7515_A2_JWS: &str = concat!(
        "eyJhbGciOiJSUzI1NiJ9",
        ".",
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".",
        "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
    );

    fn platform() -> SigningKey {
        SigningKey::from_pem(PLATFORM_PEM).unwrap()
    }

    fn set_of(key: &SigningKey) -> JwkSet {
        JwkSet::from_keys(vec![key.public_jwk().clone()])
    }

    /// `token` with part `i` replaced by `f(part)`.
    fn with_part(token: &str, i: usize, f: impl Fn(&str) -> String) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[i] = f(&parts[i]);
        parts.join(".")
    }

    fn b64json(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1: the example RSA key and its published thumbprint.
        let key = RsaPublicJwk::from_components(
            "2011-04-29",
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "AQAB",
        )
        .unwrap();
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rfc7515_a2_example_verifies() {
        let key = RsaPublicJwk::from_components("k", RFC7515_A2_N, RFC7515_A2_E).unwrap();
        let jws = CompactJws::parse(RFC7515_A2_JWS).unwrap();
        assert_eq!(jws.header().alg, "RS256");
        assert_eq!(jws.claims()["iss"], "joe");
        assert_eq!(jws.claims()["exp"], 1_300_819_380);
        verify_rs256(jws.signing_input.as_bytes(), &jws.signature, &key).unwrap();
        // The example's header names no key: as an id_token it is refused.
        let set = JwkSet::from_keys(vec![key.clone()]);
        assert_eq!(jws.verify(&set), Err(JwsError::MissingKid));
        // One changed byte of the signing input and it no longer verifies.
        let mut input = jws.signing_input.clone().into_bytes();
        input[5] ^= 1;
        assert_eq!(
            verify_rs256(&input, &jws.signature, &key),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = platform();
        let token = key
            .sign(&json!({"iss": "https://lms.example", "n": 1}))
            .unwrap();
        let jws = CompactJws::parse(&token).unwrap();
        assert_eq!(jws.header().kid.as_deref(), Some(key.kid()));
        assert_eq!(jws.verify(&set_of(&key)), Ok(()));
        assert_eq!(jws.claims()["iss"], "https://lms.example");
        // Deterministic.
        assert_eq!(
            token,
            key.sign(&json!({"iss": "https://lms.example", "n": 1}))
                .unwrap()
        );
        // Another key with the same kid does not verify it.
        let other = SigningKey::from_pem(TOOL_PEM).unwrap();
        let forged = JwkSet::from_keys(vec![RsaPublicJwk {
            kid: key.kid().to_string(),
            ..other.public_jwk().clone()
        }]);
        assert_eq!(jws.verify(&forged), Err(JwsError::BadSignature));
        assert_eq!(jws.verify(&set_of(&other)), Err(JwsError::UnknownKid));
    }

    #[test]
    fn tampering_fails() {
        let key = platform();
        let set = set_of(&key);
        let token = key.sign(&json!({"sub": "a", "admin": false})).unwrap();
        // The signature with one bit flipped.
        let sig = with_part(&token, 2, |s| {
            let mut bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
            bytes[10] ^= 0x40;
            URL_SAFE_NO_PAD.encode(bytes)
        });
        assert_eq!(
            CompactJws::parse(&sig).unwrap().verify(&set),
            Err(JwsError::BadSignature)
        );
        // Claims changed.
        let claims = with_part(&token, 1, |_| b64json(&json!({"sub": "a", "admin": true})));
        assert_eq!(
            CompactJws::parse(&claims).unwrap().verify(&set),
            Err(JwsError::BadSignature)
        );
        // Header changed (same alg and kid, one more field).
        let header = with_part(&token, 0, |_| {
            b64json(&json!({"alg": "RS256", "kid": key.kid(), "typ": "JWT", "x": 1}))
        });
        assert_eq!(
            CompactJws::parse(&header).unwrap().verify(&set),
            Err(JwsError::BadSignature)
        );
        // Signature truncated or empty.
        let short = with_part(&token, 2, |s| {
            let bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
            URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
        });
        assert_eq!(
            CompactJws::parse(&short).unwrap().verify(&set),
            Err(JwsError::BadSignature)
        );
        let empty = with_part(&token, 2, |_| String::new());
        assert_eq!(
            CompactJws::parse(&empty).unwrap().verify(&set),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_hs256_are_refused() {
        let key = platform();
        let set = set_of(&key);
        let claims = b64json(&json!({"sub": "a"}));
        let none = format!(
            "{}.{claims}.",
            b64json(&json!({"alg": "none", "kid": key.kid()}))
        );
        assert_eq!(
            CompactJws::parse(&none).unwrap().verify(&set),
            Err(JwsError::UnsupportedAlgorithm)
        );
        // HS256 "signed" with the platform's public key as the HMAC secret:
        // the classic key-confusion forgery.
        for secret in [
            key.public_jwk().to_json().to_string().into_bytes(),
            key.public_jwk().n.clone(),
        ] {
            let input = format!(
                "{}.{claims}",
                b64json(&json!({"alg": "HS256", "kid": key.kid()}))
            );
            let mac = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
            assert_eq!(
                CompactJws::parse(&token).unwrap().verify(&set),
                Err(JwsError::UnsupportedAlgorithm)
            );
        }
        for alg in ["rs256", "RS512", "PS256", "ES256", ""] {
            let t = format!(
                "{}.{claims}.AAAA",
                b64json(&json!({"alg": alg, "kid": key.kid()}))
            );
            assert_eq!(
                CompactJws::parse(&t).unwrap().verify(&set),
                Err(JwsError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn kid_is_required_and_crit_refused() {
        let key = platform();
        let set = set_of(&key);
        let claims = b64json(&json!({"sub": "a"}));
        let signed = |header: serde_json::Value| {
            let input = format!("{}.{claims}", b64json(&header));
            let sig = key.sign_bytes(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let no_kid = signed(json!({"alg": "RS256"}));
        assert_eq!(
            CompactJws::parse(&no_kid).unwrap().verify(&set),
            Err(JwsError::MissingKid)
        );
        let number_kid = signed(json!({"alg": "RS256", "kid": 7}));
        assert_eq!(
            CompactJws::parse(&number_kid).unwrap().verify(&set),
            Err(JwsError::MissingKid)
        );
        let crit = signed(json!({"alg": "RS256", "kid": key.kid(), "crit": ["exp"]}));
        assert_eq!(
            CompactJws::parse(&crit).unwrap().verify(&set),
            Err(JwsError::CriticalHeader)
        );
        let good = signed(json!({"alg": "RS256", "kid": key.kid()}));
        assert_eq!(CompactJws::parse(&good).unwrap().verify(&set), Ok(()));
    }

    #[test]
    fn malformed_tokens() {
        let h = b64json(&json!({"alg": "RS256", "kid": "k"}));
        let c = b64json(&json!({"sub": "a"}));
        let cases = [
            String::new(),
            "a.b".to_string(),
            format!("{h}.{c}"),
            format!("{h}.{c}.AAAA.AAAA"),
            format!("{h}=.{c}.AAAA"),
            format!("{h}.{c}.AA+A"),
            format!("{h}.{c}.A"),
            format!("{}.{c}.AAAA", b64json(&json!(["alg"]))),
            format!("{}.{c}.AAAA", b64json(&json!({"kid": "k"}))),
            format!("{}.{c}.AAAA", b64json(&json!({"alg": 1}))),
            format!("{h}.{}.AAAA", b64json(&json!("claims"))),
            format!("{h}.{}.AAAA", URL_SAFE_NO_PAD.encode("{not json")),
            format!("{h}.{c}.{}", "A".repeat(2000)),
            format!("{}.{c}.AAAA", "A".repeat(MAX_HEADER_LEN + 4)),
            format!("{h}.{}.AAAA", "A".repeat(MAX_TOKEN_LEN)),
        ];
        for token in &cases {
            assert!(
                matches!(CompactJws::parse(token), Err(JwsError::Malformed(_))),
                "{}",
                &token[..token.len().min(80)]
            );
        }
    }

    #[test]
    fn jwks_parsing() {
        let key = platform();
        let jwk = key.public_jwk().to_json();
        let mut no_alg = jwk.clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        no_alg["kid"] = json!("no-alg");
        let mut enc = jwk.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let mut rs512 = jwk.clone();
        rs512["alg"] = json!("RS512");
        rs512["kid"] = json!("rs512");
        let mut no_kid = jwk.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut small = jwk.clone();
        small["kid"] = json!("small");
        small["n"] = json!(URL_SAFE_NO_PAD.encode([0xC5u8; 128]));
        let mut leading_zero = jwk.clone();
        leading_zero["kid"] = json!("zero");
        leading_zero["n"] = json!(URL_SAFE_NO_PAD.encode(
            std::iter::once(0u8)
                .chain(key.public_jwk().n.iter().copied())
                .collect::<Vec<_>>()
        ));
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"},
            enc, rs512, no_kid, small, "not an object", jwk, no_alg, leading_zero,
        ]});
        let set = JwkSet::parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys().iter().map(RsaPublicJwk::kid).collect();
        assert_eq!(kids, [key.kid(), "no-alg", "zero"]);
        assert_eq!(set.find("zero").unwrap().n, key.public_jwk().n);
        assert!(set.find("ec").is_none());
        assert!(JwkSet::parse(b"{}").is_err());
        assert!(JwkSet::parse(b"[]").is_err());
        assert!(JwkSet::parse(b"{\"keys\": {}}").is_err());
        assert!(JwkSet::parse(b"{\"keys\": []}").unwrap().is_empty());
    }

    #[test]
    fn published_jwk_and_kid() {
        let key = SigningKey::from_pem(TOOL_PEM).unwrap();
        assert_eq!(key.public_jwk().bits(), 2048);
        let jwk = key.public_jwk().to_json();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(key.kid().len(), 43);
        // The kid is the thumbprint of the published n and e.
        let again = RsaPublicJwk::from_components(
            "x",
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(again.thumbprint(), key.kid());
        let other = platform();
        let doc = key.public_jwk().to_jwks_json(&[other.public_jwk()]);
        let set = JwkSet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.find(other.kid()).is_some());
        assert!(!format!("{key:?}").contains("pair"));
    }

    #[test]
    fn degenerate_components_are_refused_not_panicked_on() {
        // An empty or all-zero modulus has no bits (found by the jws fuzz target).
        for n in ["", "AA", "AAAA"] {
            assert_eq!(
                RsaPublicJwk::from_components("k", n, "AQAB").unwrap_err(),
                KeyError::BadJwks("n is not 2048 to 8192 bits")
            );
        }
        let n = RFC7515_A2_N;
        // 2^33 - 1 is the largest exponent ring accepts; 2^33 + 1 has 34 bits.
        assert!(RsaPublicJwk::from_components(
            "k",
            n,
            &URL_SAFE_NO_PAD.encode([1, 255, 255, 255, 255])
        )
        .is_ok());
        for e in [
            URL_SAFE_NO_PAD.encode([2, 0, 0, 0, 1]),
            URL_SAFE_NO_PAD.encode([0, 0, 0]),
            String::new(),
            "AAE".to_string(),
        ] {
            assert!(
                RsaPublicJwk::from_components("k", n, &e).is_err(),
                "{e} was accepted"
            );
        }
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
    }

    #[test]
    fn pem_decoding() {
        assert_eq!(
            private_key_pem_to_der(TOOL_PEM).unwrap(),
            private_key_pem_to_der(&format!(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{TOOL_PEM}"
            ))
            .unwrap(),
            "the first private key block of a bundle"
        );
        for (pem, expected) in [
            ("", KeyError::NotPem),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", KeyError::NotPem),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n", KeyError::NotPem),
            ("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----", KeyError::NotBase64),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                KeyError::Encrypted,
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                KeyError::Encrypted,
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                KeyError::OtherKind("EC PRIVATE KEY".into()),
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                KeyError::OtherKind("OPENSSH PRIVATE KEY".into()),
            ),
        ] {
            assert_eq!(private_key_pem_to_der(pem), Err(expected), "{pem}");
        }
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(KeyError::Rejected(_))
        ));
        assert!(matches!(
            SigningKey::from_pem(
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
            ),
            Err(KeyError::Rejected(_))
        ));
    }

    /// `tool-key-rsa2048-pkcs1.pem` is `tool-key-rsa2048.pem` written by
    /// `openssl rsa -traditional`: wrapped, its PKCS#1 DER is byte for byte
    /// the PKCS#8 DER OpenSSL writes, and the key signs and verifies.
    #[test]
    fn a_pkcs1_key_is_wrapped_into_the_pkcs8_openssl_writes() {
        let pkcs8_pem = include_str!("../../tests/vectors/tool-key-rsa2048.pem");
        let pkcs1_pem = include_str!("../../tests/vectors/tool-key-rsa2048-pkcs1.pem");
        assert!(pkcs1_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let pkcs8 = private_key_pem_to_der(pkcs8_pem).unwrap();
        let wrapped = private_key_pem_to_der(pkcs1_pem).unwrap();
        assert_eq!(wrapped, pkcs8);
        // The outer SEQUENCE and the OCTET STRING take two length bytes.
        assert_eq!(wrapped[..4], [0x30, 0x82, 0x04, 0xbd]);
        assert_eq!(wrapped[22..26], [0x04, 0x82, 0x04, 0xa7]);
        assert_eq!(wrapped.len(), 4 + 0x4bd);

        let key = SigningKey::from_pem(pkcs1_pem).unwrap();
        assert_eq!(key.kid(), SigningKey::from_pem(pkcs8_pem).unwrap().kid());
        let signature = key.sign_bytes(b"payload").unwrap();
        assert!(verify_rs256(b"payload", &signature, key.public_jwk()).is_ok());
        assert!(verify_rs256(b"payloaD", &signature, key.public_jwk()).is_err());
    }

    #[test]
    fn pkcs1_wrapping_and_der_lengths() {
        let mut expected = vec![0x30, 0x16, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09];
        expected.extend_from_slice(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]);
        expected.extend_from_slice(&[0x05, 0x00, 0x04, 0x02, 0x30, 0x00]);
        assert_eq!(pkcs1_to_pkcs8(&[0x30, 0x00]), expected);

        for (len, header) in [
            (0, vec![0x04, 0x00]),
            (1, vec![0x04, 0x01]),
            (127, vec![0x04, 0x7f]),
            (128, vec![0x04, 0x81, 0x80]),
            (255, vec![0x04, 0x81, 0xff]),
            (256, vec![0x04, 0x82, 0x01, 0x00]),
            (65_535, vec![0x04, 0x82, 0xff, 0xff]),
            (65_536, vec![0x04, 0x83, 0x01, 0x00, 0x00]),
        ] {
            let value = vec![0xab; len];
            let mut out = Vec::new();
            der_tlv(0x04, &value, &mut out);
            assert_eq!(out[..header.len()], header, "length {len}");
            assert_eq!(out.len(), header.len() + len, "length {len}");
        }
        // A short key whose PrivateKeyInfo crosses the one-byte limit:
        // the OCTET STRING keeps the short form, the SEQUENCE takes 0x81.
        let wrapped = pkcs1_to_pkcs8(&[0; 110]);
        assert_eq!(wrapped[..3], [0x30, 0x81, 130]);
        assert_eq!(wrapped[21..23], [0x04, 110]);
        assert_eq!(wrapped.len(), 3 + 130);
    }

    const ASSERTION_PEM: &str = include_str!("../../tests/vectors/assertion-key-p256.pem");
    const ASSERTION_SEC1_PEM: &str =
        include_str!("../../tests/vectors/assertion-key-p256-sec1.pem");

    fn assertion_key() -> EcSigningKey {
        EcSigningKey::from_pem(ASSERTION_PEM).unwrap()
    }

    /// Verifies an ES256 compact JWS with `ring`'s own ECDSA verifier (the
    /// signing side above shares no code with it but the key).
    fn verify_es256(token: &str, key: &EcPublicJwk) -> Result<(), ring::error::Unspecified> {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| ring::error::Unspecified)?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            key.uncompressed_point(),
        )
        .verify(input.as_bytes(), &sig)
    }

    #[test]
    fn rfc7638_thumbprint_of_an_ec_key() {
        // RFC 7517 Appendix A.1's EC key; its thumbprint as jwcrypto 1.6.2
        // computes it (`JWK(...).thumbprint()`), and the test vector's as
        // jwcrypto gives it for the PEM.
        let x = URL_SAFE_NO_PAD
            .decode("MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4")
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode("4Etl6SRW2YilurN5ZAvSlELSjRJB1PlTdpxLAnj9kgc")
            .unwrap();
        let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
        let key = EcPublicJwk::from_uncompressed_point(&point).unwrap();
        assert_eq!(key.kid(), "lx31oeWk0OsilgEB5NOrG0T_0_zcD-jjSQnl_2eaBXM");
        assert_eq!(key.uncompressed_point(), point);
        assert_eq!(
            assertion_key().kid(),
            "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E"
        );
        for bad in [&point[1..], &point[..64], &[0x02; 33][..], &[][..]] {
            assert!(EcPublicJwk::from_uncompressed_point(bad).is_err());
        }
    }

    #[test]
    fn es256_tokens_verify_with_rings_verifier() {
        let key = assertion_key();
        let claims = json!({"iss": "https://learn.example", "sub": "acme:1", "roles": ["Learner"]});
        let token = key.sign(&claims).unwrap();
        assert_eq!(token.len(), key.token_len(claims.to_string().len()));
        assert!(verify_es256(&token, key.public_jwk()).is_ok());
        let parts: Vec<&str> = token.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()})
        );
        let read: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(read, claims);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        // ECDSA draws a nonce per signature: the same claims, another
        // signature, and both verify.
        let again = key.sign(&claims).unwrap();
        assert_ne!(again, token);
        assert!(verify_es256(&again, key.public_jwk()).is_ok());
        // Changed claims, a flipped signature bit, another key: refused.
        let forged = with_part(&token, 1, |_| b64json(&json!({"sub": "acme:2"})));
        assert!(verify_es256(&forged, key.public_jwk()).is_err());
        let flipped = with_part(&token, 2, |s| {
            let mut bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
            bytes[40] ^= 1;
            URL_SAFE_NO_PAD.encode(bytes)
        });
        assert!(verify_es256(&flipped, key.public_jwk()).is_err());
        let other = EcSigningKey::from_pem(include_str!(
            "../../tests/vectors/assertion-key-p256-next.pem"
        ))
        .unwrap();
        assert_ne!(other.kid(), key.kid());
        assert!(verify_es256(&token, other.public_jwk()).is_err());
        // The token is not an RS256 one: the id_token verifier refuses it.
        assert_eq!(
            CompactJws::parse(&token).unwrap().key_id(),
            Err(JwsError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn the_published_ec_jwk() {
        let key = assertion_key();
        let jwk = key.public_jwk().to_json();
        assert_eq!(
            jwk,
            json!({
                "kty": "EC",
                "crv": "P-256",
                "x": "NEQrGSjOs4x_J_NqdH3EqzorK60yMMPE1BoMdSqbM7U",
                "y": "4GTFCOSMdw-jJfT-4ZxT1ri4bcim1eYtVvk9lRGJek8",
                "alg": "ES256",
                "use": "sig",
                "kid": "Hd9RSljdLJr1DqSW1OVExvBEJdywMobsIHbo8Jzsn_E",
            })
        );
        // The platforms' key set reader skips it (not RSA).
        let doc = json!({"keys": [jwk]}).to_string();
        assert!(JwkSet::parse(doc.as_bytes()).unwrap().is_empty());
        assert!(!format!("{key:?}").contains("pair"));
    }

    /// `assertion-key-p256-sec1.pem` is `assertion-key-p256.pem` written by
    /// `openssl ec` (SEC1, as Helm's `genPrivateKey "ecdsa"` writes a key):
    /// wrapped into PKCS#8 it is the same key.
    #[test]
    fn a_sec1_key_is_wrapped_into_pkcs8() {
        assert!(ASSERTION_SEC1_PEM.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let sec1 = EcSigningKey::from_pem(ASSERTION_SEC1_PEM).unwrap();
        let pkcs8 = assertion_key();
        assert_eq!(sec1.kid(), pkcs8.kid());
        let token = sec1.sign(&json!({"sub": "a"})).unwrap();
        assert!(verify_es256(&token, pkcs8.public_jwk()).is_ok());

        let der = ec_private_key_pem_to_der(ASSERTION_SEC1_PEM).unwrap();
        // SEQUENCE { INTEGER 0, SEQUENCE { id-ecPublicKey, prime256v1 },
        // OCTET STRING { the 121 bytes of the SEC1 key } }.
        assert_eq!(
            der[..26],
            [
                0x30, 0x81, 0x93, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
                0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01
            ]
        );
        assert_eq!(der[26..29], [0x07, 0x04, 0x79]);
        assert_eq!(der.len(), 3 + 0x93);
        assert_eq!(sec1_p256_to_pkcs8(&der[29..]), der);
    }

    #[test]
    fn ec_keys_of_other_kinds_are_refused() {
        let p384 = include_str!("../../tests/vectors/assertion-key-p384.pem");
        let p384_sec1 = include_str!("../../tests/vectors/assertion-key-p384-sec1.pem");
        for pem in [p384, p384_sec1, TOOL_PEM] {
            assert!(
                matches!(EcSigningKey::from_pem(pem), Err(KeyError::Rejected(_))),
                "{}",
                &pem[..40]
            );
        }
        for (pem, expected) in [
            (
                include_str!("../../tests/vectors/tool-key-rsa2048-pkcs1.pem"),
                KeyError::OtherKind("RSA PRIVATE KEY".into()),
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END EC PRIVATE KEY-----\n",
                KeyError::Encrypted,
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                KeyError::Encrypted,
            ),
            ("-----BEGIN EC PRIVATE KEY-----\n!!\n-----END EC PRIVATE KEY-----", KeyError::NotBase64),
            ("", KeyError::NotPem),
        ] {
            assert_eq!(ec_private_key_pem_to_der(pem), Err(expected));
        }
        assert!(matches!(
            EcSigningKey::from_pem(
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"
            ),
            Err(KeyError::Rejected(_))
        ));
        // The RSA loader still refuses an EC block by its label.
        assert_eq!(
            private_key_pem_to_der(ASSERTION_SEC1_PEM),
            Err(KeyError::OtherKind("EC PRIVATE KEY".into()))
        );
    }
}
