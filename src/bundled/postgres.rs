//! Bundled PostgreSQL: finding (or installing) the binaries, creating the
//! cluster crash-safely, writing its configuration, clearing a stale
//! postmaster.pid, provisioning the app's role and databases, and the health
//! probe that logs in with the app's credentials: the `postgres` kind.

use super::auth_guard;
use super::product::APP_DB;
use super::{AppVar, Found, Job, ProbeFuture, Server, ServerSecret, Versions};
use crate::config::Bundled;
use crate::datadir::archive;
use crate::datadir::{files, DataDir};
use crate::error::Error;
use crate::secrets::{Credentials, Secrets};
use crate::user::RunAs;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, Connection};
use std::any::Any;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub mod upgrade;

/// The app's password.
const PASSWORD: &str = "POSTGRES_PASSWORD";
/// The superuser's password: cogno's own use only (initdb, provisioning).
const ADMIN_PASSWORD: &str = "POSTGRES_ADMIN_PASSWORD";

/// The `postgres` kind.
pub struct Postgres;

impl Server for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn secrets(&self) -> &'static [ServerSecret] {
        &[
            ServerSecret {
                name: PASSWORD,
                bytes: 16,
                private: false,
            },
            ServerSecret {
                name: ADMIN_PASSWORD,
                bytes: 16,
                private: true,
            },
        ]
    }

    fn app_env(&self, b: &Bundled, secrets: &Secrets) -> Vec<AppVar> {
        vec![AppVar {
            name: "DATABASE_URL".into(),
            carries: Some(PASSWORD.into()),
            value: format!(
                "postgresql://{APP_DB}:{}@127.0.0.1:{}/{APP_DB}",
                secrets.get(PASSWORD).unwrap_or_default(),
                b.port
            ),
        }]
    }

    fn check_settings(&self, b: &Bundled) -> Result<(), String> {
        b.settings
            .iter()
            .try_for_each(|(key, _)| check_setting(key))
    }

    fn data_marks(&self, data: &DataDir) -> Vec<PathBuf> {
        vec![data.postgres().join("PG_VERSION")]
    }

    fn preflight(
        &self,
        b: &Bundled,
        _user: Option<&RunAs>,
        data: &DataDir,
    ) -> Result<Found, Error> {
        // PostgreSQL's own socket is DATA/run/postgresql/.s.PGSQL.PORT: a
        // path deeper than a socket address holds makes it exit at every
        // start ("could not create any Unix-domain sockets").
        let socket = data.postgres_sockets().join(format!(".s.PGSQL.{}", b.port));
        let len = socket.as_os_str().len();
        if len > crate::os::MAX_SOCKET_PATH {
            return Err(Error::config(format!(
                "the data directory {} is too deep for PostgreSQL: its socket {} would be {len} bytes long, and a socket's path holds at most {}",
                data.root().display(),
                socket.display(),
                crate::os::MAX_SOCKET_PATH
            ))
            .help(format!(
                "give a data directory whose path is at least {} bytes shorter (--data DIR, or data_dir: in the stack file)",
                len - crate::os::MAX_SOCKET_PATH
            )));
        }
        // A cluster half-way through `cogno upgrade postgres` may be missing
        // (initdb would make an empty one) or unproven: never start it.
        upgrade::check_settled(data)?;
        let bins = locate(b.bin.as_deref(), &data.postgres_bin_cache())?;
        check_existing(&data.postgres(), &bins)?;
        Ok(Box::new(bins))
    }

    fn prepare(
        &self,
        job: &Job,
        found: &dyn Any,
        versions: &mut Versions,
    ) -> Result<super::Prepared, Error> {
        let bins = found.downcast_ref::<Binaries>().ok_or_else(|| {
            Error::new("internal error: PostgreSQL was not located during pre-flight")
        })?;
        let cluster = job.data.postgres();
        let prepared = prepare(&Setup {
            cluster: &cluster,
            socket_dir: &job.data.postgres_sockets(),
            port: job.bundled.port,
            bins,
            settings: &job.bundled.settings,
            run_as: job.run_as,
            admin_password: job.secrets.get(ADMIN_PASSWORD).unwrap_or_default(),
        })?;
        versions.postgres_major = Some(bins.major);
        Ok(super::Prepared {
            command: prepared.command,
            progress: format!(
                "PostgreSQL {} {} in {}",
                bins.version,
                if prepared.initialized {
                    "cluster created"
                } else {
                    "cluster found"
                },
                cluster.display()
            ),
            notes: prepared
                .removed_stale_pid
                .then(|| "removed a stale postmaster.pid left by an unclean stop".to_owned())
                .into_iter()
                .collect(),
        })
    }

    fn reconfigure(&self, job: &Job, program: &Path) -> Result<Vec<String>, Error> {
        Ok(reconfigure(job, program)?)
    }

    fn probe<'a>(
        &'a self,
        b: &'a Bundled,
        credentials: &'a Credentials,
        data: &'a DataDir,
    ) -> ProbeFuture<'a> {
        Box::pin(async move {
            probe(
                &data.postgres(),
                b.port,
                APP_DB,
                credentials.get(PASSWORD),
                credentials.get(ADMIN_PASSWORD),
                &b.databases,
            )
            .await?;
            extensions(
                b.port,
                APP_DB,
                credentials.get(ADMIN_PASSWORD),
                &b.databases,
                &b.extensions,
            )
            .await
        })
    }

    fn banner(&self, b: &Bundled) -> String {
        format!("postgresql://127.0.0.1:{} (database {APP_DB})", b.port)
    }

    fn backup(&self, job: &Job, out: &Path) -> Result<String, Error> {
        let bins = locate(job.bundled.bin.as_deref(), &job.data.postgres_bin_cache())?;
        // Every database and every role (with its password verifier), as
        // SQL: portable to another major version and to another server.
        // Each database is dumped from one snapshot: every row committed
        // before the dump of its database began is in it.
        // Compressed as it streams out, on every CPU: the dump (the size of
        // the data) is never staged uncompressed, and compressing it takes
        // no time of its own after the dump (as `pg_dump | zstd` does).
        let path = out.join(DUMP);
        let cannot =
            |e: std::io::Error| Error::new(format!("cannot write {}: {e}", path.display()));
        let mut sink = archive::compressed_file(&path).map_err(cannot)?;
        super::run_tool_into(
            client(&bins, "pg_dumpall", job.secrets)
                .args(["-h", "127.0.0.1", "-p", &job.bundled.port.to_string()])
                .args(["-U", "postgres", "-w"]),
            "pg_dumpall (a logical dump of every database and role)",
            &mut sink,
        )
        .map_err(Error::new)?;
        // Flushed, not synced: staging is scratch; the archive is synced.
        sink.finish()
            .and_then(|mut buffered| std::io::Write::flush(&mut buffered))
            .map_err(cannot)?;
        Ok(bins.version)
    }

    fn restore(&self, job: &Job, from: &Path, recorded: &str) -> Result<(), Error> {
        let bins = locate(job.bundled.bin.as_deref(), &job.data.postgres_bin_cache())?;
        let dumped_major = parse_version(&format!("(PostgreSQL) {recorded}")).map(|(m, _)| m);
        if dumped_major.is_some_and(|m| m > bins.major) {
            return Err(Error::config(format!(
                "the archive's dump comes from PostgreSQL {recorded}, newer than the binaries in {} \
                 (PostgreSQL {}); a newer server's dump is not guaranteed to load into an older \
                 one, so nothing was restored",
                bins.bin_dir.display(),
                bins.version
            ))
            .help(format!(
                "set `bin_dir` of the postgres service to a PostgreSQL {} or newer installation",
                dumped_major.unwrap_or_default()
            )));
        }
        // A cluster exactly as cogno's first run makes it.
        let cluster = job.data.postgres();
        let sockets = job.data.postgres_sockets();
        let admin_password = job.secrets.get(ADMIN_PASSWORD).unwrap_or_default();
        prepare(&Setup {
            cluster: &cluster,
            socket_dir: &sockets,
            port: job.bundled.port,
            bins: &bins,
            settings: &job.bundled.settings,
            run_as: job.run_as,
            admin_password,
        })?;
        // A failure from here on is a failed step (exit status 1), not a refusal.
        let server =
            TempServer::start(&cluster, job.bundled.port, &bins, job.run_as, Logins::Trust)
                .map_err(Error::new)?;
        let loaded = load_dump(&server, from, admin_password);
        server.stop().map_err(Error::new)?;
        loaded.map_err(Error::new)
    }
}

