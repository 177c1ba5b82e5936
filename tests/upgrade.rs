//! `cogno upgrade postgres` (issue 11) for real: a cluster created through
//! cogno by Debian's PostgreSQL 15 moved to PostgreSQL 17 (the binaries
//! scripts/install-deps.sh installs into /opt/postgresql-17) and back, with
//! `COGNO_PG_UPGRADE=auto` on `cogno up`, and SIGKILLed at recorded steps:
//! the next run resumes and nothing is lost.
//!
//! The stacks have PostgreSQL only; the stack file's `bin_dir` chooses the
//! major, as a user with both installed would.

use crate::bundled::*;
use crate::common::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const OLD_BIN: &str = "/usr/lib/postgresql/15/bin";
const NEW_BIN: &str = "/opt/postgresql-17/bin";
/// A whole upgrade (initdb, pg_upgrade twice, a backup, the proof) on a busy machine.
const UPGRADE: Duration = Duration::from_secs(300);

/// A PostgreSQL-only stack run on Debian's 15, with rows in the app's
/// database, a second database, and a setting on the app's role.
fn seeded(tag: &str) -> Bundled {
    for bin in [OLD_BIN, NEW_BIN] {
        assert!(
            Path::new(bin).join("pg_upgrade").is_file(),
            "{bin}/pg_upgrade is missing: the upgrade tests need PostgreSQL 15 (Debian's \
             postgresql-15) and 17 (scripts/install-deps.sh) installed"
        );
    }
    let b = Bundled::new(tag, User::Root);
    use_bin(&b, OLD_BIN);
    let mut c = b.up();
    wait_ready(&c, Instant::now());
    let url = &b.env()["DATABASE_URL"];
    sql(
        url,
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g; \
         ALTER ROLE cognobserve SET work_mem = '7MB'",
    );
    admin(&b, "postgres", "CREATE DATABASE second");
    admin(
        &b,
        "second",
        "CREATE TABLE notes (t text); INSERT INTO notes VALUES ('kept')",
    );
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
    b
}

/// Points the stack's postgres service at `bin`.
fn use_bin(b: &Bundled, bin: &str) {
    b.s.write(&format!(
        "services:\n  postgres: {{kind: postgres, port: {}, bin_dir: {bin}}}\n",
        b.ports.pg
    ));
}

