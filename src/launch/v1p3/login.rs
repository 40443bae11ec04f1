//! `GET|POST /lti/1.3/login`: the OIDC third-party login initiation
//! (DESIGN §13 "Login", "Blocked cookies"), and `GET
//! /lti/1.3/cookie-check`.
//!
//! A login writes nothing to the store: its state is sealed
//! ([`LoginState`]) and bound to the browser by a cookie. Only a login
//! from a frame stores something — a single-use ticket of 60 s holding the
//! initiation parameters, so that where the frame's cookie is blocked a new
//! window can re-run the login at the top level (Moodle's
//! `lti_message_hint` is single use: it must be spent there, not in the
//! frame).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::state::{self, LoginState};
use crate::config::{Platform, Settings};
use crate::http::{query_pairs, respond, unix_now, Body};
use crate::launch::error::RouteError;
use crate::lti::encode::{parse_form, percent_encode};
use crate::session::Gate;

/// How long the new-window ticket of a framed login lives.
pub const LOGIN_TICKET_TTL: Duration = Duration::from_secs(60);
/// The store key prefix of login tickets: never a `/lti/continue` ticket
/// (those are base64url only).
const LOGIN_TICKET_PREFIX: &str = "lti13-login:";

/// Why a login was refused (`ltigate_lti13_logins_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRejection {
    /// A parameter is missing or wrong.
    InvalidRequest,
    /// No registration has this issuer (and client id).
    UnknownPlatform,
}

impl LoginRejection {
    /// The metric label and error code.
    pub fn label(self) -> &'static str {
        match self {
            LoginRejection::InvalidRequest => "invalid_request",
            LoginRejection::UnknownPlatform => "unknown_platform",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// What the user is told (the detail follows it).
    pub fn message(self) -> &'static str {
        match self {
            LoginRejection::InvalidRequest => "This LTI 1.3 login is malformed.",
            LoginRejection::UnknownPlatform => {
                "This LMS is not registered with this tool. Ask your LMS administrator to check the LTI 1.3 registration."
            }
        }
    }
}

/// The initiation parameters a login needs (DESIGN §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginParams {
    /// `iss`.
    pub iss: String,
    /// `login_hint`, passed on as sent.
    pub login_hint: String,
    /// `target_link_uri`.
    pub target_link_uri: String,
    /// `client_id`, when sent.
    pub client_id: Option<String>,
    /// `lti_message_hint`, passed on byte for byte.
    pub lti_message_hint: Option<String>,
    /// `lti_deployment_id` (or `deployment_id`): not checked here, the
    /// token's claim decides.
    pub deployment_id: Option<String>,
    /// `lti_storage_target`: the frame of the platform's storage
    /// (`lti.put_data`/`lti.get_data`), when the platform offers it.
    #[serde(default)]
    pub storage_target: Option<String>,
}

impl LoginParams {
    /// The parameters out of decoded pairs (the first of each name).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, Cow<'static, str>> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let required =
            |name: &'static str| get(name).ok_or_else(|| Cow::Owned(format!("{name} is missing")));
        let params = LoginParams {
            iss: required("iss")?,
            login_hint: required("login_hint")?,
            target_link_uri: required("target_link_uri")?,
            client_id: get("client_id"),
            lti_message_hint: get("lti_message_hint"),
            deployment_id: get("lti_deployment_id").or_else(|| get("deployment_id")),
            storage_target: get("lti_storage_target"),
        };
        if let Some(t) = &params.storage_target {
            let name_like = t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !name_like {
                return Err("lti_storage_target is not a frame name".into());
            }
        }
        for (name, value) in [
            ("iss", Some(&params.iss)),
            ("login_hint", Some(&params.login_hint)),
            ("target_link_uri", Some(&params.target_link_uri)),
            ("client_id", params.client_id.as_ref()),
            ("lti_message_hint", params.lti_message_hint.as_ref()),
        ] {
            if value.is_some_and(|v| v.len() > 4096) {
                return Err(format!("{name} is longer than 4096 bytes").into());
            }
        }
        Ok(params)
    }
}

