//! The one error type users see, and its one renderer.
//!
//! Every command returns [`Error`]: what went wrong, where (a file, and a
//! line and column in it when known), what to do, and the exit status it
//! ends cogno with. It renders the way a good compiler's errors do:
//!
//! ```text
//! error: service `web` depends on `db`, which is not defined
//!   --> stack.yaml:7:9
//!   |
//! 7 |       - db
//!   |         ^^
//!   = help: known services are: api, web; fix the name or add the service
//! ```
//!
//! Modules whose callers branch on the kind of failure (spawning, the
//! control socket, operators' refusals) have their own typed errors and
//! convert into this one at the command boundary.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit status of a failure after the stack started (a critical service
/// failed, something had to be killed), or of a remote command that failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a configuration, usage or pre-flight error: nothing was
/// started, and nothing that existed was changed.
pub const EXIT_CONFIG: i32 = 2;

/// A position in a file: 1-based line and column, and how many columns to underline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub len: usize,
}

/// An error, ready to show to a user.
#[derive(Debug, Clone)]
pub struct Error {
    pub message: String,
    /// The file it is about, and where in it (boxed: errors travel in
    /// `Result`s, which stay small without it).
    pub location: Option<Box<Location>>,
    pub help: Option<String>,
    /// The exit status cogno ends with because of it.
    pub status: i32,
}

/// Where an error is: a file, and a place in it when known.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: PathBuf,
    pub span: Option<Span>,
    /// The text of the line at `span`, shown under the location.
    pub source_line: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure (exit status 1).
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            location: None,
            help: None,
            status: EXIT_FAILURE,
        }
    }

    /// A configuration, usage or pre-flight error (exit status 2).
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(message).status(EXIT_CONFIG)
    }

    pub fn help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    pub fn status(mut self, status: i32) -> Error {
        self.status = status;
        self
    }

    /// The error is about `file`.
    pub fn in_file(mut self, file: &Path) -> Error {
        self.location = Some(Box::new(Location {
            file: file.to_path_buf(),
            span: None,
            source_line: None,
        }));
        self
    }

    /// Places the error at `span` of `text` (the contents of the file given
    /// to [`Error::in_file`]) and keeps that source line for display.
    pub fn at(mut self, text: &str, span: Option<Span>) -> Error {
        if let Some(loc) = &mut self.location {
            loc.source_line = span.and_then(|s| text.lines().nth(s.line - 1).map(str::to_owned));
            loc.span = span;
        }
        self
    }

    /// Prints the error on stderr and gives the exit status.
    pub fn report(&self) -> i32 {
        eprint!("{self}");
        self.status
    }
}

/// `{}` renders the whole error, starting with `error: `; `{:#}` leaves out
/// that word, for a log line whose level already says it.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            writeln!(f, "{}", self.message)?;
        } else {
            writeln!(f, "error: {}", self.message)?;
        }
        match self.location.as_deref() {
            Some(Location {
                file,
                span: Some(span),
                source_line,
            }) => {
                writeln!(f, "  --> {}:{}:{}", file.display(), span.line, span.column)?;
                if let Some(line) = source_line {
                    let gutter = span.line.to_string().len();
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{} | {}", span.line, line)?;
                    writeln!(
                        f,
                        "{:gutter$} | {}{}",
                        "",
                        " ".repeat(span.column.saturating_sub(1)),
                        "^".repeat(span.len.max(1))
                    )?;
                }
            }
            Some(loc) => writeln!(f, "  --> {}", loc.file.display())?,
            None => {}
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// A bare message from the steps that run before anything starts (the
/// bundled servers' pre-flight and preparation, whose messages already say
/// what to do): a configuration or pre-flight error, exit status 2.
impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::config(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_source_and_help() {
        let text = "services:\n  web:\n    helth: {}\n";
        let e = Error::config("unknown key `helth`")
            .in_file(Path::new("stack.yaml"))
            .at(
                text,
                Some(Span {
                    line: 3,
                    column: 5,
                    len: 5,
                }),
            )
            .help("did you mean `health`?");
        assert_eq!(
            e.to_string(),
            "error: unknown key `helth`\n  --> stack.yaml:3:5\n  |\n3 |     helth: {}\n  |     ^^^^^\n  = help: did you mean `health`?\n"
        );
        assert_eq!(e.status, EXIT_CONFIG);
        assert!(format!("{e:#}").starts_with("unknown key"));
    }

    #[test]
    fn renders_without_location() {
        let e = Error::new("the stack has stopped").help("start it with `cogno up`");
        assert_eq!(
            e.to_string(),
            "error: the stack has stopped\n  = help: start it with `cogno up`\n"
        );
        assert_eq!(e.status, EXIT_FAILURE);
    }
}
