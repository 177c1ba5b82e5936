//! `cogno upgrade postgres`: moves the cluster in DATA/postgresql to the
//! major version of the binaries cogno would use, with pg_upgrade, and back
//! again (`--rollback`).
//!
//! Before each step, the step is recorded in DATA/.cogno/pg-upgrade
//! (written atomically), so that whatever kills cogno, the next run knows
//! where it was: it resumes, or refuses saying why, and `cogno up` refuses a
//! cluster whose upgrade is unfinished. The old cluster is never written to
//! (but by pg_upgrade's --link, which the user asked for) and is only moved
//! aside, never deleted:
//!
//! ```text
//! step          DATA/postgresql  DATA/postgresql.new     on resume
//! started       old              none                    back up, then as `prepared`
//! prepared      old              cogno's work, or none   remove the work, initdb, check, upgrade
//! upgrading     old              pg_upgrade's work       as `prepared` (--link: only if the old
//!                                                        cluster is still whole, else refuse)
//! upgraded      old              complete new cluster    swap
//! swapping      either           either                  finish the two renames
//! swapped       new              none                    prove: start it, log in, stop it
//! done          new              none                    nothing to do (--rollback possible)
//! rolling-back  either           none                    `--rollback` finishes the two renames
//! rolled-back   old              none                    nothing to do
//! ```
//!
//! After the swap the old cluster is DATA/postgresql-OLD.old; after a
//! rollback the new one is DATA/postgresql-NEW.rolled-back.

use super::{
    as_user, binaries, clear_stale_lock, client, initdb, is_postgres_on, is_server_dir, locate,
    own, pg_config_bindir, read_service_file, remove_scratch, scratch_dir, set_mode, sync_dir,
    Binaries, Logins, Setup, TempServer, ADMIN_PASSWORD, PASSWORD, SMALL_FILE_CAP,
};
use crate::bundled::product::APP_DB;
use crate::bundled::{Bundled, Job};
use crate::datadir::{files, DataDir};
use crate::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// What the user asked for.
pub struct Options<'a> {
    /// The old major's binaries, if not found the way cogno finds binaries.
    pub from_bin_dir: Option<&'a Path>,
    /// pg_upgrade --link: hard links instead of copies; no rollback.
    pub link: bool,
    /// Takes a backup of the stopped data directory and returns where it
    /// is; None: no backup (--no-backup).
    pub backup: Option<&'a dyn Fn() -> Result<PathBuf, Error>>,
}

