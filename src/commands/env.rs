//! `cogno env`: the environment app services get, as a sourceable .env.

use super::{data_dir, env_lookup, Outcome, StackArgs};
use crate::bundled;
use crate::config::{is_env_name, Stack};
use crate::secrets::Secrets;

/// Prints it, for an app run outside cogno: as shell assignments, or with
/// `json` as `{"stack": FILE, "env": {NAME: VALUE…}}`.
pub fn run(args: StackArgs, json: bool) -> Outcome {
    let stack = args.config.load()?;
    let data = data_dir(&args, &stack);
    data.check_usable()?;
    let secrets = bundled::load_secrets(&stack, &data, &env_lookup)?;
    if !secrets.generated.is_empty() {
        // A command that looks read-only says what it wrote, on stderr (stdout is sourced).
        eprintln!(
            "cogno env: generated {} ({}) in {}; `cogno up` will use them",
            if secrets.generated.len() == 1 {
                "a new secret"
            } else {
                "new secrets"
            },
            secrets.generated.join(", "),
            secrets.file.display()
        );
    }
    let mut vars = bundled::derived_env(&stack, &secrets);
    vars.extend(stack.env.iter().cloned());
    if json {
        // Later entries win, as they do when the assignments are sourced.
        let env: serde_json::Map<String, serde_json::Value> =
            vars.into_iter().map(|(k, v)| (k, v.into())).collect();
        let doc = serde_json::json!({ "stack": stack.file.display().to_string(), "env": env });
        println!("{doc}");
        return Ok(0);
    }
    println!(
        "# The environment cogno gives app services (stack {}).",
        stack.file.display()
    );
    println!("# It contains secrets: keep it out of logs and version control.");
    // Names are checked when the stack and the secrets file are read; one that
    // is not a shell name is never printed, so sourcing this never runs a command.
    for (k, v) in app_environment(&stack, &secrets)
        .iter()
        .filter(|(k, _)| is_env_name(k))
    {
        // Single quotes: nothing in the value is expanded when the file is sourced.
        println!("{k}='{}'", v.replace('\'', "'\\''"));
    }
    Ok(0)
}

/// The stack's app environment: the connection settings derived from the
/// bundled services and the secrets, then the stack's `env`, which overrides
/// a derived variable in its place: each name once, with the value services
/// get. `cogno env` prints it; `cogno run` without a service gives it.
pub(super) fn app_environment(stack: &Stack, secrets: &Secrets) -> Vec<(String, String)> {
    let mut vars = bundled::derived_env(stack, secrets);
    for (k, v) in &stack.env {
        match vars.iter_mut().find(|(name, _)| name == k) {
            Some(derived) => derived.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    vars
}
