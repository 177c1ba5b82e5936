//! Placing configuration errors: the key path of a value, and where that
//! path is written in the stack file (line, column), for [`crate::error`]'s
//! compiler-style rendering.
//!
//! serde_yaml keeps no positions once a document is parsed, so errors found
//! after parsing (unknown dependency, cycle, bad duration…) are placed by
//! [`locate`], which walks the block structure of the source text along the
//! key path. It understands block mappings, block sequences and one-line flow
//! sequences, which is what stack files are written in; anything it cannot
//! follow falls back to the deepest key it did find.

use std::path::Path;

/// One segment of a path into the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a key path the way a user would type it: `services.web.health.interval`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub use crate::error::{Error as Diagnostic, Span};

impl Diagnostic {
    /// A configuration error in `file` (exit status 2).
    pub fn in_stack_file(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic::config(message).in_file(file)
    }

    /// Places the error at the key path `path` in `text`.
    pub fn at_path(self, text: &str, path: &[Seg]) -> Self {
        let span = locate(text, path);
        self.at(text, span)
    }
}

/// Finds where the value at `path` is written in `text`. Returns the position
/// of the deepest segment found (the key itself, or the list item), so that
/// an error is never placed nowhere when the document uses a form the walker
/// does not follow.
pub fn locate(text: &str, path: &[Seg]) -> Option<Span> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<Span> = None;
    // The block being searched: lines [start, end) whose indent is > parent_indent.
    let mut start = 0usize;
    let mut parent_indent: isize = -1;
    // Set when the current value is a one-line flow sequence `[a, b]`.
    let mut flow: Option<(usize, usize)> = None;

    for seg in path {
        match seg {
            Seg::Key(key) => {
                let Some((line, col)) = find_key(&lines, start, parent_indent, key) else {
                    return found;
                };
                let span = Span {
                    line: line + 1,
                    column: col + 1,
                    len: key.chars().count(),
                };
                found = Some(span);
                parent_indent = col as isize;
                start = line + 1;
                flow = flow_seq_start(lines[line], col + key.len()).map(|c| (line, c));
                // A value on the same line as its key (`key: value`) ends the walk
                // for mappings, but keep `found` pointing at the key.
            }
            Seg::Index(idx) => {
                if let Some((line, open)) = flow {
                    if let Some((col, len)) = flow_item(lines[line], open, *idx) {
                        found = Some(Span {
                            line: line + 1,
                            column: col + 1,
                            len,
                        });
                    }
                    return found;
                }
                match find_item(&lines, start, parent_indent, *idx) {
                    Some((line, col)) => {
                        let rest = lines[line][col + 1..].trim_start();
                        let item_col = lines[line].len() - rest.len();
                        found = Some(Span {
                            line: line + 1,
                            column: item_col + 1,
                            len: rest.trim_end().chars().count().max(1),
                        });
                        // The item's keys (`- key: v`) are searched from the dash line on.
                        parent_indent = col as isize;
                        start = line;
                        flow = None;
                    }
                    None => return found,
                }
            }
        }
    }
    found
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#') || t == "---"
}

/// Finds `key:` in the block that starts at `start` and is indented more than `parent`.
fn find_key(lines: &[&str], start: usize, parent: isize, key: &str) -> Option<(usize, usize)> {
    let mut block_indent: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if is_blank_or_comment(line) {
            continue;
        }
        let raw_indent = indent_of(line);
        let body = &line[raw_indent..];
        // A mapping nested in a list item: `- key: value`.
        let (body, indent) = match body.strip_prefix("- ") {
            Some(rest) => (rest.trim_start(), line.len() - rest.trim_start().len()),
            None => (body, raw_indent),
        };
        if (indent as isize) <= parent {
            return None;
        }
        let block = *block_indent.get_or_insert(indent);
        if indent != block {
            continue;
        }
        for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(after) = body.strip_prefix(quoted.as_str()) {
                if after.trim_start().starts_with(':') {
                    let offset = if quoted.len() > key.len() { 1 } else { 0 };
                    return Some((i, indent + offset));
                }
            }
        }
    }
    None
}

/// Finds the `idx`-th `- ` item of a block sequence indented more than `parent`.
fn find_item(lines: &[&str], start: usize, parent: isize, idx: usize) -> Option<(usize, usize)> {
    let mut seen = 0usize;
    let mut item_indent: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if is_blank_or_comment(line) {
            continue;
        }
        let indent = indent_of(line);
        if (indent as isize) < parent
            || ((indent as isize) == parent && !line[indent..].starts_with('-'))
        {
            return None;
        }
        if line[indent..].starts_with('-') && *item_indent.get_or_insert(indent) == indent {
            if seen == idx {
                return Some((i, indent));
            }
            seen += 1;
        }
    }
    None
}

/// When `key: [a, b]` is on one line, the column just after `[`.
fn flow_seq_start(line: &str, after_key: usize) -> Option<usize> {
    let rest = line.get(after_key..)?.trim_start().strip_prefix(':')?;
    let trimmed = rest.trim_start();
    if trimmed.starts_with('[') {
        Some(line.len() - trimmed.len() + 1)
    } else {
        None
    }
}

/// Column and width of the `idx`-th item of a flow sequence starting at `open`.
fn flow_item(line: &str, open: usize, idx: usize) -> Option<(usize, usize)> {
    let inner = &line[open..];
    let end = inner.find(']').unwrap_or(inner.len());
    let mut col = open;
    for (n, item) in inner[..end].split(',').enumerate() {
        let lead = item.len() - item.trim_start().len();
        if n == idx {
            return Some((col + lead, item.trim().chars().count().max(1)));
        }
        col += item.len() + 1;
    }
    None
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

    #[test]
    fn finds_nested_keys() {
        let s = locate(
            DOC,
            &[key("services"), key("web"), key("health"), key("interval")],
        )
        .unwrap();
        assert_eq!((s.line, s.column), (7, 7));
    }

    #[test]
    fn finds_flow_sequence_items() {
        let s = locate(
            DOC,
            &[
                key("services"),
                key("web"),
                key("depends_on"),
                Seg::Index(1),
            ],
        )
        .unwrap();
        assert_eq!((s.line, s.column, s.len), (5, 27, 5));
    }

    #[test]
    fn finds_block_sequence_items() {
        let s = locate(
            DOC,
            &[
                key("services"),
                key("worker"),
                key("depends_on"),
                Seg::Index(1),
            ],
        )
        .unwrap();
        assert_eq!((s.line, s.column, s.len), (11, 9, 5));
    }

    #[test]
    fn same_key_in_another_service_is_not_confused() {
        let s = locate(DOC, &[key("services"), key("worker"), key("depends_on")]).unwrap();
        assert_eq!(s.line, 9);
    }

    #[test]
    fn falls_back_to_deepest_found_key() {
        let s = locate(DOC, &[key("services"), key("web"), key("nope")]).unwrap();
        assert_eq!(s.line, 3);
    }
}
