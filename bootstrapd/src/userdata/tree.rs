//! A small spanned YAML node tree built from granit-parser events.
//!
//! serde-saphyr would lose positions and the scalar style the validator needs (a quoted "yes"
//! is a string, a plain `yes` is not a boolean in YAML 1.2 and must not silently become one), so
//! the tree keeps both. Userdata is untrusted: depth, node count and alias expansion are capped
//! so an alias bomb or a deeply nested document is refused instead of eating memory.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span};

use super::Problem;

/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may have, counting every node an alias expands to.
pub const MAX_NODES: usize = 10_000;
/// Most scalar (and tag) bytes a document may expand to, counting every alias expansion.
/// Counting nodes alone let one large anchored scalar, aliased a few thousand times, need
/// gigabytes; twice the input limit leaves room for any honest use of aliases.
pub const MAX_EXPANDED_BYTES: usize = 2 * super::MAX_USERDATA_BYTES;

/// A 1-based position in the (decoded) document text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    /// `|`: the text's lines are the document's lines (`trusted_ca` points into them).
    Literal,
    /// `>`.
    Block,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub mark: Mark,
    /// The tag as written (`!!str`, `!custom`), if any.
    pub tag: Option<String>,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    Scalar { text: String, style: Style },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain `~`, `null` or empty scalar: YAML's null.
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Scalar { text, style } => {
                *style == Style::Plain
                    && self.tag.is_none()
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// Looks up a mapping entry by its scalar key.
    pub fn get(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// What the node costs when an alias copies it: its nodes and its scalar and tag bytes.
    fn size(&self) -> Size {
        let own = Size {
            nodes: 1,
            bytes: self.tag.as_ref().map_or(0, String::len),
        };
        match &self.value {
            Value::Scalar { text, .. } => own.plus(Size {
                nodes: 0,
                bytes: text.len(),
            }),
            Value::Seq(items) => items.iter().fold(own, |acc, n| acc.plus(n.size())),
            Value::Map(entries) => entries
                .iter()
                .fold(own, |acc, (k, v)| acc.plus(k.size()).plus(v.size())),
        }
    }
}

/// Nodes and bytes of a (sub)tree, for the expansion budget.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl Size {
    fn plus(self, other: Size) -> Size {
        Size {
            nodes: self.nodes.saturating_add(other.nodes),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

const ONE_NODE: Size = Size { nodes: 1, bytes: 0 };

/// What came out of a document: its root (None when empty or when parsing stopped) and every
/// problem found while building it.
#[derive(Debug, Default)]
pub struct Built {
    pub root: Option<Node>,
    pub problems: Vec<Problem>,
}

enum Frame {
    Seq {
        mark: Mark,
        tag: Option<String>,
        anchor: usize,
        path: String,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        tag: Option<String>,
        anchor: usize,
        path: String,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Size)>,
    /// Everything the tree holds so far, alias expansions included.
    total: Size,
    root: Option<Node>,
    problems: Vec<Problem>,
}

fn mark_of(span: &Span) -> Mark {
    Mark {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn style_of(style: ScalarStyle) -> Style {
    match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
        ScalarStyle::Literal => Style::Literal,
        _ => Style::Block,
    }
}

fn problem(mark: Mark, path: &str, message: impl Into<String>) -> Problem {
    Problem {
        line: mark.line,
        column: mark.column,
        path: path.to_string(),
        message: message.into(),
    }
}

impl Builder {
    /// The path of the node about to be added to the innermost collection.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map { path, key, .. }) => match key {
                None => path.clone(),
                Some(k) => join_key(path, k.scalar_text().unwrap_or("?")),
            },
        }
    }

    fn count(&mut self, add: Size, mark: Mark) -> Result<(), Problem> {
        self.total = self.total.plus(add);
        let message = if self.total.nodes > MAX_NODES {
            format!("document too large: more than {MAX_NODES} nodes (counting alias expansions)")
        } else if self.total.bytes > MAX_EXPANDED_BYTES {
            format!(
                "document too large: its values expand to more than {MAX_EXPANDED_BYTES} bytes \
                 (counting alias expansions)"
            )
        } else {
            return Ok(());
        };
        Err(problem(mark, &self.child_path(), message))
    }

    fn push(&mut self, frame: Frame, mark: Mark) -> Result<(), Problem> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(problem(
                mark,
                &self.child_path(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Hands a finished node to its parent (or makes it the root).
    fn add(&mut self, node: Node) {
        let mut duplicate = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, path, ..
            }) => match key.take() {
                None => {
                    if let Some(text) = node.scalar_text()
                        && let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.scalar_text() == Some(text))
                    {
                        duplicate = Some(problem(
                            node.mark,
                            &join_key(path, text),
                            format!(
                                "duplicate key `{}` (first at {}:{})",
                                shown(text),
                                first.mark.line,
                                first.mark.column
                            ),
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => {
                    // The value of a duplicate key is dropped with it: the first one stands.
                    if !entries.iter().any(|(e, _)| {
                        e.scalar_text().is_some() && e.scalar_text() == k.scalar_text()
                    }) {
                        entries.push((k, node));
                    }
                }
            },
        }
        if let Some(p) = duplicate {
            self.problems.push(p);
        }
    }

    fn finish(&mut self, anchor: usize, node: Node) {
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        self.add(node);
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), Problem> {
        let mark = mark_of(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| t.original());
                self.scalar(mark, text.into_owned(), style, anchor, tag)
            }
            Event::SequenceStart(_, anchor, tag) => {
                let tag = tag.map(|t| t.original());
                self.open(mark, |path| Frame::Seq {
                    mark,
                    tag,
                    anchor,
                    path,
                    items: Vec::new(),
                })
            }
            Event::MappingStart(_, anchor, tag) => {
                let tag = tag.map(|t| t.original());
                self.open(mark, |path| Frame::Map {
                    mark,
                    tag,
                    anchor,
                    path,
                    entries: Vec::new(),
                    key: None,
                })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.close();
                Ok(())
            }
            Event::Alias(id) => self.alias(mark, id),
            _ => Ok(()),
        }
    }

    fn scalar(
        &mut self,
        mark: Mark,
        text: String,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<String>,
    ) -> Result<(), Problem> {
        let node = Node {
            mark,
            tag,
            value: Value::Scalar {
                text,
                style: style_of(style),
            },
        };
        self.count(node.size(), mark)?;
        self.finish(anchor, node);
        Ok(())
    }

    /// A sequence or mapping starts: its frame collects the children until it ends.
    fn open(&mut self, mark: Mark, frame: impl FnOnce(String) -> Frame) -> Result<(), Problem> {
        self.count(ONE_NODE, mark)?;
        let path = self.child_path();
        self.push(frame(path), mark)
    }

    /// A sequence or mapping ends: its frame becomes a node of its parent.
    fn close(&mut self) {
        match self.stack.pop() {
            Some(Frame::Seq {
                mark,
                tag,
                anchor,
                items,
                ..
            }) => self.finish(
                anchor,
                Node {
                    mark,
                    tag,
                    value: Value::Seq(items),
                },
            ),
            Some(Frame::Map {
                mark,
                tag,
                anchor,
                entries,
                ..
            }) => self.finish(
                anchor,
                Node {
                    mark,
                    tag,
                    value: Value::Map(entries),
                },
            ),
            None => {}
        }
    }

    fn alias(&mut self, mark: Mark, id: usize) -> Result<(), Problem> {
        let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
            return Err(problem(
                mark,
                &self.child_path(),
                "alias to an unknown anchor",
            ));
        };
        // Counted before the copy is made: the budget must hold before memory is spent.
        self.count(size, mark)?;
        let Some((target, _)) = self.anchors.get(&id) else {
            unreachable!("the anchor was found just above")
        };
        let mut node = target.clone();
        node.mark = mark;
        self.add(node);
        Ok(())
    }
}

/// Characters of a key or value echoed in a message; the rest is cut (`...`).
pub const SHOWN_CHARS: usize = 64;

/// `text` as messages echo it: escaped, and cut after [`SHOWN_CHARS`] characters so that a
/// huge key or value costs its own bytes once, not once per message and path that names it.
pub fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// `path.key`, or `key` at the root; a long key is shortened as [`shown`] does.
pub fn join_key(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        shown(key)
    } else {
        format!("{path}.{}", shown(key))
    }
}