/// The dump's name, in the backup (zstd-compressed; archive format 2).
const DUMP: &str = "pg_dumpall.sql.zst";
/// Its name in archives of format 1: plain SQL.
const PLAIN_DUMP: &str = "pg_dumpall.sql";

/// One of PostgreSQL's client programs (`name`, from the server's own
/// `bin_dir`) logging in as the superuser: the password through the
/// environment, never on a command line, and no ~/.pgpass.
fn client(bins: &Binaries, name: &str, secrets: &Secrets) -> std::process::Command {
    let mut cmd = super::tool(bins.bin_dir.join(name));
    cmd.env(
        "PGPASSWORD",
        secrets.get(ADMIN_PASSWORD).unwrap_or_default(),
    )
    .env("PGPASSFILE", "/dev/null")
    .env("PGSSLMODE", "disable")
    .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// `cmd` as the server's user (when cogno is root and runs it as one).
fn as_user<'a>(
    cmd: &'a mut std::process::Command,
    run_as: Option<&RunAs>,
) -> &'a mut std::process::Command {
    if let Some(u) = run_as {
        cmd.uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    cmd
}

/// A cluster's server, started for a restore or an upgrade on a Unix socket
/// only (no TCP: nothing else can reach it meanwhile, and only root and the
/// server's user can reach the socket). `postgres` itself is the restore's
/// child, killed with it (`PR_SET_PDEATHSIG`): a restore killed part-way
/// leaves no server behind (pg_ctl would have detached it). Its socket is
/// in a fresh private directory under the system's temporary directory: a
/// socket path must fit in 107 bytes, which one below the data directory
/// need not.
struct TempServer {
    child: std::process::Child,
    sockets: PathBuf,
    port: u16,
    psql: PathBuf,
    log: PathBuf,
}

/// Who the temporary server lets in.
#[derive(Clone, Copy, PartialEq)]
enum Logins {
    /// Anyone on its private socket, without a password: a restore loads a
    /// dump that changes the superuser's password and reconnects.
    Trust,
    /// As the cluster's own pg_hba.conf says: an upgrade proves that the
    /// passwords still work.
    Cluster,
}

/// How long the temporary server may take to start (crash recovery of a
/// new cluster takes no time; a loaded machine does).
const TEMP_START: Duration = Duration::from_secs(300);

