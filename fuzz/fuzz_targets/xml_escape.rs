//! XML builders on arbitrary strings: `cartridge::build` and
//! `outcomes::build_request` / `build_response`.
//!
//! The output is read back with quick-xml's `NsReader` the way a conforming
//! XML 1.0 processor reads it: line ends normalised (§2.11: `\r\n` and a lone
//! `\r` become `\n`) and attribute values normalised (§3.3.3: literal tab,
//! newline and carriage return become spaces) before entities are resolved.
//! The text read back must equal the input, less the characters XML 1.0
//! cannot carry: `cartridge::build` drops those, `build_request` refuses the
//! value with `PoxError::InvalidXmlChar`.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ltigate::lti::cartridge::{self, Cartridge, NS_BLTI, NS_CC, NS_LTICM};
use ltigate::lti::outcomes::{self, CodeMajor, Operation, PoxError, POX_NAMESPACE};
use quick_xml::escape::unescape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

#[derive(Debug, Arbitrary)]
struct Input {
    title: String,
    description: String,
    launch_url: String,
    custom: Vec<(String, String)>,
    icon: Option<String>,
    message_id: String,
    sourced_id: String,
    score_bits: u64,
    description_reply: String,
}

/// Whether XML 1.0 allows `c` in a document (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn carried(s: &str) -> String {
    s.chars().filter(|&c| is_xml_char(c)).collect()
}

/// XML 1.0 §2.11 end-of-line handling.
fn normalize_eol(raw: &str) -> String {
    raw.replace("\r\n", "\n").replace('\r', "\n")
}

/// Character data as a conforming processor reports it.
fn text_value(raw: &[u8]) -> String {
    let raw = std::str::from_utf8(raw).unwrap_or_else(|e| panic!("text is not UTF-8: {e}"));
    let normalized = normalize_eol(raw);
    unescape(&normalized)
        .unwrap_or_else(|e| panic!("text does not unescape: {e}: {raw:?}"))
        .into_owned()
}

/// A CDATA-type attribute value as a conforming processor reports it.
fn attribute_value(raw: &[u8]) -> String {
    let raw = std::str::from_utf8(raw).unwrap_or_else(|e| panic!("attribute is not UTF-8: {e}"));
    let normalized = normalize_eol(raw).replace(['\t', '\n'], " ");
    unescape(&normalized)
        .unwrap_or_else(|e| panic!("attribute does not unescape: {e}: {raw:?}"))
        .into_owned()
}

/// An element of the document read back: namespace, local name,
/// non-namespace attributes and its own text.
#[derive(Debug)]
struct Element {
    ns: String,
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
}

fn namespace(result: &ResolveResult<'_>) -> String {
    match result {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(prefix) => {
            panic!("unbound prefix {}", String::from_utf8_lossy(prefix))
        }
    }
}

fn element(ns: String, start: &BytesStart<'_>) -> Element {
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.unwrap_or_else(|e| panic!("attribute: {e}"));
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        attrs.push((key, attribute_value(&attr.value)));
    }
    Element {
        ns,
        name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
        attrs,
        text: String::new(),
    }
}

/// Every element of `xml` in document order; panics on malformed XML.
fn read(xml: &str) -> Vec<Element> {
    let mut reader = NsReader::from_reader(xml.as_bytes());
    reader.config_mut().check_end_names = true;
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .unwrap_or_else(|e| panic!("XML error: {e}\n{xml}"));
        let ns = namespace(&ns);
        match event {
            Event::Start(ref start) => {
                open.push(elements.len());
                elements.push(element(ns, start));
            }
            Event::Empty(ref start) => elements.push(element(ns, start)),
            Event::End(_) => {
                open.pop()
                    .unwrap_or_else(|| panic!("unbalanced end\n{xml}"));
            }
            Event::Text(ref text) => {
                let value = text_value(text);
                match open.last() {
                    Some(&i) => elements[i].text.push_str(&value),
                    None => assert!(value.trim().is_empty(), "text outside the root\n{xml}"),
                }
            }
            Event::Decl(_) => {}
            Event::Eof => break,
            other => panic!("unexpected event {other:?}\n{xml}"),
        }
    }
    assert!(open.is_empty(), "unclosed elements\n{xml}");
    elements
}

fn find<'e>(elements: &'e [Element], ns: &str, name: &str) -> Option<&'e Element> {
    elements.iter().find(|e| e.ns == ns && e.name == name)
}

