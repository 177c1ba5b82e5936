//! Env files, as docker compose users write them: `.env` beside the stack
//! file (or `--env-file`) for `${…}` in the stack file, and `env_file:` for a
//! service's environment. Parsed by dotenvy: `NAME=value`, `export NAME=…`,
//! `#` comments, single- and double-quoted values (double quotes may span
//! lines and hold escapes), `${VAR}` in unquoted and double-quoted values.
//!
//! An env file is user-provided configuration, like the stack file beside it,
//! and is read the same way (a plain read, by the user cogno runs as).

use super::diagnostic::{Diagnostic, Span};
use std::path::{Path, PathBuf};

/// The variables of the env file at `path`, in file order.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, Diagnostic> {
    let text = super::read_text(
        path,
        "the env file",
        "create it, or fix its path (--env-file is relative to the current directory)",
    )?;
    let mut vars = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok(var) => vars.push(var),
            Err(dotenvy::Error::LineParse(line, index)) => {
                return Err(malformed(path, &text, &line, index))
            }
            Err(e) => {
                return Err(Diagnostic::in_stack_file(
                    path,
                    format!("cannot read the env file: {e}"),
                )
                .help("write one NAME=value per line (see docs/configuration.md)"))
            }
        }
    }
    Ok(vars)
}

/// dotenvy names what it could not parse by its text (the whole line, or
/// only the value) and the byte where it stopped; the line is found back in
/// the file for its number.
fn malformed(path: &Path, text: &str, fragment: &str, index: usize) -> Diagnostic {
    let fragment = fragment.lines().next().unwrap_or(fragment).trim();
    let found = (!fragment.is_empty())
        .then(|| {
            let lines = || text.lines().enumerate();
            lines()
                .find(|(_, l)| l.trim() == fragment)
                .or_else(|| lines().find(|(_, l)| l.contains(fragment)))
        })
        .flatten();
    let (written, span) = match found {
        Some((n, line)) => {
            let start = line.find(fragment).unwrap_or(0);
            let span = Span {
                line: n + 1,
                column: start + index.min(fragment.len()) + 1,
                len: 1,
            };
            (line.trim(), Some(span))
        }
        None => (fragment, None),
    };
    Diagnostic::in_stack_file(path, format!("malformed line in env file: `{written}`"))
        .help(
            "write NAME=value (NAME of letters, digits and `_`); quote a value with spaces \
             or special characters: NAME=\"a b\"; a comment line starts with #",
        )
        .at(text, span)
}

/// Variables `${…}` in the stack file may use after cogno's environment: the
/// files given with `--env-file` (later files winning), else `.env` beside
/// the stack file when there is one.
pub fn interpolation_vars(
    stack_file: Option<&Path>,
    given: &[PathBuf],
) -> Result<Vec<(String, String)>, Diagnostic> {
    if !given.is_empty() {
        let mut vars = Vec::new();
        for file in given {
            vars.extend(read(file)?);
        }
        return Ok(vars);
    }
    let Some(file) = stack_file else {
        return Ok(Vec::new());
    };
    let beside = file.parent().unwrap_or(Path::new("")).join(".env");
    if beside.exists() {
        read(&beside)
    } else {
        Ok(Vec::new())
    }
}

/// The value of `name` in `vars`: the last one written wins, as in a shell.
pub fn lookup(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cogno-envfile-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_forms_compose_users_write() {
        let path = file(
            "forms",
            "# a comment\n\
             PLAIN=\"a b\"\n\
             export EXPORTED=1\n\
             SINGLE='x $PLAIN y'\n\
             DOUBLE=\"line one\nline two\"\n\
             \n\
             REF=${PLAIN}!\n\
             TRAILING=v # a comment after a value\n",
        );
        let vars = read(&path).unwrap();
        let get = |n: &str| lookup(&vars, n).unwrap_or_else(|| panic!("{n} in {vars:?}"));
        assert_eq!(get("PLAIN"), "a b");
        assert_eq!(get("EXPORTED"), "1");
        assert_eq!(get("SINGLE"), "x $PLAIN y");
        assert_eq!(get("DOUBLE"), "line one\nline two");
        assert_eq!(get("REF"), "a b!");
        assert_eq!(get("TRAILING"), "v");
    }

    #[test]
    fn a_malformed_line_is_named_with_its_line() {
        let path = file("bad", "A=1\n\nNOT A VARIABLE\nB=2\n");
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("malformed line"), "{err}");
        assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
        assert!(err.contains("help:"), "{err}");
        // An unquoted value with a space: dotenvy names only the value.
        let path = file("value", "A=1\nB=two words\n");
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("`B=two words`"), "{err}");
        assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read(Path::new("/nonexistent/cogno.env"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/cogno.env"), "{err}");
    }
}
