//! Queue Storage XML: a small element tree parsed with quick-xml (any malformed input is an
//! error, never a panic), the readers for the service's answers (message lists, queue lists,
//! error bodies) and the writer for the one request body we send (`<QueueMessage>`).

use quick_xml::Reader;
use quick_xml::escape::{partial_escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};

/// Deepest element nesting accepted; the service never nests more than four levels.
const MAX_DEPTH: usize = 32;

/// The largest `<MessageText>` the service accepts, counted after XML escaping.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlError(pub String);

/// One element: its local name, its concatenated text and its child elements (attributes are
/// not needed by any Queue Storage answer we read and are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this name, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses a whole document into its root element.
pub(crate) fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| XmlError(format!("the body is not UTF-8: {e}")))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            XmlError(format!(
                "malformed XML at byte {}: {e}",
                reader.buffer_position()
            ))
        })?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                check_attributes(&start)?;
                stack.push(Element {
                    name: local_name(start.local_name().as_ref())?,
                    ..Element::default()
                });
            }
            Event::Empty(empty) => {
                check_attributes(&empty)?;
                let element = Element {
                    name: local_name(empty.local_name().as_ref())?,
                    ..Element::default()
                };
                attach(element, &mut stack, &mut root)?;
            }
            Event::End(_) => {
                // quick-xml has already checked that the end name matches the open element.
                let element = stack
                    .pop()
                    .ok_or_else(|| XmlError("a closing tag without an opening tag".into()))?;
                attach(element, &mut stack, &mut root)?;
            }
            Event::Text(text) => {
                let decoded = text
                    .xml10_content()
                    .map_err(|e| XmlError(format!("undecodable text: {e}")))?;
                push_text(&mut stack, &decoded)?;
            }
            Event::CData(data) => {
                let decoded = data
                    .decode()
                    .map_err(|e| XmlError(format!("undecodable CDATA: {e}")))?;
                push_text(&mut stack, &decoded)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference
                            .decode()
                            .map_err(|e| XmlError(format!("undecodable entity: {e}")))?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| XmlError(format!("unknown entity `&{name};`")))?
                            .to_string()
                    }
                    Err(e) => return Err(XmlError(format!("bad character reference: {e}"))),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError(format!(
            "the document ends inside <{}>",
            open.name
        )));
    }
    root.ok_or_else(|| XmlError("the document has no root element".into()))
}

/// Attributes are not used, but malformed ones make the document malformed.
fn check_attributes(start: &BytesStart<'_>) -> Result<(), XmlError> {
    for attribute in start.attributes() {
        attribute.map_err(|e| XmlError(format!("malformed attribute: {e}")))?;
    }
    Ok(())
}

fn local_name(raw: &[u8]) -> Result<String, XmlError> {
    std::str::from_utf8(raw)
        .map(str::to_string)
        .map_err(|_| XmlError("an element name is not UTF-8".into()))
}

fn attach(
    element: Element,
    stack: &mut [Element],
    root: &mut Option<Element>,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(XmlError("more than one root element".into())),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => open.text.push_str(text),
        None if text.trim().is_empty() => {}
        None => return Err(XmlError("text outside the root element".into())),
    }
    Ok(())
}

/// The `<QueueMessage>` body for Put Message / Update Message, or why the text cannot be sent:
/// `Err(TextError::TooLarge(n))` when the escaped text is over 64 KiB, `Err(InvalidChar)` for a
/// character XML 1.0 cannot carry.
pub(crate) fn message_body(text: &str) -> Result<Vec<u8>, TextError> {
    if let Some(bad) = text.chars().find(|&c| !is_xml_char(c)) {
        return Err(TextError::InvalidChar(bad));
    }
    // `\r` is escaped too: XML parsers turn a literal CR into LF, a reference survives.
    let escaped = partial_escape(text).replace('\r', "&#13;");
    if escaped.len() > MAX_MESSAGE_BYTES {
        return Err(TextError::TooLarge(escaped.len()));
    }
    let mut body = String::with_capacity(escaped.len() + 90);
    body.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>");
    body.push_str(&escaped);
    body.push_str("</MessageText></QueueMessage>");
    Ok(body.into_bytes())
}

/// Why a message text cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TextError {
    /// The escaped text has this many bytes, more than [`MAX_MESSAGE_BYTES`].
    TooLarge(usize),
    /// This character is not allowed in XML 1.0 (control characters other than tab/CR/LF).
    InvalidChar(char),
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_nested_elements_text_and_entities() {
        let doc = parse(
            br#"<?xml version="1.0"?><A x="1"><B>one &amp; &lt;two&gt; &#65;&#x42;</B><C/><B><![CDATA[<raw>]]></B></A>"#,
        )
        .unwrap();
        assert_eq!(doc.name, "A");
        let texts: Vec<&str> = doc.children_named("B").map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["one & <two> AB", "<raw>"]);
        assert_eq!(doc.child_text("C"), Some(""));
        assert_eq!(doc.child("D"), None);
    }

    #[test]
    fn whitespace_inside_text_is_kept() {
        let doc = parse(b"<A><B>  two  spaces \n</B></A>").unwrap();
        assert_eq!(doc.child_text("B"), Some("  two  spaces \n"));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b""[..],
            b"   ",
            b"<A>",
            b"<A></B>",
            b"</A>",
            b"<A/><B/>",
            b"text<A/>",
            b"<A>&unknown;</A>",
            b"<A>&#0;</A>",
            b"<A attr=></A>",
            b"\xff\xfe<A/>",
            b"<A><B></A></B>",
        ] {
            assert!(
                parse(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn message_body_escapes_markup_and_round_trips() {
        let text = "a<b>&c\"d'e ü";
        let body = message_body(text).unwrap();
        let body_text = String::from_utf8(body.clone()).unwrap();
        assert!(body_text.contains("a&lt;b&gt;&amp;c\"d'e ü"), "{body_text}");
        let doc = parse(&body).unwrap();
        assert_eq!(doc.name, "QueueMessage");
        assert_eq!(doc.child_text("MessageText"), Some(text));
    }

    #[test]
    fn message_body_limit_counts_escaped_bytes() {
        assert!(message_body(&"a".repeat(MAX_MESSAGE_BYTES)).is_ok());
        assert_eq!(
            message_body(&"a".repeat(MAX_MESSAGE_BYTES + 1)),
            Err(TextError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        // 13 108 `&` become 65 540 bytes once escaped as `&amp;`.
        assert_eq!(
            message_body(&"&".repeat(13_108)),
            Err(TextError::TooLarge(13_108 * 5))
        );
    }

    #[test]
    fn message_body_refuses_characters_xml_cannot_carry() {
        assert_eq!(
            message_body("a\u{1}b"),
            Err(TextError::InvalidChar('\u{1}'))
        );
        assert!(message_body("tab\tcr\rlf\n").is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_markup_never_panics(text in "[<>/&;#a-zA-Z0-9!\\[\\]?=\" -]{0,200}") {
            let _ = parse(text.as_bytes());
        }

        #[test]
        fn any_sendable_text_round_trips(text in "(\\PC|\r|\n|\t){0,64}") {
            if let Ok(body) = message_body(&text) {
                let doc = parse(&body).unwrap();
                prop_assert_eq!(doc.child_text("MessageText"), Some(text.as_str()));
            }
        }
    }
}
