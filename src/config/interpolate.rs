//! `${VAR}` substitution in every string value of a stack file, with docker
//! compose's forms: `${X}`, `${X:-default}`, `${X-default}`, `${X:?message}`,
//! `${X?message}`, `${X:+alternative}`, `${X+alternative}`, and `$$` for a
//! literal `$`. Values come from cogno's environment, then the env files
//! (`config::EnvFiles`). A `$` followed by anything else (`$HOME` in an
//! `sh -c` snippet) is kept as written, as it always was in cogno.
//!
//! Substitution happens on the parsed document, never on the raw text, so a
//! variable's value can never change the document's structure.

use super::diagnostic::Seg;
use super::yaml::{Node, Value};

/// Why a string could not be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${X}` with `X` unset.
    Unset(String),
    /// `${X:?message}` or `${X?message}` refused: `X` unset (or empty, for `:?`).
    Required {
        name: String,
        empty: bool,
        message: String,
    },
    Malformed(String),
}

/// Replaces variables in every string value of `node` (keys are left alone).
/// On error, returns the path of the offending value.
pub fn interpolate_tree(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<Seg>,
) -> Result<(), (Vec<Seg>, InterpolateError)> {
    match &mut node.value {
        Value::Str(s) => {
            if s.contains('$') {
                *s = interpolate(s, lookup).map_err(|e| (path.clone(), e))?;
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate_tree(item, lookup, path)?;
                path.pop();
            }
        }
        Value::Map(entries) => {
            for e in entries {
                path.push(Seg::Key(e.key.clone()));
                interpolate_tree(&mut e.value, lookup, path)?;
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {}
    }
    Ok(())
}

/// Interpolates one string.
pub fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                InterpolateError::Malformed(format!("`${{` without a closing `}}` in `{input}`"))
            })?;
            out.push_str(&expand(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${`, whose body starts `body`; a
/// default may hold `${…}` of its own (`${A:-${B}}`).
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// One `${…}` body: a name and, maybe, an operator and its word.
fn expand(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    let malformed = || {
        InterpolateError::Malformed(format!(
            "`${{{expr}}}` is not a variable reference (use ${{NAME}}, ${{NAME:-default}}, \
             ${{NAME-default}}, ${{NAME:?error}}, ${{NAME?error}}, ${{NAME:+value}} or ${{NAME+value}})"
        ))
    };
    if name.is_empty() {
        return Err(malformed());
    }
    let value = lookup(name);
    // `:` makes an empty value count as unset.
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) if !op.is_empty() => (true, op),
        _ => (false, op),
    };
    let set = value.as_deref().is_some_and(|v| !(colon && v.is_empty()));
    let Some(operator) = op.chars().next() else {
        return value.ok_or_else(|| InterpolateError::Unset(name.to_owned()));
    };
    let word = &op[1..];
    match operator {
        '-' if set => Ok(value.unwrap_or_default()),
        '-' => interpolate(word, lookup),
        '+' if set => interpolate(word, lookup),
        '+' => Ok(String::new()),
        '?' if set => Ok(value.unwrap_or_default()),
        '?' => Err(InterpolateError::Required {
            name: name.to_owned(),
            empty: value.is_some(),
            message: interpolate(word, lookup)?,
        }),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("3000".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(s: &str) -> String {
        interpolate(s, &env).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn plain_references_and_dollars() {
        assert_eq!(ok("p=${PORT}"), "p=3000");
        assert_eq!(ok("[${EMPTY}]"), "[]");
        assert_eq!(ok("$$HOME $HOME $1 $"), "$HOME $HOME $1 $");
    }

    #[test]
    fn defaults_with_and_without_colon() {
        assert_eq!(ok("${NOPE:-x y}"), "x y");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${PORT:-d}"), "3000");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("[${EMPTY-d}]"), "[]");
        assert_eq!(ok("${PORT-d}"), "3000");
        // A default may itself refer to a variable.
        assert_eq!(ok("${NOPE:-${PORT}}/x"), "3000/x");
        assert_eq!(ok("${NOPE:-a$$b}"), "a$b");
    }

    #[test]
    fn alternatives_with_and_without_colon() {
        assert_eq!(ok("${PORT:+set}"), "set");
        assert_eq!(ok("[${EMPTY:+set}]"), "[]");
        assert_eq!(ok("[${NOPE:+set}]"), "[]");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("[${NOPE+set}]"), "[]");
        assert_eq!(ok("${PORT+--port=${PORT}}"), "--port=3000");
    }

    #[test]
    fn required_with_and_without_colon() {
        assert_eq!(ok("${PORT:?needed}"), "3000");
        assert_eq!(ok("[${EMPTY?needed}]"), "[]");
        assert_eq!(
            interpolate("${NOPE:?set it in .env}", &env),
            Err(InterpolateError::Required {
                name: "NOPE".into(),
                empty: false,
                message: "set it in .env".into()
            })
        );
        assert_eq!(
            interpolate("${EMPTY:?must not be empty}", &env),
            Err(InterpolateError::Required {
                name: "EMPTY".into(),
                empty: true,
                message: "must not be empty".into()
            })
        );
        assert!(matches!(
            interpolate("${NOPE?}", &env),
            Err(InterpolateError::Required { empty: false, .. })
        ));
    }

    #[test]
    fn unset_without_default_is_an_error() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err(InterpolateError::Unset("NOPE".into()))
        );
        // Inside a default that is used, too.
        assert_eq!(
            interpolate("${EMPTY:-${NOPE}}", &env),
            Err(InterpolateError::Unset("NOPE".into()))
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in ["${PORT", "${}", "${PORT=3}", "${A B}", "${:-x}", "${PORT:}"] {
            assert!(
                matches!(interpolate(bad, &env), Err(InterpolateError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
