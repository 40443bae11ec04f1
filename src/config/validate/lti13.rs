//! Validation of `[lti13]` (the tool keys, the timings) and `[[platforms]]`
//! (LTI 1.3 registrations, their tenants, and the rules among those sharing
//! an issuer and client id).

use std::collections::HashSet;
use std::sync::Arc;

use super::super::raw::{redact_url, RawLti13, RawPlatform};
use super::super::settings::*;
use super::{resolve_secret, Check};
use crate::lti::jose::{self, KeyError};
use crate::secret::Secret;

/// Every tenant once, in configuration order: the consumers', then those
/// of the platforms that are not linked to a consumer.
pub(super) fn tenants(consumers: &[Consumer], platforms: &[Platform]) -> Vec<Arc<Tenant>> {
    let mut tenants: Vec<Arc<Tenant>> = consumers.iter().map(|c| c.tenant.clone()).collect();
    for p in platforms {
        if !tenants.iter().any(|t| Arc::ptr_eq(t, &p.tenant)) {
            tenants.push(p.tenant.clone());
        }
    }
    tenants
}

/// Decodes the PEM of the tool's RSA key (at least 2048 bits) into PKCS#8
/// DER: a `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) block, by
/// [`jose::private_key_pem_to_der`], each refusal worded for the operator.
pub fn tool_key_der(pem: &[u8]) -> Result<Secret, String> {
    const EXPECTED: &str = "-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----";
    let text = std::str::from_utf8(pem)
        .map_err(|_| format!("not PEM text; expected an RSA private key ({EXPECTED})"))?;
    let der = jose::private_key_pem_to_der(text).map_err(|e| match e {
        KeyError::Encrypted => {
            "an encrypted key; give it unencrypted (openssl pkcs8 -topk8 -nocrypt) and protect the file instead"
                .to_string()
        }
        KeyError::OtherKind(label) => format!(
            "a PEM {label} block, not an RSA key (LTI 1.3 signs with RS256); generate one with openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
        ),
        KeyError::NotBase64 => "the PEM body is not valid base64".to_string(),
        _ => format!("not a PEM RSA private key ({EXPECTED})"),
    })?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
        match e.to_string().as_str() {
            "TooSmall" => "an RSA key of fewer than 2048 bits; generate one of 2048 bits or more (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)".to_string(),
            "TooLarge" => "an RSA key larger than 4096 bits, more than ltigate signs with".to_string(),
            "WrongAlgorithm" => "not an RSA key (LTI 1.3 signs with RS256)".to_string(),
            other => format!("not a usable RSA private key ({other})"),
        }
    })?;
    let bits = pair.public().modulus_len() * 8;
    if bits < 2048 {
        return Err(format!(
            "an RSA key of {bits} bits; LTI 1.3 needs at least 2048"
        ));
    }
    Ok(Secret::new(der))
}

/// Reads and checks a list of tool key files.
fn tool_key_files(c: &mut Check<'_>, key: &str, files: &[String]) -> Vec<Secret> {
    let mut keys = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match std::fs::read(f)
            .map_err(|e| format!("cannot read `{f}`: {e}"))
            .and_then(|pem| tool_key_der(&pem))
        {
            Ok(der) => keys.push(der),
            Err(e) => c.problems.push(format!("{key}[{i}]: {e}")),
        }
    }
    keys
}

/// `[lti13]`: the tool keys and the timings.
pub(super) fn lti13(c: &mut Check<'_>, raw: &RawLti13) -> Lti13Settings {
    let key = resolve_secret(
        "lti13.key",
        raw.key.as_ref(),
        raw.key_file.as_ref(),
        c.problems,
    )
    .and_then(|pem| {
        let at = if raw.key_file.is_some() {
            "lti13.key_file"
        } else {
            "lti13.key"
        };
        tool_key_der(pem.expose())
            .map_err(|e| c.problems.push(format!("{at}: {e}")))
            .ok()
    });
    let next_keys = tool_key_files(c, "lti13.next_key_files", &raw.next_key_files);
    let previous_keys = tool_key_files(c, "lti13.previous_key_files", &raw.previous_key_files);
    let leeway = c.duration("lti13.leeway", &raw.leeway);
    let state_ttl = c.parsed_duration("lti13.state_ttl", &raw.state_ttl);
    if state_ttl.is_some_and(|d| d.is_zero()) {
        c.problems
            .push("lti13.state_ttl: must be longer than zero".into());
    }
    Lti13Settings {
        key,
        next_keys,
        previous_keys,
        leeway,
        state_ttl: state_ttl.unwrap_or_default(),
    }
}