/// What an upgrade ended with.
pub enum Upgraded {
    /// The cluster already is of the binaries' major.
    Nothing { major: u32 },
    Done {
        from: u32,
        to: String,
        old: PathBuf,
        link: bool,
        backup: Option<PathBuf>,
        /// What the proof found, for the user.
        proof: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Started,
    Prepared,
    Upgrading,
    Upgraded,
    Swapping,
    Swapped,
    Done,
    RollingBack,
    RolledBack,
}

const STEPS: [(Step, &str); 9] = [
    (Step::Started, "started"),
    (Step::Prepared, "prepared"),
    (Step::Upgrading, "upgrading"),
    (Step::Upgraded, "upgraded"),
    (Step::Swapping, "swapping"),
    (Step::Swapped, "swapped"),
    (Step::Done, "done"),
    (Step::RollingBack, "rolling-back"),
    (Step::RolledBack, "rolled-back"),
];

impl Step {
    fn name(self) -> &'static str {
        STEPS
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    fn parse(name: &str) -> Option<Step> {
        STEPS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    /// Nothing is half-done: `cogno up` may start the cluster.
    fn settled(self) -> bool {
        matches!(self, Step::Done | Step::RolledBack)
    }
}

/// DATA/.cogno/pg-upgrade, as key=value lines.
#[derive(Clone, Debug)]
struct State {
    step: Step,
    from: u32,
    to: u32,
    from_bin: PathBuf,
    link: bool,
    /// "none" when the user asked for no backup; empty until it is taken.
    backup: String,
}

impl State {
    fn read(data: &DataDir) -> Result<Option<State>, Error> {
        let path = data.pg_upgrade_state();
        let Some(text) = files::read_small(&path, SMALL_FILE_CAP).map_err(Error::new)? else {
            return Ok(None);
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        let state = (|| {
            Some(State {
                step: Step::parse(get("step")?)?,
                from: get("from")?.parse().ok()?,
                to: get("to")?.parse().ok()?,
                from_bin: PathBuf::from(get("from_bin")?),
                link: get("link")? == "yes",
                backup: get("backup").unwrap_or_default().to_owned(),
            })
        })();
        state.map(Some).ok_or_else(|| {
            Error::config(format!(
                "{} is not a record cogno wrote (it should hold step=, from=, to=, from_bin=, link=); \
                 nothing was changed",
                path.display()
            ))
            .help("restore it from a backup of the data directory; if no upgrade was under way, remove it")
        })
    }

    fn write(&self, data: &DataDir) -> Result<(), Error> {
        let text = format!(
            "# `cogno upgrade postgres` records each step here before taking it (docs/upgrading.md).\n\
             step={}\nfrom={}\nto={}\nfrom_bin={}\nlink={}\nbackup={}\n",
            self.step.name(),
            self.from,
            self.to,
            self.from_bin.display(),
            if self.link { "yes" } else { "no" },
            self.backup
        );
        let path = data.pg_upgrade_state();
        files::create_private_dir(path.parent().unwrap_or(data.root()))
            .and_then(|()| files::write_atomic(&path, text.as_bytes(), None))
            .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
    }

    fn at(&mut self, step: Step, data: &DataDir) -> Result<(), Error> {
        self.step = step;
        self.write(data)
    }

    fn backup(&self) -> Option<PathBuf> {
        (!self.backup.is_empty() && self.backup != "none").then(|| PathBuf::from(&self.backup))
    }
}

/// The directories an upgrade moves between.
struct Places {
    cluster: PathBuf,
    new: PathBuf,
    old: PathBuf,
    rolled_back: PathBuf,
}

impl Places {
    fn of(data: &DataDir, from: u32, to: u32) -> Places {
        let cluster = data.postgres();
        let sibling = |name: String| cluster.with_file_name(name);
        Places {
            new: sibling("postgresql.new".into()),
            old: sibling(format!("postgresql-{from}.old")),
            rolled_back: sibling(format!("postgresql-{to}.rolled-back")),
            cluster,
        }
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// For `cogno up`'s pre-flight: refuses a cluster whose upgrade or rollback
/// is unfinished.
pub fn check_settled(data: &DataDir) -> Result<(), Error> {
    match State::read(data)? {
        Some(s) if !s.step.settled() => Err(unfinished(data, &s)),
        _ => Ok(()),
    }
}

fn unfinished(data: &DataDir, s: &State) -> Error {
    let rollback = matches!(s.step, Step::RollingBack);
    Error::config(format!(
        "the {} of PostgreSQL {} → {} in {} was interrupted (at step `{}`, recorded in {}); \
         nothing was started",
        if rollback { "rollback" } else { "upgrade" },
        s.from,
        s.to,
        data.root().display(),
        s.step.name(),
        data.pg_upgrade_state().display()
    ))
    .help(if rollback {
        "finish it with `cogno upgrade postgres --rollback`".to_owned()
    } else {
        "finish it with `cogno upgrade postgres` (it resumes where it stopped), or start with \
         COGNO_PG_UPGRADE=auto in cogno's environment"
            .to_owned()
    })
}

/// Whether the cluster in `data` needs an upgrade (or an unfinished one
/// waits) for the binaries the postgres service `bundled` would run: for
/// `COGNO_PG_UPGRADE=auto`. Reads only the cluster's version and the
/// upgrade's record, so that a fresh data directory (no cluster, no secrets
/// yet) is answered before anything else is read.
pub fn wanted(bundled: &Bundled, data: &DataDir) -> Result<bool, Error> {
    if let Some(s) = State::read(data)? {
        if !s.step.settled() {
            return Ok(!matches!(s.step, Step::RollingBack));
        }
    }
    let Some(from) = cluster_major(&data.postgres())? else {
        return Ok(false);
    };
    let to = locate(bundled.bin.as_deref(), &data.postgres_bin_cache())?;
    Ok(from < to.major)
}

/// The major in PG_VERSION; None without a cluster.
fn cluster_major(cluster: &Path) -> Result<Option<u32>, Error> {
    let path = cluster.join("PG_VERSION");
    if !exists(&path) {
        return Ok(None);
    }
    let text = read_service_file(&path)?;
    text.trim().parse().map(Some).map_err(|_| {
        Error::config(format!(
            "{} should hold the major version of PostgreSQL that created the cluster (like `15`) \
             but holds {}; nothing was changed",
            path.display(),
            files::shown(text.trim())
        ))
        .help("restore the file from a backup of the cluster")
    })
}

/// Upgrades the cluster (or finishes an interrupted upgrade).
pub fn upgrade(job: &Job, opts: &Options) -> Result<Upgraded, Error> {
    let to_bins = locate(job.bundled.bin.as_deref(), &job.data.postgres_bin_cache())?;
    let mut state = match State::read(job.data)? {
        Some(s) if s.step == Step::RollingBack => return Err(unfinished(job.data, &s)),
        Some(s) if !s.step.settled() => {
            resume_check(&s, &to_bins)?;
            eprintln!(
                "cogno upgrade: resuming the upgrade of PostgreSQL {} → {} at step `{}`",
                s.from,
                s.to,
                s.step.name()
            );
            s
        }
        _ => match begin(job, opts, &to_bins)? {
            Some(s) => s,
            None => {
                return Ok(Upgraded::Nothing {
                    major: to_bins.major,
                })
            }
        },
    };
    // On a resume, --from-bin-dir may point elsewhere than when it began.
    let from_bins = old_binaries(state.from, opts.from_bin_dir.or(Some(&state.from_bin)))?;
    state.from_bin = from_bins.bin_dir.clone();
    run(job, opts, state, &from_bins, &to_bins)
}

/// The binaries must still be the ones the upgrade was started for.
fn resume_check(s: &State, to_bins: &Binaries) -> Result<(), Error> {
    if to_bins.major == s.to {
        return Ok(());
    }
    Err(Error::config(format!(
        "the interrupted upgrade was to PostgreSQL {}, but the binaries cogno would use now ({}) \
         are PostgreSQL {}; nothing was changed",
        s.to,
        to_bins.bin_dir.display(),
        to_bins.version
    ))
    .help(format!(
        "set `bin_dir` of the postgres service to the PostgreSQL {} installation again and run \
         `cogno upgrade postgres` to finish",
        s.to
    )))
}

/// Checks everything that can be checked before anything is written, then
/// records the first step. None: nothing to upgrade.
fn begin(job: &Job, opts: &Options, to_bins: &Binaries) -> Result<Option<State>, Error> {
    let cluster = job.data.postgres();
    let from = cluster_major(&cluster)?.ok_or_else(|| {
        Error::config(format!(
            "there is no PostgreSQL cluster in {} (no PG_VERSION): nothing to upgrade",
            cluster.display()
        ))
        .help("give the data directory that holds the cluster with --data DIR")
    })?;
    let to = to_bins.major;
    if from == to {
        return Ok(None);
    }
    if from > to {
        return Err(Error::config(format!(
            "the cluster in {} is PostgreSQL {from}, newer than the binaries in {} \
             (PostgreSQL {}); pg_upgrade only moves a cluster to a newer major. Nothing was changed",
            cluster.display(),
            to_bins.bin_dir.display(),
            to_bins.version
        ))
        .help(format!(
            "set `bin_dir` of the postgres service to a PostgreSQL {from} installation"
        )));
    }
    let from_bins = old_binaries(from, opts.from_bin_dir)?;
    for program in ["pg_upgrade", "pg_ctl"] {
        let path = to_bins.bin_dir.join(program);
        if !path.is_file() {
            return Err(Error::config(format!(
                "{} is missing: PostgreSQL {to}'s `{program}` is needed to upgrade the cluster",
                path.display()
            ))
            .help(format!(
                "install PostgreSQL {to}'s server package in full (Debian: `apt-get install \
                 postgresql-{to}`), or set `bin_dir` to an installation that has it"
            )));
        }
        crate::bundled::trusted(&path).map_err(Error::config)?;
    }
    crate::bundled::trusted(&from_bins.bin_dir.join("pg_ctl")).map_err(Error::config)?;
    let places = Places::of(job.data, from, to);
    for (path, what) in [
        (&places.new, "the new cluster"),
        (&places.old, "the old cluster, once upgraded"),
    ] {
        if exists(path) {
            return Err(Error::config(format!(
                "{} already exists, and is where {what} goes; nothing was changed",
                path.display()
            ))
            .help(format!(
                "cogno never deletes a cluster: look at it, move it elsewhere (or delete it if you \
                 are sure it is not needed), then run `cogno upgrade postgres` again; \
                 e.g. `mv {} {}.moved`",
                path.display(),
                path.display()
            )));
        }
    }
    check_space(job.data, &cluster, opts)?;
    let state = State {
        step: Step::Started,
        from,
        to,
        from_bin: from_bins.bin_dir,
        link: opts.link,
        backup: if opts.backup.is_some() {
            String::new()
        } else {
            "none".into()
        },
    };
    state.write(job.data)?;
    eprintln!(
        "cogno upgrade: PostgreSQL {from} ({}) → {} ({}){}",
        state.from_bin.display(),
        to_bins.version,
        to_bins.bin_dir.display(),
        if opts.link { ", with --link" } else { "" }
    );
    Ok(Some(state))
}

/// The old major's binaries: `given`, else found the way cogno finds
/// binaries, but for `major`.
fn old_binaries(major: u32, given: Option<&Path>) -> Result<Binaries, Error> {
    let wrong = |b: &Binaries| {
        Error::config(format!(
            "{} holds PostgreSQL {} ({}), but the cluster is PostgreSQL {major}: pg_upgrade needs \
             that major's binaries to read it; nothing was changed",
            b.bin_dir.display(),
            b.major,
            b.version
        ))
        .help(format!(
            "give PostgreSQL {major}'s bin directory with --from-bin-dir DIR"
        ))
    };
    if let Some(dir) = given {
        if !is_server_dir(dir) {
            return Err(Error::config(format!(
                "{} does not hold PostgreSQL's server binaries (`postgres` and `initdb`); nothing \
                 was changed",
                dir.display()
            ))
            .help(format!(
                "give the bin directory of a PostgreSQL {major} installation (Debian: \
                 /usr/lib/postgresql/{major}/bin)"
            )));
        }
        let b = binaries(dir).map_err(Error::config)?;
        return if b.major == major {
            Ok(b)
        } else {
            Err(wrong(&b))
        };
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    let candidates = pg_config_bindir()
        .into_iter()
        .chain([debian.clone()])
        .filter(|d| is_server_dir(d));
    for dir in candidates {
        if let Ok(b) = binaries(&dir) {
            if b.major == major {
                return Ok(b);
            }
        }
    }
    Err(Error::config(format!(
        "the cluster is PostgreSQL {major}, and pg_upgrade needs PostgreSQL {major}'s server \
         binaries to read it, but none were found (`pg_config --bindir` and {} have none of \
         that major); nothing was changed",
        debian.display()
    ))
    .help(format!(
        "install them beside the new ones (Debian: `apt-get install postgresql-{major}`), or give \
         their directory with `cogno upgrade postgres --from-bin-dir DIR`"
    )))
}

/// Room for the new cluster (a copy, unless --link) and the backup (at most
/// the cluster's size, compressed), with a margin for WAL and logs.
fn check_space(data: &DataDir, cluster: &Path, opts: &Options) -> Result<(), Error> {
    const MARGIN: u64 = 64 << 20;
    let size = tree_size(cluster)
        .map_err(|e| Error::new(format!("cannot measure {}: {e}", cluster.display())))?;
    let copy = if opts.link { 0 } else { size };
    let backup = if opts.backup.is_some() { size } else { 0 };
    let need = copy + backup + MARGIN;
    let stat = nix::sys::statvfs::statvfs(data.root()).map_err(|e| {
        Error::new(format!(
            "cannot read the free space of {}: {e}",
            data.root().display()
        ))
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free >= need {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    Err(Error::config(format!(
        "not enough free space in {} for the upgrade: it needs {} MiB (the cluster is {} MiB: {} MiB \
         for its upgraded copy, up to {} MiB for the backup, and {} MiB to spare) but {} MiB are \
         free; nothing was changed",
        data.root().display(),
        mib(need),
        mib(size),
        mib(copy),
        mib(backup),
        mib(MARGIN),
        mib(free)
    ))
    .help(
        "free some space, or pass --link (the new cluster shares the old one's files; no rollback \
         afterwards) or --no-backup (only if you have a backup of your own)",
    ))
}

/// The bytes of the regular files under `dir`, links not followed.
fn tree_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += tree_size(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Takes the steps from `state.step` on.
fn run(
    job: &Job,
    opts: &Options,
    mut state: State,
    from_bins: &Binaries,
    to_bins: &Binaries,
) -> Result<Upgraded, Error> {
    let data = job.data;
    let places = Places::of(data, state.from, state.to);
    if state.step == Step::Started {
        if let Some(take) = opts.backup.filter(|_| state.backup.is_empty()) {
            let path = take()?;
            eprintln!("cogno upgrade: backup written to {}", path.display());
            state.backup = path.display().to_string();
        }
        state.at(Step::Prepared, data)?;
    }
    if matches!(state.step, Step::Prepared | Step::Upgrading) {
        if state.step == Step::Upgrading
            && state.link
            && !places.cluster.join("global/pg_control").exists()
        {
            return Err(link_interrupted(&places, &state));
        }
        // A killed pg_upgrade leaves the server it had started (pg_ctl
        // detaches it) on either cluster.
        stop_stray(&places.cluster, from_bins, job)?;
        stop_stray(&places.new, to_bins, job)?;
        let scratch = scratch_dir(&places.new)?;
        remove_scratch(&places.new)?;
        remove_scratch(&scratch)?;
        make_new_cluster(job, &places, to_bins)?;
        let work = WorkDir::create(job)?;
        pg_upgrade(job, &places, &state, from_bins, to_bins, &work, true)?;
        state.at(Step::Upgrading, data)?;
        pg_upgrade(job, &places, &state, from_bins, to_bins, &work, false)?;
        files::syncfs(&places.new)?;
        state.at(Step::Upgraded, data)?;
    }
    if matches!(state.step, Step::Upgraded | Step::Swapping) {
        state.at(Step::Swapping, data)?;
        swap(&places.new, &places.cluster, &places.old)?;
        data.record_postgres_major(state.to)?;
        state.at(Step::Swapped, data)?;
        eprintln!(
            "cogno upgrade: the new cluster is in {}; the old one is kept in {}",
            places.cluster.display(),
            places.old.display()
        );
    }
    // A proof killed part-way leaves its server's postmaster.pid behind
    // (the server died with cogno, and may not be reaped yet).
    stop_stray(&places.cluster, to_bins, job)?;
    clear_stale_lock(&places.cluster.join("postmaster.pid"), &places.cluster)?;
    let proof = prove(job, &places.cluster, to_bins)?;
    state.at(Step::Done, data)?;
    Ok(Upgraded::Done {
        from: state.from,
        to: to_bins.version.clone(),
        old: places.old,
        link: state.link,
        backup: state.backup(),
        proof,
    })
}

fn link_interrupted(places: &Places, state: &State) -> Error {
    Error::config(format!(
        "the upgrade with --link of {} was interrupted after pg_upgrade had disabled the old \
         cluster (its global/pg_control is now pg_control.old), and the new cluster in {} may be \
         incomplete; cogno cannot finish or undo it by itself. Nothing was changed",
        places.cluster.display(),
        places.new.display()
    ))
    .help(match state.backup() {
        Some(b) => format!(
            "restore the backup taken before the upgrade, {}, into a new data directory, or see \
             docs/upgrading.md (\"Interrupted upgrades\")",
            b.display()
        ),
        None => "restore your own backup (the upgrade ran with --no-backup), or see \
                 docs/upgrading.md (\"Interrupted upgrades\")"
            .to_owned(),
    })
}

/// Stops a server left running on `cluster` by a killed pg_upgrade.
fn stop_stray(cluster: &Path, bins: &Binaries, job: &Job) -> Result<(), Error> {
    let Some(text) =
        files::read_small(&cluster.join("postmaster.pid"), SMALL_FILE_CAP).map_err(Error::new)?
    else {
        return Ok(());
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if !pid.is_some_and(|p| p > 0 && is_postgres_on(p, cluster)) {
        return Ok(());
    }
    eprintln!(
        "cogno upgrade: stopping the server an interrupted pg_upgrade left running on {}",
        cluster.display()
    );
    let mut cmd = super::super::tool(bins.bin_dir.join("pg_ctl"));
    as_user(&mut cmd, job.run_as)
        .arg("-D")
        .arg(cluster)
        .args(["stop", "-m", "fast", "-w", "-t", "120"])
        .current_dir(cluster);
    super::super::run_tool(&mut cmd, "pg_ctl stop").map_err(Error::new)
}

/// The new cluster, made by cogno's own initdb (the same options and
/// superuser password as every cluster cogno creates), then given the old
/// cluster's client rules, ALTER SYSTEM settings and cogno.conf, so that
/// pg_upgrade's servers and the first start run with the same settings.
fn make_new_cluster(job: &Job, places: &Places, to_bins: &Binaries) -> Result<(), Error> {
    let scratch = scratch_dir(&places.new)?;
    let setup = Setup {
        cluster: &places.new,
        socket_dir: &job.data.postgres_sockets(),
        port: job.bundled.port,
        bins: to_bins,
        settings: &job.bundled.settings,
        run_as: job.run_as,
        admin_password: job.secrets.get(ADMIN_PASSWORD).unwrap_or_default(),
    };
    initdb(&places.new, &scratch, &setup)?;
    for name in ["pg_hba.conf", "postgresql.auto.conf", super::COGNO_CONF] {
        let from = places.cluster.join(name);
        let Some(bytes) = files::read_small_bytes(&from, SMALL_FILE_CAP).map_err(Error::new)?
        else {
            continue;
        };
        let to = places.new.join(name);
        files::write_atomic(&to, &bytes, job.run_as)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", to.display())))?;
    }
    eprintln!(
        "cogno upgrade: new cluster created in {} (PostgreSQL {})",
        places.new.display(),
        to_bins.version
    );
    Ok(())
}

/// A private directory for pg_upgrade: its working directory (it writes
/// scripts there) and its servers' socket directory (a socket's path must
/// be short, which one below the data directory need not be).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(job: &Job) -> Result<WorkDir, Error> {
        let dir =
            std::env::temp_dir().join(format!("cogno-pg-upgrade-{:08x}", rand::random::<u32>()));
        fs::create_dir(&dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        let dir = WorkDir(dir);
        set_mode(&dir.0, 0o700)?;
        own(&dir.0, job.run_as)?;
        Ok(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// pg_upgrade (`check`: --check only), as the server's user, the superuser
/// password through PGPASSWORD. Its servers listen on the private socket only.
fn pg_upgrade(
    job: &Job,
    places: &Places,
    state: &State,
    from_bins: &Binaries,
    to_bins: &Binaries,
    work: &WorkDir,
    check: bool,
) -> Result<(), Error> {
    let mut cmd = client(to_bins, "pg_upgrade", job.secrets);
    as_user(&mut cmd, job.run_as)
        .arg("-b")
        .arg(&from_bins.bin_dir)
        .arg("-B")
        .arg(&to_bins.bin_dir)
        .arg("-d")
        .arg(&places.cluster)
        .arg("-D")
        .arg(&places.new)
        .args(["-U", "postgres", "-s"])
        .arg(&work.0)
        .current_dir(&work.0);
    let port = job.bundled.port.to_string();
    cmd.args(["-p", &port, "-P", &port]);
    if check {
        cmd.arg("--check");
    }
    if state.link {
        cmd.arg("--link");
    }
    let what = if check {
        "pg_upgrade --check"
    } else {
        "pg_upgrade"
    };
    eprintln!("cogno upgrade: running {what}");
    let out = super::super::dies_with_cogno(&mut cmd)
        .output()
        .map_err(|e| {
            Error::new(format!(
                "cannot run {}: {e}",
                to_bins.bin_dir.join("pg_upgrade").display()
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = printed.lines().rev().take(25).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(Error::new(format!(
        "{what} failed ({}); the old cluster in {} is unchanged{}. It said:\n{}{}",
        out.status,
        places.cluster.display(),
        if state.link && !check {
            " unless --link had begun"
        } else {
            ""
        },
        tail.join("\n"),
        String::from_utf8_lossy(&out.stderr).trim_end()
    ))
    .help(format!(
        "fix what it names, then run `cogno upgrade postgres` again: it starts over from a new \
         cluster (pg_upgrade's logs are in {}/pg_upgrade_output.d until then)",
        places.new.display()
    )))
}

/// Moves `cluster` to `aside` and `new` to `cluster`: from any point where
/// an earlier run stopped. Neither directory is ever deleted.
fn swap(new: &Path, cluster: &Path, aside: &Path) -> Result<(), Error> {
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|e| {
            Error::new(format!(
                "cannot move {} to {}: {e}",
                from.display(),
                to.display()
            ))
        })
    };
    if exists(new) {
        if exists(cluster) {
            if exists(aside) {
                return Err(Error::config(format!(
                    "{}, {} and {} all exist: cogno cannot tell which cluster goes where; nothing \
                     was changed",
                    cluster.display(),
                    new.display(),
                    aside.display()
                ))
                .help("look at them, move the one that does not belong elsewhere, and run the command again"));
            }
            rename(cluster, aside)?;
        }
        rename(new, cluster)?;
    } else if !exists(cluster) {
        return Err(Error::config(format!(
            "neither {} nor {} exists: the cluster to move into place is gone; nothing was changed",
            new.display(),
            cluster.display()
        ))
        .help(format!(
            "the other cluster is in {}; restore a backup, or move it back to {} yourself",
            aside.display(),
            cluster.display()
        )));
    }
    sync_dir(cluster.parent().unwrap_or(Path::new("/")))?;
    Ok(())
}

/// Starts the new cluster on a private socket with its own client rules and
/// logs in as the superuser and as the app, with their passwords; refreshes
/// the planner's statistics (pg_upgrade carries none over); stops it.
fn prove(job: &Job, cluster: &Path, bins: &Binaries) -> Result<String, Error> {
    eprintln!(
        "cogno upgrade: starting the new cluster to prove it answers, and refreshing its statistics"
    );
    let server = TempServer::start(cluster, job.bundled.port, bins, job.run_as, Logins::Cluster)
        .map_err(Error::new)?;
    let admin = job.secrets.get(ADMIN_PASSWORD).unwrap_or_default();
    let query = |user: &str, password: &str, db: &str, sql: &str| {
        let out = server
            .psql_as(
                user,
                Some(password),
                db,
                &["-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            )
            .map_err(|e| Error::new(format!("cannot run psql: {e}")))?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "the upgraded cluster in {cluster} does not let {user} in to {db}: {}",
                String::from_utf8_lossy(&out.stderr).trim_end(),
                cluster = cluster.display()
            ))
            .help(
                "the upgrade is not marked done: run `cogno upgrade postgres --rollback` to go \
                 back to the old cluster, or fix the cause and run `cogno upgrade postgres` again",
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let databases = query(
        "postgres",
        admin,
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datallowconn",
    )?;
    let app_role = query(
        "postgres",
        admin,
        "postgres",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{APP_DB}'"),
    )?;
    let app = if app_role == "1" {
        let password = job.secrets.get(PASSWORD).unwrap_or_default();
        query(APP_DB, password, APP_DB, "SELECT 1")?;
        format!("the app role `{APP_DB}` and the superuser logged in")
    } else {
        "the superuser logged in (the app role does not exist yet)".to_owned()
    };
    let mut vacuum = client(bins, "vacuumdb", job.secrets);
    as_user(&mut vacuum, job.run_as)
        .arg("-h")
        .arg(&server.sockets)
        .args(["-p", &job.bundled.port.to_string(), "-U", "postgres", "-w"])
        .args(["--all", "--analyze-in-stages"]);
    super::super::run_tool(&mut vacuum, "vacuumdb --all --analyze-in-stages")
        .map_err(Error::new)?;
    server.stop().map_err(Error::new)?;
    Ok(format!(
        "{app}; {databases} databases; statistics refreshed"
    ))
}

/// What a rollback ended with.
pub struct RolledBack {
    pub from: u32,
    pub from_bin: PathBuf,
    pub cluster: PathBuf,
    pub aside: PathBuf,
}

/// Puts the old cluster back in place and the upgraded one aside.
pub fn rollback(data: &DataDir) -> Result<RolledBack, Error> {
    let Some(mut state) = State::read(data)? else {
        return Err(Error::config(format!(
            "there is no upgrade of PostgreSQL to roll back in {} (no {}); nothing was changed",
            data.root().display(),
            data.pg_upgrade_state().display()
        ))
        .help("give the data directory the upgrade ran on with --data DIR"));
    };
    let places = Places::of(data, state.from, state.to);
    match state.step {
        Step::Swapped | Step::Done | Step::RollingBack => {}
        Step::RolledBack => {
            return Err(Error::config(format!(
                "the upgrade of PostgreSQL {} → {} in {} was rolled back already: {} is the old \
                 cluster again, the upgraded one is in {}",
                state.from,
                state.to,
                data.root().display(),
                places.cluster.display(),
                places.rolled_back.display()
            )))
        }
        _ => {
            return Err(Error::config(format!(
                "the upgrade of PostgreSQL {} → {} in {} stopped at step `{}`, before the old \
                 cluster was moved: {} still is the old cluster, and there is nothing to roll back",
                state.from,
                state.to,
                data.root().display(),
                state.step.name(),
                places.cluster.display()
            ))
            .help(
                "run `cogno upgrade postgres` to finish the upgrade; to stay on the old major, \
                 remove the record and the unfinished work (`rm -rf DATA/postgresql.new \
                 DATA/.cogno/pg-upgrade`) and set `bin_dir` to the old major's binaries",
            ))
        }
    }
    if state.link {
        return Err(Error::config(format!(
            "the upgrade of {} ran with --link: the old cluster's files are now the new one's, and \
             PostgreSQL {} can no longer start it, so it cannot be rolled back; nothing was changed",
            places.cluster.display(),
            state.from
        ))
        .help(match state.backup() {
            Some(b) => format!(
                "restore the backup taken before the upgrade: {} (see docs/upgrading.md)",
                b.display()
            ),
            None => "restore your own backup (the upgrade ran with --no-backup)".to_owned(),
        }));
    }
    if state.step != Step::RollingBack && exists(&places.rolled_back) {
        return Err(Error::config(format!(
            "{} already exists, and is where the upgraded cluster goes; nothing was changed",
            places.rolled_back.display()
        ))
        .help("move it elsewhere, then run `cogno upgrade postgres --rollback` again"));
    }
    if state.step != Step::RollingBack && !exists(&places.old) {
        return Err(Error::config(format!(
            "the old cluster is not in {} any more; nothing was changed",
            places.old.display()
        ))
        .help("if you moved it, put it back there and roll back again; otherwise restore the backup taken before the upgrade"));
    }
    state.at(Step::RollingBack, data)?;
    swap(&places.old, &places.cluster, &places.rolled_back)?;
    data.record_postgres_major(state.from)?;
    state.at(Step::RolledBack, data)?;
    Ok(RolledBack {
        from: state.from,
        from_bin: state.from_bin,
        cluster: places.cluster,
        aside: places.rolled_back,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TempDir;

    #[test]
    fn the_record_reads_back_and_a_foreign_one_is_refused() {
        let tmp = TempDir::new("pg-upgrade-state");
        let data = DataDir::new(tmp.path());
        assert!(State::read(&data).unwrap().is_none());
        for (step, _) in STEPS {
            let state = State {
                step,
                from: 15,
                to: 17,
                from_bin: "/usr/lib/postgresql/15/bin".into(),
                link: step == Step::Done,
                backup: "none".into(),
            };
            state.write(&data).unwrap();
            let back = State::read(&data).unwrap().unwrap();
            assert_eq!(
                (back.step, back.from, back.to, back.link, back.backup()),
                (step, 15, 17, step == Step::Done, None)
            );
            assert_eq!(check_settled(&data).is_ok(), step.settled(), "{step:?}");
        }
        fs::write(data.pg_upgrade_state(), "step=sideways\n").unwrap();
        let e = State::read(&data).unwrap_err();
        assert!(
            e.message.contains("is not a record cogno wrote"),
            "{}",
            e.message
        );
    }

    /// The swap finishes from wherever an earlier run stopped, and never
    /// loses either directory.
    #[test]
    fn the_swap_resumes_from_every_point_and_refuses_what_it_cannot_tell() {
        let tmp = TempDir::new("pg-upgrade-swap");
        let (new, cluster, aside) = (
            tmp.path().join("postgresql.new"),
            tmp.path().join("postgresql"),
            tmp.path().join("postgresql-15.old"),
        );
        let mark = |dir: &Path, what: &str| {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("which"), what).unwrap();
        };
        let which = |dir: &Path| fs::read_to_string(dir.join("which")).unwrap();
        let reset = || {
            for d in [&new, &cluster, &aside] {
                let _ = fs::remove_dir_all(d);
            }
        };
        // Not begun; the first rename done; both done (a second run).
        for renamed in 0..3 {
            reset();
            match renamed {
                0 => {
                    mark(&new, "new");
                    mark(&cluster, "old");
                }
                1 => {
                    mark(&new, "new");
                    mark(&aside, "old");
                }
                _ => {
                    mark(&cluster, "new");
                    mark(&aside, "old");
                }
            }
            swap(&new, &cluster, &aside).unwrap();
            assert_eq!(
                (which(&cluster), which(&aside)),
                ("new".into(), "old".into())
            );
            assert!(!new.exists());
        }
        reset();
        for d in [&new, &cluster, &aside] {
            mark(d, "x");
        }
        assert!(swap(&new, &cluster, &aside).is_err());
        assert!(new.exists() && cluster.exists() && aside.exists());
        reset();
        mark(&aside, "old");
        assert!(swap(&new, &cluster, &aside).is_err());
        assert_eq!(which(&aside), "old");
    }
}