/// Parses one YAML document into a tree. More than one document is a problem: userdata is a
/// single document and a second one would be silently ignored otherwise.
pub fn build(text: &str) -> Built {
    let options = granit_parser::options! {
        emit_comments: false,
        // A little above ours so the tree's own, clearer message is the one users see.
        flow_nesting_limit: MAX_DEPTH + 8,
        block_nesting_limit: MAX_DEPTH + 8,
    };
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        total: Size::default(),
        root: None,
        problems: Vec::new(),
    };
    let mut documents = 0usize;
    for item in Parser::new_from_str_with_options(text, options) {
        let (event, span) = match item {
            Ok(pair) => pair,
            Err(e) => {
                let m = e.marker();
                let mut message = e.info();
                if message.is_empty() {
                    message = "YAML syntax error".to_string();
                }
                b.problems.push(problem(
                    Mark {
                        line: m.line(),
                        column: m.col() + 1,
                    },
                    &b.child_path(),
                    format!("YAML syntax error: {message}"),
                ));
                return Built {
                    root: None,
                    problems: b.problems,
                };
            }
        };
        if let Event::DocumentStart(..) = event {
            documents += 1;
            if documents > 1 {
                b.problems.push(problem(
                    mark_of(&span),
                    "",
                    "more than one YAML document: userdata must be a single document",
                ));
                return Built {
                    root: None,
                    problems: b.problems,
                };
            }
            continue;
        }
        if let Err(p) = b.event(event, &span) {
            b.problems.push(p);
            return Built {
                root: None,
                problems: b.problems,
            };
        }
    }
    Built {
        root: b.root,
        problems: b.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Node {
        let b = build(text);
        assert!(b.problems.is_empty(), "{:?}", b.problems);
        b.root.expect("a root")
    }

    #[test]
    fn keeps_positions_and_styles() {
        let root = ok("a: 1\nb:\n  - 'yes'\n  - no\n");
        let (k, v) = root.get("b").unwrap();
        assert_eq!(k.mark, Mark { line: 2, column: 1 });
        let Value::Seq(items) = &v.value else {
            panic!("not a sequence")
        };
        assert_eq!(items[0].mark, Mark { line: 3, column: 5 });
        assert!(
            matches!(&items[0].value, Value::Scalar { style: Style::Quoted, text } if text == "yes")
        );
        assert!(
            matches!(&items[1].value, Value::Scalar { style: Style::Plain, text } if text == "no")
        );
    }

    #[test]
    fn empty_value_is_null() {
        let root = ok("a:\nb: ~\n");
        assert!(root.get("a").unwrap().1.is_null());
        assert!(root.get("b").unwrap().1.is_null());
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let b = build("a:\n  x: 1\n  x: 2\n");
        assert_eq!(b.problems.len(), 1);
        let p = &b.problems[0];
        assert_eq!((p.line, p.column), (3, 3));
        assert_eq!(p.path, "a.x");
        assert_eq!(p.message, "duplicate key `x` (first at 2:3)");
        let root = b.root.unwrap();
        let a = root.get("a").unwrap().1;
        assert_eq!(a.get("x").unwrap().1.scalar_text(), Some("1"));
    }

    #[test]
    fn aliases_expand_within_budget() {
        let root = ok("a: &x [1, 2]\nb: *x\n");
        let (_, b) = root.get("b").unwrap();
        assert!(matches!(&b.value, Value::Seq(items) if items.len() == 2));
        assert_eq!(b.mark, Mark { line: 2, column: 4 });
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let b = build(&doc);
        assert!(b.root.is_none());
        let p = b.problems.last().unwrap();
        assert!(p.message.contains("more than 10000 nodes"), "{p:?}");
        assert_eq!(p.line, 4, "{p:?}");
    }

    #[test]
    fn alias_bomb_by_bytes_is_refused() {
        // Few nodes, many bytes: one 100 KB scalar aliased 40 times is 4 MB expanded.
        let mut doc = format!("a: &a {}\nb: [", "x".repeat(100_000));
        doc.push_str(&vec!["*a"; 40].join(", "));
        doc.push_str("]\n");
        let b = build(&doc);
        assert!(b.root.is_none(), "accepted {} problems", b.problems.len());
        let p = b.problems.last().unwrap();
        assert_eq!(
            p.message,
            format!(
                "document too large: its values expand to more than {MAX_EXPANDED_BYTES} bytes \
                 (counting alias expansions)"
            )
        );
        // The alias that crossed the budget: the 20th (21 copies of 100 KB), at column 81.
        assert_eq!(
            (p.line, p.column, p.path.as_str()),
            (2, 81, "b[19]"),
            "{p:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        // Block nesting streams event by event, so the tree's own limit answers.
        let mut doc = String::new();
        for i in 0..100 {
            doc.push_str(&format!("{}k:\n", "  ".repeat(i)));
        }
        let b = build(&doc);
        assert!(b.root.is_none());
        let p = &b.problems[0];
        assert_eq!(p.message, "nesting deeper than 64 levels");
        assert_eq!((p.line, p.column), (65, 129), "{p:?}");

        // The scanner looks ahead through flow collections and stops at its own limit first.
        let doc = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let b = build(&doc);
        assert!(b.root.is_none());
        let p = &b.problems[0];
        assert_eq!(p.message, "YAML syntax error: recursion limit exceeded");
        assert_eq!((p.line, p.column), (1, 73), "{p:?}");
    }

    #[test]
    fn syntax_error_has_position() {
        let b = build("a: [1, 2\nb: 3\n");
        assert!(b.root.is_none());
        let p = &b.problems[0];
        assert!(p.message.starts_with("YAML syntax error: "), "{p:?}");
        assert!(p.line >= 1 && p.column >= 1);
    }

    #[test]
    fn second_document_is_refused() {
        let b = build("a: 1\n---\nb: 2\n");
        let p = &b.problems[0];
        assert_eq!((p.line, p.column), (2, 1));
        assert!(p.message.contains("more than one YAML document"));
    }
}