/// A registration's URL: https (http only to a loopback host with
/// `outcomes.allow_insecure_targets`, for tests and development), no
/// credentials or fragment; an address literal that is private or loopback
/// only with `allow_private_endpoints` when the tool calls it (`outbound`).
fn platform_url(
    c: &mut Check<'_>,
    key: &str,
    url: &str,
    outbound: bool,
    allow_private: bool,
    allow_insecure: bool,
) {
    if url.is_empty() {
        c.problems.push(format!("{key}: required"));
        return;
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            c.problems
                .push(format!("{key}: `{url}` is not an absolute URL ({e})"));
            return;
        }
    };
    let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = bare.parse::<std::net::IpAddr>().ok();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || ip.is_some_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => {}
        "http" if loopback && allow_insecure => {}
        "http" if loopback => {
            c.problems.push(format!(
                "{key}: `{url}` is plain http; a platform on a loopback host may use it only with outcomes.allow_insecure_targets = true (tests and development)"
            ));
            return;
        }
        _ => {
            c.problems
                .push(format!("{key}: `{url}` must be an https URL"));
            return;
        }
    }
    if host.is_empty() {
        c.problems.push(format!("{key}: `{url}` has no host"));
    } else if !parsed.username().is_empty() || parsed.password().is_some() {
        c.problems.push(format!(
            "{key}: `{}` must not carry credentials",
            redact_url(url)
        ));
    } else if parsed.fragment().is_some() {
        c.problems
            .push(format!("{key}: `{url}` must not carry a fragment"));
    } else if outbound && !allow_private && !allow_insecure {
        let internal = loopback || ip.is_some_and(crate::addr::is_internal);
        if internal {
            c.problems.push(format!(
                "{key}: `{url}` is a private or loopback address; set allow_private_endpoints = true for an on-premises LMS"
            ));
        }
    }
}

