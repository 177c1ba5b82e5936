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
