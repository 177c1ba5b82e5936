//! The command line's conventions: version with the commit, completions and
//! the man page generated from the grammar, and colours that follow
//! `--color`, NO_COLOR and whether output is a terminal.

use crate::common::*;
use std::process::{Command, Stdio};

fn cogno(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(COGNO)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cogno");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (code, out, _) = cogno(&["--version"]);
    assert_eq!(code, 0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let expected = commit.unwrap_or_else(|| "unknown".into());
    assert_eq!(
        out.trim(),
        format!("cogno {} (commit {expected})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_and_man_page_cover_every_command() {
    let commands = [
        "up",
        "check",
        "env",
        "status",
        "logs",
        "start",
        "stop",
        "restart",
        "healthcheck",
        "shutdown",
        "upgrade",
        "completions",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = cogno(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        for c in commands {
            assert!(script.contains(c), "{shell} completions lack `{c}`");
        }
    }
    let (code, page, err) = cogno(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.contains(".TH cogno 1"), "{page}");
    for c in commands {
        assert!(
            page.contains(&format!("cogno\\-{c}")),
            "man page lacks `{c}`"
        );
    }
    let (code, _, err) = cogno(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn help_has_examples_and_points_at_the_docs() {
    let (code, out, _) = cogno(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Examples:") && out.contains("cogno up --config stack.yaml"));
    assert!(out.contains("docs/cli.md"), "{out}");
}

/// `cogno up` of a one-line oneshot stack under a pseudo-terminal (util-linux
/// `script`), with `extra` arguments and environment; its whole output.
fn up_on_a_terminal(stack: &Stack, extra: &[&str], env: &[(&str, &str)]) -> String {
    stack.write(
        "services:\n  once:\n    command: [\"sh\", \"-c\", \"echo hi\"]\n    oneshot: true\n",
    );
    let mut line = format!(
        "{COGNO} up --config {} --data {}",
        stack.config.display(),
        stack.data.display()
    );
    for a in extra {
        line.push(' ');
        line.push_str(a);
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cogno under script(1)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_gets_coloured_levels_and_no_warning_from_the_log_library() {
    let stack = Stack::new("cli-tty");
    let out = up_on_a_terminal(&stack, &[], &[]);
    // Seen by every interactive user before: the ansi feature was off.
    assert!(!out.contains("ansi"), "{out}");
    assert!(
        out.contains("\x1b[32m INFO\x1b[0m"),
        "levels are coloured:\n{out:?}"
    );
    assert!(out.contains("completed in"), "{out}");
}

#[test]
fn no_color_and_color_never_turn_colours_off_on_a_terminal() {
    let stack = Stack::new("cli-nocolor");
    for (extra, env) in [
        (&[][..], &[("NO_COLOR", "1")][..]),
        (&["--color", "never"][..], &[][..]),
        (&[][..], &[("CLICOLOR", "0")][..]),
    ] {
        let out = up_on_a_terminal(&stack, extra, env);
        assert!(!out.contains('\x1b'), "{extra:?} {env:?}:\n{out:?}");
        assert!(out.contains("INFO"), "{out}");
    }
}

/// `cogno check --json`: the plan as one JSON document with stable keys, and
/// nothing secret in it (a webhook by its host only).
#[test]
fn check_json_gives_the_plan() {
    let s = Stack::new("check-json");
    s.write(
        r#"
notify:
  webhooks: ["https://hooks.example.com/services/S3CRET"]
services:
  migrate:
    command: ["true"]
    oneshot: true
  web:
    command: ["sleep", "3600"]
    critical: true
    depends_on: {migrate: completed}
"#,
    );
    let (code, out, err) = cogno(&["check", "--json", "--config", &s.config.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("S3CRET"), "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(plan["ok"], true);
    assert_eq!(plan["file"], s.config.to_string_lossy().as_ref());
    assert_eq!(plan["tiers"], serde_json::json!([["migrate"], ["web"]]));
    let web = &plan["services"][1];
    assert_eq!(web["name"], "web");
    assert_eq!(web["tier"], 2);
    assert_eq!(web["critical"], true);
    assert_eq!(web["oneshot"], false);
    assert_eq!(web["restart"], "on-failure");
    assert_eq!(
        web["waits_for"],
        serde_json::json!([{"service": "migrate", "condition": "completed", "implicit": false}])
    );
    assert_eq!(plan["services"][0]["oneshot"], true);
    assert_eq!(plan["shutdown"]["budget_ms"], 10_000);
    assert_eq!(
        plan["notify"]["webhooks"],
        serde_json::json!(["https://hooks.example.com"])
    );
    assert_eq!(
        plan["notify"]["on"],
        serde_json::json!([
            "fatal",
            "critical",
            "unhealthy",
            "recovered",
            "backup_failed"
        ])
    );
}

/// `cogno env --json`: the same variables as the sourceable form.
#[test]
fn env_json_matches_the_sourceable_form() {
    let s = Stack::new("env-json");
    s.write(
        r#"
env:
  GREETING: "it's here"
  PORT: 3000
services:
  web:
    command: ["sleep", "3600"]
"#,
    );
    let config = s.config.to_string_lossy().into_owned();
    let data = s.data.to_string_lossy().into_owned();
    let (code, out, err) = cogno(&["env", "--json", "--config", &config, "--data", &data]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["stack"], config.as_str());
    assert_eq!(doc["env"]["GREETING"], "it's here");
    assert_eq!(doc["env"]["PORT"], "3000");
    let (code, text, err) = cogno(&["env", "--config", &config, "--data", &data]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let mut keys: Vec<&str> = doc["env"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut names = names.clone();
    names.sort_unstable();
    names.dedup();
    keys.sort_unstable();
    assert_eq!(keys, names);
}

/// `cogno stop|start|restart --json`: one document with each service's
/// result; a refusal is `ok: false` in it, and exit status 1.
#[test]
fn actions_answer_in_json() {
    let s = Stack::new("act-json");
    s.write(
        r#"
services:
  web:
    command: ["sleep", "3600"]
    startsecs: 100ms
  worker:
    command: ["sleep", "3601"]
    startsecs: 100ms
  keep:
    command: ["sleep", "3602"]
    startsecs: 100ms
"#,
    );
    let c = crate::control::up(&s);
    c.wait_line("stack is ready");
    let json = |args: &[&str]| {
        let run = crate::control::cli(&s, args);
        let doc: serde_json::Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
        (run.code, doc)
    };
    let (code, doc) = json(&["stop", "web", "worker", "--json"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["ok"], true);
    let r = &doc["results"];
    assert_eq!(r[0]["service"], "web");
    assert_eq!(r[0]["action"], "stop");
    assert_eq!(r[0]["ok"], true);
    assert_eq!(r[0]["code"], 200);
    assert_eq!(r[0]["message"], "stopped");
    assert!(r[0]["took_ms"].is_u64());
    assert_eq!(r[1]["service"], "worker");

    let (code, doc) = json(&["start", "web", "--json"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["results"][0]["action"], "start");
    let (code, doc) = json(&["restart", "web", "--json"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["results"][0]["action"], "restart");

    let (code, doc) = json(&["restart", "nosuch", "--json"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["results"][0]["ok"], false);
    assert_eq!(doc["results"][0]["code"], 404);
}