/// `[[platforms]]`: each registration's fields and tenant, then the rules
/// among registrations sharing (issuer, client id).
pub(super) fn platforms(
    c: &mut Check<'_>,
    raw: &[RawPlatform],
    consumers: &[Consumer],
    id_separator: &str,
    allow_insecure: bool,
) -> Vec<Platform> {
    let mut platforms = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut lms_ids: HashSet<&str> = consumers.iter().map(|c| c.tenant.lms_id.as_str()).collect();
    for (i, rp) in raw.iter().enumerate() {
        let at = format!("platforms[{i}]");
        let linked = rp
            .consumer
            .as_deref()
            .and_then(|name| consumers.iter().find(|c| c.tenant.name == name));
        if rp.name.trim().is_empty() {
            c.problems.push(format!("{at}.name: required"));
        } else if !names.insert(&rp.name) {
            c.problems
                .push(format!("{at}.name: `{}` is used twice", rp.name));
        } else if consumers.iter().any(|c| c.tenant.name == rp.name)
            && linked.is_none_or(|l| l.tenant.name != rp.name)
        {
            c.problems.push(format!(
                "{at}.name: `{}` is the name of a [[consumers]] entry this registration is not linked to (the metric label `consumer` must name one tenant); rename it, or link it with consumer = \"{}\"",
                rp.name, rp.name
            ));
        }
        for (key, value) in [("issuer", &rp.issuer), ("client_id", &rp.client_id)] {
            if value.is_empty() {
                c.problems.push(format!("{at}.{key}: required"));
            } else if value.trim() != value {
                c.problems.push(format!(
                    "{at}.{key}: `{value}` has spaces around it (it is compared exactly)"
                ));
            }
        }
        let deployment_ids = deployment_ids(c, &at, &rp.deployment_ids);
        let private = rp.allow_private_endpoints;
        platform_url(
            c,
            &format!("{at}.auth_login_url"),
            &rp.auth_login_url,
            false,
            private,
            allow_insecure,
        );
        platform_url(
            c,
            &format!("{at}.auth_token_url"),
            &rp.auth_token_url,
            true,
            private,
            allow_insecure,
        );
        platform_url(
            c,
            &format!("{at}.jwks_url"),
            &rp.jwks_url,
            true,
            private,
            allow_insecure,
        );
        let token_audience = if rp.token_audience.is_empty() {
            rp.auth_token_url.clone()
        } else {
            rp.token_audience.clone()
        };
        let tenant = platform_tenant(c, &at, rp, consumers, linked, id_separator, &mut lms_ids);
        if linked.is_some() && deployment_ids == DeploymentIds::Any {
            c.problems.push(format!(
                "{at}.deployment_ids: `*` on a registration linked to a consumer would let any deployment of the issuer speak for that consumer's learners; list the deployment ids"
            ));
        }
        platforms.push(Platform {
            name: rp.name.clone(),
            issuer: rp.issuer.clone(),
            client_id: rp.client_id.clone(),
            deployment_ids,
            auth_login_url: rp.auth_login_url.clone(),
            auth_token_url: rp.auth_token_url.clone(),
            token_audience,
            jwks_url: rp.jwks_url.clone(),
            tenant,
            consumer: linked.map(|l| l.tenant.name.clone()),
            trust_unsigned_migration: rp.trust_unsigned_migration,
            allow_private_endpoints: rp.allow_private_endpoints,
        });
    }
    shared_registrations(c, &platforms);
    platforms
}

/// A registration's `deployment_ids`: non-empty, each id non-empty, at most
/// 255 characters and listed once; `*` alone.
fn deployment_ids(c: &mut Check<'_>, at: &str, ids: &[String]) -> DeploymentIds {
    let key = format!("{at}.deployment_ids");
    if ids.is_empty() {
        c.problems.push(format!(
            "{key}: required: the deployment ids this registration accepts, or [\"*\"] for any"
        ));
        return DeploymentIds::Only(Vec::new());
    }
    if ids.iter().any(|d| d == "*") {
        if ids.len() > 1 {
            c.problems.push(format!(
                "{key}: `*` accepts any deployment and stands alone"
            ));
        }
        return DeploymentIds::Any;
    }
    let mut seen = HashSet::new();
    for d in ids {
        if d.is_empty() {
            c.problems.push(format!("{key}: an empty deployment id"));
        } else if d.chars().count() > 255 {
            c.problems
                .push(format!("{key}: a deployment id longer than 255 characters"));
        } else if !seen.insert(d.as_str()) {
            c.problems.push(format!("{key}: `{d}` is listed twice"));
        }
    }
    DeploymentIds::Only(ids.to_vec())
}

