//! IMS LTI Basic Outcomes 1.1 (POX) messages: building `replaceResult` /
//! `readResult` / `deleteResult` requests, parsing the consumer's responses, and
//! the consumer side of both (for fake and demo LMSs).
//!
//! Parsing matches local element names whatever the namespace or prefix, never
//! expands entities (a `<!DOCTYPE` or `<!ENTITY` anywhere is rejected, undefined
//! entity references are errors) and does work linear in the input size.

use std::fmt::Write as _;

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::Event;
use quick_xml::Reader;

/// Namespace of LTI 1.1 Basic Outcomes envelopes.
pub const POX_NAMESPACE: &str = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0";

/// Elements nested deeper than this are rejected as malformed.
pub const MAX_DEPTH: usize = 64;

/// An outcome operation on one result record.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `replaceResult` with a score in [0.0, 1.0].
    Replace {
        /// The score, 0.0–1.0.
        score: f64,
    },
    /// `readResult`.
    Read,
    /// `deleteResult`.
    Delete,
}

impl Operation {
    /// The operation name as used in `imsx_operationRefIdentifier`
    /// (`replaceResult`, `readResult`, `deleteResult`); the request element is this
    /// name + `Request`, the response element this name + `Response`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Replace { .. } => "replaceResult",
            Self::Read => "readResult",
            Self::Delete => "deleteResult",
        }
    }
}

/// Errors building or parsing POX messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoxError {
    /// A score that is not a finite number in [0.0, 1.0] (or is missing from a
    /// `replaceResultRequest`).
    #[error("score must be a finite number between 0.0 and 1.0")]
    BadScore,
    /// Not well-formed XML, too deeply nested, or containing a DTD / entity
    /// declaration or an undefined entity reference.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Well-formed XML that is not a POX envelope (no `imsx_codeMajor` in a
    /// response, no operation in a request).
    #[error("not a POX envelope")]
    NotPox,
    /// A request names an operation other than replace/read/deleteResult.
    #[error("unsupported operation {0}")]
    UnsupportedOperation(String),
    /// A required element of a request is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A value to be sent contains a character XML 1.0 cannot carry.
    #[error("{0} contains a character not allowed in XML")]
    InvalidXmlChar(&'static str),
}

/// Whether XML 1.0 allows `c` in character data.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Escapes `value` into `out`; `attribute` also escapes tab and newline.
fn escape_into(value: &str, attribute: bool, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'` for XML character data, and a carriage
/// return as `&#13;` (an XML processor turns a literal one into a newline).
/// Characters XML 1.0 cannot carry at all (most C0 controls, U+FFFE, U+FFFF) are
/// dropped, so the output is always well-formed.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, false, &mut out);
    out
}

/// Like [`xml_escape`], for attribute values: tab and newline are written as
/// `&#9;` and `&#10;` too, since an XML processor turns literal ones into
/// spaces there.
pub fn xml_escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, true, &mut out);
    out
}

/// Escapes `value` for XML, or fails when it holds a character XML cannot carry.
fn escape_checked(value: &str, what: &'static str) -> Result<String, PoxError> {
    if value.chars().all(is_xml_char) {
        Ok(xml_escape(value))
    } else {
        Err(PoxError::InvalidXmlChar(what))
    }
}

/// Formats a score as a plain decimal: `.` separator, never an exponent, the
/// shortest form that reads back as the same number (`0.8`, `1`, `0`,
/// `0.0000001`). NaN, infinities and values outside [0.0, 1.0] are
/// [`PoxError::BadScore`].
pub fn format_score(score: f64) -> Result<String, PoxError> {
    if !score.is_finite() || !(0.0..=1.0).contains(&score) {
        return Err(PoxError::BadScore);
    }
    if score == 0.0 {
        // Also turns -0.0 into "0".
        return Ok("0".to_owned());
    }
    // `Display` for f64 prints the shortest round-trip digits without an exponent.
    Ok(score.to_string())
}

/// Parses a score text as a consumer does: trimmed decimal, finite, in [0.0, 1.0].
fn parse_score(text: &str) -> Result<f64, PoxError> {
    let score: f64 = text.trim().parse().map_err(|_| PoxError::BadScore)?;
    if score.is_finite() && (0.0..=1.0).contains(&score) {
        Ok(score)
    } else {
        Err(PoxError::BadScore)
    }
}

/// Builds an `imsx_POXEnvelopeRequest` for `op` on the result `sourced_id`
/// (the launch's `lis_result_sourcedid`, verbatim; XML-escaped here).
///
/// Fails with [`PoxError::BadScore`] for a replace score that is not finite or
/// not in [0.0, 1.0], and with [`PoxError::InvalidXmlChar`] when an identifier
/// holds a character XML cannot carry.
pub fn build_request(
    message_id: &str,
    sourced_id: &str,
    op: &Operation,
) -> Result<String, PoxError> {
    let message_id = escape_checked(message_id, "message identifier")?;
    let sourced_id = escape_checked(sourced_id, "sourcedId")?;
    let result = match op {
        Operation::Replace { score } => format!(
            "<result><resultScore><language>en</language><textString>{}</textString></resultScore></result>",
            format_score(*score)?
        ),
        Operation::Read | Operation::Delete => String::new(),
    };
    let name = op.name();
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <imsx_POXEnvelopeRequest xmlns=\"{POX_NAMESPACE}\">\n\
         <imsx_POXHeader><imsx_POXRequestHeaderInfo>\
         <imsx_version>V1.0</imsx_version>\
         <imsx_messageIdentifier>{message_id}</imsx_messageIdentifier>\
         </imsx_POXRequestHeaderInfo></imsx_POXHeader>\n\
         <imsx_POXBody><{name}Request><resultRecord>\
         <sourcedGUID><sourcedId>{sourced_id}</sourcedId></sourcedGUID>\
         {result}\
         </resultRecord></{name}Request></imsx_POXBody>\n\
         </imsx_POXEnvelopeRequest>\n"
    ))
}