impl TempServer {
    fn start(
        cluster: &Path,
        port: u16,
        bins: &Binaries,
        run_as: Option<&RunAs>,
        logins: Logins,
    ) -> Result<TempServer, String> {
        let sockets = std::env::temp_dir().join(format!("cogno-pg-{:08x}", rand::random::<u32>()));
        // A new directory (mkdir fails on anything already there, a link too).
        fs::create_dir(&sockets)
            .map_err(|e| format!("cannot create {}: {e}", sockets.display()))?;
        let log = cluster.join("cogno-temp-server.log");
        let mut server = TempServer {
            child: Self::spawn(cluster, &sockets, port, bins, run_as, &log, logins)?,
            sockets,
            port,
            psql: bins.bin_dir.join("psql"),
            log,
        };
        let deadline = std::time::Instant::now() + TEMP_START;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(server.failed(&format!("postgres exited ({status})")));
            }
            // pg_isready: no login (which the cluster's own rules may refuse
            // without a password), only whether it accepts connections.
            if super::tool(bins.bin_dir.join("pg_isready"))
                .arg("-h")
                .arg(&server.sockets)
                .args(["-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success())
            {
                return Ok(server);
            }
            if std::time::Instant::now() > deadline {
                return Err(server.failed(&format!(
                    "postgres did not accept connections within {} s",
                    TEMP_START.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(
        cluster: &Path,
        sockets: &Path,
        port: u16,
        bins: &Binaries,
        run_as: Option<&RunAs>,
        log: &Path,
        logins: Logins,
    ) -> Result<std::process::Child, String> {
        set_mode(sockets, 0o700)?;
        own(sockets, run_as)?;
        // With Logins::Trust, logins without a password on this private
        // socket only.
        let hba = sockets.join("pg_hba.conf");
        if logins == Logins::Trust {
            files::write_atomic(&hba, b"local all all trust\n", run_as)
                .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        }
        let out = fs::File::create(log)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let postgres = bins.bin_dir.join("postgres");
        let mut cmd = super::tool(&postgres);
        cmd.arg("-D")
            .arg(cluster)
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", sockets.display()))
            .args(["-p", &port.to_string()]);
        if logins == Logins::Trust {
            cmd.arg("-c").arg(format!("hba_file={}", hba.display()));
        }
        cmd.current_dir(cluster).stdout(out.0).stderr(out.1);
        super::dies_with_cogno(as_user(&mut cmd, run_as))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", postgres.display()))
    }

    /// psql as the superuser on the private socket, with `args`.
    fn psql(&self, args: &[&str]) -> std::process::Command {
        self.psql_command("postgres", None, "postgres", args)
    }

    /// psql as `user` (with `password`, if any) into `db` on the private
    /// socket, with `args`; its output is captured.
    fn psql_as(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
        args: &[&str],
    ) -> std::io::Result<std::process::Output> {
        self.psql_command(user, password, db, args).output()
    }

    fn psql_command(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
        args: &[&str],
    ) -> std::process::Command {
        let mut cmd = super::tool(&self.psql);
        if let Some(p) = password {
            cmd.env("PGPASSWORD", p);
        }
        super::dies_with_cogno(
            cmd.env("PGPASSFILE", "/dev/null")
                .args(["-X", "-q", "-w", "-h"])
                .arg(&self.sockets)
                .args(["-p", &self.port.to_string(), "-U", user, "-d", db])
                .args(args),
        );
        cmd
    }

    /// `why`, with what the server logged.
    fn failed(&mut self, why: &str) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = files::read_small(&self.log, 1 << 16)
            .ok()
            .flatten()
            .unwrap_or_default();
        format!(
            "the temporary PostgreSQL server (for a restore or an upgrade) failed: {why}; its log ({}):\n{}",
            self.log.display(),
            log.trim_end()
        )
    }

    /// A fast shutdown (SIGINT): a checkpoint makes what was loaded durable.
    fn stop(mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let status = self
            .child
            .wait()
            .map_err(|e| format!("cannot wait for the temporary PostgreSQL server: {e}"))?;
        if !status.success() {
            return Err(self.failed(&format!("it stopped with {status}")));
        }
        fs::remove_file(&self.log).map_err(|e| format!("cannot remove {}: {e}", self.log.display()))
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        // A server still running here is one a failure left: it goes too.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.sockets);
    }
}

/// Loads the dump in `from` into the temporary server as the superuser,
/// then sets the superuser's password to the current admin password (the
/// dump sets the one it was taken with, which differs when the archive
/// holds no secrets). The only error allowed is the dump's creation of the
/// superuser initdb already made.
fn load_dump(server: &TempServer, from: &Path, admin_password: &str) -> Result<(), String> {
    let reset = from.join("reset-admin-password.sql");
    fs::write(
        &reset,
        format!(
            "SET log_statement = 'none';\nALTER ROLE postgres WITH PASSWORD {};\n",
            quote_literal(&scram_verifier(admin_password))
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", reset.display()))?;
    let reset = reset.to_string_lossy().into_owned();
    let plain = from.join(PLAIN_DUMP);
    let out = if plain.exists() {
        let plain = plain.to_string_lossy();
        server
            .psql(&["-v", "ON_ERROR_STOP=0", "-f", &plain, "-f", &reset])
            .output()
    } else {
        let dump = from.join(DUMP);
        let decoded = fs::File::open(&dump)
            .and_then(zstd::Decoder::new)
            .map_err(|e| format!("cannot read {}: {e}", dump.display()))?;
        super::output_fed(
            &mut server.psql(&["-v", "ON_ERROR_STOP=0", "-f", "-", "-f", &reset]),
            decoded,
        )
    }
    .map_err(|e| format!("cannot run psql to load the dump: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR:") && !l.contains("role \"postgres\" already exists"))
        .take(5)
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(format!(
            "loading the PostgreSQL dump failed ({}): {}",
            out.status,
            if errors.is_empty() {
                stderr.trim_end().to_owned()
            } else {
                errors.join("\n")
            }
        ));
    }
    Ok(())
}

/// PostgreSQL's server binaries and their version.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub bin_dir: PathBuf,
    /// Major version, e.g. 15.
    pub major: u32,
    /// Full version, e.g. "15.18".
    pub version: String,
}

/// The generated settings file, included from the cluster's postgresql.conf.
pub const COGNO_CONF: &str = "cogno.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'cogno.conf'";
const CONF_TEMPLATE: &str = include_str!("../../bundled/postgresql.conf");
const HBA_TEMPLATE: &str = include_str!("../../bundled/pg_hba.conf");
const UPGRADING: &str = "docs/upgrading.md";
/// Bounds the whole download and extraction of a PostgreSQL release, which
/// takes far longer than postgresql_embedded's 5 s default (that one covers
/// only the commands it runs; its download has no limit of its own).
const EMBEDDED_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `bin_dir` from the config, else `pg_config --bindir`, else the newest
/// /usr/lib/postgresql/*/bin, else postgresql_embedded installs them under
/// `cache` (needs network: say so clearly when offline).
///
/// Blocking, and it waits for the processes it runs (`postgres --version`,
/// `pg_config`): call it before the reaper runs or on the thread that reaps.
pub(super) fn locate(bin_dir: Option<&Path>, cache: &Path) -> Result<Binaries, String> {
    if let Some(dir) = bin_dir {
        if !is_server_dir(dir) {
            return Err(format!(
                "bin_dir {} does not hold PostgreSQL's server binaries (`postgres` and `initdb`); \
                 set `bin_dir` to the directory that has them (Debian: /usr/lib/postgresql/<major>/bin)",
                dir.display()
            ));
        }
        return binaries(dir);
    }
    if let Some(dir) = pg_config_bindir().filter(|d| is_server_dir(d)) {
        return binaries(&dir);
    }
    if let Some(dir) = newest_system_install(Path::new("/usr/lib/postgresql")) {
        return binaries(&dir);
    }
    match install_embedded(cache) {
        Ok(dir) => binaries(&dir),
        Err(why) => Err(format!(
            "no PostgreSQL server was found on this machine: `bin_dir` is not set, \
             `pg_config --bindir` names no directory with `postgres` and `initdb`, and \
             /usr/lib/postgresql/*/bin has none; downloading one into {} failed, which needs \
             network access: {why}\n\
             Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`) or set `bin_dir` \
             under the postgres service to the directory holding `postgres` and `initdb`",
            cache.display()
        )),
    }
}

fn is_server_dir(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = super::tool("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

/// Debian's layout: one directory per major version, /usr/lib/postgresql/15/bin.
fn newest_system_install(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            is_server_dir(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// Installs the latest release under `cache` with postgresql_embedded, using
/// only its installer: its data directory is a throwaway that already looks
/// initialized, so it never runs initdb (which refuses root) and never points
/// at the real cluster (its defaults delete the data directory on drop).
fn install_embedded(cache: &Path) -> Result<PathBuf, String> {
    use postgresql_embedded::{PostgreSQL, Settings};

    let scratch = cache.join(".embedded-scratch");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .and_then(|()| fs::write(scratch.join("postgresql.conf"), ""))
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;

    let mut settings = Settings::new();
    // Settings::new() leaves two fresh empty directories under /tmp behind.
    let _ = fs::remove_dir(&settings.data_dir);
    if let Some(dir) = settings.password_file.parent() {
        let _ = fs::remove_dir(dir);
    }
    settings.installation_dir = cache.to_path_buf();
    settings.data_dir = scratch.clone();
    settings.password_file = scratch.join("pwfile");
    settings.temporary = false;
    settings.timeout = Some(EMBEDDED_TIMEOUT);

    // Its own runtime on its own thread: callers may or may not be inside one.
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for the download: {e}"))?;
        rt.block_on(async {
            let mut pg = PostgreSQL::new(settings);
            match tokio::time::timeout(EMBEDDED_TIMEOUT, pg.setup()).await {
                Ok(Ok(())) => Ok(pg.settings().binary_dir()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no complete download within {} s",
                    EMBEDDED_TIMEOUT.as_secs()
                )),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the installer panicked".into()));
    let _ = fs::remove_dir_all(&scratch);
    let dir = result?;
    if is_server_dir(&dir) {
        Ok(dir)
    } else {
        Err(format!(
            "the installed release has no `postgres` and `initdb` in {}",
            dir.display()
        ))
    }
}

fn binaries(bin_dir: &Path) -> Result<Binaries, String> {
    let postgres = bin_dir.join("postgres");
    for program in ["postgres", "initdb"] {
        super::trusted(&bin_dir.join(program))?;
    }
    let out = super::tool(&postgres)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", postgres.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (major, version) = parse_version(&text).ok_or_else(|| {
        format!(
            "cannot read the version from `{} --version` (it printed {:?}); \
             set `bin_dir` to a PostgreSQL server installation",
            postgres.display(),
            text.trim()
        )
    })?;
    Ok(Binaries {
        bin_dir: bin_dir.to_path_buf(),
        major,
        version,
    })
}

/// "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" → (15, "15.14").
fn parse_version(text: &str) -> Option<(u32, String)> {
    let version = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, version.to_owned()))
}

/// Everything `prepare` needs.
pub struct Setup<'a> {
    /// DATA/postgresql: the cluster.
    pub cluster: &'a Path,
    /// DATA/run/postgresql: the Unix socket directory.
    pub socket_dir: &'a Path,
    pub port: u16,
    pub bins: &'a Binaries,
    /// `settings:` from the config, overriding the defaults in bundled/postgresql.conf.
    pub settings: &'a [(String, String)],
    /// The OS user postgres runs as when cogno is root (None: cogno's own user).
    pub run_as: Option<&'a RunAs>,
    /// Password of the `postgres` superuser (set at initdb).
    pub admin_password: &'a str,
}

/// What `prepare` did, for the progress lines.
#[derive(Debug)]
pub struct Prepared {
    /// The command to supervise: `postgres -D CLUSTER` (never pg_ctl).
    pub command: Vec<String>,
    /// A new cluster was created by this run.
    pub initialized: bool,
    /// A stale postmaster.pid was removed.
    pub removed_stale_pid: bool,
}

/// Creates the cluster if there is none (initdb into a temporary sibling,
/// renamed into place when complete), checks its major version, writes the
/// configuration, clears a stale postmaster.pid. Blocking.
///
/// It waits for initdb itself: call it before the reaper runs or on the
/// thread that reaps (not from spawn_blocking), or the status is stolen.
pub(super) fn prepare(setup: &Setup) -> Result<Prepared, String> {
    let cluster = std::path::absolute(setup.cluster)
        .map_err(|e| format!("cannot resolve {}: {e}", setup.cluster.display()))?;
    // Bad `settings:` must fail before anything is written.
    let conf = cogno_conf(setup.port, setup.socket_dir, setup.settings)?;
    let scratch = scratch_dir(&cluster)?;
    let initialized = match check_existing(&cluster, setup.bins)? {
        ClusterState::Exists => {
            // A crash between the rename and the cleanup leaves it behind.
            remove_scratch(&scratch)?;
            false
        }
        ClusterState::Missing => {
            initdb(&cluster, &scratch, setup)?;
            true
        }
    };
    let removed_stale_pid = clear_stale_lock(&cluster.join("postmaster.pid"), &cluster)?;
    fix_cluster_dir(&cluster, setup.run_as)?;

    fs::create_dir_all(setup.socket_dir)
        .map_err(|e| format!("cannot create {}: {e}", setup.socket_dir.display()))?;
    own(setup.socket_dir, setup.run_as)?;
    set_mode(setup.socket_dir, 0o700)?;
    // The socket's lock file has the same PID-reuse problem as postmaster.pid.
    let socket_lock = setup
        .socket_dir
        .join(format!(".s.PGSQL.{}.lock", setup.port));
    clear_stale_lock(&socket_lock, &cluster)?;

    write_conf(&cluster, &conf, setup.run_as)?;
    Ok(Prepared {
        command: command(&setup.bins.bin_dir.join("postgres"), &cluster),
        initialized,
        removed_stale_pid,
    })
}

/// The command to supervise: `postgres -D CLUSTER` (never pg_ctl).
fn command(postgres: &Path, cluster: &Path) -> Vec<String> {
    vec![
        postgres.to_string_lossy().into_owned(),
        "-D".into(),
        cluster.to_string_lossy().into_owned(),
    ]
}

/// Writes the generated settings `conf` as the cluster's cogno.conf.
fn write_conf(cluster: &Path, conf: &str, run_as: Option<&RunAs>) -> Result<(), String> {
    let path = cluster.join(COGNO_CONF);
    crate::datadir::files::write_atomic(&path, conf.as_bytes(), run_as)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// For a reload: cogno.conf written again from the new settings, over the
/// cluster in use (its server reads it when it restarts; the other files
/// of `prepare` belong to the cluster and stay).
fn reconfigure(job: &Job, program: &Path) -> Result<Vec<String>, String> {
    let cluster = std::path::absolute(job.data.postgres())
        .map_err(|e| format!("cannot resolve {}: {e}", job.data.postgres().display()))?;
    let b = job.bundled;
    let conf = cogno_conf(b.port, &job.data.postgres_sockets(), &b.settings)?;
    write_conf(&cluster, &conf, job.run_as)?;
    Ok(command(program, &cluster))
}

/// The read-only part of `prepare`, for the pre-flight checks: an existing
/// cluster must be of the binaries' major version and include cogno.conf; a
/// directory that is neither empty nor a cluster is refused.
pub(super) fn check_existing(cluster: &Path, bins: &Binaries) -> Result<ClusterState, String> {
    let state = cluster_state(cluster)?;
    if let ClusterState::Exists = state {
        check_version(cluster, bins)?;
        check_includes_cogno_conf(cluster)?;
    }
    Ok(state)
}

pub enum ClusterState {
    Exists,
    Missing,
}

fn cluster_state(cluster: &Path) -> Result<ClusterState, String> {
    if cluster.join("PG_VERSION").exists() {
        return Ok(ClusterState::Exists);
    }
    let entries = match fs::read_dir(cluster) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClusterState::Missing),
        Err(e) => return Err(format!("cannot read {}: {e}", cluster.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(ClusterState::Missing);
    }
    names.sort();
    let shown = names.len().min(5);
    let more = if names.len() > shown {
        format!(" and {} more", names.len() - shown)
    } else {
        String::new()
    };
    Err(format!(
        "{} is not empty but holds no PostgreSQL cluster (no PG_VERSION): it contains {}{more}. \
         cogno creates the cluster only in an empty or missing directory and has changed nothing; \
         move these files elsewhere (or restore the complete cluster there) and start again",
        cluster.display(),
        names[..shown].join(", ")
    ))
}

fn check_version(cluster: &Path, bins: &Binaries) -> Result<(), String> {
    let path = cluster.join("PG_VERSION");
    let found = read_service_file(&path)?;
    let found = found.trim();
    if found == bins.major.to_string() {
        return Ok(());
    }
    if found.parse::<u32>().is_err() {
        return Err(format!(
            "{} should hold the major version of PostgreSQL that created the cluster (like `15`) \
             but holds {}; nothing was changed. Restore the file from a backup of the cluster",
            path.display(),
            files::shown(found)
        ));
    }
    Err(format!(
        "the cluster in {} was created by PostgreSQL {found} but the binaries in {} are \
         PostgreSQL {} ({}); a server cannot open another major version's data. Nothing was \
         changed. Either set `bin_dir` to a PostgreSQL {found} installation, or upgrade the \
         cluster to {} with `cogno upgrade postgres` (or start with COGNO_PG_UPGRADE=auto in \
         cogno's environment to upgrade on start), as described in {UPGRADING}",
        cluster.display(),
        bins.bin_dir.display(),
        bins.major,
        bins.version,
        bins.major
    ))
}

/// The most cogno reads of a file the server's user can write: PG_VERSION,
/// postmaster.pid and postgresql.conf are a few kilobytes at most.
const SMALL_FILE_CAP: u64 = 1 << 20;

/// A file of the cluster, which its server's user can replace with a link or
/// a FIFO: read only as a small regular file.
fn read_service_file(path: &Path) -> Result<String, String> {
    files::read_small(path, SMALL_FILE_CAP)?
        .ok_or_else(|| format!("cannot read {}: it does not exist", path.display()))
}

fn check_includes_cogno_conf(cluster: &Path) -> Result<(), String> {
    let path = cluster.join("postgresql.conf");
    let text = read_service_file(&path)?;
    let included = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("include") && !l.starts_with("include_dir") && l.contains(COGNO_CONF)
    });
    if included {
        return Ok(());
    }
    Err(format!(
        "{} does not include cogno's settings ({COGNO_CONF}: port, listen address, socket \
         directory), so the server would not listen where cogno expects it; add the line\n    \
         {INCLUDE_LINE}\nat its end and start again",
        path.display()
    ))
}

/// initdb into DIR.initdb-tmp/pgdata, then a rename: a crash at any point
/// leaves either no cluster or a complete one, never a half one.
fn initdb(cluster: &Path, scratch: &Path, setup: &Setup) -> Result<(), String> {
    let parent = scratch.parent().unwrap_or(Path::new("/"));
    let pgdata = scratch.join("pgdata");
    let pwfile = scratch.join("pwfile");

    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    remove_scratch(scratch)?;
    fs::create_dir(scratch).map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    set_mode(scratch, 0o700)?;
    own(scratch, setup.run_as)?;

    let result = run_initdb(&pgdata, &pwfile, setup);
    let _ = fs::remove_file(&pwfile);
    result?;

    let conf = pgdata.join("postgresql.conf");
    // initdb ran as the server's user, whose directory this is: never append through a link.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&conf)
        .map_err(|e| format!("cannot open {}: {e}", conf.display()))?;
    writeln!(
        f,
        "\n# Added by cogno at initdb: its generated settings (port, socket, `settings:`).\n\
         {INCLUDE_LINE}"
    )
    .and_then(|()| f.sync_all())
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let hba = pgdata.join("pg_hba.conf");
    crate::datadir::files::write_atomic(&hba, HBA_TEMPLATE.as_bytes(), setup.run_as)
        .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
    files::syncfs(&pgdata)?;

    // rename(2) replaces an empty directory, e.g. one created for ownership.
    fs::rename(&pgdata, cluster).map_err(|e| {
        format!(
            "cannot move the new cluster from {} to {}: {e}",
            pgdata.display(),
            cluster.display()
        )
    })?;
    sync_dir(parent)?;
    remove_scratch(scratch)
}

/// DATA/postgresql.initdb-tmp: where initdb builds the cluster. It only ever
/// holds cogno's own unfinished work, never the real cluster.
fn scratch_dir(cluster: &Path) -> Result<PathBuf, String> {
    match (cluster.parent(), cluster.file_name()) {
        (Some(parent), Some(name)) => {
            Ok(parent.join(format!("{}.initdb-tmp", name.to_string_lossy())))
        }
        _ => Err(format!(
            "{} cannot hold the PostgreSQL cluster: use a directory below the data directory",
            cluster.display()
        )),
    }
}

fn remove_scratch(scratch: &Path) -> Result<(), String> {
    match fs::remove_dir_all(scratch) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", scratch.display()))
        }
        _ => Ok(()),
    }
}

fn run_initdb(pgdata: &Path, pwfile: &Path, setup: &Setup) -> Result<(), String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(pwfile)
        .map_err(|e| format!("cannot create {}: {e}", pwfile.display()))?;
    f.write_all(setup.admin_password.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
    drop(f);
    own(pwfile, setup.run_as)?;

    let initdb = setup.bins.bin_dir.join("initdb");
    let mut cmd = super::tool(&initdb);
    as_user(&mut cmd, setup.run_as);
    cmd.arg("-D")
        .arg(pgdata)
        .arg("--username=postgres")
        .arg("--auth=scram-sha-256")
        .arg("--encoding=UTF8")
        // C: the same sort order everywhere, and no dependency on installed locales.
        .arg("--locale=C")
        // One syncfs afterwards is much cheaper than initdb's fsync of every file.
        .arg("--no-sync")
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(pgdata.parent().unwrap_or(pgdata));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", initdb.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hint = if setup.run_as.is_none() && nix::unistd::geteuid().is_root() {
        "; initdb refuses to run as root: run the service as user postgres"
    } else {
        ""
    };
    Err(format!(
        "initdb failed ({}) creating a cluster in {}:\n{}{hint}",
        out.status,
        pgdata.display(),
        stderr.trim_end()
    ))
}

/// postgres refuses a data directory that is not owned by its user or is
/// group-writable or world-accessible.
fn fix_cluster_dir(cluster: &Path, run_as: Option<&RunAs>) -> Result<(), String> {
    let meta = fs::symlink_metadata(cluster)
        .map_err(|e| format!("cannot read {}: {e}", cluster.display()))?;
    // Its mode is set by path below: never through a link.
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory (a symbolic link?): cogno never follows a link in the data directory",
            cluster.display()
        ));
    }
    let want = run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid.as_raw());
    if meta.uid() != want {
        let user = run_as.map_or_else(|| want.to_string(), |u| u.name.clone());
        return Err(format!(
            "{} belongs to uid {}, but PostgreSQL runs as {user} and refuses a data directory \
             it does not own; give it back with `chown -R {user} {}`",
            cluster.display(),
            meta.uid(),
            cluster.display()
        ));
    }
    if meta.mode() & 0o027 != 0 {
        set_mode(cluster, 0o700)?;
    }
    Ok(())
}

