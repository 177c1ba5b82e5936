//! Telling the kernel's OOM killer from other SIGKILLs.
//!
//! A service killed by SIGKILL that cogno did not send was most often killed
//! by the kernel for want of memory, and saying so saves an operator a trip
//! to `dmesg`. The kernel counts its OOM kills per memory cgroup (`oom_kill`
//! in memory.events under cgroup v2, in memory.oom_control under v1); cogno
//! reads the counter of its own cgroup, which its services inherit, and
//! names a likely OOM kill when the count rose since it last looked.

use std::path::{Path, PathBuf};

/// The `oom_kill` counter of cogno's memory cgroup.
pub struct OomCounter {
    /// None when there is no memory cgroup to read (then nothing is claimed).
    file: Option<PathBuf>,
    last: u64,
}

impl OomCounter {
    /// Finds cogno's memory cgroup and reads the count as it is now.
    pub fn open() -> OomCounter {
        let file = counter_file();
        let last = file.as_deref().and_then(read_count).unwrap_or(0);
        OomCounter { file, last }
    }

    /// Whether the kernel OOM-killed a process of cogno's cgroup since the
    /// previous call (or since `open`).
    pub fn rose(&mut self) -> bool {
        let Some(now) = self.file.as_deref().and_then(read_count) else {
            return false;
        };
        let rose = now > self.last;
        self.last = now;
        rose
    }
}

fn read_count(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_count(&text)
}

/// The value of the `oom_kill` line of memory.events or memory.oom_control.
fn parse_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// The counter file of cogno's memory cgroup: its path in /proc/self/cgroup,
/// translated through the mount of that hierarchy in /proc/self/mountinfo.
fn counter_file() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    locate(&cgroups, &mounts, |p| p.is_file())
}

fn locate(cgroups: &str, mountinfo: &str, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (v2, file) = if id == "0" && controllers.is_empty() {
            (true, "memory.events")
        } else if controllers.split(',').any(|c| c == "memory") {
            (false, "memory.oom_control")
        } else {
            continue;
        };
        for m in mountinfo.lines().filter_map(Mount::parse) {
            let matches = if v2 {
                m.fstype == "cgroup2"
            } else {
                m.fstype == "cgroup" && m.options.split(',').any(|o| o == "memory")
            };
            if !matches {
                continue;
            }
            // Without a cgroup namespace, the path is the host's and the
            // mount shows only the container's part of it.
            let inside = path.strip_prefix(m.root).unwrap_or(path);
            for candidate in [
                Path::new(m.point)
                    .join(inside.trim_start_matches('/'))
                    .join(file),
                Path::new(m.point).join(file),
            ] {
                if exists(&candidate) {
                    return Some(candidate);
                }
            }
        }
    }
    None
}

/// The fields of a /proc/self/mountinfo line that matter here.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let mut r = right.split(' ');
        Some(Mount {
            root: l.get(3)?,
            point: l.get(4)?,
            fstype: r.next()?,
            options: r.nth(1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 25 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
45 25 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn finds_the_v1_memory_hierarchy_file_of_our_cgroup() {
        let cgroups = "4:memory:/jobs/abc\n1:cpu:/\n0::/\n";
        let got = locate(cgroups, V1_MOUNTS, |p| {
            p == Path::new("/sys/fs/cgroup/memory/jobs/abc/memory.oom_control")
        });
        assert_eq!(
            got.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/memory/jobs/abc/memory.oom_control"
            ))
        );
    }

    #[test]
    fn finds_the_v2_file_through_a_container_mount_of_a_host_path() {
        // In a container without its own cgroup namespace: the host path is
        // listed, and the mount's root is that same path.
        let cgroups = "0::/system.slice/docker-1.scope\n";
        let mounts =
            "30 20 0:26 /system.slice/docker-1.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw";
        let got = locate(cgroups, mounts, |p| {
            p == Path::new("/sys/fs/cgroup/memory.events")
        });
        assert_eq!(
            got.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory.events"))
        );
    }

    #[test]
    fn no_memory_hierarchy_means_nothing_to_read() {
        assert_eq!(locate("1:cpu:/\n", V1_MOUNTS, |_| true), None);
    }

    #[test]
    fn reads_the_oom_kill_line_of_either_file() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_count(v2), Some(2));
        assert_eq!(parse_count(v1), Some(7));
        assert_eq!(parse_count("oom 1\n"), None);
    }
}
