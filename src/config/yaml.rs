//! The stack file's YAML as a small tree that remembers where every key and
//! value is written, so that any error — found by the parser, by serde while
//! reading the tree into `raw`'s types, or by `config::build` afterwards — is
//! placed at its exact line and column ([`Node::locate`]).
//!
//! The parser is serde-saphyr: pure Rust (no libyaml, unlike serde_yml and its
//! RustSec advisory; serde_yaml is archived), maintained, and its `Spanned`
//! wrapper gives each node's position straight from the parser. YAML merge keys
//! (`<<: *anchor`, or a list of anchors) are expanded by it; a repeated key is
//! passed through to this tree, which reports it with both positions.
//!
//! The tree is then read into `raw`'s types through its own serde
//! `Deserializer`, after `${VAR}` interpolation has rewritten its strings.

use super::diagnostic::{Seg, Span};
use serde::de::{self, value::Error as ValueError, Deserializer, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, Location, Options, Spanned};
use std::fmt;

/// A value and where it is written.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; a repeated key is kept (see [`Node::duplicate`]).
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A parse error: the parser's message and its position.
pub struct SyntaxError {
    pub message: String,
    pub span: Option<Span>,
}

/// Parses `text`; `None` for a document with no content (empty, or only comments).
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut options = Options::default();
    // Reported by `Node::duplicate`, which knows where both are written.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // YAML 1.2, as before: `yes`/`on` are strings (an env value stays `yes`).
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Option<Node>>(text, options).map_err(|e| {
        let span = e.location().and_then(|l| span_at(text, l, 1));
        let message = e.without_snippet().to_string();
        // The position is shown by cogno's own rendering, not in the message.
        let message = match message.split_once(" at line ") {
            Some((m, _)) => m.to_owned(),
            None => message,
        };
        SyntaxError { message, span }
    })
}

/// Turns a parser location into cogno's span, `len` characters wide but
/// never past the end of its line.
fn span_at(text: &str, l: Location, len: u64) -> Option<Span> {
    if l == Location::UNKNOWN || l.line() == 0 {
        return None;
    }
    let (line, column) = (l.line() as usize, l.column() as usize);
    let rest = text
        .lines()
        .nth(line - 1)
        .map_or(0, |s| s.chars().count().saturating_sub(column - 1));
    Some(Span {
        line,
        column,
        len: (len as usize).min(rest).max(1),
    })
}

/// Where a node is written: its definition, for a value reached through an
/// alias or a merge key (that is the text to fix).
fn span_of<T>(spanned: &Spanned<T>) -> Span {
    let l = if spanned.defined != Location::UNKNOWN {
        spanned.defined
    } else {
        spanned.referenced
    };
    Span {
        line: l.line() as usize,
        column: l.column() as usize,
        len: (l.span().len() as usize).max(1),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            span: span_of(&spanned),
            value: spanned.value,
        })
    }
}

/// A mapping key's text (`3000:` and `true:` are keys too).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Str(s) => Ok(Key(s)),
            Value::Bool(b) => Ok(Key(b.to_string())),
            Value::Int(n) => Ok(Key(n.to_string())),
            Value::UInt(n) => Ok(Key(n.to_string())),
            Value::Float(n) => Ok(Key(n.to_string())),
            Value::Null => Ok(Key("null".into())),
            Value::Seq(_) | Value::Map(_) => Err(de::Error::custom(
                "a mapping key must be a plain word, not a list or a map",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::UInt(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                Ok(Value::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::Str(s))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    let key_span = span_of(&key);
                    let key = key.value.0;
                    let key_span = Span {
                        len: key.chars().count().max(1),
                        ..key_span
                    };
                    entries.push(Entry {
                        key,
                        key_span,
                        value: map.next_value()?,
                    });
                }
                Ok(Value::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    /// Finds where the value at `path` is written: the key itself for a
    /// mapping entry, the item for a list entry. When the path goes further
    /// than the document (a key serde or `build` expected but that is not
    /// written), the deepest part found is given, so an error is never placed
    /// nowhere.
    pub fn locate(&self, path: &[Seg]) -> Option<Span> {
        let mut node = self;
        let mut found = None;
        for seg in path {
            let (span, next) = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    // The last one: it is the one a repeated key leaves in force.
                    match entries.iter().rev().find(|e| &e.key == k) {
                        Some(e) => (e.key_span, &e.value),
                        None => break,
                    }
                }
                (Seg::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(item) => (item.span, item),
                    None => break,
                },
                _ => break,
            };
            found = Some(span);
            node = next;
        }
        found
    }

    /// The first key written twice in one mapping: the path of that mapping,
    /// and the two entries.
    pub fn duplicate(&self) -> Option<(Vec<Seg>, &Entry, &Entry)> {
        fn walk<'a>(
            node: &'a Node,
            path: &mut Vec<Seg>,
        ) -> Option<(Vec<Seg>, &'a Entry, &'a Entry)> {
            match &node.value {
                Value::Map(entries) => {
                    for (i, e) in entries.iter().enumerate() {
                        if let Some(again) = entries[i + 1..].iter().find(|a| a.key == e.key) {
                            return Some((path.clone(), e, again));
                        }
                    }
                    for e in entries {
                        path.push(Seg::Key(e.key.clone()));
                        let found = walk(&e.value, path);
                        path.pop();
                        if found.is_some() {
                            return found;
                        }
                    }
                    None
                }
                Value::Seq(items) => items.iter().enumerate().find_map(|(i, item)| {
                    path.push(Seg::Index(i));
                    let found = walk(item, path);
                    path.pop();
                    found
                }),
                _ => None,
            }
        }
        walk(self, &mut Vec::new())
    }

    /// Leaves out the top-level keys `keep` refuses (compose's `x-*` extension keys).
    pub fn retain_top_level(&mut self, keep: impl Fn(&str) -> bool) {
        if let Value::Map(entries) = &mut self.value {
            entries.retain(|e| keep(&e.key));
        }
    }
}