/// `imsx_codeMajor` of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeMajor {
    /// `success`.
    Success,
    /// `processing`: accepted, not finished.
    Processing,
    /// `failure`.
    Failure,
    /// `unsupported`: the operation is not supported.
    Unsupported,
    /// Any other value, trimmed, as sent.
    Other(String),
}

impl CodeMajor {
    /// Parses a code, trimmed and case-insensitively.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        [
            ("success", Self::Success),
            ("processing", Self::Processing),
            ("failure", Self::Failure),
            ("unsupported", Self::Unsupported),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map_or_else(|| Self::Other(s.to_owned()), |(_, code)| code)
    }

    /// The wire form (`success`, …; `Other` as held).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Success => "success",
            Self::Processing => "processing",
            Self::Failure => "failure",
            Self::Unsupported => "unsupported",
            Self::Other(s) => s,
        }
    }
}

/// The parts of an `imsx_POXEnvelopeResponse` that a tool acts on. Text values
/// are unescaped and trimmed; absent elements give empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoxResponse {
    /// `imsx_codeMajor`.
    pub code_major: CodeMajor,
    /// `imsx_severity` (`status`, `warning`, `error`).
    pub severity: String,
    /// `imsx_description`: the consumer's free text.
    pub description: String,
    /// `imsx_messageRefIdentifier`: the request's message identifier.
    pub message_ref: String,
    /// `imsx_operationRefIdentifier`.
    pub operation_ref: String,
    /// `readResultResponse/result/resultScore/textString` when present.
    pub score: Option<String>,
}

/// One step of a document walk.
enum Step<'t> {
    /// An element opened; the path ends with it.
    Open,
    /// Character data (unescaped text or CDATA) inside the element ending the path.
    Text(&'t str),
    /// The element ending the path closes.
    Close,
}

