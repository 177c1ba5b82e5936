//! Shared helpers for the integration tests: a fresh temp dir per test with a
//! stack file in it, `cogno up` started with its output captured line by line
//! by reader threads, event-driven waits for a line, signals, /proc queries,
//! and cleanup that leaves no process behind.
//!
//! Every process a test starts carries a marker unique to the test (the
//! `COGNO_TEST_MARKER` environment variable, inherited by services and their
//! children, and the temp dir's path on fixtures' command lines); dropping a
//! [`Cogno`] SIGKILLs whatever still carries it.

pub use cogno::os::procfs::ProcStat;
pub use cogno::testkit::{free_port, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any wait may take before the test fails: generous, so that a
/// loaded machine never makes a test flake. Waits return as soon as the
/// awaited thing happens.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub const COGNO: &str = env!("CARGO_BIN_EXE_cogno");

const MARKER_VAR: &str = "COGNO_TEST_MARKER";

/// Absolute path of a fixture program in tests/fixtures.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A YAML flow list of strings: a `command` value.
pub fn argv(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A fixture's command line: `fixture(name)` followed by `args`.
pub fn fx(name: &str, args: &[&str]) -> String {
    let prog = fixture(name);
    let mut words = vec![prog.as_str()];
    words.extend_from_slice(args);
    argv(&words)
}

/// A stack file and data dir in a fresh temp dir.
pub struct Stack {
    pub dir: TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
}

impl Stack {
    pub fn new(tag: &str) -> Stack {
        let dir = TempDir::new(tag);
        let config = dir.path().join("cogno.yaml");
        let data = dir.path().join("data");
        Stack { dir, config, data }
    }

    /// The path of `name` in the stack's temp dir, as a string for YAML.
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write stack file");
    }

    /// The string that marks every process of this test.
    pub fn marker(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// `cogno up --config F --data D`, run from the temp dir.
    pub fn up_command(&self) -> Command {
        let mut cmd = Command::new(COGNO);
        cmd.args(["up", "--config"])
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data);
        cmd
    }

    /// `sh -c 'PRELUDE; exec cogno up --config F --data D'`: cogno started
    /// from a wrapper that changed its process state first (an inherited
    /// descriptor, a umask).
    pub fn up_after_shell(&self, prelude: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "{prelude}; exec {COGNO} up --config {} --data {}",
            self.config.display(),
            self.data.display()
        ));
        cmd
    }

    /// `cogno up` whose output the test does not read: stdout as given (a
    /// pipe held open and never read, or /dev/null), stderr discarded.
    pub fn up_unwatched(&self, stdout: Stdio) -> Unwatched {
        let child = self
            .up_command()
            .current_dir(self.dir.path())
            .env(MARKER_VAR, self.marker())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("start cogno");
        Unwatched {
            child,
            marker: self.marker(),
        }
    }
}

/// A `cogno up` started by [`Stack::up_unwatched`]; whatever of the test
/// still runs is killed when it is dropped.
pub struct Unwatched {
    pub child: Child,
    marker: String,
}

impl Drop for Unwatched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_within(&self.marker);
    }
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// Output streams (stdout, stderr) at end of file.
    closed: usize,
}

#[derive(Default)]
struct Output {
    lines: Mutex<Lines>,
    changed: Condvar,
}

/// A running `cogno up` (or a wrapper around it, such as `unshare`), with
/// stdout and stderr read into a shared list of lines by two threads.
pub struct Cogno {
    child: Child,
    status: Option<ExitStatus>,
    out: Arc<Output>,
    marker: String,
}

impl Cogno {
    /// Starts `cogno up` on `stack`.
    pub fn up(stack: &Stack) -> Cogno {
        Cogno::spawn(stack, stack.up_command())
    }

    /// Starts `cmd` (which runs cogno on `stack`) from the stack's temp dir,
    /// marked so that cleanup finds everything it starts.
    pub fn spawn(stack: &Stack, mut cmd: Command) -> Cogno {
        let marker = stack.marker();
        cmd.current_dir(stack.dir.path())
            .env(MARKER_VAR, &marker)
            .env_remove("COGNO_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start cogno");
        let out = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        read_lines(stdout, out.clone(), "");
        read_lines(stderr, out.clone(), "[stderr] ");
        Cogno {
            child,
            status: None,
            out,
            marker,
        }
    }

