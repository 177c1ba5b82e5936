//! Bundled Redis: its generated configuration and an AUTH + PING probe: the
//! `redis` kind.

use super::{AppVar, Found, Job, ProbeFuture, Server, ServerSecret, Versions};
use crate::config::Bundled;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::secrets::{Credentials, Secrets};
use crate::user::RunAs;
use std::any::Any;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The password clients AUTH with.
const PASSWORD: &str = "REDIS_PASSWORD";

/// The `redis` kind.
pub struct Redis;

impl Server for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn secrets(&self) -> &'static [ServerSecret] {
        &[ServerSecret {
            name: PASSWORD,
            bytes: 16,
            private: false,
        }]
    }

    fn app_env(&self, b: &Bundled, secrets: &Secrets) -> Vec<AppVar> {
        vec![AppVar {
            name: "REDIS_URL".into(),
            carries: Some(PASSWORD.into()),
            value: format!(
                // `default`, Redis's user for `requirepass`, spelled out:
                // redis-cli reads an empty user name as a user named "".
                "redis://default:{}@127.0.0.1:{}",
                secrets.get(PASSWORD).unwrap_or_default(),
                b.port
            ),
        }]
    }

    fn check_settings(&self, b: &Bundled) -> Result<(), String> {
        b.settings
            .iter()
            .try_for_each(|(key, value)| check_setting(key, value))
    }

    fn data_marks(&self, data: &DataDir) -> Vec<PathBuf> {
        // Redis's own names for its snapshot and append-only files.
        let dir = data.redis();
        vec![dir.join("dump.rdb"), dir.join("appendonlydir")]
    }

    fn preflight(
        &self,
        b: &Bundled,
        user: Option<&RunAs>,
        _data: &DataDir,
    ) -> Result<Found, Error> {
        check(b.bin.as_deref(), user)?;
        Ok(Box::new(()))
    }

    fn prepare(
        &self,
        job: &Job,
        _found: &dyn Any,
        _versions: &mut Versions,
    ) -> Result<super::Prepared, Error> {
        let dir = job.data.redis();
        let command = prepare(&setup(job, &dir, job.bundled.bin.as_deref()))?;
        Ok(super::Prepared {
            command,
            progress: format!("redis.conf written in {}", dir.display()),
            notes: Vec::new(),
        })
    }

    fn reconfigure(&self, job: &Job, program: &Path) -> Result<Vec<String>, Error> {
        // Its preparation only writes redis.conf: the same, with the program it runs.
        Ok(prepare(&setup(job, &job.data.redis(), Some(program)))?)
    }

    fn probe<'a>(
        &'a self,
        b: &'a Bundled,
        credentials: &'a Credentials,
        _data: &'a DataDir,
    ) -> ProbeFuture<'a> {
        Box::pin(probe(b.port, credentials.get(PASSWORD)))
    }

    fn banner(&self, b: &Bundled) -> String {
        format!("redis://127.0.0.1:{}", b.port)
    }

    fn backup(&self, job: &Job, out: &Path) -> Result<String, Error> {
        let server = find_binary(job.bundled.bin.as_deref(), None)?;
        // redis-cli beside the server (`bin:`), else from PATH.
        let beside = server.with_file_name("redis-cli");
        let cli = super::find_program(
            Some(beside.as_path()).filter(|p| p.is_file()),
            "redis-cli",
            "Redis command-line client",
            "`apt-get install redis-tools` on Debian",
            None,
        )?;
        // A fresh snapshot made for this backup, sent over the replication
        // protocol: Redis's files are neither read nor changed.
        super::run_tool(
            super::tool(&cli)
                .args(["-h", "127.0.0.1", "-p", &job.bundled.port.to_string()])
                .arg("--no-auth-warning")
                .arg("--rdb")
                .arg(out.join(RDB))
                // Never on a command line, which every local user can read.
                .env(
                    "REDISCLI_AUTH",
                    job.secrets.get(PASSWORD).unwrap_or_default(),
                ),
            "redis-cli --rdb (a snapshot of the running Redis)",
        )
        .map_err(Error::new)?;
        version(&server)
    }

    fn restore(&self, job: &Job, from: &Path, _recorded: &str) -> Result<(), Error> {
        let dir = job.data.redis();
        super::create_server_dir(&dir, "Redis")?;
        let rdb = from.join(RDB);
        let copy = |to: &Path| {
            std::fs::copy(&rdb, to)
                .map(drop)
                .map_err(|e| format!("cannot copy {} to {}: {e}", rdb.display(), to.display()))
        };
        copy(&dir.join(RDB))?;
        // With `appendonly yes` (bundled/redis.conf) Redis loads only its
        // append-only files and ignores dump.rdb: the snapshot becomes the
        // base of a new append-only set, in Redis 7's own layout.
        let aof = dir.join("appendonlydir");
        super::create_server_dir(&aof, "Redis")?;
        copy(&aof.join(AOF_BASE))?;
        crate::datadir::files::write_atomic(
            &aof.join("appendonly.aof.manifest"),
            format!("file {AOF_BASE} seq 1 type b\n").as_bytes(),
            None,
        )
        .map_err(|e| format!("cannot write {}: {e}", aof.display()))?;
        if let Some(user) = job.run_as {
            crate::datadir::files::chown_tree(&dir, user)?;
        }
        Ok(())
    }
}