/// Whether `<!` followed by `keyword` (any case) occurs in `body`.
fn has_declaration(body: &[u8], keyword: &[u8]) -> bool {
    body.windows(keyword.len().saturating_add(2)).any(|w| {
        w.starts_with(b"<!") && w.get(2..).is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

/// Walks `body` as XML, calling `visit` with the path of local element names for
/// each step. Rejects DTDs, undefined entities, mismatched or unclosed elements,
/// invalid UTF-8 and nesting deeper than [`MAX_DEPTH`].
fn walk(body: &[u8], mut visit: impl FnMut(&[String], Step<'_>)) -> Result<(), PoxError> {
    if has_declaration(body, b"DOCTYPE") || has_declaration(body, b"ENTITY") {
        return Err(PoxError::Malformed(
            "DOCTYPE and ENTITY declarations are not allowed".to_owned(),
        ));
    }
    let mut reader = Reader::from_reader(body);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.allow_unmatched_ends = false;
    let mut path: Vec<String> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| {
            PoxError::Malformed(format!("{e} (at byte {})", reader.error_position()))
        })?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                if path.len() >= MAX_DEPTH {
                    return Err(PoxError::Malformed("elements nested too deeply".to_owned()));
                }
                path.push(String::from_utf8_lossy(start.local_name().as_ref()).into_owned());
                visit(&path, Step::Open);
                if is_empty {
                    visit(&path, Step::Close);
                    path.pop();
                }
            }
            Event::End(_) => {
                visit(&path, Step::Close);
                path.pop();
            }
            Event::Text(text) => {
                let text = text
                    .unescape_with(resolve_xml_entity)
                    .map_err(|e| PoxError::Malformed(e.to_string()))?;
                if !path.is_empty() {
                    visit(&path, Step::Text(&text));
                }
            }
            Event::CData(data) => {
                let text = data
                    .decode()
                    .map_err(|e| PoxError::Malformed(e.to_string()))?;
                if !path.is_empty() {
                    visit(&path, Step::Text(&text));
                }
            }
            Event::DocType(_) => {
                return Err(PoxError::Malformed("DOCTYPE is not allowed".to_owned()));
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if path.is_empty() {
        Ok(())
    } else {
        Err(PoxError::Malformed("unexpected end of document".to_owned()))
    }
}

/// Whether `path` ends with the element names in `suffix`.
fn ends_with(path: &[String], suffix: &[&str]) -> bool {
    path.len() >= suffix.len()
        && path
            .iter()
            .rev()
            .zip(suffix.iter().rev())
            .all(|(a, b)| a == b)
}

/// Collects the text of the first element matching each of a set of path
/// suffixes.
struct Collector<'s> {
    suffixes: &'s [&'s [&'s str]],
    values: Vec<Option<String>>,
    /// The field being collected and the depth of its element.
    current: Option<(usize, usize)>,
    buffer: String,
}

impl<'s> Collector<'s> {
    fn new(suffixes: &'s [&'s [&'s str]]) -> Self {
        Self {
            suffixes,
            values: vec![None; suffixes.len()],
            current: None,
            buffer: String::new(),
        }
    }

    fn step(&mut self, path: &[String], step: Step<'_>) {
        match step {
            Step::Open => {
                if self.current.is_some() {
                    return;
                }
                let field = self
                    .suffixes
                    .iter()
                    .zip(&self.values)
                    .position(|(suffix, value)| value.is_none() && ends_with(path, suffix));
                if let Some(field) = field {
                    self.current = Some((field, path.len()));
                    self.buffer.clear();
                }
            }
            Step::Text(text) => {
                if self.current.is_some() {
                    self.buffer.push_str(text);
                }
            }
            Step::Close => {
                if let Some((field, depth)) = self.current {
                    if depth == path.len() {
                        if let Some(slot) = self.values.get_mut(field) {
                            *slot = Some(self.buffer.clone());
                        }
                        self.current = None;
                    }
                }
            }
        }
    }

    /// The collected value of field `i`, surrounding whitespace trimmed.
    fn take(&mut self, i: usize) -> Option<String> {
        self.take_verbatim(i).map(|v| v.trim().to_owned())
    }

    /// The collected value of field `i` as it was (an identifier).
    fn take_verbatim(&mut self, i: usize) -> Option<String> {
        self.values.get_mut(i).and_then(Option::take)
    }
}

const RESPONSE_FIELDS: [&[&str]; 6] = [
    &["imsx_statusInfo", "imsx_codeMajor"],
    &["imsx_statusInfo", "imsx_severity"],
    &["imsx_statusInfo", "imsx_description"],
    &["imsx_statusInfo", "imsx_messageRefIdentifier"],
    &["imsx_statusInfo", "imsx_operationRefIdentifier"],
    &["readResultResponse", "result", "resultScore", "textString"],
];

/// Parses a consumer's `imsx_POXEnvelopeResponse` (whatever the HTTP status).
///
/// Elements are matched by local name, so any namespace or prefix works (the
/// old `http://www.imsglobal.org/lis/oms1p0/pox` namespace too). The first
/// `imsx_statusInfo/imsx_codeMajor` decides the code; without one the result is
/// [`PoxError::NotPox`]. Any DTD or entity declaration, undefined entity, or
/// XML error is [`PoxError::Malformed`].
pub fn parse_response(body: &[u8]) -> Result<PoxResponse, PoxError> {
    let mut fields = Collector::new(&RESPONSE_FIELDS);
    walk(body, |path, step| fields.step(path, step))?;
    let code_major = fields.take(0).ok_or(PoxError::NotPox)?;
    Ok(PoxResponse {
        code_major: CodeMajor::parse(&code_major),
        severity: fields.take(1).unwrap_or_default(),
        description: fields.take(2).unwrap_or_default(),
        message_ref: fields.take(3).unwrap_or_default(),
        operation_ref: fields.take(4).unwrap_or_default(),
        score: fields.take(5),
    })
}

/// A tool's outcome request as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoxRequest {
    /// `imsx_messageIdentifier`.
    pub message_id: String,
    /// `sourcedGUID/sourcedId`, unescaped and verbatim (whitespace included:
    /// it is the consumer's identifier, echoed as the launch sent it).
    pub sourced_id: String,
    /// The requested operation.
    pub operation: Operation,
}

const REQUEST_FIELDS: [&[&str]; 3] = [
    &["imsx_POXRequestHeaderInfo", "imsx_messageIdentifier"],
    &["resultRecord", "sourcedGUID", "sourcedId"],
    &["resultRecord", "result", "resultScore", "textString"],
];

/// Parses an `imsx_POXEnvelopeRequest` (for fake and demo consumers), with the
/// same robustness as [`parse_response`].
///
/// No operation element under `imsx_POXBody` is [`PoxError::NotPox`]; an unknown
/// one [`PoxError::UnsupportedOperation`]; a missing message identifier or
/// sourcedId [`PoxError::Missing`]; a replace score that is missing, not
/// numeric, not finite or outside [0.0, 1.0] [`PoxError::BadScore`].
pub fn parse_request(body: &[u8]) -> Result<PoxRequest, PoxError> {
    let mut fields = Collector::new(&REQUEST_FIELDS);
    let mut operation: Option<String> = None;
    walk(body, |path, step| {
        if matches!(step, Step::Open) && operation.is_none() {
            if let Some((name, parents)) = path.split_last() {
                if ends_with(parents, &["imsx_POXBody"]) {
                    operation = Some(name.clone());
                }
            }
        }
        fields.step(path, step);
    })?;
    let operation = operation.ok_or(PoxError::NotPox)?;
    let operation = match operation.as_str() {
        "replaceResultRequest" => {
            let text = fields.take(2).ok_or(PoxError::BadScore)?;
            Operation::Replace {
                score: parse_score(&text)?,
            }
        }
        "readResultRequest" => Operation::Read,
        "deleteResultRequest" => Operation::Delete,
        _ => return Err(PoxError::UnsupportedOperation(operation)),
    };
    let message_id = fields
        .take(0)
        .ok_or(PoxError::Missing("imsx_messageIdentifier"))?;
    let sourced_id = fields
        .take_verbatim(1)
        .filter(|id| !id.trim().is_empty())
        .ok_or(PoxError::Missing("sourcedId"))?;
    Ok(PoxRequest {
        message_id,
        sourced_id,
        operation,
    })
}

/// Builds an `imsx_POXEnvelopeResponse` (for fake and demo consumers).
///
/// `message_ref` echoes the request's identifier, `operation_ref` its operation
/// name (`replaceResult`, `readResult`, `deleteResult`). The severity follows the
/// code (`status` for success/processing, `error` otherwise). The body holds
/// `<operation_ref>Response` for those three operations (with
/// `result/resultScore` when `operation_ref` is `readResult` and `read_score` is
/// given) and is empty for anything else. Every value is XML-escaped.
pub fn build_response(
    message_id: &str,
    message_ref: &str,
    operation_ref: &str,
    code_major: &CodeMajor,
    description: &str,
    read_score: Option<&str>,
) -> String {
    let severity = match code_major {
        CodeMajor::Success | CodeMajor::Processing => "status",
        CodeMajor::Failure | CodeMajor::Unsupported | CodeMajor::Other(_) => "error",
    };
    let mut body = String::new();
    if matches!(
        operation_ref,
        "replaceResult" | "readResult" | "deleteResult"
    ) {
        match (operation_ref, read_score) {
            ("readResult", Some(score)) => {
                let _ = write!(
                    body,
                    "<readResultResponse><result><resultScore><language>en</language>\
                     <textString>{}</textString></resultScore></result></readResultResponse>",
                    xml_escape(score)
                );
            }
            _ => {
                let _ = write!(body, "<{operation_ref}Response/>");
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <imsx_POXEnvelopeResponse xmlns=\"{POX_NAMESPACE}\">\n\
         <imsx_POXHeader><imsx_POXResponseHeaderInfo>\
         <imsx_version>V1.0</imsx_version>\
         <imsx_messageIdentifier>{}</imsx_messageIdentifier>\
         <imsx_statusInfo>\
         <imsx_codeMajor>{}</imsx_codeMajor>\
         <imsx_severity>{severity}</imsx_severity>\
         <imsx_description>{}</imsx_description>\
         <imsx_messageRefIdentifier>{}</imsx_messageRefIdentifier>\
         <imsx_operationRefIdentifier>{}</imsx_operationRefIdentifier>\
         </imsx_statusInfo>\
         </imsx_POXResponseHeaderInfo></imsx_POXHeader>\n\
         <imsx_POXBody>{body}</imsx_POXBody>\n\
         </imsx_POXEnvelopeResponse>\n",
        xml_escape(message_id),
        xml_escape(code_major.as_str()),
        xml_escape(description),
        xml_escape(message_ref),
        xml_escape(operation_ref),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOODLE_SOURCED_ID: &str = r#"{"data":{"instanceid":"2","userid":"3","typeid":"1","launchid":1392034589},"hash":"6b4f0ab7d1c3f2e5e1c0d6b1a5c7e2f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4"}"#;

    #[test]
    fn score_formatting() {
        let cases: &[(f64, &str)] = &[
            (0.8, "0.8"),
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "0"),
            (0.123456789, "0.123456789"),
            (1e-7, "0.0000001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.5, "0.5"),
            (1.0 / 3.0, "0.3333333333333333"),
        ];
        for (score, expected) in cases {
            assert_eq!(format_score(*score).as_deref(), Ok(*expected), "{score}");
        }
        let tiny = format_score(f64::MIN_POSITIVE).unwrap_or_default();
        assert!(tiny.starts_with("0.000") && !tiny.contains('e'), "{tiny}");
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.1,
            1.0000001,
            2.0,
            -f64::MIN_POSITIVE,
        ] {
            assert_eq!(format_score(bad), Err(PoxError::BadScore), "{bad}");
        }
    }

    #[test]
    fn formatted_scores_round_trip() {
        for score in [0.0, 1.0, 0.8, 1e-7, 0.123456789, 0.999999999999, 5e-324] {
            let text = format_score(score).unwrap_or_default();
            assert_eq!(text.parse::<f64>().ok(), Some(score), "{text}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape(r#"a&b<c>d"e'f"#),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f"
        );
        assert_eq!(xml_escape("plain ü\t\n"), "plain ü\t\n");
        assert_eq!(xml_escape("a\u{0}b\u{1b}c\u{FFFE}"), "abc");
        assert_eq!(
            xml_escape_attr("a\tb\nc\rd<\u{0}"),
            "a&#9;b&#10;c&#13;d&lt;"
        );
    }

    #[test]
    fn carriage_return_survives_xml_processors() {
        // XML 1.0 §2.11: a processor reads a literal CR (alone or before LF) as
        // LF, so a CR in a value must go out as a character reference.
        assert_eq!(xml_escape("a\rb\r\nc"), "a&#13;b&#13;\nc");
        let id = "line1\r\nline2\rend";
        let xml = build_request("m\r1", id, &Operation::Read).unwrap_or_default();
        assert!(!xml.contains('\r'), "{xml:?}");
        let parsed = parse_request(xml.as_bytes());
        assert_eq!(parsed.as_ref().map(|r| r.sourced_id.as_str()), Ok(id));
        assert_eq!(parsed.as_ref().map(|r| r.message_id.as_str()), Ok("m\r1"));
        let response = build_response("m", "r\r", "readResult", &CodeMajor::Success, "d\re", None);
        assert!(!response.contains('\r'), "{response:?}");
    }

    #[test]
    fn a_sourced_id_keeps_its_whitespace() {
        for id in [" s-1", "s-1 ", "a\tb\n", "\u{a0}x"] {
            let xml = build_request("m", id, &Operation::Read).unwrap_or_default();
            let parsed = parse_request(xml.as_bytes());
            assert_eq!(parsed.map(|r| r.sourced_id), Ok(id.to_owned()), "{id:?}");
        }
        let blank = build_request("m", "s", &Operation::Read)
            .unwrap_or_default()
            .replace("<sourcedId>s<", "<sourcedId> \n <");
        assert_eq!(
            parse_request(blank.as_bytes()),
            Err(PoxError::Missing("sourcedId"))
        );
    }

    #[test]
    fn replace_request_shape() {
        let xml =
            build_request("msg-1", "src-1", &Operation::Replace { score: 0.8 }).unwrap_or_default();
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            "{xml}"
        );
        assert!(xml.contains(
            "<imsx_POXEnvelopeRequest xmlns=\"http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0\">"
        ));
        assert!(xml.contains("<imsx_version>V1.0</imsx_version>"));
        assert!(xml.contains("<imsx_messageIdentifier>msg-1</imsx_messageIdentifier>"));
        assert!(xml.contains(
            "<replaceResultRequest><resultRecord><sourcedGUID><sourcedId>src-1</sourcedId></sourcedGUID>\
             <result><resultScore><language>en</language><textString>0.8</textString></resultScore></result>\
             </resultRecord></replaceResultRequest>"
        ));
        for op in [Operation::Read, Operation::Delete] {
            let xml = build_request("m", "s", &op).unwrap_or_default();
            let name = op.name();
            assert!(xml.contains(&format!(
                "<{name}Request><resultRecord><sourcedGUID><sourcedId>s</sourcedId></sourcedGUID></resultRecord></{name}Request>"
            )), "{xml}");
            assert!(!xml.contains("<result>"));
        }
    }

    #[test]
    fn build_request_rejects_bad_input() {
        for score in [f64::NAN, 1.5, -1.0, f64::INFINITY] {
            assert_eq!(
                build_request("m", "s", &Operation::Replace { score }),
                Err(PoxError::BadScore)
            );
        }
        assert_eq!(
            build_request("m", "s\u{1}", &Operation::Read),
            Err(PoxError::InvalidXmlChar("sourcedId"))
        );
        assert_eq!(
            build_request("m\u{0}", "s", &Operation::Read),
            Err(PoxError::InvalidXmlChar("message identifier"))
        );
    }

    #[test]
    fn request_round_trips() {
        let ids = [
            "plain",
            "a<b&c>d",
            r#"quotes " and ' both"#,
            MOODLE_SOURCED_ID,
            "feb-123-456-2929::28883",
            "ünïcödé 🎓",
            "&amp; literally",
            "]]> cdata end",
        ];
        let ops = [
            Operation::Replace { score: 0.8 },
            Operation::Replace { score: 0.0 },
            Operation::Replace { score: 1.0 },
            Operation::Replace { score: 1e-7 },
            Operation::Read,
            Operation::Delete,
        ];
        for id in ids {
            for op in &ops {
                let xml = build_request("msg <1>", id, op).unwrap_or_default();
                assert_eq!(
                    parse_request(xml.as_bytes()),
                    Ok(PoxRequest {
                        message_id: "msg <1>".to_owned(),
                        sourced_id: id.to_owned(),
                        operation: op.clone(),
                    }),
                    "{xml}"
                );
            }
        }
    }

    #[test]
    fn moodle_sourced_id_is_escaped() {
        let xml = build_request("1", MOODLE_SOURCED_ID, &Operation::Replace { score: 1.0 })
            .unwrap_or_default();
        assert!(
            xml.contains("{&quot;data&quot;:{&quot;instanceid&quot;"),
            "{xml}"
        );
        assert!(!xml.contains(MOODLE_SOURCED_ID));
    }

    #[test]
    fn response_round_trips() {
        let codes = [
            CodeMajor::Success,
            CodeMajor::Processing,
            CodeMajor::Failure,
            CodeMajor::Unsupported,
            CodeMajor::Other("weird".to_owned()),
        ];
        for code in codes {
            for (op, score) in [
                ("replaceResult", None),
                ("readResult", Some("0.75")),
                ("readResult", None),
                ("deleteResult", None),
                ("fooResult", None),
            ] {
                let xml = build_response(
                    "resp-1",
                    "req <&> 1",
                    op,
                    &code,
                    "Score for \"x\" & y",
                    score,
                );
                let parsed = parse_response(xml.as_bytes());
                let expected_severity = match code {
                    CodeMajor::Success | CodeMajor::Processing => "status",
                    _ => "error",
                };
                assert_eq!(
                    parsed,
                    Ok(PoxResponse {
                        code_major: code.clone(),
                        severity: expected_severity.to_owned(),
                        description: "Score for \"x\" & y".to_owned(),
                        message_ref: "req <&> 1".to_owned(),
                        operation_ref: op.to_owned(),
                        score: score.map(str::to_owned),
                    }),
                    "{xml}"
                );
            }
        }
        let unknown = build_response("r", "m", "<evil/>", &CodeMajor::Unsupported, "", None);
        assert!(
            unknown.contains("<imsx_POXBody></imsx_POXBody>"),
            "{unknown}"
        );
        assert!(!unknown.contains("<evil/>"));
    }

    #[test]
    fn canvas_failure_body() {
        // As Canvas answers (with HTTP 422) a score outside 0–1.
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
  <imsx_POXHeader>
    <imsx_POXResponseHeaderInfo>
      <imsx_version>V1.0</imsx_version>
      <imsx_messageIdentifier>e7ca2a6f-1d23-4b8e-9c1a-0f1e2d3c4b5a</imsx_messageIdentifier>
      <imsx_statusInfo>
        <imsx_codeMajor>failure</imsx_codeMajor>
        <imsx_severity>status</imsx_severity>
        <imsx_description>Score is not between 0 and 1</imsx_description>
        <imsx_messageRefIdentifier>123456789</imsx_messageRefIdentifier>
        <imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier>
        <ext_canvas_error_code>bad_score</ext_canvas_error_code>
      </imsx_statusInfo>
    </imsx_POXResponseHeaderInfo>
  </imsx_POXHeader>
  <imsx_POXBody><replaceResultResponse/></imsx_POXBody>
</imsx_POXEnvelopeResponse>"#;
        assert_eq!(
            parse_response(body),
            Ok(PoxResponse {
                code_major: CodeMajor::Failure,
                severity: "status".to_owned(),
                description: "Score is not between 0 and 1".to_owned(),
                message_ref: "123456789".to_owned(),
                operation_ref: "replaceResult".to_owned(),
                score: None,
            })
        );
    }

    #[test]
    fn old_moodle_namespace_and_case() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns="http://www.imsglobal.org/lis/oms1p0/pox">
<imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version>
<imsx_messageIdentifier>5310af6a4c3b1</imsx_messageIdentifier>
<imsx_statusInfo><imsx_codeMajor> Success
</imsx_codeMajor><imsx_severity>status</imsx_severity>
<imsx_description>Grade updated</imsx_description>
<imsx_messageRefIdentifier>1393602410</imsx_messageRefIdentifier>
<imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier></imsx_statusInfo>
</imsx_POXResponseHeaderInfo></imsx_POXHeader>
<imsx_POXBody><replaceResultResponse/></imsx_POXBody></imsx_POXEnvelopeResponse>"#;
        let parsed = parse_response(body);
        assert_eq!(
            parsed.as_ref().map(|r| r.code_major.clone()),
            Ok(CodeMajor::Success)
        );
        assert_eq!(parsed.map(|r| r.message_ref), Ok("1393602410".to_owned()));
    }

    #[test]
    fn prefixed_namespaces() {
        let body = br#"<?xml version="1.0"?>
<ims:imsx_POXEnvelopeResponse xmlns:ims="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
 <ims:imsx_POXHeader><ims:imsx_POXResponseHeaderInfo>
  <ims:imsx_statusInfo>
   <ims:imsx_codeMajor>UNSUPPORTED</ims:imsx_codeMajor>
   <ims:imsx_severity>status</ims:imsx_severity>
   <ims:imsx_description><![CDATA[deleteResult is not supported <here>]]></ims:imsx_description>
   <ims:imsx_messageRefIdentifier>m-9</ims:imsx_messageRefIdentifier>
   <ims:imsx_operationRefIdentifier>deleteResult</ims:imsx_operationRefIdentifier>
  </ims:imsx_statusInfo>
 </ims:imsx_POXResponseHeaderInfo></ims:imsx_POXHeader>
 <ims:imsx_POXBody><x:readResultResponse xmlns:x="urn:other"><x:result><x:resultScore>
  <x:language>en</x:language><x:textString> 0.91 </x:textString></x:resultScore></x:result></x:readResultResponse>
 </ims:imsx_POXBody>
</ims:imsx_POXEnvelopeResponse>"#;
        assert_eq!(
            parse_response(body),
            Ok(PoxResponse {
                code_major: CodeMajor::Unsupported,
                severity: "status".to_owned(),
                description: "deleteResult is not supported <here>".to_owned(),
                message_ref: "m-9".to_owned(),
                operation_ref: "deleteResult".to_owned(),
                score: Some("0.91".to_owned()),
            })
        );
    }

    #[test]
    fn request_with_prefixes_and_other_languages() {
        let body = br#"<p:imsx_POXEnvelopeRequest xmlns:p="http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
<p:imsx_POXHeader><p:imsx_POXRequestHeaderInfo><p:imsx_version>V1.0</p:imsx_version>
<p:imsx_messageIdentifier>999</p:imsx_messageIdentifier></p:imsx_POXRequestHeaderInfo></p:imsx_POXHeader>
<p:imsx_POXBody><p:replaceResultRequest><p:resultRecord><p:sourcedGUID><p:sourcedId>abc&amp;def</p:sourcedId></p:sourcedGUID>
<p:result><p:resultScore><p:language>en-us</p:language><p:textString>0.5</p:textString></p:resultScore></p:result>
</p:resultRecord></p:replaceResultRequest></p:imsx_POXBody></p:imsx_POXEnvelopeRequest>"#;
        assert_eq!(
            parse_request(body),
            Ok(PoxRequest {
                message_id: "999".to_owned(),
                sourced_id: "abc&def".to_owned(),
                operation: Operation::Replace { score: 0.5 },
            })
        );
    }

    fn replace_with_score(text: &str) -> String {
        format!(
            "<imsx_POXEnvelopeRequest><imsx_POXHeader><imsx_POXRequestHeaderInfo>\
             <imsx_messageIdentifier>1</imsx_messageIdentifier></imsx_POXRequestHeaderInfo></imsx_POXHeader>\
             <imsx_POXBody><replaceResultRequest><resultRecord><sourcedGUID><sourcedId>s</sourcedId></sourcedGUID>\
             <result><resultScore><language>en</language><textString>{text}</textString></resultScore></result>\
             </resultRecord></replaceResultRequest></imsx_POXBody></imsx_POXEnvelopeRequest>"
        )
    }

    #[test]
    fn request_scores() {
        for (text, expected) in [
            ("0.5", 0.5),
            (" 1 ", 1.0),
            ("0", 0.0),
            ("1e-3", 0.001),
            (".25", 0.25),
        ] {
            let parsed = parse_request(replace_with_score(text).as_bytes()).map(|r| r.operation);
            assert_eq!(parsed, Ok(Operation::Replace { score: expected }), "{text}");
        }
        for text in ["", "abc", "NaN", "inf", "-0.1", "1.01", "0,5", "80%"] {
            let parsed = parse_request(replace_with_score(text).as_bytes());
            assert_eq!(parsed, Err(PoxError::BadScore), "{text}");
        }
        // replaceResult without any score.
        let no_score = replace_with_score("0.5").replace(
            "<result><resultScore><language>en</language><textString>0.5</textString></resultScore></result>",
            "",
        );
        assert_eq!(parse_request(no_score.as_bytes()), Err(PoxError::BadScore));
    }

    #[test]
    fn request_errors() {
        let unsupported =
            replace_with_score("0.5").replace("replaceResultRequest", "readMembershipRequest");
        assert_eq!(
            parse_request(unsupported.as_bytes()),
            Err(PoxError::UnsupportedOperation(
                "readMembershipRequest".to_owned()
            ))
        );
        let no_id = build_request("m", "s", &Operation::Read)
            .unwrap_or_default()
            .replace("<imsx_messageIdentifier>m</imsx_messageIdentifier>", "");
        assert_eq!(
            parse_request(no_id.as_bytes()),
            Err(PoxError::Missing("imsx_messageIdentifier"))
        );
        let no_sourced = build_request("m", "s", &Operation::Delete)
            .unwrap_or_default()
            .replace("<sourcedId>s</sourcedId>", "");
        assert_eq!(
            parse_request(no_sourced.as_bytes()),
            Err(PoxError::Missing("sourcedId"))
        );
        assert_eq!(
            parse_request(b"<imsx_POXEnvelopeRequest/>"),
            Err(PoxError::NotPox)
        );
        assert_eq!(parse_request(b""), Err(PoxError::NotPox));
        // A response is not a request.
        let response = build_response("r", "m", "readResult", &CodeMajor::Success, "", None);
        assert_eq!(
            parse_request(response.as_bytes()),
            Err(PoxError::UnsupportedOperation(
                "readResultResponse".to_owned()
            ))
        );
    }

    #[test]
    fn not_pox() {
        for body in [
            &b""[..],
            b"   ",
            b"<html><body>Internal Server Error</body></html>",
            b"<imsx_POXEnvelopeResponse><imsx_POXHeader/></imsx_POXEnvelopeResponse>",
            // codeMajor outside statusInfo does not count.
            b"<r><imsx_codeMajor>success</imsx_codeMajor></r>",
            b"plain text",
        ] {
            assert_eq!(
                parse_response(body),
                Err(PoxError::NotPox),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let request = build_request("m", "s", &Operation::Read).unwrap_or_default();
        assert_eq!(parse_response(request.as_bytes()), Err(PoxError::NotPox));
    }

    fn is_malformed<T: std::fmt::Debug>(r: &Result<T, PoxError>) -> bool {
        matches!(r, Err(PoxError::Malformed(_)))
    }

    #[test]
    fn doctype_and_entities_rejected() {
        let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<imsx_POXEnvelopeResponse><imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_statusInfo>
<imsx_codeMajor>success</imsx_codeMajor><imsx_description>&lol3;</imsx_description>
</imsx_statusInfo></imsx_POXResponseHeaderInfo></imsx_POXHeader></imsx_POXEnvelopeResponse>"#;
        assert!(is_malformed(&parse_response(bomb)));
        assert!(is_malformed(&parse_request(bomb)));
        let external = br#"<!doctype r SYSTEM "file:///etc/passwd"><r/>"#;
        assert!(is_malformed(&parse_response(external)));
        let entity_only = b"<r><!ENTITY x \"y\"></r>";
        assert!(is_malformed(&parse_response(entity_only)));
        // Undefined entity references are errors, not expanded or kept.
        let undefined =
            build_response("r", "m", "replaceResult", &CodeMajor::Success, "DESC", None)
                .replace("DESC", "&xxe;");
        assert!(is_malformed(&parse_response(undefined.as_bytes())));
        let nbsp = build_response("r", "m", "replaceResult", &CodeMajor::Success, "DESC", None)
            .replace("DESC", "a&nbsp;b");
        assert!(is_malformed(&parse_response(nbsp.as_bytes())));
        // Character references and the predefined entities are fine.
        let refs = build_response("r", "m", "replaceResult", &CodeMajor::Success, "DESC", None)
            .replace("DESC", "&#65;&#x42;&lt;&amp;&gt;&quot;&apos;");
        assert_eq!(
            parse_response(refs.as_bytes()).map(|r| r.description),
            Ok("AB<&>\"'".to_owned())
        );
        let nul = build_response("r", "m", "replaceResult", &CodeMajor::Success, "DESC", None)
            .replace("DESC", "&#0;");
        assert!(is_malformed(&parse_response(nul.as_bytes())));
    }

    #[test]
    fn truncated_and_broken_xml() {
        let full = build_response(
            "r",
            "m",
            "readResult",
            &CodeMajor::Success,
            "ok",
            Some("0.5"),
        );
        let bytes = full.as_bytes();
        // Every strict prefix that cuts into the root element is rejected.
        let root_end = full.rfind("</imsx_POXEnvelopeResponse>").unwrap_or(0);
        for cut in 0..root_end {
            let prefix = bytes.get(..cut).unwrap_or_default();
            let result = parse_response(prefix);
            assert!(result.is_err(), "prefix of {cut} bytes parsed: {result:?}");
        }
        assert!(parse_response(bytes).is_ok());
        for body in [
            &b"<a><b></a></b>"[..],
            b"<a></b>",
            b"</a>",
            b"<a attr=\"x></a>",
            b"<a>&amp</a>",
            b"<a>\xff\xfe</a>",
        ] {
            assert!(
                parse_response(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let depth = 100_000;
        let mut body = "<a>".repeat(depth);
        body.push_str(&"</a>".repeat(depth));
        assert!(is_malformed(&parse_response(body.as_bytes())));
        let ok_depth = MAX_DEPTH - 6;
        let nested = format!(
            "{}<imsx_statusInfo><imsx_codeMajor>success</imsx_codeMajor></imsx_statusInfo>{}",
            "<a>".repeat(ok_depth),
            "</a>".repeat(ok_depth)
        );
        assert_eq!(
            parse_response(nested.as_bytes()).map(|r| r.code_major),
            Ok(CodeMajor::Success)
        );
    }

    #[test]
    fn first_code_major_wins_and_nested_text_is_collected() {
        let body = b"<e><imsx_statusInfo><imsx_codeMajor>failure</imsx_codeMajor>\
            <imsx_codeMajor>success</imsx_codeMajor><imsx_description>a <b>bold</b> c</imsx_description>\
            </imsx_statusInfo></e>";
        let parsed = parse_response(body);
        assert_eq!(
            parsed.as_ref().map(|r| r.code_major.clone()),
            Ok(CodeMajor::Failure)
        );
        assert_eq!(parsed.map(|r| r.description), Ok("a bold c".to_owned()));
    }

    #[test]
    fn code_major_parsing() {
        for (text, code) in [
            ("success", CodeMajor::Success),
            (" SUCCESS\n", CodeMajor::Success),
            ("Processing", CodeMajor::Processing),
            ("failure", CodeMajor::Failure),
            ("unsupported", CodeMajor::Unsupported),
            (" nope ", CodeMajor::Other("nope".to_owned())),
            ("", CodeMajor::Other(String::new())),
        ] {
            assert_eq!(CodeMajor::parse(text), code, "{text}");
        }
        assert_eq!(CodeMajor::Other("x".to_owned()).as_str(), "x");
    }

    #[test]
    fn garbage_does_not_panic() {
        let samples: [&[u8]; 10] = [
            b"<",
            b"<!",
            b"<![CDATA[",
            b"<?xml",
            b"<a b='1' b='2'/>",
            b"<:a/>",
            b"<a:/>",
            b"&",
            b"<a>]]></a>",
            b"<\xff/>",
        ];
        for s in samples {
            let _ = parse_response(s);
            let _ = parse_request(s);
        }
        // Pseudo-random bytes from a fixed linear congruential sequence.
        let mut state: u32 = 12345;
        let alphabet = b"<>/!?&;#x=\"' abimsx_:[]CDATA-0123456789";
        for _ in 0..200 {
            let mut input = Vec::new();
            for _ in 0..64 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let i = usize::try_from(state >> 16).unwrap_or(0) % alphabet.len();
                input.push(alphabet.get(i).copied().unwrap_or(b' '));
            }
            let _ = parse_response(&input);
            let _ = parse_request(&input);
        }
    }
}
