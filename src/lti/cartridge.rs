//! The IMS Basic LTI configuration XML (Common Cartridge
//! `cartridge_basiclti_link`) that an LMS admin imports to add the tool.

use std::fmt::Write as _;

use crate::lti::oauth1::split_url;
use crate::lti::outcomes::{xml_escape, xml_escape_attr};

/// Default namespace of the link (`imslticc_v1p0`).
pub const NS_CC: &str = "http://www.imsglobal.org/xsd/imslticc_v1p0";
/// Namespace bound to `blti`.
pub const NS_BLTI: &str = "http://www.imsglobal.org/xsd/imsbasiclti_v1p0";
/// Namespace bound to `lticm`.
pub const NS_LTICM: &str = "http://www.imsglobal.org/xsd/imslticm_v1p0";
/// Namespace bound to `lticp`.
pub const NS_LTICP: &str = "http://www.imsglobal.org/xsd/imslticp_v1p0";
/// Namespace bound to `xsi`.
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// `xsi:schemaLocation`: namespace / schema pairs.
pub const SCHEMA_LOCATION: &str = "http://www.imsglobal.org/xsd/imslticc_v1p0 \
http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticc_v1p0.xsd \
http://www.imsglobal.org/xsd/imsbasiclti_v1p0 \
http://www.imsglobal.org/xsd/lti/ltiv1p0/imsbasiclti_v1p0p1.xsd \
http://www.imsglobal.org/xsd/imslticm_v1p0 \
http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticm_v1p0.xsd \
http://www.imsglobal.org/xsd/imslticp_v1p0 \
http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticp_v1p0.xsd";
/// Canvas's extension platform identifier.
pub const CANVAS_PLATFORM: &str = "canvas.instructure.com";

/// What goes into a tool link's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Cartridge<'a> {
    /// `blti:title`.
    pub title: &'a str,
    /// `blti:description`; left out when empty.
    pub description: &'a str,
    /// `blti:launch_url` (also `blti:secure_launch_url` when https).
    pub launch_url: &'a str,
    /// Custom parameters (`name`, `value`); the LMS sends each as `custom_<name>`.
    pub custom: &'a [(&'a str, &'a str)],
    /// `blti:icon`, when given.
    pub icon_url: Option<&'a str>,
}

/// The lowercased host of an absolute http(s) URL, if it has one.
fn url_host(url: &str) -> Option<String> {
    split_url(url)
        .ok()
        .map(|parts| parts.host.to_ascii_lowercase())
}