/// Removes a lock file (postmaster.pid or a socket's .lock) left by a
/// postgres that is gone. Its PID alone proves nothing: in a container PIDs
/// start low again, so another live process may now hold it. Only a live
/// postgres whose working directory is this cluster keeps the file.
fn clear_stale_lock(lock: &Path, cluster: &Path) -> Result<bool, String> {
    let Some(text) = files::read_small(lock, SMALL_FILE_CAP)? else {
        return Ok(false);
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|&p| p > 0) {
        if is_postgres_on(pid, cluster) {
            return Err(format!(
                "PostgreSQL is already running on {} (pid {pid}): {} belongs to it; stop it \
                 first (e.g. `kill -INT {pid}`), or point cogno at another data directory",
                cluster.display(),
                lock.display()
            ));
        }
    }
    fs::remove_file(lock).map_err(|e| format!("cannot remove stale {}: {e}", lock.display()))?;
    Ok(true)
}

fn is_postgres_on(pid: i32, cluster: &Path) -> bool {
    use nix::errno::Errno;
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    };
    if !alive || pid == std::process::id() as i32 {
        return false;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // A killed postmaster not yet reaped (a zombie) still answers kill(0)
    // and keeps its name, but holds nothing: it is not running.
    let stat = fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    let exe_is_postgres = fs::read_link(proc_dir.join("exe"))
        .ok()
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "postgres"));
    if !matches!(comm.trim(), "postgres" | "postmaster") && !exe_is_postgres {
        return false;
    }
    // postmaster and its backends run with the data directory as their cwd.
    match fs::read_link(proc_dir.join("cwd")) {
        Ok(cwd) => same_dir(&cwd, cluster),
        // Another user's postgres we cannot inspect: assume it is ours rather
        // than delete the lock of a running server.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => true,
        // It has gone (or is exiting) since it was checked.
        Err(_) => false,
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A `settings:` name cogno can write: a PostgreSQL parameter name that is
/// not one cogno chooses itself.
fn check_setting(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if key.eq_ignore_ascii_case("port") || key.eq_ignore_ascii_case("unix_socket_directories") {
        return Err(format!(
            "postgres setting `{key}` is chosen by cogno (from the service's `port:` and the \
             data directory) and cannot be set under `settings:`; remove it, and use `port:` \
             to change the port"
        ));
    }
    if !valid {
        return Err(format!(
            "postgres setting `{key}` is not a PostgreSQL parameter name (letters, digits, \
             `_` and `.` only); fix it under `settings:` of the postgres service"
        ));
    }
    Ok(())
}

/// bundled/postgresql.conf, then what cogno decides, then `settings:`.
fn cogno_conf(
    port: u16,
    socket_dir: &Path,
    settings: &[(String, String)],
) -> Result<String, String> {
    let mut entries: Vec<(String, String)> = CONF_TEMPLATE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut set = |key: &str, value: String| match entries
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
    {
        Some(e) => e.1 = value,
        None => entries.push((key.to_owned(), value)),
    };
    set("port", port.to_string());
    set(
        "unix_socket_directories",
        conf_quote(&socket_dir.to_string_lossy()),
    );
    for (key, value) in settings {
        check_setting(key)?;
        set(key, conf_quote(value));
    }
    let mut out = String::from(
        "# Generated by cogno at every start from its defaults and the postgres service's\n\
         # `settings:`; edits here are lost. The cluster's postgresql.conf includes this file.\n",
    );
    for (k, v) in entries {
        out.push_str(&format!("{k} = {v}\n"));
    }
    Ok(out)
}

/// A postgresql.conf string: any parameter type accepts the quoted form.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

fn own(path: &Path, run_as: Option<&RunAs>) -> Result<(), String> {
    let Some(u) = run_as else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
        .map_err(|e| format!("cannot give {} to user {}: {e}", path.display(), u.name))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode {mode:o} on {}: {e}", path.display()))
}

/// Health probe of the server of `cluster`: log in as `user`/`password` to
/// database `user` over TCP on 127.0.0.1:`port` and run `SELECT 1`.
///
/// Nothing it does makes the server log an error on a normal start. It
/// connects only once the postmaster's status line says it accepts
/// connections (a login before that is refused, and logged as FATAL). The
/// first time in this run, it provisions before the app's login is tried
/// (on a new cluster that login would fail, logged as FATAL too): as the
/// superuser with `admin_password`, it creates or updates the role with
/// the current password and creates the databases (`user` plus
/// `databases`) owned by it. Later, a login that fails because the role,
/// its password or a database is missing provisions again. Idempotent;
/// safe to interrupt.
pub(super) async fn probe(
    cluster: &Path,
    port: u16,
    user: &str,
    password: &str,
    admin_password: &str,
    databases: &[String],
) -> Result<(), String> {
    match postmaster_status(cluster)?.as_str() {
        "ready" | "standby" => {}
        status => {
            return Err(format!(
                "PostgreSQL on 127.0.0.1:{port} does not accept connections yet (postmaster.pid \
                 says `{status}`)"
            ))
        }
    }
    let redact = |e: String| scrub(e, &[password, admin_password]);
    let extra: Vec<String> = databases.iter().filter(|d| *d != user).cloned().collect();
    let login = (port, user.to_owned());
    let first = !provisioned().contains(&login);
    // A failure here is the later path's to report, which tries the app's
    // login first (a superuser whose password was changed by hand).
    if first
        && provision(port, user, password, admin_password, &extra)
            .await
            .is_ok()
    {
        provisioned().insert(login.clone());
    }
    match app_check(port, user, password, &extra).await {
        Ok(true) => {
            provisioned().insert(login);
            return Ok(());
        }
        Ok(false) => {}
        Err(Failure::Provisionable(_)) => {}
        Err(Failure::Other(e)) => return Err(redact(e)),
    }
    provision(port, user, password, admin_password, &extra)
        .await
        .map_err(redact)?;
    match app_check(port, user, password, &extra).await {
        Ok(true) => {
            provisioned().insert(login);
            Ok(())
        }
        Ok(false) => Err(format!(
            "PostgreSQL on 127.0.0.1:{port}: databases {} are still missing after provisioning",
            extra.join(", ")
        )),
        Err(Failure::Provisionable(e) | Failure::Other(e)) => Err(redact(format!(
            "PostgreSQL on 127.0.0.1:{port}: {e} (after provisioning role `{user}`)"
        ))),
    }
}

/// Creates `wanted` extensions in each app database (`user` plus
/// `databases`) as the superuser, once per run once the app's login works
/// (the databases exist then): `CREATE EXTENSION IF NOT EXISTS`, so a
/// second start changes nothing. The app role stays unprivileged: only the
/// superuser may create most extensions (`vector` among them). An extension
/// the server does not have fails the probe with what installs it.
async fn extensions(
    port: u16,
    user: &str,
    admin_password: &str,
    databases: &[String],
    wanted: &[String],
) -> Result<(), String> {
    let step = (port, format!("{user} extensions"));
    if wanted.is_empty() || provisioned().contains(&step) {
        return Ok(());
    }
    let fail = |what: &str, e: sqlx::Error| {
        scrub(
            format!("PostgreSQL on 127.0.0.1:{port}: {what} failed: {e}"),
            &[admin_password],
        )
    };
    let mut dbs = vec![user.to_owned()];
    dbs.extend(databases.iter().filter(|d| *d != user).cloned());
    for db in &dbs {
        let mut conn = connect(&options(port, "postgres", admin_password, db))
            .await
            .map_err(|e| fail(&format!("logging in as `postgres` to database `{db}`"), e))?;
        let available: Vec<String> = sqlx::query_scalar(
            "SELECT name::text FROM pg_available_extensions WHERE name = ANY($1::text[])",
        )
        .bind(wanted)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| fail("listing available extensions", e))?;
        if let Some(missing) = wanted.iter().find(|e| !available.contains(e)) {
            let (major, sharedir): (i32, String) = sqlx::query_as(
                "SELECT current_setting('server_version_num')::int / 10000, \
                 (SELECT setting FROM pg_config WHERE name = 'SHAREDIR')",
            )
            .fetch_one(&mut conn)
            .await
            .map_err(|e| fail("reading the server's version", e))?;
            return Err(missing_extension(missing, major, &sharedir));
        }
        for ext in wanted {
            let sql = format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(ext));
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .map_err(|e| fail(&format!("creating extension `{ext}` in database `{db}`"), e))?;
        }
        let _ = conn.close().await;
    }
    provisioned().insert(step);
    Ok(())
}