/// The snapshot's name, in the backup and in DATA/redis (Redis's default).
const RDB: &str = "dump.rdb";
/// The base file of a new append-only set (Redis 7's default names).
const AOF_BASE: &str = "appendonly.aof.1.base.rdb";

/// "7.0.15", from `redis-server --version`.
fn version(server: &Path) -> Result<String, Error> {
    let out = super::tool(server)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", server.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown")
        .to_owned())
}

/// The defaults every generated redis.conf starts from.
const TEMPLATE: &str = include_str!("../../bundled/redis.conf");

/// Directives cogno owns: overriding them in `settings:` would break the
/// probe, the data directory or supervision, so each names where it is set.
const RESERVED: &[(&str, &str)] = &[
    ("port", "set the service's `port:` instead"),
    (
        "requirepass",
        "the password is REDIS_PASSWORD from DATA/secrets/.env or cogno's environment",
    ),
    ("dir", "cogno keeps Redis's data in DATA/redis"),
    (
        "daemonize",
        "cogno supervises redis-server in the foreground",
    ),
];

pub struct Setup<'a> {
    /// DATA/redis: its working directory (appendonly files, dump).
    pub dir: &'a Path,
    pub port: u16,
    pub password: &'a str,
    /// The `redis-server` binary (`bin` from the config, else from PATH).
    pub bin: Option<&'a Path>,
    /// `settings:` from the config, overriding the defaults in bundled/redis.conf.
    pub settings: &'a [(String, String)],
    pub run_as: Option<&'a RunAs>,
}

/// What `prepare` works with, for `job`'s server in `dir` running `bin`.
fn setup<'a>(job: &'a Job, dir: &'a Path, bin: Option<&'a Path>) -> Setup<'a> {
    Setup {
        dir,
        port: job.bundled.port,
        password: job.secrets.get(PASSWORD).unwrap_or_default(),
        bin,
        settings: &job.bundled.settings,
        run_as: job.run_as,
    }
}

/// Writes DATA/redis/redis.conf (0600, owned by the redis user) and returns
/// the command to supervise. Blocking.
pub(super) fn prepare(setup: &Setup) -> Result<Vec<String>, String> {
    let bin = find_binary(setup.bin, setup.run_as)?;
    let conf_text = render(setup)?;
    let dir = setup.dir;
    super::create_server_dir(dir, "Redis")?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private (mode 0700): {e}", dir.display()))?;
    if let Some(user) = setup.run_as {
        // Files left by a run under another user (say, cogno started
        // unprivileged before) would make Redis fail to append or save.
        crate::datadir::files::chown_tree(dir, user)?;
    }
    let conf = dir.join("redis.conf");
    crate::datadir::files::write_atomic(&conf, conf_text.as_bytes(), setup.run_as)
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    // The password lives only in the 0600 file: a command-line argument
    // would be readable by every local user through /proc.
    Ok(vec![
        bin.to_string_lossy().into_owned(),
        conf.to_string_lossy().into_owned(),
    ])
}