/// Builds the `cartridge_basiclti_link` XML for `c`.
///
/// The root declares the default `imslticc_v1p0` namespace, `blti`, `lticm`,
/// `lticp`, `xsi` and `xsi:schemaLocation`; then come `blti:title`,
/// `blti:description` (only when non-empty), `blti:launch_url`,
/// `blti:secure_launch_url` (only when the launch URL is https), `blti:icon`
/// (when given), `blti:custom` with one `lticm:property name="…"` per entry (only
/// when there are entries), `blti:extensions platform="canvas.instructure.com"`
/// with `privacy_level` = `public` and `domain` = the launch URL's host (left out
/// when the URL has no parsable host), then `cartridge_bundle` and
/// `cartridge_icon`. Every value is XML-escaped (carriage returns, and tabs
/// and newlines in attribute values, as character references).
pub fn build(c: &Cartridge<'_>) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<cartridge_basiclti_link xmlns=\"{NS_CC}\" xmlns:blti=\"{NS_BLTI}\" \
         xmlns:lticm=\"{NS_LTICM}\" xmlns:lticp=\"{NS_LTICP}\" xmlns:xsi=\"{NS_XSI}\" \
         xsi:schemaLocation=\"{SCHEMA_LOCATION}\">"
    );
    let _ = writeln!(out, "  <blti:title>{}</blti:title>", xml_escape(c.title));
    if !c.description.is_empty() {
        let _ = writeln!(
            out,
            "  <blti:description>{}</blti:description>",
            xml_escape(c.description)
        );
    }
    let launch_url = xml_escape(c.launch_url);
    let _ = writeln!(out, "  <blti:launch_url>{launch_url}</blti:launch_url>");
    let is_https = c
        .launch_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if is_https {
        let _ = writeln!(
            out,
            "  <blti:secure_launch_url>{launch_url}</blti:secure_launch_url>"
        );
    }
    if let Some(icon) = c.icon_url {
        let _ = writeln!(out, "  <blti:icon>{}</blti:icon>", xml_escape(icon));
    }
    if !c.custom.is_empty() {
        out.push_str("  <blti:custom>\n");
        for (name, value) in c.custom {
            let _ = writeln!(
                out,
                "    <lticm:property name=\"{}\">{}</lticm:property>",
                xml_escape_attr(name),
                xml_escape(value)
            );
        }
        out.push_str("  </blti:custom>\n");
    }
    let _ = writeln!(out, "  <blti:extensions platform=\"{CANVAS_PLATFORM}\">");
    out.push_str("    <lticm:property name=\"privacy_level\">public</lticm:property>\n");
    if let Some(host) = url_host(c.launch_url) {
        let _ = writeln!(
            out,
            "    <lticm:property name=\"domain\">{}</lticm:property>",
            xml_escape(&host)
        );
    }
    out.push_str("  </blti:extensions>\n");
    out.push_str("  <cartridge_bundle identifierref=\"BLTI001_Bundle\"/>\n");
    out.push_str("  <cartridge_icon identifierref=\"BLTI001_Icon\"/>\n");
    out.push_str("</cartridge_basiclti_link>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::{BytesStart, Event};
    use quick_xml::name::ResolveResult;
    use quick_xml::reader::NsReader;

    /// An element as read back with namespaces resolved.
    #[derive(Debug, Default)]
    struct Element {
        ns: String,
        name: String,
        /// (namespace of the attribute or "", local name, unescaped value);
        /// namespace declarations are listed with namespace "xmlns".
        attrs: Vec<(String, String, String)>,
        text: String,
        children: Vec<Element>,
    }

    impl Element {
        fn attr(&self, ns: &str, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(n, l, _)| n == ns && l == name)
                .map(|(_, _, v)| v.as_str())
        }

        fn child_names(&self) -> Vec<(&str, &str)> {
            self.children
                .iter()
                .map(|c| (c.ns.as_str(), c.name.as_str()))
                .collect()
        }

        fn child(&self, ns: &str, name: &str) -> Option<&Element> {
            self.children.iter().find(|c| c.ns == ns && c.name == name)
        }
    }

    fn ns_of(result: ResolveResult<'_>) -> String {
        match result {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(prefix) => {
                panic!("unbound prefix {}", String::from_utf8_lossy(&prefix))
            }
        }
    }

    fn element(reader: &NsReader<&[u8]>, ns: String, start: &BytesStart<'_>) -> Element {
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr.unwrap_or_else(|e| panic!("attribute: {e}"));
            let value = attr
                .unescape_value()
                .unwrap_or_else(|e| panic!("attribute value: {e}"))
                .into_owned();
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            if key == "xmlns" || key.starts_with("xmlns:") {
                let prefix = key.strip_prefix("xmlns:").unwrap_or("").to_owned();
                attrs.push(("xmlns".to_owned(), prefix, value));
                continue;
            }
            let (attr_ns, local) = reader.resolve_attribute(attr.key);
            let local = String::from_utf8_lossy(local.as_ref()).into_owned();
            attrs.push((ns_of(attr_ns), local, value));
        }
        Element {
            ns,
            name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
            attrs,
            ..Element::default()
        }
    }

    /// Parses `xml` into its root element, namespace-aware.
    fn parse(xml: &str) -> Element {
        assert!(!xml.contains("<!"), "no DOCTYPE/comments expected");
        let mut reader = NsReader::from_reader(xml.as_bytes());
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        loop {
            let (ns, event) = reader
                .read_resolved_event()
                .unwrap_or_else(|e| panic!("XML error: {e}"));
            let ns = ns_of(ns);
            match event {
                Event::Start(ref start) => {
                    let el = element(&reader, ns, start);
                    stack.push(el);
                }
                Event::Empty(ref start) => {
                    let el = element(&reader, ns, start);
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::End(_) => {
                    let el = stack.pop().unwrap_or_else(|| panic!("unbalanced"));
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::Text(text) => {
                    let text = text.unescape().unwrap_or_else(|e| panic!("text: {e}"));
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&text);
                    }
                }
                Event::Eof => break,
                Event::Decl(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert!(stack.is_empty());
        root.unwrap_or_else(|| panic!("no root element"))
    }

    fn text_of<'e>(root: &'e Element, name: &str) -> Option<&'e str> {
        root.child(NS_BLTI, name).map(|e| e.text.as_str())
    }

    fn properties(el: &Element) -> Vec<(&str, &str)> {
        el.children
            .iter()
            .map(|p| {
                assert_eq!((p.ns.as_str(), p.name.as_str()), (NS_LTICM, "property"));
                assert_eq!(p.attrs.len(), 1, "{p:?}");
                (p.attr("", "name").unwrap_or_default(), p.text.as_str())
            })
            .collect()
    }

    #[test]
    fn full_cartridge() {
        let custom = [("course", "C-1"), ("level", "2")];
        let xml = build(&Cartridge {
            title: "Learning platform",
            description: "Courses for everyone",
            launch_url: "https://Learn.Example.com/lti/launch/C-1",
            custom: &custom,
            icon_url: Some("https://learn.example.com/icon.png"),
        });
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        let root = parse(&xml);
        assert_eq!(
            (root.ns.as_str(), root.name.as_str()),
            (NS_CC, "cartridge_basiclti_link")
        );

        let mut declared: Vec<(&str, &str)> = root
            .attrs
            .iter()
            .filter(|(ns, _, _)| ns == "xmlns")
            .map(|(_, prefix, uri)| (prefix.as_str(), uri.as_str()))
            .collect();
        declared.sort_unstable();
        assert_eq!(
            declared,
            vec![
                ("", NS_CC),
                ("blti", NS_BLTI),
                ("lticm", NS_LTICM),
                ("lticp", NS_LTICP),
                ("xsi", NS_XSI),
            ]
        );
        let location = root.attr(NS_XSI, "schemaLocation").unwrap_or_default();
        let pairs: Vec<&str> = location.split_whitespace().collect();
        assert_eq!(
            pairs,
            vec![
                NS_CC,
                "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticc_v1p0.xsd",
                NS_BLTI,
                "http://www.imsglobal.org/xsd/lti/ltiv1p0/imsbasiclti_v1p0p1.xsd",
                NS_LTICM,
                "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticm_v1p0.xsd",
                NS_LTICP,
                "http://www.imsglobal.org/xsd/lti/ltiv1p0/imslticp_v1p0.xsd",
            ]
        );
        assert_eq!(root.attrs.len(), 6);

        assert_eq!(
            root.child_names(),
            vec![
                (NS_BLTI, "title"),
                (NS_BLTI, "description"),
                (NS_BLTI, "launch_url"),
                (NS_BLTI, "secure_launch_url"),
                (NS_BLTI, "icon"),
                (NS_BLTI, "custom"),
                (NS_BLTI, "extensions"),
                (NS_CC, "cartridge_bundle"),
                (NS_CC, "cartridge_icon"),
            ]
        );
        assert_eq!(text_of(&root, "title"), Some("Learning platform"));
        assert_eq!(text_of(&root, "description"), Some("Courses for everyone"));
        assert_eq!(
            text_of(&root, "launch_url"),
            Some("https://Learn.Example.com/lti/launch/C-1")
        );
        assert_eq!(
            text_of(&root, "secure_launch_url"),
            Some("https://Learn.Example.com/lti/launch/C-1")
        );
        assert_eq!(
            text_of(&root, "icon"),
            Some("https://learn.example.com/icon.png")
        );

        let custom_el = root.child(NS_BLTI, "custom");
        assert_eq!(
            custom_el.map(properties),
            Some(vec![("course", "C-1"), ("level", "2")])
        );

        let ext = root.child(NS_BLTI, "extensions");
        assert_eq!(
            ext.and_then(|e| e.attr("", "platform")),
            Some("canvas.instructure.com")
        );
        assert_eq!(
            ext.map(properties),
            Some(vec![
                ("privacy_level", "public"),
                ("domain", "learn.example.com")
            ])
        );

        let bundle = root.child(NS_CC, "cartridge_bundle");
        assert_eq!(
            bundle.and_then(|b| b.attr("", "identifierref")),
            Some("BLTI001_Bundle")
        );
        let icon = root.child(NS_CC, "cartridge_icon");
        assert_eq!(
            icon.and_then(|b| b.attr("", "identifierref")),
            Some("BLTI001_Icon")
        );
        for el in &root.children {
            if el.name == "extensions" || el.name == "custom" {
                continue;
            }
            assert!(el.children.is_empty(), "{el:?}");
        }
    }

    #[test]
    fn minimal_http_cartridge() {
        let xml = build(&Cartridge {
            title: "T",
            description: "",
            launch_url: "http://localhost:8080/lti/launch",
            custom: &[],
            icon_url: None,
        });
        let root = parse(&xml);
        assert_eq!(
            root.child_names(),
            vec![
                (NS_BLTI, "title"),
                (NS_BLTI, "launch_url"),
                (NS_BLTI, "extensions"),
                (NS_CC, "cartridge_bundle"),
                (NS_CC, "cartridge_icon"),
            ]
        );
        assert!(!xml.contains("custom"), "never an empty custom element");
        assert!(!xml.contains("description"));
        assert!(!xml.contains("secure_launch_url"));
        let ext = root.child(NS_BLTI, "extensions");
        assert_eq!(
            ext.map(properties),
            Some(vec![("privacy_level", "public"), ("domain", "localhost")])
        );
    }

    #[test]
    fn values_are_escaped() {
        let nasty = r#"A <b>&"quoted"' title"#;
        let custom = [
            (r#"na"me<&'"#, r#"v<a>l&u"e'"#),
            ("course", "</blti:custom>"),
        ];
        let xml = build(&Cartridge {
            title: nasty,
            description: r#"desc & <more> "x" 'y'"#,
            launch_url: "https://h.example/launch?a=1&b=<2>",
            custom: &custom,
            icon_url: Some("https://h.example/i.png?x=\"1\"&y='2'"),
        });
        let root = parse(&xml);
        assert_eq!(text_of(&root, "title"), Some(nasty));
        assert_eq!(
            text_of(&root, "description"),
            Some(r#"desc & <more> "x" 'y'"#)
        );
        assert_eq!(
            text_of(&root, "launch_url"),
            Some("https://h.example/launch?a=1&b=<2>")
        );
        assert_eq!(
            text_of(&root, "secure_launch_url"),
            Some("https://h.example/launch?a=1&b=<2>")
        );
        assert_eq!(
            text_of(&root, "icon"),
            Some("https://h.example/i.png?x=\"1\"&y='2'")
        );
        assert_eq!(
            root.child(NS_BLTI, "custom").map(properties),
            Some(vec![
                (r#"na"me<&'"#, r#"v<a>l&u"e'"#),
                ("course", "</blti:custom>")
            ])
        );
        let ext = root.child(NS_BLTI, "extensions");
        assert_eq!(
            ext.map(properties),
            Some(vec![("privacy_level", "public"), ("domain", "h.example")])
        );
    }

    #[test]
    fn line_ends_and_tabs_survive_xml_processors() {
        // An XML processor reads a literal CR as LF (XML 1.0 §2.11) and a
        // literal tab or newline in an attribute value as a space (§3.3.3).
        let custom = [("a\tb\nc\rd", "x\r\ny")];
        let xml = build(&Cartridge {
            title: "T\r\n2",
            description: "one\rtwo\nthree",
            launch_url: "https://h.example/l",
            custom: &custom,
            icon_url: None,
        });
        assert!(!xml.contains('\r'), "{xml:?}");
        assert!(xml.contains("<blti:title>T&#13;\n2</blti:title>"), "{xml}");
        assert!(
            xml.contains("<lticm:property name=\"a&#9;b&#10;c&#13;d\">x&#13;\ny</lticm:property>"),
            "{xml}"
        );
        let root = parse(&xml);
        assert_eq!(text_of(&root, "title"), Some("T\r\n2"));
        assert_eq!(text_of(&root, "description"), Some("one\rtwo\nthree"));
        assert_eq!(
            root.child(NS_BLTI, "custom").map(properties),
            Some(vec![("a\tb\nc\rd", "x\r\ny")])
        );
    }

    #[test]
    fn unparsable_launch_url_has_no_domain() {
        let xml = build(&Cartridge {
            title: "T",
            description: "",
            launch_url: "/relative/launch",
            custom: &[],
            icon_url: None,
        });
        let root = parse(&xml);
        let ext = root.child(NS_BLTI, "extensions");
        assert_eq!(ext.map(properties), Some(vec![("privacy_level", "public")]));
    }

    #[test]
    fn domain_of_ipv6_and_ported_urls() {
        assert_eq!(url_host("https://[::1]:8443/x").as_deref(), Some("[::1]"));
        assert_eq!(
            url_host("HTTPS://LEARN.example.com:8443").as_deref(),
            Some("learn.example.com")
        );
        assert_eq!(url_host("learn.example.com"), None);
    }
}
