//! Pure LTI protocol code: values in, values out, no I/O, no clock, no
//! randomness (but the per-signature nonce of ES256, which `ring` draws:
//! [`jose::EcSigningKey`]). Tested with published vectors and fuzzable.

pub mod ags;
pub mod cartridge;
pub mod encode;
pub mod id_token;
pub mod jose;
pub mod launch;
pub mod migration;
pub mod oauth1;
pub mod outcomes;
pub mod roles;
pub mod rsa_keygen;

/// The LTI protocol a launch came by (`X-LTI-Version`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum LtiVersion {
    /// LTI 1.1 (OAuth 1.0a signed form posts).
    #[default]
    #[serde(rename = "1.1")]
    V1p1,
    /// LTI 1.3 (OIDC login, signed id_tokens).
    #[serde(rename = "1.3")]
    V1p3,
}

impl LtiVersion {
    /// `1.1` or `1.3`: the header value and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LtiVersion::V1p1 => "1.1",
            LtiVersion::V1p3 => "1.3",
        }
    }

    /// Whether this is the default (left out of a session cookie).
    pub fn is_default(&self) -> bool {
        *self == LtiVersion::default()
    }
}