/// Reading the tree into `raw`'s types: every serde `Deserialize` works on it,
/// so that `serde_path_to_error` can name the key path of a bad value.
impl<'de> Deserializer<'de> for &'de Node {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ValueError> {
        match &self.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(n) => v.visit_i64(*n),
            Value::UInt(n) => v.visit_u64(*n),
            Value::Float(n) => v.visit_f64(*n),
            Value::Str(s) => v.visit_borrowed_str(s),
            Value::Seq(items) => v.visit_seq(de::value::SeqDeserializer::new(items.iter())),
            Value::Map(entries) => v.visit_map(de::value::MapDeserializer::new(
                entries.iter().map(|e| (e.key.as_str(), &e.value)),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ValueError> {
        match self.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ValueError> {
        match &self.value {
            // Unit variants, the only ones the stack file has (`restart: always`).
            Value::Str(s) => s
                .as_str()
                .into_deserializer()
                .deserialize_enum(name, variants, v),
            _ => self.deserialize_any(v),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for &'de Node {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    const DOC: &str = "\
data_dir: ./data
services:
  web:
    command: node server.js
    depends_on: [migrate, redis]
    health:
      interval: 5x
  worker:
    depends_on:
      - web
      - ghost
";

    /// The entries of a mapping node (none for any other node).
    fn entries(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    fn doc() -> Node {
        parse(DOC).ok().flatten().expect("a document")
    }

    fn at(path: &[Seg]) -> (usize, usize, usize) {
        let s = doc().locate(path).expect("found");
        (s.line, s.column, s.len)
    }

    #[test]
    fn finds_nested_keys() {
        let path = [key("services"), key("web"), key("health"), key("interval")];
        assert_eq!(at(&path), (7, 7, 8));
    }

    #[test]
    fn finds_flow_sequence_items() {
        let path = [
            key("services"),
            key("web"),
            key("depends_on"),
            Seg::Index(1),
        ];
        assert_eq!(at(&path), (5, 27, 5));
    }

    #[test]
    fn finds_block_sequence_items() {
        let path = [
            key("services"),
            key("worker"),
            key("depends_on"),
            Seg::Index(1),
        ];
        assert_eq!(at(&path), (11, 9, 5));
    }

    #[test]
    fn same_key_in_another_service_is_not_confused() {
        let path = [key("services"), key("worker"), key("depends_on")];
        assert_eq!(at(&path).0, 9);
    }

    #[test]
    fn falls_back_to_deepest_found_key() {
        assert_eq!(at(&[key("services"), key("web"), key("nope")]).0, 3);
    }

    #[test]
    fn an_empty_document_is_none() {
        assert!(parse("").ok().unwrap().is_none());
        assert!(parse("# only a comment\n").ok().unwrap().is_none());
    }

    #[test]
    fn merge_keys_are_expanded_and_explicit_keys_win() {
        let text = "\
x-common: &common
  restart: always
  env: {A: '1'}
x-more: &more
  stop_signal: SIGINT
services:
  web:
    <<: [*common, *more]
    restart: never
";
        let doc = parse(text).ok().flatten().unwrap();
        let web = &entries(&entries(&doc)[2].value)[0].value;
        let keys: Vec<&str> = entries(web).iter().map(|e| e.key.as_str()).collect();
        assert!(
            keys.contains(&"env") && keys.contains(&"stop_signal"),
            "{keys:?}"
        );
        let restart = entries(web).iter().find(|e| e.key == "restart").unwrap();
        assert!(matches!(&restart.value.value, Value::Str(s) if s == "never"));
        assert_eq!(keys.iter().filter(|k| **k == "restart").count(), 1);
        // A merged value is placed where it is written: in the anchor.
        let env = entries(web).iter().find(|e| e.key == "env").unwrap();
        assert_eq!(env.key_span.line, 3);
    }

    #[test]
    fn a_repeated_key_is_found_with_both_positions() {
        let doc = parse("a: 1\nb:\n  c: 1\n  c: 2\n").ok().flatten().unwrap();
        let (path, first, again) = doc.duplicate().expect("a duplicate");
        assert_eq!(path, [key("b")]);
        assert_eq!((first.key_span.line, again.key_span.line), (3, 4));
        assert_eq!(again.key_span.column, 3);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let Err(e) = parse("services:\n  web:\n    command: x\n   priority: 5\n") else {
            panic!("misindented YAML parsed")
        };
        assert!(e.span.is_some(), "{}", e.message);
        assert!(!e.message.contains(" at line "), "{}", e.message);
    }
}
