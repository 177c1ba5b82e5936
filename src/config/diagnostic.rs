//! Placing configuration errors: the key path of a value, and where that
//! path is written in the stack file (line, column), for [`crate::error`]'s
//! compiler-style rendering. The positions come from the parser itself
//! ([`super::yaml::Node::locate`]), also for errors found after parsing
//! (unknown dependency, cycle, bad duration…).

use super::yaml::Node;
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

    /// Places the error where the key path `path` of `doc` (parsed from `text`) is written.
    pub fn at_path(self, text: &str, doc: &Node, path: &[Seg]) -> Self {
        let span = doc.locate(path);
        self.at(text, span)
    }
}