/// psql as the superuser, with the password from the secrets file.
fn admin(b: &Bundled, db: &str, query: &str) -> String {
    let password = secret_values(&b.secrets_file())
        .into_iter()
        .find(|(k, _)| k == "POSTGRES_ADMIN_PASSWORD")
        .map(|(_, v)| v)
        .expect("POSTGRES_ADMIN_PASSWORD in the secrets file");
    let conninfo = format!("postgresql://postgres@127.0.0.1:{}/{db}", b.ports.pg);
    let out = psql(&conninfo, query, Some(&password));
    assert!(
        out.status.success(),
        "psql as postgres failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `cogno up` on `major`: the rows, the second database, the role's setting
/// and the app's login (DATABASE_URL from `cogno env`) are all there.
fn check_data(b: &Bundled, major: u32, env: &[(&str, &str)]) {
    let mut cmd = b.cogno(&["up"]);
    cmd.envs(env.iter().copied());
    let mut c = Cogno::spawn(&b.s, cmd);
    wait_ready(&c, Instant::now());
    check_running(b, major);
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
}

fn check_running(b: &Bundled, major: u32) {
    let url = &b.env()["DATABASE_URL"];
    let version = sql(url, "SHOW server_version");
    assert!(
        version.starts_with(&format!("{major}.")),
        "server_version {version}, expected {major}"
    );
    assert_eq!(
        sql(url, "SELECT count(*), max(name) FROM items"),
        "1000|item 999"
    );
    assert_eq!(sql(url, "SHOW work_mem"), "7MB");
    assert_eq!(admin(b, "second", "SELECT t FROM notes"), "kept");
}

/// `cogno upgrade postgres ARGS`, to completion.
fn upgrade(b: &Bundled, args: &[&str]) -> (i32, String) {
    let mut all = vec!["upgrade", "postgres"];
    all.extend_from_slice(args);
    let out = run(b.cogno(&all), UPGRADE);
    (out.status.code().unwrap_or(-1), text(&out))
}

fn pg_version(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("PG_VERSION"))
        .unwrap_or_else(|e| panic!("{}/PG_VERSION: {e}", dir.display()))
        .trim()
        .to_owned()
}

fn state_file(b: &Bundled) -> PathBuf {
    b.data().join(".cogno/pg-upgrade")
}

/// `cogno up` refuses (exit 2, nothing started) with every one of `expect` in its output.
fn up_refuses(b: &Bundled, expect: &[&str]) {
    let out = run(b.cogno(&["up"]), EXIT);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    for e in expect {
        assert!(said.contains(e), "expected {e:?} in: {said}");
    }
}

#[test]
fn a_15_cluster_upgrades_to_17_with_its_data_and_rolls_back() {
    let b = seeded("upgrade-roundtrip");
    use_bin(&b, NEW_BIN);
    up_refuses(
        &b,
        &[
            "created by PostgreSQL 15",
            "cogno upgrade postgres",
            "COGNO_PG_UPGRADE=auto",
        ],
    );

    let (code, said) = upgrade(&b, &[]);
    assert_eq!(code, 0, "{said}");
    for e in [
        "running pg_upgrade --check",
        "15 → 17.",
        "--rollback",
        "rm -rf",
    ] {
        assert!(said.contains(e), "expected {e:?} in: {said}");
    }
    let old = b.data().join("postgresql-15.old");
    assert_eq!(pg_version(&old), "15");
    assert_eq!(pg_version(&b.data().join("postgresql")), "17");
    let backups: Vec<_> = std::fs::read_dir(b.data().join("backups"))
        .expect("DATA/backups")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        backups
            .iter()
            .any(|n| n.starts_with("postgresql-before-upgrade-") && n.ends_with(".tar.zst")),
        "{backups:?}"
    );
    let created = std::fs::read_to_string(b.data().join(".cogno/created")).unwrap();
    assert!(created.contains("postgresql_major=17\n"), "{created}");
    check_data(&b, 17, &[]);

    // Already done: nothing to do.
    let (code, said) = upgrade(&b, &[]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("nothing to do"), "{said}");

    let (code, said) = upgrade(&b, &["--rollback"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("bin_dir: {OLD_BIN}")), "{said}");
    assert_eq!(pg_version(&b.data().join("postgresql")), "15");
    assert_eq!(
        pg_version(&b.data().join("postgresql-17.rolled-back")),
        "17"
    );
    assert!(!old.exists());
    use_bin(&b, OLD_BIN);
    check_data(&b, 15, &[]);
}

#[test]
fn an_upgrade_with_link_refuses_a_rollback_and_points_at_the_backup() {
    let b = seeded("upgrade-link");
    use_bin(&b, NEW_BIN);
    let (code, said) = upgrade(&b, &["--link"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("there is no rollback"), "{said}");
    let (code, said) = upgrade(&b, &["--rollback"]);
    assert_eq!(code, 2, "{said}");
    for e in [
        "ran with --link",
        "cannot be rolled back",
        "postgresql-before-upgrade-",
    ] {
        assert!(said.contains(e), "expected {e:?} in: {said}");
    }
    assert_eq!(pg_version(&b.data().join("postgresql")), "17");
    check_data(&b, 17, &[]);
}

#[test]
fn cogno_up_with_cogno_pg_upgrade_auto_upgrades_then_starts() {
    let b = seeded("upgrade-auto");
    use_bin(&b, NEW_BIN);
    check_data(&b, 17, &[("COGNO_PG_UPGRADE", "auto")]);
    assert_eq!(pg_version(&b.data().join("postgresql-15.old")), "15");
    // Once done, auto has nothing more to do.
    check_data(&b, 17, &[("COGNO_PG_UPGRADE", "auto")]);
}

/// The quick-start image sets COGNO_PG_UPGRADE=auto for every start: on a
/// fresh data directory (no cluster, no secrets yet) there is nothing to
/// upgrade, and `cogno up` creates everything as without it.
#[test]
fn cogno_pg_upgrade_auto_on_a_fresh_data_directory_starts_as_ever() {
    let b = Bundled::new("upgrade-auto-fresh", User::Root);
    use_bin(&b, NEW_BIN);
    let mut cmd = b.cogno(&["up"]);
    cmd.env("COGNO_PG_UPGRADE", "auto");
    let mut c = Cogno::spawn(&b.s, cmd);
    wait_ready(&c, Instant::now());
    assert!(!c.output().contains("cogno upgrade"), "{}", c.output());
    assert_eq!(pg_version(&b.data().join("postgresql")), "17");
    assert_eq!(stop(&mut c).0, 0, "{}", c.output());
}

/// Whether a postgres runs with `cluster` as its working directory.
fn server_on(cluster: &Path) -> bool {
    all_pids().into_iter().any(|p| {
        std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| cwd == cluster)
            && std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
    })
}