/// Health probe: AUTH with `password`, then PING, over RESP on 127.0.0.1:`port`.
pub(super) async fn probe(port: u16, password: &str) -> Result<(), String> {
    let at = format!("redis on 127.0.0.1:{port}");
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to {at}: {e}"))?;
    let mut request = Vec::with_capacity(64 + password.len());
    request.extend_from_slice(b"*2\r\n$4\r\nAUTH\r\n");
    request.extend_from_slice(format!("${}\r\n", password.len()).as_bytes());
    request.extend_from_slice(password.as_bytes());
    request.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("cannot send to {at}: {e}"))?;

    let mut replies = Replies::new(stream);
    match replies.next(&at).await?.as_str() {
        "+OK" => {}
        line if line.starts_with("-WRONGPASS") => {
            return Err(format!(
                "{at} refused the password (WRONGPASS): another redis-server may hold the port, \
                 or it runs with a redis.conf that cogno did not write"
            ))
        }
        line => return Err(unexpected(&at, "AUTH", line, password)),
    }
    match replies.next(&at).await?.as_str() {
        "+PONG" => Ok(()),
        line if line.starts_with("-LOADING") => {
            Err(format!("{at} is still loading its data into memory"))
        }
        line => Err(unexpected(&at, "PING", line, password)),
    }
}

/// Reads RESP reply lines from one connection.
struct Replies {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Replies {
    fn new(stream: TcpStream) -> Replies {
        Replies {
            stream,
            buf: Vec::with_capacity(256),
        }
    }