    /// The pid of the process started (cogno itself, unless wrapped).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every line of output so far (stderr lines start with `[stderr] `).
    pub fn lines(&self) -> Vec<String> {
        self.out.lines.lock().unwrap().lines.clone()
    }

    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until a line satisfies `pred`; returns its index and text.
    /// Fails the test (showing the output) after `timeout`, or as soon as
    /// cogno's output ends without such a line.
    pub fn wait_line_by(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut guard = self.out.lines.lock().unwrap();
        loop {
            while seen < guard.lines.len() {
                if pred(&guard.lines[seen]) {
                    return (seen, guard.lines[seen].clone());
                }
                seen += 1;
            }
            let now = Instant::now();
            if guard.closed == 2 || now >= deadline {
                let why = if guard.closed == 2 {
                    "cogno's output ended"
                } else {
                    "timed out"
                };
                let all = guard.lines.join("\n");
                drop(guard);
                panic!("{why} waiting for a line {what}; output so far:\n{all}");
            }
            guard = self
                .out
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_line(&self, needle: &str) -> String {
        self.wait_line_by(&format!("containing {needle:?}"), TIMEOUT, |l| {
            l.contains(needle)
        })
        .1
    }

    /// Waits for a line containing `needle`; returns its index.
    pub fn wait_line_index(&self, needle: &str) -> usize {
        self.wait_line_by(&format!("containing {needle:?}"), TIMEOUT, |l| {
            l.contains(needle)
        })
        .0
    }

    /// Waits until `n` lines contain `needle`.
    pub fn wait_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.count(needle) >= n {
                return;
            }
            let guard = self.out.lines.lock().unwrap();
            if Instant::now() >= deadline || guard.closed == 2 {
                let all = guard.lines.join("\n");
                drop(guard);
                panic!("waiting for {n} lines containing {needle:?}; output so far:\n{all}");
            }
            let _ = self
                .out
                .changed
                .wait_timeout(guard, Duration::from_millis(200))
                .unwrap();
        }
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.out
            .lines
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Index of the first line containing `needle`, if any.
    pub fn find(&self, needle: &str) -> Option<usize> {
        self.out
            .lines
            .lock()
            .unwrap()
            .lines
            .iter()
            .position(|l| l.contains(needle))
    }

    /// The pid in cogno's latest `NAME: started, pid N` line.
    pub fn service_pid(&self, name: &str) -> i32 {
        let needle = format!(" {name}: started, pid ");
        let line = self.wait_line(&needle);
        let lines = self.lines();
        let last = lines
            .iter()
            .rev()
            .find(|l| l.contains(&needle))
            .unwrap_or(&line);
        last.rsplit(' ').next().unwrap().parse().expect("pid")
    }

    pub fn signal(&self, sig: Signal) {
        signal(self.pid(), sig);
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_some()
    }

    /// Waits for the process to exit; fails the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                panic!(
                    "cogno did not exit within {timeout:?}; output so far:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the readers reach end of file, so that the output is complete.
        let guard = self.out.lines.lock().unwrap();
        let _ = self
            .out
            .changed
            .wait_timeout_while(guard, Duration::from_secs(5), |l| l.closed < 2)
            .unwrap();
        self.status.unwrap()
    }

    /// Waits for exit and returns the exit code (fails if killed by a signal).
    pub fn wait_code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait_exit(timeout);
        match status.code() {
            Some(c) => c,
            None => panic!("cogno was killed ({status}); output:\n{}", self.output()),
        }
    }

    /// Lines cogno wrote about itself (`cogno | ...`), without the prefix.
    pub fn own_lines(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| own_message(l).map(str::to_owned))
            .collect()
    }
}

/// What service `name` wrote, from cogno's output: `('|', text)` for a
/// stdout line, `('!', text)` for a stderr line, in order.
pub fn service_output(lines: &[String], name: &str) -> Vec<(char, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.trim_start_matches(' ');
            let mut chars = rest.chars();
            let mark = chars.next()?;
            let text = chars.as_str().strip_prefix(' ')?;
            matches!(mark, '|' | '!').then(|| (mark, text.to_owned()))
        })
        .collect()
}

/// The text after `cogno <pad>| ` on one of cogno's own lines.
pub fn own_message(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("cogno")?;
    let rest = rest.trim_start_matches(' ').strip_prefix("| ")?;
    Some(rest)
}

impl Drop for Cogno {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // By working directory too: a server that rewrote its title over its
        // environment (redis-server) no longer shows the marker there.
        kill_within(&self.marker);
    }
}

fn read_lines(stream: impl Read + Send + 'static, out: Arc<Output>, tag: &'static str) {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                    }
                    let line = format!("{tag}{}", String::from_utf8_lossy(&buf));
                    let mut l = out.lines.lock().unwrap();
                    l.lines.push(line);
                    // Batch wake-ups while more output is already buffered.
                    if reader.buffer().is_empty() {
                        out.changed.notify_all();
                    }
                }
            }
        }
        out.lines.lock().unwrap().closed += 1;
        out.changed.notify_all();
    });
}