/// Why `name` cannot be created, and what installs it: the Debian package
/// when the extension is a known one.
fn missing_extension(name: &str, major: i32, sharedir: &str) -> String {
    let package = match name {
        "vector" => format!("the Debian package postgresql-{major}-pgvector"),
        "postgis" => format!("the Debian package postgresql-{major}-postgis-3"),
        _ => format!("a package that installs {name}.control into {sharedir}/extension"),
    };
    format!(
        "extension `{name}` (postgres service's `extensions`) {} PostgreSQL {major}: there is \
         no {sharedir}/extension/{name}.control; install {package}, or remove `{name}` from \
         `extensions`",
        super::NOT_INSTALLED
    )
}

/// What this run has provisioned, by (port, role): the first probe of each
/// provisions before it logs in as the app; (port, "<role> extensions"):
/// the extensions are created once per run too.
fn provisioned() -> std::sync::MutexGuard<'static, std::collections::HashSet<(u16, String)>> {
    static DONE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(u16, String)>>> =
        std::sync::LazyLock::new(Default::default);
    DONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the postmaster of `cluster` says it is doing: the status line it
/// keeps in postmaster.pid (line 8: `starting`, `ready`, `standby` or
/// `stopping`). The file is the server user's, so it is read as a small
/// regular file only.
fn postmaster_status(cluster: &Path) -> Result<String, String> {
    let path = cluster.join("postmaster.pid");
    let text = files::read_small(&path, SMALL_FILE_CAP)?.ok_or_else(|| {
        format!(
            "PostgreSQL has not started yet: {} does not exist",
            path.display()
        )
    })?;
    // Until it listens, the postmaster has not written the line.
    Ok(text
        .lines()
        .nth(7)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("starting")
        .to_owned())
}