/// The registration a login is for: by issuer and client id; without a
/// client id, the issuer's only one.
pub fn registration<'s>(
    settings: &'s Settings,
    params: &'s LoginParams,
) -> Result<&'s Platform, (LoginRejection, Cow<'static, str>)> {
    match &params.client_id {
        Some(cid) => settings.platforms_for(&params.iss, cid).next().ok_or((
            LoginRejection::UnknownPlatform,
            "no registration has this issuer and client_id".into(),
        )),
        None => {
            let mut of_issuer = settings.platforms_of_issuer(&params.iss);
            let first = of_issuer.next().ok_or((
                LoginRejection::UnknownPlatform,
                "no registration has this issuer".into(),
            ))?;
            if of_issuer.any(|p| p.client_id != first.client_id) {
                return Err((
                    LoginRejection::InvalidRequest,
                    "client_id is missing and this issuer has several client ids".into(),
                ));
            }
            Ok(first)
        }
    }
}

/// Is `target` the public URL or below it? Anything else is never
/// redirected to.
pub fn target_allowed(public_base: &str, target: &str) -> bool {
    target == public_base
        || target
            .strip_prefix(public_base)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

/// The platform's auth URL for a login: `auth_login_url` with the OIDC
/// parameters of DESIGN §13.
pub fn auth_url(
    platform: &Platform,
    redirect_uri: &str,
    params: &LoginParams,
    sealed_state: &str,
    nonce: &str,
) -> String {
    let mut url = platform.auth_login_url.clone();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    let mut add = |name: &str, value: &str| {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encode(value.as_bytes()));
        sep = '&';
    };
    add("scope", "openid");
    add("response_type", "id_token");
    add("response_mode", "form_post");
    add("prompt", "none");
    add("client_id", &platform.client_id);
    add("redirect_uri", redirect_uri);
    add("login_hint", &params.login_hint);
    if let Some(hint) = &params.lti_message_hint {
        add("lti_message_hint", hint);
    }
    add("state", sealed_state);
    add("nonce", nonce);
    url
}

/// A refusal, counted.
fn refuse(
    gate: &Gate,
    reason: LoginRejection,
    detail: impl Into<String>,
    json: bool,
) -> Response<Body> {
    gate.metrics
        .lti13_logins
        .with_label_values(&[reason.label()])
        .inc();
    let detail = detail.into();
    tracing::info!(reason = reason.label(), detail = %detail, "LTI 1.3 login refused");
    respond::reject(&RouteError::Login { reason, detail }, json)
}

/// Is the request a navigation inside a frame?
fn in_frame(headers: &HeaderMap) -> bool {
    headers.get("sec-fetch-dest").is_some_and(|v| {
        v.as_bytes().eq_ignore_ascii_case(b"iframe") || v.as_bytes().eq_ignore_ascii_case(b"frame")
    })
}

/// A login ticket's stored value.
#[derive(Serialize, Deserialize)]
struct LoginTicket {
    params: LoginParams,
}

/// Why a login's parameters could not be had.
enum Refusal {
    /// A login refusal (counted).
    Login(LoginRejection, String),
    /// A ticket that cannot be redeemed, or the store.
    Route(RouteError),
}

/// The login's parameters — from the query and, for a POST, the form; or,
/// for the new window's re-run, from its ticket — and whether they came
/// from a ticket.
async fn read_params<B>(
    gate: &Gate,
    parts: &http::request::Parts,
    body: B,
) -> Result<(LoginParams, bool), Refusal>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let mut pairs = parts
        .uri
        .query()
        .and_then(|q| parse_form(q.as_bytes()).ok())
        .unwrap_or_default();
    if parts.method == Method::POST {
        let form = super::verify::read_form(gate, &parts.headers, body)
            .await
            .map_err(|detail| Refusal::Login(LoginRejection::InvalidRequest, detail))?;
        let mut form = parse_form(&form)
            .map_err(|e| Refusal::Login(LoginRejection::InvalidRequest, format!("body: {e}")))?;
        form.append(&mut pairs);
        pairs = form;
    }
    let ticket = pairs.iter().find(|(n, _)| n == "ticket").map(|(_, v)| v);
    match ticket {
        Some(t) if parts.method == Method::GET => redeem(gate, t)
            .await
            .map(|p| (p, true))
            .map_err(Refusal::Route),
        _ => LoginParams::from_pairs(&pairs)
            .map(|p| (p, false))
            .map_err(|detail| Refusal::Login(LoginRejection::InvalidRequest, detail.into_owned())),
    }
}

