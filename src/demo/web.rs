//! What the demo LMS and the demo platform share: the page frame, body
//! reading, small formatting helpers.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::http::respond::{self, html_escape};
use crate::http::Body;

/// Which of the two demo sites a page belongs to (they look different on
/// purpose, so a screenshot shows which one is which).
#[derive(Debug, Clone, Copy)]
pub enum Site {
    /// The demo LMS.
    Lms,
    /// The demo learning platform.
    Platform,
}

impl Site {
    fn name(self) -> &'static str {
        match self {
            Site::Lms => "Demo LMS",
            Site::Platform => "Demo learning platform",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Site::Lms => "#1d4f91",
            Site::Platform => "#1f7a4d",
        }
    }
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1c1c1c;background:#f4f5f7;font-size:15px;line-height:1.45}\
header{color:#fff;padding:.7rem 1.2rem;display:flex;justify-content:space-between;align-items:center}\
header .brand{font-weight:700;font-size:1.1rem}\
header .who{font-size:.9rem;opacity:.9}\
main{padding:1rem 1.2rem;max-width:80rem;margin:0 auto}\
h1{font-size:1.35rem;margin:.2rem 0 .8rem}\
h2{font-size:1.05rem;margin:1rem 0 .5rem}\
.card{background:#fff;border:1px solid #dcdfe4;border-radius:6px;padding:.9rem 1rem;margin-bottom:1rem}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e6e8eb;vertical-align:top}\
th{font-weight:600;color:#444;font-size:.9rem}\
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}\
button{font:inherit;font-weight:600;color:#fff;border:0;border-radius:5px;padding:.45rem 1rem;cursor:pointer}\
select,input{font:inherit;padding:.3rem .4rem;border:1px solid #b8bcc2;border-radius:4px}\
.muted{color:#666;font-size:.9rem}\
.ok{color:#17643c;font-weight:600}\
.bad{color:#a3261b;font-weight:600}\
.grade{font-weight:700}\
iframe{width:100%;height:35rem;border:2px solid #c5cad1;border-radius:6px;background:#fff}\
.row{display:flex;gap:1rem;align-items:flex-start}\
.row>.wide{flex:3}.row>.narrow{flex:2}\
.course{display:grid;grid-template-columns:minmax(0,1fr) 22rem;gap:1rem;align-items:start}\
.course iframe{height:calc(100vh - 8rem);min-height:28rem}\
.course aside h2{margin-top:0}\
.course aside th,.course aside td{padding:.35rem .4rem}\
.course aside td+td{white-space:nowrap}\
@media (max-width:56rem){.course{grid-template-columns:minmax(0,1fr)}.course aside{order:-1}}\
@media (max-width:40rem){.row{flex-direction:column;align-items:stretch}}";

/// A complete page of `site`; `who` (already HTML) is shown top right and
/// `body` (already HTML) below the header.
pub fn page(site: Site, title: &str, who: &str, body: &str) -> String {
    let colour = site.colour();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · {name}</title>\
         <style>{STYLE}header{{background:{colour}}}button{{background:{colour}}}</style></head>\
         <body><header><span class=\"brand\">{name}</span><span class=\"who\">{who}</span></header>\
         <main>{body}</main></body></html>\n",
        title = html_escape(title),
        name = site.name(),
    )
}

/// A small error page of `site`.
pub fn error_page(site: Site, status: StatusCode, message: &str) -> Response<Body> {
    let title = status.canonical_reason().unwrap_or("Error");
    respond::html(
        status,
        page(
            site,
            title,
            "",
            &format!(
                "<h1>{}</h1><div class=\"card\"><p>{}</p></div>",
                html_escape(title),
                html_escape(message)
            ),
        ),
    )
}

/// Reads a request body of at most `limit` bytes; a larger one is a 413.
pub async fn read_body<B>(req: Request<B>, limit: usize) -> Result<Bytes, StatusCode>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// The first value of a query parameter.
pub fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    crate::http::query_pairs(req)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// `HH:MM:SS UTC` of a Unix time.
pub fn clock(unix: u64) -> String {
    let s = unix % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// A score 0.0–1.0 as a percentage rounded to one decimal: `85`, `85.5`.
pub fn percent_value(score: f64) -> f64 {
    (score * 1000.0).round() / 10.0
}

/// A score 0.0–1.0 as a percentage: `85%`, `85.5%`.
pub fn percent(score: f64) -> String {
    format!("{}%", percent_value(score))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(clock(86_400 + 3600 * 13 + 60 * 5 + 9), "13:05:09 UTC");
        assert_eq!(percent(0.85), "85%");
        assert_eq!(percent(0.855), "85.5%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.0), "0%");
    }

    #[test]
    fn pages_escape_the_title() {
        let p = page(Site::Lms, "<x>", "", "");
        assert!(p.contains("&lt;x&gt;"));
        assert!(!p.contains("<x>"));
    }
}
