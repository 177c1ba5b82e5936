//! The `SERVICE…` and `--profile` arguments that `up` and `check` share, and
//! their resolution against a stack into a [`Selection`].

use super::env_lookup;
use crate::config::select::{self, LeftOut};
use crate::config::{Selection, Stack};
use crate::error::Error;
use clap::Args;

#[derive(Args)]
pub struct SelectArgs {
    /// Start only these services and what they depend on (profiles do not apply to them) [default: every service whose profiles are active]
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Activate a profile: services listing it in `profiles:` start too (repeatable) [default: $COGNO_PROFILES, comma-separated]
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
}

impl SelectArgs {
    /// The active profiles: `--profile`, else `$COGNO_PROFILES`.
    fn profiles(&self) -> Vec<String> {
        if !self.profiles.is_empty() {
            return self.profiles.clone();
        }
        env_lookup("COGNO_PROFILES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The services this start selects in `stack`; an unknown name, or a
    /// selected service needing one its profiles leave out, is an error.
    pub fn resolve(&self, stack: &Stack) -> Result<Selection, Error> {
        let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        let named = self
            .services
            .iter()
            .map(|n| {
                names
                    .iter()
                    .position(|s| s == n)
                    .ok_or_else(|| unknown(n, &names, stack))
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        Selection::new(&stack.services, &named, self.profiles())
            .map_err(|e| left_out(e, stack, &self.profiles()))
    }
}

fn unknown(name: &str, names: &[&str], stack: &Stack) -> Error {
    let known = names.join(", ");
    let close = names
        .iter()
        .map(|s| (strsim::jaro(name, s), s))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Error::config(format!("no service `{name}` in the stack"))
        .in_file(&stack.file)
        .help(match close {
            Some((_, s)) => format!("did you mean `{s}`? (the services are {known})"),
            None => format!("the services are {known}"),
        })
}

fn left_out(e: LeftOut, stack: &Stack, profiles: &[String]) -> Error {
    let svc = &stack.services[e.service].name;
    let dep = &stack.services[e.on];
    let active = match profiles {
        [] => "no profile is active".to_owned(),
        p => format!("the active profiles are {}", p.join(", ")),
    };
    Error::config(format!(
        "service `{svc}` depends on `{}` (services.{svc}.depends_on), which its profiles leave out: \
         it lists profiles: [{}] and {active}",
        dep.name,
        dep.profiles.join(", ")
    ))
    .in_file(&stack.file)
    .help(format!(
        "activate one of its profiles (--profile {} or COGNO_PROFILES), name it (`cogno up {svc} {}`), \
         or give `{svc}` the same profiles",
        dep.profiles[0], dep.name
    ))
}

/// What a selection starts and leaves out, as `cogno check` prints it; empty
/// when it starts every service and no profile is active.
pub fn describe(stack: &Stack, sel: &Selection) -> String {
    if sel.count() == stack.services.len() && sel.profiles.is_empty() {
        return String::new();
    }
    let pick = |chosen: bool| -> Vec<String> {
        stack
            .services
            .iter()
            .zip(&sel.chosen)
            .filter(|(_, &c)| c == chosen)
            .map(|(s, _)| match (chosen, s.profiles.as_slice()) {
                (false, []) => format!("{} (not needed)", s.name),
                (false, p) if !select::enabled(s, &sel.profiles) => {
                    format!("{} (profiles: {})", s.name, p.join(", "))
                }
                _ => s.name.clone(),
            })
            .collect()
    };
    let profiles = match sel.profiles.as_slice() {
        [] => "no profile active".to_owned(),
        p => format!("profiles {}", p.join(", ")),
    };
    let left = pick(false);
    let mut out = format!(
        "\nselection ({profiles}): starts {}\n",
        pick(true).join(", ")
    );
    if !left.is_empty() {
        out.push_str(&format!("  left out: {}\n", left.join(", ")));
    }
    out
}