fn check_cartridge(input: &Input) {
    let custom: Vec<(&str, &str)> = input
        .custom
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let xml = cartridge::build(&Cartridge {
        title: &input.title,
        description: &input.description,
        launch_url: &input.launch_url,
        custom: &custom,
        icon_url: input.icon.as_deref(),
    });
    let elements = read(&xml);
    let root = elements.first().unwrap_or_else(|| panic!("no root"));
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_CC, "cartridge_basiclti_link")
    );

    let text = |name: &str| find(&elements, NS_BLTI, name).map(|e| e.text.as_str());
    assert_eq!(text("title"), Some(carried(&input.title).as_str()));
    if input.description.is_empty() {
        assert_eq!(text("description"), None);
    } else {
        assert_eq!(
            text("description"),
            Some(carried(&input.description).as_str())
        );
    }
    assert_eq!(
        text("launch_url"),
        Some(carried(&input.launch_url).as_str())
    );
    assert_eq!(
        text("icon").map(str::to_owned),
        input.icon.as_deref().map(carried)
    );

    let properties: Vec<(&str, &str)> = match find(&elements, NS_BLTI, "custom") {
        Some(_) => elements
            .iter()
            .skip_while(|e| !(e.ns == NS_BLTI && e.name == "custom"))
            .skip(1)
            .take_while(|e| e.ns == NS_LTICM && e.name == "property")
            .map(|e| {
                assert_eq!(e.attrs.len(), 1, "{e:?}");
                (e.attrs[0].1.as_str(), e.text.as_str())
            })
            .collect(),
        None => Vec::new(),
    };
    let expected: Vec<(String, String)> = input
        .custom
        .iter()
        .map(|(n, v)| (carried(n), carried(v)))
        .collect();
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(properties, expected);
}

fn check_request(input: &Input) {
    let score = f64::from_bits(input.score_bits);
    for op in [
        Operation::Replace { score },
        Operation::Read,
        Operation::Delete,
    ] {
        let built = outcomes::build_request(&input.message_id, &input.sourced_id, &op);
        let carries_all =
            input.message_id.chars().all(is_xml_char) && input.sourced_id.chars().all(is_xml_char);
        let score_ok = !matches!(op, Operation::Replace { .. })
            || (score.is_finite() && (0.0..=1.0).contains(&score));
        let xml = match built {
            Ok(xml) => {
                assert!(carries_all && score_ok, "accepted {input:?} / {op:?}");
                xml
            }
            Err(PoxError::InvalidXmlChar(_)) => {
                assert!(!carries_all, "refused {input:?}");
                continue;
            }
            Err(PoxError::BadScore) => {
                assert!(!score_ok, "refused score {score}");
                continue;
            }
            Err(e) => panic!("unexpected error {e}"),
        };
        let elements = read(&xml);
        let text = |name: &str| find(&elements, POX_NAMESPACE, name).map(|e| e.text.as_str());
        assert_eq!(
            text("imsx_messageIdentifier"),
            Some(input.message_id.as_str())
        );
        assert_eq!(text("sourcedId"), Some(input.sourced_id.as_str()));
        if let Operation::Replace { score } = op {
            let read_back = text("textString").and_then(|t| t.parse::<f64>().ok());
            assert_eq!(read_back, Some(if score == 0.0 { 0.0 } else { score }));
        }
        // ltigate's own parser agrees: the message identifier trimmed, the
        // sourcedId verbatim (a blank one is none).
        let parsed = outcomes::parse_request(xml.as_bytes());
        if input.sourced_id.trim().is_empty() {
            assert_eq!(parsed, Err(PoxError::Missing("sourcedId")));
            continue;
        }
        let parsed =
            parsed.unwrap_or_else(|e| panic!("built request does not parse: {e}\n{xml}"));
        assert_eq!(parsed.message_id, input.message_id.trim());
        assert_eq!(parsed.sourced_id, input.sourced_id);
    }
}

fn check_response(input: &Input) {
    let code = CodeMajor::Other(input.title.clone());
    let xml = outcomes::build_response(
        &input.message_id,
        &input.sourced_id,
        "readResult",
        &code,
        &input.description_reply,
        Some(&input.launch_url),
    );
    let elements = read(&xml);
    let text = |name: &str| find(&elements, POX_NAMESPACE, name).map(|e| e.text.as_str());
    assert_eq!(
        text("imsx_messageIdentifier"),
        Some(carried(&input.message_id).as_str())
    );
    assert_eq!(
        text("imsx_messageRefIdentifier"),
        Some(carried(&input.sourced_id).as_str())
    );
    assert_eq!(text("imsx_codeMajor"), Some(carried(&input.title).as_str()));
    assert_eq!(
        text("imsx_description"),
        Some(carried(&input.description_reply).as_str())
    );
    assert_eq!(
        text("textString"),
        Some(carried(&input.launch_url).as_str())
    );
    let parsed = outcomes::parse_response(xml.as_bytes())
        .unwrap_or_else(|e| panic!("built response does not parse: {e}\n{xml}"));
    assert_eq!(parsed.description, carried(&input.description_reply).trim());
    assert_eq!(parsed.severity, "error");
}

fuzz_target!(|input: Input| {
    check_cartridge(&input);
    check_request(&input);
    check_response(&input);
});