// ------------------------------------------------------------------ processes

pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// The process exists (possibly as a zombie).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn all_pids() -> Vec<i32> {
    cogno::os::procfs::all_pids().map(Pid::as_raw).collect()
}

/// /proc/PID/stat, read by the library's own reader.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    ProcStat::read(Pid::from_raw(pid))
}

fn read_nul_separated(path: String) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    read_nul_separated(format!("/proc/{pid}/cmdline"))
}

pub fn environ(pid: i32) -> Vec<String> {
    read_nul_separated(format!("/proc/{pid}/environ"))
}

/// Processes with an argument containing `needle` (zombies have none).
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != me && cmdline(p).iter().any(|a| a.contains(needle)))
        .collect()
}

/// `arg` is the temp dir `marker` or a path in it (not a longer sibling name).
fn has_marker(arg: &str, marker: &str) -> bool {
    arg == marker || arg.contains(&format!("{marker}/"))
}

/// Zombie processes whose parent is `ppid`.
pub fn zombies_of(ppid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| s.ppid == ppid && s.state == 'Z'))
        .collect()
}

/// Direct children of `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    cogno::os::procfs::children_of(Pid::from_raw(ppid))
        .into_iter()
        .map(Pid::as_raw)
        .collect()
}

/// Polls `cond` (a /proc condition: there is no event to wait on) every
/// 20 ms until it holds; false after `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs every process carrying the test's marker (in its environment or
/// on its command line), until none is left.
pub fn kill_marked(marker: &str) {
    let me = std::process::id() as i32;
    let env_entry = format!("{MARKER_VAR}={marker}");
    for _ in 0..50 {
        let marked: Vec<i32> = all_pids()
            .into_iter()
            .filter(|&p| p != me)
            .filter(|&p| proc_stat(p).is_some_and(|s| s.state != 'Z'))
            .filter(|&p| {
                environ(p).contains(&env_entry) || cmdline(p).iter().any(|a| has_marker(a, marker))
            })
            .collect();
        if marked.is_empty() {
            return;
        }
        for p in marked {
            signal(p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- fixture files

/// Waits until `path` exists and has at least `n` complete lines; returns them.
pub fn wait_lines(path: &str, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = eventually(TIMEOUT, || {
        lines = read_lines_of(path);
        lines.len() >= n
    });
    assert!(
        ok,
        "{path} did not get {n} lines within {TIMEOUT:?} (has {lines:?})"
    );
    lines
}

/// The complete lines of a file (none if it does not exist).
pub fn read_lines_of(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(str::to_owned).collect()
}

/// The timestamps (first field of each line) recorded in a fixture's file.
pub fn times(path: &str) -> Vec<f64> {
    read_lines_of(path)
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().expect("a timestamp"))
        .collect()
}

/// The first timestamp in `path`, waiting for it to be written.
pub fn first_time(path: &str) -> f64 {
    wait_lines(path, 1);
    times(path)[0]
}

/// Pids recorded by orphan.py under `key` ("main", "child", "grandchild").
pub fn recorded_pids(path: &str, key: &str) -> Vec<i32> {
    read_lines_of(path)
        .iter()
        .filter_map(|l| {
            let mut f = l.split(' ');
            (f.next() == Some(key)).then(|| f.next().unwrap().parse().unwrap())
        })
        .collect()
}

/// Processes (not zombies) of the test marked `marker`: by the marker in
/// their environment or on their command line, or by a working directory
/// inside the test's temp dir. The last catches servers that rewrite their
/// process title over their environment (redis-server, PostgreSQL's
/// children), so that /proc/PID/environ no longer shows the marker.
pub fn pids_within(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let env_entry = format!("{MARKER_VAR}={marker}");
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter(|&p| proc_stat(p).is_some_and(|s| s.state != 'Z'))
        .filter(|&p| {
            environ(p).contains(&env_entry)
                || cmdline(p).iter().any(|a| has_marker(a, marker))
                || std::fs::read_link(format!("/proc/{p}/cwd"))
                    .is_ok_and(|cwd| has_marker(&cwd.to_string_lossy(), marker))
        })
        .collect()
}

/// SIGKILLs everything [`pids_within`] finds, all at once, until none is left.
pub fn kill_within(marker: &str) {
    for _ in 0..250 {
        let pids = pids_within(marker);
        if pids.is_empty() {
            return;
        }
        for p in pids {
            signal(p, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