/// The tenant of a registration: the linked consumer's, or its own.
fn platform_tenant<'a>(
    c: &mut Check<'_>,
    at: &str,
    rp: &'a RawPlatform,
    consumers: &[Consumer],
    linked: Option<&Consumer>,
    id_separator: &str,
    lms_ids: &mut HashSet<&'a str>,
) -> Arc<Tenant> {
    let own: Vec<&str> = [
        ("lms_id", rp.lms_id.is_some()),
        ("environment", rp.environment.is_some()),
        ("max_licences", rp.max_licences.is_some()),
        ("outcome_hosts", rp.outcome_hosts.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if let Some(name) = &rp.consumer {
        if !own.is_empty() {
            c.problems.push(format!(
                "{at}.consumer: set either consumer (share that consumer's tenant) or a tenant of its own ({}), not both",
                own.join(", ")
            ));
        }
        match linked {
            Some(consumer) => return consumer.tenant.clone(),
            None => {
                let known: Vec<&str> = consumers.iter().map(|c| c.tenant.name.as_str()).collect();
                c.problems.push(format!(
                    "{at}.consumer: no [[consumers]] entry is named `{name}` (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
    }
    let lms_id = rp.lms_id.clone().unwrap_or_default();
    if rp.consumer.is_none() {
        if lms_id.is_empty() {
            c.problems.push(format!(
                "{at}.lms_id: required: set consumer = \"<a [[consumers]] name>\" to share that consumer's tenant, or lms_id (with optional environment, max_licences, outcome_hosts) for a tenant of its own"
            ));
        } else if !lms_ids.insert(rp.lms_id.as_deref().unwrap_or_default()) {
            c.problems.push(format!(
                "{at}.lms_id: `{lms_id}` is used twice (it must namespace one LMS; a [[consumers]] entry of the same LMS is shared with consumer = \"<its name>\")"
            ));
        } else if !id_separator.is_empty() && lms_id.contains(id_separator) {
            c.problems.push(format!(
                "{at}.lms_id: `{lms_id}` must not contain launch.id_separator `{id_separator}`"
            ));
        }
        if rp.max_licences == Some(0) {
            c.problems.push(format!(
                "{at}.max_licences: 0 would refuse every learner; omit it for no cap"
            ));
        }
    }
    Arc::new(Tenant {
        name: rp.name.clone(),
        lms_id,
        environment: rp.environment.clone().filter(|e| !e.is_empty()),
        max_licences: rp.max_licences,
        outcome_hosts: rp
            .outcome_hosts
            .iter()
            .flatten()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    })
}

/// Registrations sharing (issuer, client id) (hosted Canvas, Blackboard):
/// disjoint deployment ids, none `*`, the same endpoints.
fn shared_registrations(c: &mut Check<'_>, platforms: &[Platform]) {
    for (j, p) in platforms.iter().enumerate() {
        let at = format!("platforms[{j}]");
        let Some((i, first)) = platforms[..j]
            .iter()
            .enumerate()
            .find(|(_, q)| q.issuer == p.issuer && q.client_id == p.client_id)
        else {
            continue;
        };
        let with = format!("platforms[{i}] (`{}`)", first.name);
        if first.deployment_ids == DeploymentIds::Any || p.deployment_ids == DeploymentIds::Any {
            c.problems.push(format!(
                "{at}.deployment_ids: shares issuer and client_id with {with}, so neither may accept `*`: on a shared issuer, `*` would let any school's deployment speak for this tenant's learners; list the deployment ids"
            ));
        }
        for q in &platforms[..j] {
            if q.issuer != p.issuer || q.client_id != p.client_id {
                continue;
            }
            if let (DeploymentIds::Only(mine), DeploymentIds::Only(theirs)) =
                (&p.deployment_ids, &q.deployment_ids)
            {
                for d in mine.iter().filter(|d| theirs.contains(d)) {
                    c.problems.push(format!(
                        "{at}.deployment_ids: `{d}` is also listed by `{}`, which shares issuer and client_id: a launch must pick one registration",
                        q.name
                    ));
                }
            }
        }
        for (key, mine, theirs) in [
            ("auth_login_url", &p.auth_login_url, &first.auth_login_url),
            ("auth_token_url", &p.auth_token_url, &first.auth_token_url),
            ("token_audience", &p.token_audience, &first.token_audience),
            ("jwks_url", &p.jwks_url, &first.jwks_url),
        ] {
            // A defaulted audience differs because the token URL does:
            // one problem, not two.
            let follows = key == "token_audience" && p.auth_token_url != first.auth_token_url;
            if mine != theirs && !follows {
                c.problems.push(format!(
                    "{at}.{key}: `{mine}` differs from `{theirs}` of {with}, which shares issuer and client_id (one platform has one {key})"
                ));
            }
        }
    }
}