/// Handles `GET|POST /lti/1.3/login`.
pub async fn handle<B>(gate: &Gate, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<crate::http::BoxError>,
{
    let json = respond::prefers_json(req.headers());
    let framed = in_frame(req.headers());
    let (parts, body) = req.into_parts();
    let (params, from_ticket) = match read_params(gate, &parts, body).await {
        Ok(p) => p,
        Err(Refusal::Login(reason, detail)) => return refuse(gate, reason, detail, json),
        Err(Refusal::Route(e)) => return respond::reject(&e, json),
    };

    let settings = &gate.settings;
    let platform = match registration(settings, &params) {
        Ok(p) => p,
        Err((reason, detail)) => return refuse(gate, reason, detail, json),
    };
    let public = &settings.server.public_url;
    let public_base = public.url_for("");
    if !target_allowed(&public_base, &params.target_link_uri) {
        return refuse(
            gate,
            LoginRejection::InvalidRequest,
            format!("target_link_uri is not below {public_base}"),
            json,
        );
    }

    let now = unix_now();
    let ttl = settings.lti13.state_ttl.as_secs().max(1);
    let mut login = LoginState::new(
        &platform.issuer,
        &platform.client_id,
        &params.target_link_uri,
        now + ttl,
    );
    // Platform storage is used by the cookie-check page, in a frame.
    let framed_page = framed && !from_ticket;
    let binder = match (&params.storage_target, framed_page) {
        (Some(target), true) => platform_origin(&platform.auth_login_url).map(|origin| {
            let (binding, binder) = state::StorageBinding::new(target, &origin);
            login.storage = Some(binding);
            binder
        }),
        _ => None,
    };
    let sealed = match login.seal(&gate.sealer) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot seal an LTI 1.3 state");
            return respond::reject(&RouteError::StoreUnavailable, json);
        }
    };
    let redirect_uri = public.url_for("/lti/1.3/launch");
    let auth = auth_url(platform, &redirect_uri, &params, &sealed, &login.nonce);
    let cookie_name = login.cookie_name();
    let cookie = state::set_cookie(
        &cookie_name,
        &state::cookie_value(&gate.sealer, &sealed),
        ttl,
    );

    let mut resp = if framed_page {
        let storage = login.storage.as_ref().zip(binder.as_deref());
        match cookie_check_page(gate, &params, &auth, &login.id, storage).await {
            Ok(page) => page,
            Err(e) => return respond::reject(&e, json),
        }
    } else {
        found(&auth)
    };
    let result = match (from_ticket, framed) {
        (true, _) => "new_window",
        (false, true) => "cookie_check",
        (false, false) => "redirected",
    };
    gate.metrics.lti13_logins.with_label_values(&[result]).inc();
    tracing::info!(
        platform = %platform.name,
        framed,
        from_ticket,
        "LTI 1.3 login"
    );

    set_state_cookie(&mut resp, &parts.headers, &cookie);
    resp
}

