//! The element tree of a configuration file, read with quick-xml: element names,
//! attributes (unescaped and normalized as XML says) and the byte offset of each element
//! and attribute, which is all the readers need for their messages. Text, comments,
//! declarations and processing instructions are skipped.
//!
//! Malformed input becomes one [`XmlError`] at the offset where a reader of the file
//! would look; the messages of the cases the fixture tables pin are worded as they were
//! when the tree came from roxmltree, so `FILE:LINE:COL: malformed xml: …` lines did not
//! change with the parser.

use std::borrow::Cow;

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// The deepest nesting read. A sersync file is 4 levels deep; the limit keeps a hostile
/// file from building a tree whose recursive drop would overflow the stack.
pub const MAX_DEPTH: usize = 256;

/// An element: its name as written, its attributes, its child elements.
#[derive(Debug)]
pub struct Element {
    name: String,
    start: usize,
    attributes: Vec<Attribute>,
    children: Vec<Element>,
}

/// An attribute: its name as written and its value, entities replaced.
#[derive(Debug)]
pub struct Attribute {
    name: String,
    value: String,
    start: usize,
}

impl Attribute {
    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value, entities replaced and white space normalized.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Byte offset of the attribute's name.
    pub fn start(&self) -> usize {
        self.start
    }
}

/// A borrowed element of the tree, cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a>(&'a Element);

impl<'a> Node<'a> {
    /// The element name as written (compare with `eq_ignore_ascii_case`).
    pub fn name(self) -> &'a str {
        &self.0.name
    }

    /// Byte offset of the element's `<`.
    pub fn start(self) -> usize {
        self.0.start
    }

    /// The child elements, in file order.
    pub fn children(self) -> impl Iterator<Item = Node<'a>> + Clone {
        self.0.children.iter().map(Node)
    }

    /// The attributes, in file order.
    pub fn attributes(self) -> impl Iterator<Item = &'a Attribute> {
        self.0.attributes.iter()
    }
}

/// Why the text is not an XML document, and the byte offset where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset in the text.
    pub offset: usize,
    /// What is wrong, without a position.
    pub message: String,
}

impl Element {
    /// This element as a [`Node`].
    pub fn node(&self) -> Node<'_> {
        Node(self)
    }
}

fn error(offset: usize, message: impl Into<String>) -> XmlError {
    XmlError {
        offset,
        message: message.into(),
    }
}

/// Byte offset of `part` inside `text`, when `part` is a slice of it (quick-xml reading
/// a `&str` hands out slices of it).
fn offset_in(text: &str, part: &[u8]) -> Option<usize> {
    let base = text.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    (at >= base && at + part.len() <= base + text.len()).then(|| at - base)
}

/// Attribute-value normalization (XML 1.0 §3.3.3): each literal tab, line feed or
/// carriage return is a space (a CR LF pair is one), then references are replaced.
fn attribute_value(raw: &str) -> Result<String, String> {
    let spaced = raw.replace("\r\n", " ").replace(['\t', '\n', '\r'], " ");
    quick_xml::escape::unescape(&spaced)
        .map(Cow::into_owned)
        .map_err(|err| err.to_string())
}

/// Reads the element that starts at byte `start` (its `<`).
fn element(text: &str, start: usize, tag: &BytesStart<'_>) -> Result<Element, XmlError> {
    let tag_body = offset_in(text, tag).unwrap_or(start + 1);
    let name = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
    let mut attributes: Vec<Attribute> = Vec::new();
    for attr in tag.attributes().with_checks(true) {
        let attr = attr.map_err(|err| attr_error(text, tag_body, &err))?;
        let key = attr.key.as_ref();
        let at = offset_in(text, key).unwrap_or(start);
        let raw = std::str::from_utf8(&attr.value)
            .map_err(|_| error(at, "attribute value is not UTF-8"))?;
        let value = attribute_value(raw).map_err(|why| error(at, why))?;
        attributes.push(Attribute {
            name: String::from_utf8_lossy(key).into_owned(),
            value,
            start: at,
        });
    }
    Ok(Element {
        name,
        start,
        attributes,
        children: Vec::new(),
    })
}