enum Failure {
    /// Wrong password, missing role or database: provisioning fixes these.
    Provisionable(String),
    Other(String),
}

fn options(port: u16, user: &str, password: &str, database: &str) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password)
        .database(database)
        .ssl_mode(PgSslMode::Disable)
        .application_name("cogno")
}

/// Logs in through [`auth_guard`]: a server that asks for the password in
/// clear text or as MD5 gets neither, and the error says so.
async fn connect(opts: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut guard = auth_guard::Guard::new(opts.get_port()).map_err(sqlx::Error::Io)?;
    let via = opts.clone().socket(guard.dir());
    let connected =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&via)).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))),
        };
    match connected {
        Ok(conn) => Ok(conn),
        Err(e) => Err(match guard.refusal().await {
            Some(why) => sqlx::Error::Io(std::io::Error::other(why)),
            None => e,
        }),
    }
}

/// One login and one query: `SELECT 1` that also counts which of `extra` exist.
/// Ok(false): logged in, but some of `extra` are missing.
async fn app_check(
    port: u16,
    user: &str,
    password: &str,
    extra: &[String],
) -> Result<bool, Failure> {
    let mut conn = connect(&options(port, user, password, user))
        .await
        .map_err(|e| {
            let code = db_code(&e);
            let msg = format!("cannot log in as `{user}` on 127.0.0.1:{port}: {e}");
            match code.as_deref() {
                Some("28P01" | "28000" | "3D000") => Failure::Provisionable(msg),
                _ => Failure::Other(msg),
            }
        })?;
    let found: i64 =
        sqlx::query_scalar("SELECT 1 + count(*) FROM pg_database WHERE datname = ANY($1::text[])")
            .bind(extra)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Failure::Other(format!("`SELECT 1` as `{user}` failed: {e}")))?;
    let _ = conn.close().await;
    Ok(found == 1 + extra.len() as i64)
}

fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn provision(
    port: u16,
    user: &str,
    password: &str,
    admin_password: &str,
    extra: &[String],
) -> Result<(), String> {
    let mut conn = connect(&options(port, "postgres", admin_password, "postgres"))
        .await
        .map_err(|e| {
            format!(
                "cannot provision role `{user}`: the superuser `postgres` cannot log in on \
                 127.0.0.1:{port} with the admin password set at initdb: {e}"
            )
        })?;
    let fail = |what: &str, e: sqlx::Error| format!("provisioning: {what} failed: {e}");
    // Nothing of this session reaches the server log, whatever `settings:`
    // say (log_statement, log_min_duration_statement, log_duration). The
    // role statement carries only a SCRAM verifier, never the password, so
    // even a log line that escaped these could not give it away.
    sqlx::raw_sql(
        "SET log_min_error_statement = panic; SET log_statement = 'none'; \
         SET log_min_duration_statement = -1; SET log_duration = off",
    )
    .execute(&mut conn)
    .await
    .map_err(|e| fail("session setup", e))?;
    let role = quote_ident(user);
    // An unchanged role is left alone: no catalog write at every start.
    let stored: Option<Option<String>> =
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(user)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| fail("reading role", e))?;
    let current = stored
        .flatten()
        .is_some_and(|v| scram_matches(&v, password));
    let pw = quote_literal(&scram_verifier(password));
    let body = format!(
        "BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN \
         ALTER ROLE {role} WITH LOGIN PASSWORD {pw}; \
         ELSE CREATE ROLE {role} WITH LOGIN PASSWORD {pw}; END IF; END",
        name = quote_literal(user)
    );
    let tag = dollar_tag(&body);
    let role_sql = format!("DO {tag}{body}{tag}");
    if !current {
        sqlx::raw_sql(AssertSqlSafe(role_sql))
            .execute(&mut conn)
            .await
            .map_err(|e| fail(&format!("creating or updating role `{user}`"), e))?;
    }

    let mut wanted = vec![user.to_owned()];
    wanted.extend(extra.iter().cloned());
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = ANY($1::text[])")
            .bind(&wanted)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| fail("listing databases", e))?;
    for db in wanted.iter().filter(|d| !existing.contains(d)) {
        let sql = format!("CREATE DATABASE {} OWNER {role}", quote_ident(db));
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await {
            Ok(_) => {}
            // Another prober got there first.
            Err(e) if db_code(&e).as_deref() == Some("42P04") => {}
            Err(e) => return Err(fail(&format!("creating database `{db}`"), e)),
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802,
/// RFC 7677; PostgreSQL's `scram_build_secret`): given to `PASSWORD '…'`, it
/// is stored as is, and the password itself never reaches the server.
/// Generated passwords are ASCII, which SASLprep leaves unchanged.
fn scram_verifier(password: &str) -> String {
    use rand::RngCore;
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    scram_secret(password, &salt, ITERATIONS)
}

/// Whether `verifier` (a role's stored `rolpassword`) is the SCRAM-SHA-256
/// verifier of `password`: computed again with its own salt and iterations.
fn scram_matches(verifier: &str, password: &str) -> bool {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    let parsed = (|| {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations, rest) = rest.split_once(':')?;
        let (salt, _) = rest.split_once('$')?;
        Some((iterations.parse::<u32>().ok()?, B64.decode(salt).ok()?))
    })();
    parsed.is_some_and(|(iterations, salt)| {
        // A verifier of millions of rounds would stall the probe: redo it instead.
        iterations <= 100_000 && scram_secret(password, &salt, iterations) == verifier
    })
}

/// The verifier of `password` with `salt` and `iterations`.
fn scram_secret(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;

    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any size");
        mac.update(data);
        mac.finalize().into_bytes()
    };
    // PBKDF2-HMAC-SHA-256, one block (its output is one SHA-256 long).
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &block);
    let mut salted = u;
    for _ in 1..iterations.max(1) {
        u = hmac(password.as_bytes(), &u);
        for (s, b) in salted.iter_mut().zip(u.iter()) {
            *s ^= b;
        }
    }
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = <sha2::Sha256 as sha2::Digest>::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// E'' form whenever there is a backslash, so the result is the same whatever
/// standard_conforming_strings says (as libpq's PQescapeLiteral does).
fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    (0..)
        .map(|n| format!("$cogno{n}$"))
        .find(|t| !body.contains(t.as_str()))
        .expect("some tag is free")
}

