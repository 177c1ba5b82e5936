//! `${VAR}` and `${VAR:-default}` substitution in every string value of a
//! stack file, from cogno's environment. `$$` writes a literal `$`.
//!
//! Substitution happens on the parsed document, never on the raw text, so a
//! variable's value can never change the document's structure.

use super::diagnostic::Seg;
use serde_yaml::Value;

/// Why a string could not be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    Unset(String),
    Malformed(String),
}

/// Replaces variables in every string value of `value` (keys are left alone).
/// On error, returns the path of the offending value.
pub fn interpolate_tree(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<Seg>,
) -> Result<(), (Vec<Seg>, InterpolateError)> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = interpolate(s, lookup).map_err(|e| (path.clone(), e))?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate_tree(item, lookup, path)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(key_text(k)));
                interpolate_tree(v, lookup, path)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, lookup, path)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// The text of a mapping key, for paths in error messages.
pub fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
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
            let end = body.find('}').ok_or_else(|| {
                InterpolateError::Malformed(format!("`${{` without a closing `}}` in `{input}`"))
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpolateError::Malformed(format!(
                    "`${{{expr}}}` is not a variable reference (use ${{NAME}} or ${{NAME:-default}})"
                )));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            // A lone `$` (e.g. in a shell snippet `$HOME`) is kept as written.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
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

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(interpolate("p=${PORT}", &env).unwrap(), "p=3000");
        assert_eq!(interpolate("${NOPE:-x y}", &env).unwrap(), "x y");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("$$HOME $HOME", &env).unwrap(), "$HOME $HOME");
    }

    #[test]
    fn unset_without_default_is_an_error() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err(InterpolateError::Unset("NOPE".into()))
        );
        assert!(matches!(
            interpolate("${PORT", &env),
            Err(InterpolateError::Malformed(_))
        ));
    }
}