fn attr_error(text: &str, tag_body: usize, err: &AttrError) -> XmlError {
    match *err {
        AttrError::UnquotedValue(at) => {
            let offset = tag_body + at;
            let found = text.get(offset..).and_then(|rest| rest.chars().next());
            let message = match found {
                Some(c) => format!("expected a quote not '{c}'"),
                None => "expected a quote".to_owned(),
            };
            error(offset, message)
        }
        AttrError::ExpectedEq(at)
        | AttrError::ExpectedValue(at)
        | AttrError::ExpectedQuote(at, _)
        | AttrError::Duplicated(at, _) => error(tag_body + at, err.to_string()),
    }
}

/// The root element of `text`.
///
/// # Errors
/// The first reason `text` is not a well-formed document with one root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    // A UTF-8 byte order mark is skipped here, so that quick-xml's positions plus
    // `shift` are offsets in `text`.
    let (body, shift) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, text.len() - rest.len()),
        None => (text, 0),
    };
    let position =
        |at: u64| usize::try_from(at).map_or(text.len(), |at| (at + shift).min(text.len()));
    let mut reader = Reader::from_str(body);
    // End tags are matched here, against our own stack, to word the message.
    reader.config_mut().check_end_names = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let before = position(reader.buffer_position());
        let event = reader
            .read_event()
            .map_err(|err| error(position(reader.error_position()), err.to_string()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() && stack.is_empty() => {
                return Err(error(before, "the document has more than one root element"));
            }
            Event::Start(_) if stack.len() >= MAX_DEPTH => {
                return Err(error(
                    before,
                    format!("elements nested more than {MAX_DEPTH} deep"),
                ));
            }
            Event::Start(tag) => stack.push(element(text, before, &tag)?),
            Event::Empty(tag) => {
                let done = element(text, before, &tag)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::End(end) => {
                let found = String::from_utf8_lossy(end.name().as_ref()).into_owned();
                let Some(done) = stack.pop() else {
                    return Err(error(before, format!("unexpected close tag '{found}'")));
                };
                if done.name != found {
                    let expected = &done.name;
                    return Err(error(
                        before,
                        format!("expected '{expected}' tag, not '{found}'"),
                    ));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) if stack.is_empty() => {
                let after = position(reader.buffer_position());
                let chunk = text.get(before..after).unwrap_or("");
                if let Some(at) = chunk.find(|c: char| !c.is_ascii_whitespace()) {
                    return Err(error(before + at, "unknown token"));
                }
            }
            Event::Eof => {
                return match (root, stack.is_empty()) {
                    (_, false) => Err(error(
                        text.len(),
                        "the root node was opened but never closed",
                    )),
                    (Some(root), true) => Ok(root),
                    (None, true) => Err(error(0, "the document does not have a root node")),
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_names_and_values() {
        let text = "<?xml version=\"1.0\"?>\n<Head v=\"1\">\n <a x=\"&amp;\tb\" y='c'/>\n</Head>";
        let root = parse(text).expect("parses");
        let root = root.node();
        assert_eq!((root.name(), root.start()), ("Head", 22));
        let a = root.children().next().expect("child");
        assert_eq!(&text[a.start()..a.start() + 2], "<a");
        let attrs: Vec<(&str, &str, &str)> = a
            .attributes()
            .map(|at| (at.name(), at.value(), &text[at.start()..at.start() + 1]))
            .collect();
        assert_eq!(attrs, [("x", "& b", "x"), ("y", "c", "y")]);
    }

    #[test]
    fn a_byte_order_mark_and_a_doctype_are_accepted() {
        let root = parse("\u{feff}<?xml version=\"1.0\"?>\n<!DOCTYPE head>\n<!-- c -->\n<head/>\n")
            .expect("parses");
        assert_eq!(root.node().name(), "head");
    }

    #[test]
    fn malformed_documents_are_one_error_each() {
        let table = [
            ("", 0, "the document does not have a root node"),
            ("  \n", 0, "the document does not have a root node"),
            ("watch=/x", 0, "unknown token"),
            (
                "<head>\n<a>\n",
                11,
                "the root node was opened but never closed",
            ),
            ("<head>\n <a>\n</head>", 12, "expected 'a' tag, not 'head'"),
            ("<head>\n <a b=c/></head>", 13, "expected a quote not 'c'"),
            ("<a/><b/>", 4, "the document has more than one root element"),
        ];
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(&deep).map(|_| ()),
            Err(error(3 * MAX_DEPTH, "elements nested more than 256 deep"))
        );
        for (text, offset, message) in table {
            assert_eq!(
                parse(text).map(|_| ()),
                Err(error(offset, message)),
                "{text:?}"
            );
        }
    }
}