/// Adds the new state cookie to `resp`, deleting the oldest ones the
/// request carries beyond [`state::MAX_STATE_COOKIES`].
fn set_state_cookie(resp: &mut Response<Body>, request: &HeaderMap, cookie: &str) {
    let present =
        state::state_cookies(request.get_all(header::COOKIE).iter().map(|v| v.as_bytes()));
    let headers = resp.headers_mut();
    for old in state::to_evict(&present) {
        if let Ok(v) = HeaderValue::from_str(&state::delete_cookie(old)) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// The origin (`scheme://host[:port]`) of the platform's auth URL: where
/// platform storage messages go.
fn platform_origin(auth_login_url: &str) -> Option<String> {
    let origin = reqwest::Url::parse(auth_login_url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// A `302 Found` to `location`, not cached.
fn found(location: &str) -> Response<Body> {
    let mut resp = respond::see_other(location);
    if resp.status() == StatusCode::SEE_OTHER {
        *resp.status_mut() = StatusCode::FOUND;
    }
    resp
}

/// The parameters a login ticket holds, taken once.
async fn redeem(gate: &Gate, ticket: &str) -> Result<LoginParams, RouteError> {
    if ticket.is_empty() || ticket.len() > 128 {
        return Err(RouteError::TicketInvalid);
    }
    let taken = gate
        .store
        .take_ticket(&format!("{LOGIN_TICKET_PREFIX}{ticket}"))
        .await;
    let raw = match taken {
        Ok(Some(raw)) => {
            gate.metrics.store_ok();
            raw
        }
        Ok(None) => {
            gate.metrics.store_ok();
            return Err(RouteError::TicketInvalid);
        }
        Err(e) => {
            gate.metrics.store_failed("ticket");
            tracing::warn!(error = %e, "cannot redeem a login ticket");
            return Err(RouteError::StoreUnavailable);
        }
    };
    serde_json::from_slice::<LoginTicket>(&raw)
        .map(|t| t.params)
        .map_err(|_| RouteError::TicketInvalid)
}

/// The cookie-check page of a framed login: sets the state cookie (with
/// the response); when the platform offers storage, first puts the binder
/// there (`lti.put_data`, 1 s at most); asks `/lti/1.3/cookie-check`
/// whether the cookie came back; then goes on to the platform's auth URL
/// when the cookie came back or the binder was stored, and otherwise
/// offers a new window that re-runs the login from a single-use ticket.
async fn cookie_check_page(
    gate: &Gate,
    params: &LoginParams,
    auth: &str,
    state_id: &str,
    storage: Option<(&state::StorageBinding, &str)>,
) -> Result<Response<Body>, RouteError> {
    let ticket = crate::secret::random_token();
    let value = serde_json::to_vec(&LoginTicket {
        params: params.clone(),
    })
    .map_err(|_| RouteError::StoreUnavailable)?;
    if let Err(e) = gate
        .store
        .put_ticket(
            &format!("{LOGIN_TICKET_PREFIX}{ticket}"),
            &value,
            LOGIN_TICKET_TTL,
        )
        .await
    {
        gate.metrics.store_failed("ticket");
        tracing::warn!(error = %e, "cannot store a login ticket");
        return Err(RouteError::StoreUnavailable);
    }
    gate.metrics.store_ok();
    let short = state_id.get(..state::COOKIE_ID_LEN).unwrap_or(state_id);
    let check = format!(
        "{}?s={}",
        gate.public_path("/lti/1.3/cookie-check"),
        percent_encode(short.as_bytes())
    );
    let window = format!(
        "{}?ticket={}",
        gate.public_path("/lti/1.3/login"),
        percent_encode(ticket.as_bytes())
    );
    let body = format!(
        "<p id=\"wait\">Connecting to your LMS&hellip;</p>\
         <noscript><p><a href=\"{auth_html}\">Continue</a></p></noscript>\
         <div id=\"blocked\" hidden><p>Your browser blocks this tool inside the LMS page. Open it in a new window to continue.</p>\
         <p><a id=\"open\" href=\"{window_html}\" target=\"_blank\" rel=\"opener\" style=\"font-size:1.1rem\">Open in a new window</a></p></div>\
         <script>{STORAGE_JS}(function(){{\
         var auth={auth_js},check={check_js},storage={storage_js};\
         function blocked(){{document.getElementById('wait').hidden=true;document.getElementById('blocked').hidden=false;}}\
         function go(){{window.location.replace(auth);}}\
         ltigateStorage(storage,'put_data',function(stored){{\
         fetch(check,{{credentials:'same-origin',cache:'no-store'}}).then(function(r){{\
         if(r.status===204||stored){{go();}}else{{blocked();}}}},function(){{if(stored){{go();}}else{{blocked();}}}});\
         }});\
         }})();</script>",
        auth_html = respond::html_escape(auth),
        window_html = respond::html_escape(&window),
        auth_js = respond::js_string(auth),
        check_js = respond::js_string(&check),
        storage_js = storage_js(storage.map(|(b, binder)| (b, state_id, Some(binder)))),
    );
    let mut resp = respond::html(StatusCode::OK, respond::page("Connecting", &body));
    let h = resp.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-ltigate-fallback",
        HeaderValue::from_static("cookie-check"),
    );
    Ok(resp)
}

/// The platform storage client of ltigate's pages (the LTI client-side
/// postMessage API, DESIGN §13): `ltigateStorage(storage, op, done)` sends
/// `lti.put_data` (op `put_data`, with the value) or `lti.get_data` (op
/// `get_data`) — and the same under the older `org.imsglobal.lti.` subject
/// — to the storage frame, at the platform's origin only, and calls
/// `done` once: with `true` (put) or the value (get) when the platform
/// answers without error, with `false`/`null` on an error, a timeout (1 s,
/// 2 s for a get) or when no storage is offered (`storage` null).
pub const STORAGE_JS: &str = "function ltigateStorage(s,op,done){\
if(!s){done(op==='get_data'?null:false);return;}\
var id='ltigate-'+Math.random().toString(36).slice(2),over=false;\
function finish(v){if(over){return;}over=true;window.removeEventListener('message',on);done(v);}\
function on(e){if(e.origin!==s.origin){return;}var d=e.data;if(!d||typeof d!=='object'||d.message_id!==id){return;}\
if(d.subject!=='lti.'+op+'.response'&&d.subject!=='org.imsglobal.lti.'+op+'.response'){return;}\
if(d.error){finish(op==='get_data'?null:false);return;}\
finish(op==='get_data'?(typeof d.value==='string'?d.value:null):true);}\
window.addEventListener('message',on);\
var w=window.parent;try{if(s.target!=='_parent'&&w.frames[s.target]){w=w.frames[s.target];}}catch(e){}\
var m={message_id:id,key:s.key};if(op==='put_data'){m.value=s.value;}\
try{m.subject='lti.'+op;w.postMessage(m,s.origin);\
var o={};for(var k in m){o[k]=m[k];}o.subject='org.imsglobal.lti.'+op;w.postMessage(o,s.origin);}catch(e){finish(op==='get_data'?null:false);return;}\
setTimeout(function(){finish(op==='get_data'?null:false);},op==='get_data'?2000:1000);}";

/// The `storage` object of [`STORAGE_JS`] as JavaScript: target, origin,
/// key of the state, and the value to put (a put) — or `null`.
pub fn storage_js(storage: Option<(&state::StorageBinding, &str, Option<&str>)>) -> String {
    match storage {
        None => "null".to_string(),
        Some((binding, state_id, value)) => {
            let mut object = serde_json::json!({
                "target": binding.target,
                "origin": binding.origin,
                "key": state::storage_key(state_id),
            });
            if let (Some(v), Some(map)) = (value, object.as_object_mut()) {
                map.insert("value".into(), v.into());
            }
            format!("JSON.parse({})", respond::js_string(&object.to_string()))
        }
    }
}

/// `GET /lti/1.3/cookie-check?s=…`: 204 when the state cookie named by `s`
/// (16 characters) came back with this request, 404 otherwise.
pub fn cookie_check<B>(req: &Request<B>) -> Response<Body> {
    let pairs = query_pairs(req);
    let id = pairs
        .iter()
        .find(|(n, _)| n == "s")
        .map(|(_, v)| v.as_str())
        .filter(|v| v.len() == state::COOKIE_ID_LEN);
    let came_back = id.is_some_and(|id| {
        let name = state::cookie_name_for(id);
        state::state_cookies(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        )
        .contains(&name)
    });
    let status = if came_back {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    };
    let mut resp = Response::new(respond::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn login_parameters() {
        let p = LoginParams::from_pairs(&pairs(&[
            ("iss", "https://lms.example"),
            ("login_hint", "u1"),
            ("target_link_uri", "https://tool.example/lti/1.3/launch"),
            ("lti_message_hint", "a b&c=d%"),
            ("deployment_id", "d1"),
        ]))
        .unwrap();
        assert_eq!(p.client_id, None);
        assert_eq!(p.lti_message_hint.as_deref(), Some("a b&c=d%"));
        assert_eq!(p.deployment_id.as_deref(), Some("d1"));
        for missing in ["iss", "login_hint", "target_link_uri"] {
            let list: Vec<_> = [("iss", "i"), ("login_hint", "h"), ("target_link_uri", "t")]
                .into_iter()
                .filter(|(n, _)| *n != missing)
                .collect();
            let e = LoginParams::from_pairs(&pairs(&list)).unwrap_err();
            assert_eq!(e, format!("{missing} is missing"));
        }
    }

    #[test]
    fn only_targets_below_the_public_url() {
        let base = "https://tool.example/lms";
        assert!(target_allowed(base, base));
        assert!(target_allowed(
            base,
            "https://tool.example/lms/lti/1.3/launch/C-1"
        ));
        assert!(target_allowed(base, "https://tool.example/lms?x=1"));
        for bad in [
            "https://tool.example/lmsx",
            "https://tool.example.evil/lms/",
            "https://tool.example",
            "https://evil.example/lms/",
            "javascript:alert(1)",
        ] {
            assert!(!target_allowed(base, bad), "{bad}");
        }
    }
}