    /// The next CRLF-terminated line, without the CRLF. Every reply to AUTH
    /// and PING is a single simple-string or error line.
    async fn next(&mut self, at: &str) -> Result<String, String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > 4096 {
                return Err(format!("{at} sent a reply line longer than 4 KiB"));
            }
            let mut chunk = [0u8; 512];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("cannot read from {at}: {e}"))?;
            if n == 0 {
                return Err(format!("{at} closed the connection before replying"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Describes a reply the probe did not expect; the password is masked in
/// case a server echoes what it was sent.
fn unexpected(at: &str, command: &str, line: &str, password: &str) -> String {
    let shown = if password.is_empty() {
        line.to_owned()
    } else {
        line.replace(password, "<password>")
    };
    format!("{at} answered {command} with `{shown}`")
}

/// `bin` when given, else `redis-server` from PATH.
fn find_binary(bin: Option<&Path>, user: Option<&RunAs>) -> Result<PathBuf, String> {
    super::find_program(
        bin,
        "redis-server",
        "Redis",
        "`apt-get install redis-server` on Debian",
        user,
    )
}

/// The pre-flight check: the redis-server binary exists.
pub(super) fn check(bin: Option<&Path>, user: Option<&RunAs>) -> Result<(), String> {
    let bin = find_binary(bin, user)?;
    let out = super::tool(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_major(&text) {
        Some(major) if major >= MIN_MAJOR => Ok(()),
        Some(major) => Err(format!(
            "{} is Redis {major}, but cogno needs Redis {MIN_MAJOR} or newer: older servers \
             cannot refuse CONFIG SET of protected settings, DEBUG and MODULE LOAD to an \
             authenticated client; install Redis {MIN_MAJOR} or newer, or set the service's \
             `bin:` to one",
            bin.display()
        )),
        None => Err(format!(
            "cannot read the version from `{} --version` (it printed {:?}); set the service's \
             `bin:` to a redis-server",
            bin.display(),
            text.trim().chars().take(80).collect::<String>()
        )),
    }
}

/// The oldest Redis whose hardening directives (bundled/redis.conf) exist.
const MIN_MAJOR: u32 = 7;

/// "Redis server v=7.0.15 sha=…" → 7.
fn parse_major(text: &str) -> Option<u32> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A `settings:` entry cogno can write: one directive, not one cogno owns.
fn check_setting(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.contains(char::is_whitespace) || value.contains(['\n', '\r']) {
        return Err(format!(
            "redis setting `{}` is not a single directive: the name must be one word and \
             the value one line",
            key.escape_debug()
        ));
    }
    if let Some((_, why)) = RESERVED.iter().find(|(r, _)| r.eq_ignore_ascii_case(key)) {
        return Err(format!(
            "redis setting `{key}` cannot be set in `settings:`: {why}"
        ));
    }
    Ok(())
}

/// The template, with each line that `settings:` overrides left out, then
/// the directives cogno owns, then the settings (the last of a repeated
/// name wins).
fn render(setup: &Setup) -> Result<String, String> {
    let mut settings: Vec<(&str, &str)> = Vec::with_capacity(setup.settings.len());
    for (key, value) in setup.settings {
        check_setting(key, value)?;
        settings.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        settings.push((key, value));
    }
    let overridden = |line: &str| {
        let name = line.split_whitespace().next().unwrap_or("");
        settings.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let mut out = String::with_capacity(TEMPLATE.len() + 256);
    for line in TEMPLATE.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || !overridden(trimmed) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("\n# Set by cogno.\n");
    out.push_str(&format!("port {}\n", setup.port));
    out.push_str(&format!("requirepass {}\n", quote(setup.password)));
    out.push_str(&format!("dir {}\n", quote(&setup.dir.to_string_lossy())));
    if !settings.is_empty() {
        out.push_str("\n# From the service's `settings:`.\n");
        for (key, value) in settings {
            out.push_str(&format!("{key} {value}\n"));
        }
    }
    Ok(out)
}

/// A double-quoted argument as Redis's config parser reads it.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundled::test_support::Server;
    use crate::testkit::{free_port, TempDir};
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    const PASSWORD: &str = "0123456789abcdef0123456789abcdef";

    fn run_as() -> Option<RunAs> {
        nix::unistd::Uid::effective()
            .is_root()
            .then(|| RunAs::lookup("redis").expect("the redis user exists"))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn wait_ready(port: u16) -> Duration {
        let start = Instant::now();
        loop {
            match probe(port, PASSWORD).await {
                Ok(()) => return start.elapsed(),
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("redis not ready after 10 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Sends `request` and returns the replies, once `lines` CRLF-ended
    /// lines have arrived (or the server closed the connection).
    async fn raw(port: u16, request: &[u8], lines: usize) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        while buf.windows(2).filter(|w| w == b"\r\n").count() < lines {
            let mut chunk = [0u8; 512];
            match s.read(&mut chunk).await.unwrap() {
                0 => break,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn redis_versions_are_read_and_old_ones_refused() {
        assert_eq!(
            parse_major("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc"),
            Some(7)
        );
        assert_eq!(parse_major("Redis server v=8.2.1 sha=1"), Some(8));
        assert_eq!(parse_major("something else"), None);
        let dir = TempDir::new("redis6");
        let fake = dir.path().join("redis-server");
        fs::write(
            &fake,
            "#!/bin/sh\necho 'Redis server v=6.2.6 sha=00000000:0'\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let err = check(Some(&fake), None).unwrap_err();
        assert!(
            err.contains("Redis 6") && err.contains("Redis 7 or newer"),
            "{err}"
        );
        check(None, None).expect("the installed redis-server is 7 or newer");
    }

    fn authed(cmd: &str) -> Vec<u8> {
        let mut r =
            format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{PASSWORD}\r\n", PASSWORD.len()).into_bytes();
        r.extend_from_slice(cmd.as_bytes());
        r
    }

    #[test]
    fn conf_has_the_defaults_and_settings_override_them() {
        let dir = TempDir::new("conf");
        let data = dir.path().join("redis");
        let settings = vec![
            ("appendfsync".to_owned(), "always".to_owned()),
            ("maxmemory".to_owned(), "64mb".to_owned()),
            ("maxmemory".to_owned(), "128mb".to_owned()),
        ];
        let setup = Setup {
            dir: &data,
            port: 6399,
            password: PASSWORD,
            bin: None,
            settings: &settings,
            run_as: None,
        };
        let cmd = prepare(&setup).unwrap();
        let conf = data.join("redis.conf");
        assert_eq!(cmd[1], conf.to_string_lossy());
        assert!(cmd.iter().all(|a| !a.contains(PASSWORD)));
        let text = fs::read_to_string(&conf).unwrap();
        for line in [
            "bind 127.0.0.1",
            "protected-mode yes",
            "appendonly yes",
            "daemonize no",
            "logfile \"\"",
            "port 6399",
            "appendfsync always",
            "maxmemory 128mb",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(!text.contains("appendfsync everysec"));
        assert!(!text.contains("maxmemory 64mb"));
        assert!(text.contains(&format!("requirepass \"{PASSWORD}\"")));
        assert!(text.contains(&format!("dir \"{}\"", data.display())));
        assert_eq!(fs::metadata(&conf).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
        assert!(!data.join(".redis.conf.tmp").exists());

        let bad = vec![("requirepass".to_owned(), "x".to_owned())];
        let err = prepare(&Setup {
            settings: &bad,
            ..setup
        })
        .unwrap_err();
        assert!(
            err.contains("requirepass") && err.contains("REDIS_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn missing_binary_is_named() {
        let dir = TempDir::new("bin");
        let bin = dir.path().join("no-such-redis-server");
        let err = prepare(&Setup {
            dir: &dir.path().join("redis"),
            port: 6399,
            password: PASSWORD,
            bin: Some(&bin),
            settings: &[],
            run_as: None,
        })
        .unwrap_err();
        assert!(err.contains(&bin.display().to_string()), "{err}");
        assert!(!dir.path().join("redis").exists());
    }

    #[test]
    fn real_server_auth_probe_and_restart() {
        let dir = TempDir::new("real");
        let data = dir.path().join("redis");
        let user = run_as();
        let port = free_port();
        let setup = Setup {
            dir: &data,
            port,
            password: PASSWORD,
            bin: None,
            settings: &[],
            run_as: user.as_ref(),
        };
        let cmd = prepare(&setup).unwrap();
        if let Some(u) = &user {
            let meta = fs::metadata(data.join("redis.conf")).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (u.uid.as_raw(), u.gid.as_raw()));
            assert_eq!(fs::metadata(&data).unwrap().uid(), u.uid.as_raw());
        }
        let rt = rt();
        let server = Server::start(&cmd, user.as_ref());
        let ready = rt.block_on(wait_ready(port));
        eprintln!("redis ready {ready:?} after start");
        rt.block_on(async {
            let start = Instant::now();
            probe(port, PASSWORD).await.unwrap();
            eprintln!("redis probe latency {:?}", start.elapsed());

            let wrong = "ffffffffffffffffffffffffffffffff";
            let err = probe(port, wrong).await.unwrap_err();
            assert_eq!(
                err.split(':').take(2).collect::<Vec<_>>().join(":"),
                format!("redis on 127.0.0.1:{port} refused the password (WRONGPASS)")
            );
            assert!(!err.contains(wrong) && !err.contains(PASSWORD), "{err}");

            let reply = raw(port, b"*1\r\n$4\r\nPING\r\n", 1).await;
            assert!(reply.starts_with("-NOAUTH"), "{reply}");

            let reply = raw(
                port,
                &authed("*3\r\n$3\r\nSET\r\n$5\r\ncogno\r\n$5\r\nkept!\r\n"),
                2,
            )
            .await;
            assert_eq!(reply, "+OK\r\n+OK\r\n");

            // Even with the password: no moving its files, no DEBUG, no modules.
            let reply = raw(
                port,
                &authed("*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$3\r\ndir\r\n$4\r\n/tmp\r\n"),
                2,
            )
            .await;
            assert!(reply.starts_with("+OK\r\n-ERR"), "{reply}");
            let reply = raw(port, &authed("*2\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n"), 2).await;
            assert!(reply.contains("-ERR") && reply.contains("DEBUG"), "{reply}");
            let reply = raw(
                port,
                &authed("*3\r\n$6\r\nMODULE\r\n$4\r\nLOAD\r\n$8\r\n/tmp/x.s\r\n"),
                2,
            )
            .await;
            assert!(
                reply.contains("-ERR") && reply.contains("MODULE"),
                "{reply}"
            );
        });
        let status = server.stop();
        assert!(status.success(), "redis-server exited with {status}");

        let cmd = prepare(&setup).unwrap();
        let _server = Server::start(&cmd, user.as_ref());
        rt.block_on(async {
            wait_ready(port).await;
            let reply = raw(port, &authed("*2\r\n$3\r\nGET\r\n$5\r\ncogno\r\n"), 3).await;
            assert_eq!(reply, "+OK\r\n$5\r\nkept!\r\n");
        });
        assert!(data.join("appendonlydir").is_dir());
    }
}
