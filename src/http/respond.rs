//! The one place that turns outcomes into HTTP responses: error pages (HTML,
//! or JSON when the client prefers it), redirects and small bodies. Input is
//! never echoed unescaped.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::access_log::LogReason;
use super::Body;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a request's `Accept` header prefers JSON to HTML (error pages
/// are then JSON).
pub fn prefers_json(headers: &HeaderMap) -> bool {
    accepts_json(headers.get(header::ACCEPT))
}

/// [`prefers_json`] from the `Accept` value alone (kept by requests that
/// give their headers away before they may need an error page).
pub fn accepts_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut json = -1.0f32;
    let mut html = -1.0f32;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = || {
            parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0)
        };
        if media.eq_ignore_ascii_case("application/json") {
            json = json.max(q());
        } else if media.eq_ignore_ascii_case("text/html") {
            html = html.max(q());
        }
    }
    json > 0.0 && json > html
}

fn base(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An error one boundary answers with. Each boundary — ltigate's own public
/// routes, the proxy, the webhook, the admin listener — has one enum that
/// implements this, and [`reject`] is the one place that renders any of
/// them: HTML, or JSON when the client prefers it, always `no-store`, with
/// the label recorded for the access log.
pub trait HttpError {
    /// The response status.
    fn status(&self) -> StatusCode;
    /// A stable machine-readable label: the JSON `error` field, the access
    /// log's `reason` and, where the boundary counts its errors, the metric
    /// label.
    fn label(&self) -> &'static str;
    /// The human text shown to the client. Never carries input unescaped
    /// (HTML escaping happens here, in [`reject`]) and never a secret.
    fn message(&self) -> std::borrow::Cow<'static, str>;
    /// The reason the access log records: the label, unless the boundary
    /// tells the client less than it knows (a session refused as expired is
    /// shown `no_session`).
    fn reason(&self) -> &'static str {
        self.label()
    }
    /// Headers the answer must carry besides the body's own (`Retry-After`,
    /// `Allow`, `WWW-Authenticate`, …).
    fn add_headers(&self, _headers: &mut HeaderMap) {}
    /// Members the JSON body carries besides `error`, `message` and
    /// `status` (the `field` an invalid request names, …); an HTML page
    /// shows only the message. Never input unchecked, never a secret.
    fn add_json(&self, _body: &mut serde_json::Map<String, serde_json::Value>) {}
}

/// The response for a boundary's error: see [`HttpError`].
pub fn reject(err: &impl HttpError, json: bool) -> Response<Body> {
    let mut extra = serde_json::Map::new();
    if json {
        err.add_json(&mut extra);
    }
    let mut resp = error_body(err.status(), err.label(), &err.message(), json, extra);
    err.add_headers(resp.headers_mut());
    resp.extensions_mut().insert(LogReason(err.reason()));
    resp
}

/// An error page: `code` is a stable machine-readable label (the metric
/// label where there is one), `message` the human text. Boundaries answer
/// through [`reject`]; this is what it renders with.
pub fn error(status: StatusCode, code: &'static str, message: &str, json: bool) -> Response<Body> {
    let mut resp = error_body(status, code, message, json, serde_json::Map::new());
    resp.extensions_mut().insert(LogReason(code));
    resp
}

fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    json: bool,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> Response<Body> {
    if json {
        // The three fixed members win over a boundary's extra ones.
        extra.insert("error".into(), code.into());
        extra.insert("message".into(), message.into());
        extra.insert("status".into(), status.as_u16().into());
        let body = serde_json::Value::Object(extra);
        return base(status, "application/json", full(body.to_string()));
    }
    let title = status.canonical_reason().unwrap_or("Error");
    base(
        status,
        "text/html; charset=utf-8",
        full(page(title, &format!("<p>{}</p>", html_escape(message)))),
    )
}

/// A small self-contained HTML page; `body_html` must already be escaped.
pub fn page(title: &str, body_html: &str) -> String {
    page_with_head(title, "", body_html)
}

/// [`page`] with extra `<head>` markup (already escaped) after the title.
pub fn page_with_head(title: &str, head_html: &str, body_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{t}</title>{head_html}<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.3rem}}</style></head><body><h1>{t}</h1>{body_html}</body></html>\n",
        t = html_escape(title)
    )
}

/// A JavaScript string literal of `s`, safe inside an inline `<script>`:
/// JSON, with `<`, `>`, `&` and the two line separators escaped, so no
/// value can close the script element or break the literal.
pub fn js_string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML response with status 200.
pub fn html(status: StatusCode, html: String) -> Response<Body> {
    base(status, "text/html; charset=utf-8", full(html))
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    base(status, "application/json", full(value.to_string()))
}

/// A JSON response from a document serialised already.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    base(status, "application/json", full(body))
}

/// A plain-text response.
pub fn text(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    base(status, "text/plain; charset=utf-8", full(text))
}

/// `303 See Other` to `location` (already a valid URL or path).
pub fn see_other(location: &str) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad_redirect",
                "The redirect target is not a valid URL.",
                false,
            )
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            html_escape("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }

    #[test]
    fn js_strings_cannot_close_the_script() {
        let js = js_string("</script><!--\"'&\u{2028}\\");
        assert_eq!(
            js,
            "\"\\u003c/script\\u003e\\u003c!--\\\"'\\u0026\\u2028\\\\\""
        );
        assert!(!js.contains('<') && !js.contains('>'));
        // Still the same string once parsed back.
        let back: String = serde_json::from_str(&js).unwrap();
        assert_eq!(back, "</script><!--\"'&\u{2028}\\");
        assert_eq!(js_string("/courses/C-1"), "\"/courses/C-1\"");
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!prefers_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(prefers_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,application/json;q=0.9"),
        );
        assert!(!prefers_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html;q=0.5, application/json"),
        );
        assert!(prefers_json(&h));
        // Media types are case-insensitive; a bad q counts as 1.
        for (accept, json) in [
            ("Application/JSON", true),
            ("TEXT/HTML, application/json;q=0.8", false),
            ("application/json;q=x, text/html;q=0.9", true),
            ("application/json;q=0", false),
        ] {
            assert_eq!(
                accepts_json(Some(&HeaderValue::from_static(accept))),
                json,
                "{accept}"
            );
        }
        assert!(!accepts_json(None));
    }
}