/// SIGKILLs `cogno upgrade postgres` as soon as its record says `step`
/// (for `upgrading`: once pg_upgrade has started the old cluster's server,
/// which pg_ctl detaches, so it outlives the kill), then: `cogno up` refuses
/// the unfinished upgrade, the old cluster is whole, and the next
/// `cogno upgrade postgres` resumes and finishes it.
fn killed_at(tag: &str, step: &str) {
    let b = seeded(tag);
    use_bin(&b, NEW_BIN);
    let mut cmd = b.cogno(&["upgrade", "postgres"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cogno upgrade");
    let want = format!("step={step}\n");
    let cluster = b.data().join("postgresql");
    let reached = eventually(UPGRADE, || {
        std::fs::read_to_string(state_file(&b)).is_ok_and(|t| t.contains(&want))
            && (step != "upgrading" || server_on(&cluster))
    });
    signal(child.id() as i32, Signal::SIGKILL);
    let _ = child.wait();
    let record = std::fs::read_to_string(state_file(&b)).unwrap_or_default();
    assert!(
        reached && record.contains(&want),
        "the upgrade was not SIGKILLed at step {step}: the record says {record:?}"
    );

    // The old cluster is whole, wherever it is now.
    let old = match step {
        "upgrading" => b.data().join("postgresql"),
        _ => b.data().join("postgresql-15.old"),
    };
    assert_eq!(pg_version(&old), "15");
    assert!(old.join("global/pg_control").exists());
    up_refuses(
        &b,
        &[
            "was interrupted",
            &format!("at step `{step}`"),
            "cogno upgrade postgres",
        ],
    );

    let (code, said) = upgrade(&b, &[]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!(
            "resuming the upgrade of PostgreSQL 15 → 17 at step `{step}`"
        )),
        "{said}"
    );
    if step == "upgrading" {
        assert!(
            said.contains("stopping the server an interrupted pg_upgrade left running"),
            "{said}"
        );
    }
    assert_eq!(pg_version(&b.data().join("postgresql-15.old")), "15");
    check_data(&b, 17, &[]);
}

#[test]
fn sigkill_during_pg_upgrade_then_the_next_run_starts_it_over() {
    killed_at("upgrade-kill-pg-upgrade", "upgrading");
}

#[test]
fn sigkill_after_the_swap_before_the_proof_then_the_next_run_proves_it() {
    killed_at("upgrade-kill-swapped", "swapped");
}

#[test]
fn a_missing_old_major_is_named_with_how_to_give_it() {
    let b = seeded("upgrade-no-old-bins");
    use_bin(&b, NEW_BIN);
    let (code, said) = upgrade(&b, &["--from-bin-dir", NEW_BIN]);
    assert_eq!(code, 2, "{said}");
    for e in [
        "holds PostgreSQL 17",
        "the cluster is PostgreSQL 15",
        "--from-bin-dir",
    ] {
        assert!(said.contains(e), "expected {e:?} in: {said}");
    }
    assert!(
        !state_file(&b).exists(),
        "a refused upgrade wrote its record"
    );
}