fn scrub(mut msg: String, secrets: &[&str]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        msg = msg.replace(s, "<redacted>");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{free_port, TempDir};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::process::Child;
    use std::time::Instant;

    /// A running postmaster, killed if the test fails before stopping it.
    struct Server {
        child: Option<Child>,
        log: PathBuf,
    }

    impl Server {
        fn start(cmd: &[String], log: PathBuf, run_as: Option<&RunAs>) -> Server {
            let out = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut c = std::process::Command::new(&cmd[0]);
            c.args(&cmd[1..])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            if let Some(u) = run_as {
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            Server {
                child: Some(c.spawn().unwrap()),
                log,
            }
        }

        fn pid(&self) -> i32 {
            self.child.as_ref().unwrap().id() as i32
        }

        fn log(&self) -> String {
            fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// Waits for "ready to accept connections" after `skip` bytes of log.
        fn wait_ready(&self, skip: usize) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let log = self.log();
                if log[skip.min(log.len())..].contains("ready to accept connections") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("postgres did not become ready:\n{}", self.log());
        }

        fn stop(mut self) -> std::process::ExitStatus {
            let mut child = self.child.take().unwrap();
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
            child.wait().unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn run_as() -> Option<RunAs> {
        nix::unistd::geteuid()
            .is_root()
            .then(|| RunAs::lookup("postgres").expect("user postgres (Debian's postgresql)"))
    }

    fn bins() -> Binaries {
        locate(None, Path::new("/nonexistent-cache")).expect("a local PostgreSQL install")
    }

    const ADMIN: &str = "0123456789abcdef0123456789abcdef";
    const APP: &str = "fedcba9876543210fedcba9876543210";

    fn setup<'a>(
        cluster: &'a Path,
        socket_dir: &'a Path,
        port: u16,
        bins: &'a Binaries,
        run_as: Option<&'a RunAs>,
    ) -> Setup<'a> {
        Setup {
            cluster,
            socket_dir,
            port,
            bins,
            settings: &[],
            run_as,
            admin_password: ADMIN,
        }
    }

    /// Contents of every file under `dir`, to show that nothing changed.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((p.clone(), Vec::new(), meta.mode()));
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), fs::read(&p).unwrap(), meta.mode()));
            }
        }
        out.sort();
        out
    }

    /// A directory that looks like a cluster of `major` to `prepare`.
    fn fake_cluster(dir: &Path, major: &str, run_as: Option<&RunAs>) {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join("PG_VERSION"), format!("{major}\n")).unwrap();
        fs::write(dir.join("postgresql.conf"), format!("{INCLUDE_LINE}\n")).unwrap();
        own(dir, run_as).unwrap();
    }

    async fn login(port: u16, user: &str, password: Option<&str>, db: &str) -> Result<(), String> {
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(port)
            .username(user)
            .database(db)
            .ssl_mode(PgSslMode::Disable);
        if let Some(p) = password {
            opts = opts.password(p);
        }
        let mut conn = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// A fake server on 127.0.0.1 that answers the startup message with
    /// `request` (an Authentication message) and returns all it received.
    async fn ask_for_password(request: &'static [u8]) -> (String, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut received = vec![0u8; 4];
            conn.read_exact(&mut received).await.unwrap();
            let len = u32::from_be_bytes(received[..4].try_into().unwrap()) as usize;
            received.resize(len, 0);
            conn.read_exact(&mut received[4..]).await.unwrap();
            conn.write_all(request).await.unwrap();
            // Whatever comes next, until the client gives up.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
            received.extend(rest);
            received
        });
        let err = match connect(&options(port, APP_DB, "SECRET-PASSWORD-1234", APP_DB)).await {
            Ok(_) => panic!("the guard let a login through that asked for a password"),
            Err(e) => e.to_string(),
        };
        (err, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_server_asking_for_the_password_in_clear_text_or_md5_gets_nothing() {
        for (request, said) in [
            (&b"R\0\0\0\x08\0\0\0\x03"[..], "in clear text"),
            (&b"R\0\0\0\x0c\0\0\0\x05salt"[..], "as MD5"),
        ] {
            let (err, received) = ask_for_password(request).await;
            assert!(
                err.contains(said) && err.contains("it was not sent"),
                "{err}"
            );
            let received = String::from_utf8_lossy(&received);
            // The startup message (user and database names), and nothing after it.
            assert!(received.contains(APP_DB), "{received:?}");
            assert!(
                !received.contains("SECRET") && !received.contains("md5"),
                "{received:?}"
            );
        }
    }

    #[tokio::test]
    async fn cluster_lifecycle() {
        let bins = bins();
        let run_as = run_as();
        let tmp = TempDir::new("pg");
        let cluster = tmp.path().join("postgresql");
        let sockets = tmp.path().join("run/postgresql");
        let port = free_port();
        // A crash mid-initdb left cogno's temporary behind.
        let leftover = tmp.path().join("postgresql.initdb-tmp");
        fs::create_dir_all(leftover.join("pgdata/base")).unwrap();
        fs::write(leftover.join("pgdata/PG_VERSION"), "15\n").unwrap();

        let s = setup(&cluster, &sockets, port, &bins, run_as.as_ref());
        let p = prepare(&s).unwrap();
        assert!(p.initialized && !p.removed_stale_pid);
        assert!(!leftover.exists(), "the initdb temporary is removed");
        let meta = fs::metadata(&cluster).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        if let Some(u) = &run_as {
            assert_eq!(meta.uid(), u.uid.as_raw());
        }
        assert_eq!(
            fs::read_to_string(cluster.join("PG_VERSION"))
                .unwrap()
                .trim(),
            bins.major.to_string()
        );
        let hba = fs::read_to_string(cluster.join("pg_hba.conf")).unwrap();
        assert!(!hba.contains("trust") && !hba.contains("md5"), "{hba}");
        assert_eq!(
            p.command[1..],
            ["-D".to_owned(), cluster.display().to_string()]
        );

        let log = tmp.path().join("postgres.log");
        let server = Server::start(&p.command, log.clone(), run_as.as_ref());
        server.wait_ready(0);

        let dbs = vec!["extra_db".to_owned()];
        // The log says "ready" a moment before postmaster.pid does; the probe
        // reads the latter and says "not yet" meanwhile, as it should.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match probe(&cluster, port, "cognobserve", APP, ADMIN, &dbs).await {
                Ok(_) => break,
                Err(e) if e.contains("yet") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        probe(&cluster, port, "cognobserve", APP, ADMIN, &dbs)
            .await
            .unwrap();
        // Provisioning came before the app's first login: no failed login.
        assert!(!server.log().contains("FATAL"), "{}", server.log());
        login(port, "cognobserve", Some(APP), "extra_db")
            .await
            .unwrap();
        // A new app password (the secret was regenerated) is applied.
        probe(&cluster, port, "cognobserve", "00ff", ADMIN, &dbs)
            .await
            .unwrap();
        let stale = login(port, "cognobserve", Some(APP), "cognobserve").await;
        assert!(stale.is_err(), "the old password no longer works");
        probe(&cluster, port, "cognobserve", APP, ADMIN, &dbs)
            .await
            .unwrap();
        let err = probe(&cluster, port, "cognobserve", "wrong", "also-wrong", &dbs)
            .await
            .unwrap_err();
        assert!(err.contains("superuser"), "{err}");
        assert!(!err.contains("also-wrong") && !err.contains(ADMIN), "{err}");

        // Every way in without the right password is refused.
        assert!(login(port, "cognobserve", Some("wrong"), "cognobserve")
            .await
            .is_err());
        assert!(login(port, "cognobserve", None, "cognobserve")
            .await
            .is_err());
        assert!(login(port, "postgres", None, "postgres").await.is_err());
        assert!(login(port, "postgres", Some(""), "postgres").await.is_err());
        let local = PgConnectOptions::new_without_pgpass()
            .socket(&sockets)
            .port(port)
            .username("postgres")
            .database("postgres");
        let err = PgConnection::connect_with(&local).await.unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");

        let err = prepare(&s).unwrap_err();
        assert!(
            err.contains(&format!(
                "PostgreSQL is already running on {} (pid {})",
                cluster.display(),
                server.pid()
            )),
            "{err}"
        );

        assert!(server.stop().success());
        let first = fs::read_to_string(&log).unwrap();
        assert!(first.contains("database system is shut down"), "{first}");

        let p = prepare(&s).unwrap();
        assert!(!p.initialized && !p.removed_stale_pid);
        let server = Server::start(&p.command, log.clone(), run_as.as_ref());
        server.wait_ready(first.len());
        let second = server.log()[first.len()..].to_owned();
        assert!(
            second.contains("database system was shut down at"),
            "{second}"
        );
        assert!(!second.contains("recovery"), "{second}");
        probe(&cluster, port, "cognobserve", APP, ADMIN, &dbs)
            .await
            .unwrap();
        assert!(server.stop().success());
    }

    /// A login before the postmaster accepts connections is refused and
    /// logged as FATAL (issue 15.2): the probe connects only once the status
    /// line of postmaster.pid says `ready`.
    #[tokio::test]
    async fn no_connection_before_the_postmaster_says_ready() {
        let tmp = TempDir::new("pg-status");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe_now = || probe(tmp.path(), port, "cognobserve", APP, ADMIN, &[]);
        let err = probe_now().await.unwrap_err();
        assert!(err.contains("has not started yet"), "{err}");
        let pid_file = tmp.path().join("postmaster.pid");
        let head = format!(
            "{}\n{}\n1\n{port}\n/tmp\n127.0.0.1\n  1 2\n",
            std::process::id(),
            tmp.path().display()
        );
        for (status, says) in [
            ("", "starting"),
            ("starting  \n", "starting"),
            ("stopping  \n", "stopping"),
        ] {
            fs::write(&pid_file, format!("{head}{status}")).unwrap();
            let err = probe_now().await.unwrap_err();
            assert!(err.contains(&format!("says `{says}`")), "{err}");
        }
        assert!(listener.accept().is_err(), "the probe connected");
        fs::write(&pid_file, format!("{head}ready   \n")).unwrap();
        assert_eq!(postmaster_status(tmp.path()).unwrap(), "ready");
        // Another user's link in its place is not followed.
        fs::remove_file(&pid_file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &pid_file).unwrap();
        assert!(postmaster_status(tmp.path()).is_err());
    }

    #[test]
    fn other_major_version_is_refused_untouched() {
        let bins = bins();
        let run_as = run_as();
        let tmp = TempDir::new("pg");
        let cluster = tmp.path().join("postgresql");
        fake_cluster(&cluster, "14", run_as.as_ref());
        fs::write(cluster.join("postmaster.pid"), "1\n").unwrap();
        let before = snapshot(tmp.path());
        let sockets = tmp.path().join("run/postgresql");
        let s = setup(&cluster, &sockets, free_port(), &bins, run_as.as_ref());
        let err = prepare(&s).unwrap_err();
        assert!(err.contains("PostgreSQL 14"), "{err}");
        assert!(err.contains(&format!("PostgreSQL {}", bins.major)), "{err}");
        assert!(err.contains("docs/upgrading.md"), "{err}");
        assert_eq!(snapshot(tmp.path()), before);
    }

    #[test]
    fn non_empty_directory_without_cluster_is_refused_untouched() {
        let bins = bins();
        let tmp = TempDir::new("pg");
        let cluster = tmp.path().join("postgresql");
        fs::create_dir_all(&cluster).unwrap();
        fs::write(cluster.join("notes.txt"), "mine").unwrap();
        let before = snapshot(tmp.path());
        let sockets = tmp.path().join("run/postgresql");
        let run_as = run_as();
        let s = setup(&cluster, &sockets, free_port(), &bins, run_as.as_ref());
        let err = prepare(&s).unwrap_err();
        assert!(
            err.contains("notes.txt") && err.contains("no PG_VERSION"),
            "{err}"
        );
        assert_eq!(snapshot(tmp.path()), before);
    }

    #[test]
    fn stale_pid_of_a_live_unrelated_process_is_removed() {
        let bins = bins();
        let run_as = run_as();
        let tmp = TempDir::new("pg");
        let cluster = tmp.path().join("postgresql");
        fake_cluster(&cluster, &bins.major.to_string(), run_as.as_ref());
        let port = free_port();
        let sockets = tmp.path().join("run/postgresql");
        // This test process is alive but is no postgres.
        let me = std::process::id();
        let pid_file = cluster.join("postmaster.pid");
        fs::write(&pid_file, format!("{me}\n{}\n", cluster.display())).unwrap();
        fs::create_dir_all(&sockets).unwrap();
        let socket_lock = sockets.join(format!(".s.PGSQL.{port}.lock"));
        fs::write(&socket_lock, format!("{me}\n{}\n", cluster.display())).unwrap();
        // Left by a crash between initdb's rename and the cleanup.
        let leftover = tmp.path().join("postgresql.initdb-tmp");
        fs::create_dir(&leftover).unwrap();

        let s = Setup {
            settings: &[("work_mem".into(), "8MB".into())],
            ..setup(&cluster, &sockets, port, &bins, run_as.as_ref())
        };
        let p = prepare(&s).unwrap();
        assert!(p.removed_stale_pid && !p.initialized);
        assert!(!pid_file.exists() && !socket_lock.exists() && !leftover.exists());
        let conf = fs::read_to_string(cluster.join(COGNO_CONF)).unwrap();
        assert!(conf.contains(&format!("port = {port}\n")), "{conf}");
        assert!(conf.contains("work_mem = '8MB'\n"), "{conf}");
        assert!(conf.contains("max_connections = 100\n"), "{conf}");
    }

    #[test]
    fn settings_cannot_move_the_port() {
        let bins = bins();
        let tmp = TempDir::new("pg");
        let cluster = tmp.path().join("postgresql");
        let sockets = tmp.path().join("run/postgresql");
        let s = Setup {
            settings: &[("Port".into(), "5433".into())],
            ..setup(&cluster, &sockets, free_port(), &bins, None)
        };
        let err = prepare(&s).unwrap_err();
        assert!(err.contains("`Port`") && err.contains("port:"), "{err}");
        assert!(fs::read_dir(tmp.path()).unwrap().next().is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some((15, "15.14".to_owned()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17beta1"),
            Some((17, "17beta1".into()))
        );
        assert_eq!(parse_version("something else"), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let v = scram_verifier("s3cret");
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        assert!(
            v.starts_with("SCRAM-SHA-256$4096:") && !v.contains("s3cret"),
            "{v}"
        );
        assert_eq!(
            head.len(),
            "4096:".len() + 24,
            "16 bytes of salt, base64: {v}"
        );
        assert_eq!(keys.split(':').map(str::len).collect::<Vec<_>>(), [44, 44]);
        assert_ne!(scram_verifier("s3cret"), v, "a fresh salt each time");
        assert!(scram_matches(&v, "s3cret") && !scram_matches(&v, "s3cres"));
        assert!(!scram_matches("md5abc", "s3cret"));
        assert_eq!(quote_literal("it's"), "'it''s'");
        let vector = missing_extension("vector", 17, "/usr/share/postgresql/17");
        assert!(
            vector.contains("PostgreSQL 17") && vector.contains("postgresql-17-pgvector"),
            "{vector}"
        );
        let other = missing_extension("pg_foo", 15, "/usr/share/postgresql/15");
        assert!(
            other.contains("installs pg_foo.control into /usr/share/postgresql/15/extension"),
            "{other}"
        );
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
        assert_eq!(dollar_tag("x $cogno0$ y"), "$cogno1$");
        assert_eq!(conf_quote("/a b/'c'"), "'/a b/''c'''");
        assert_eq!(
            scrub("pw=s3cret!".into(), &["s3cret", ""]),
            "pw=<redacted>!"
        );
    }

    #[test]
    fn bad_bin_dir_says_what_to_do() {
        let err = locate(Some(Path::new("/nonexistent/bin")), Path::new("/tmp")).unwrap_err();
        assert!(
            err.contains("/nonexistent/bin") && err.contains("initdb"),
            "{err}"
        );
    }
}
