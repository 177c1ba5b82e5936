//! Giving back the pages only startup needed.
//!
//! Starting a stack runs code that never runs again: argument parsing, the
//! YAML parser and config checks, pre-flight, initdb and secrets. The kernel
//! maps the binary's and libraries' code in 64 KiB runs as it is executed,
//! and keeps it mapped, so a supervisor that then idles for weeks carries
//! megabytes of resident startup code. Once the stack has started, cogno
//! unmaps the pages of its clean, read-only file mappings
//! (`MADV_DONTNEED`): they stay in the page cache, where the kernel can
//! reclaim them, and whatever cogno still runs is mapped back on its next
//! use, from the cache, without I/O.
//!
//! Only mappings that cannot hold data of their own are touched: file-backed,
//! not writable, and without a single private (copy-on-write) page. Dropping
//! such a page can never lose anything, since it is re-read from the file.

/// Releases the resident pages of cogno's clean read-only file mappings.
/// Returns how many bytes were resident in them.
pub fn release_startup_pages() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of this process whose pages
        // are all unmodified file pages, so discarding them loses nothing.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += m.rss;
        }
    }
    Ok(released)
}

#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    len: usize,
    rss: u64,
}

/// The mappings of a /proc/PID/smaps text that are backed by a file, not
/// writable, have no anonymous (copied) pages and have resident pages.
fn clean_file_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut finish = |m: Option<(Mapping, bool)>| {
        if let Some((m, true)) = m {
            if m.rss > 0 {
                out.push(m);
            }
        }
    };
    for line in smaps.lines() {
        if let Some((m, eligible)) = header(line) {
            finish(current.replace((m, eligible)));
            continue;
        }
        let Some((m, eligible)) = current.as_mut() else {
            continue;
        };
        let kb =
            |rest: &str| -> Option<u64> { rest.trim().strip_suffix(" kB")?.trim().parse().ok() };
        if let Some(rest) = line.strip_prefix("Rss:") {
            m.rss = kb(rest).map_or(0, |k| k * 1024);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            *eligible &= kb(rest) == Some(0);
        } else if let Some(rest) = line.strip_prefix("Locked:") {
            *eligible &= kb(rest) == Some(0);
        }
    }
    finish(current);
    out
}

/// Parses a mapping's header line (`start-end perms offset dev inode path`):
/// the mapping, and whether its kind allows releasing it.
fn header(line: &str) -> Option<(Mapping, bool)> {
    let mut f = line.split_ascii_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = f.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let _offset = f.next()?;
    let _dev = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let path = f.next();
    let eligible = perms[1] == b'-' && inode != 0 && path.is_some_and(|p| p.starts_with('/'));
    Some((
        Mapping {
            start,
            len: end.checked_sub(start)?,
            rss: 0,
        },
        eligible,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55e0a0000000-55e0a0100000 r--p 00000000 08:01 1234 /usr/bin/cogno
Size:               1024 kB
Rss:                 240 kB
Anonymous:             0 kB
Locked:                0 kB
55e0a0100000-55e0a0600000 r-xp 00100000 08:01 1234 /usr/bin/cogno
Size:               5120 kB
Rss:                2932 kB
Anonymous:             0 kB
Locked:                0 kB
55e0a0600000-55e0a0640000 r--p 00600000 08:01 1234 /usr/bin/cogno
Size:                256 kB
Rss:                 224 kB
Anonymous:           224 kB
Locked:                0 kB
55e0a0640000-55e0a0644000 rw-p 00640000 08:01 1234 /usr/bin/cogno
Size:                 16 kB
Rss:                  16 kB
Anonymous:            16 kB
Locked:                0 kB
55e0a1000000-55e0a1100000 rw-p 00000000 00:00 0 [heap]
Size:               1024 kB
Rss:                 308 kB
Anonymous:           308 kB
Locked:                0 kB
7f0000000000-7f0000010000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6
Size:                 64 kB
Rss:                   0 kB
Anonymous:             0 kB
Locked:                0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
Size:                  8 kB
Rss:                   4 kB
Anonymous:             0 kB
Locked:                0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_with_resident_pages_are_released() {
        let got = clean_file_mappings(SMAPS);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55e0a0000000,
                    len: 0x100000,
                    rss: 240 * 1024
                },
                Mapping {
                    start: 0x55e0a0100000,
                    len: 0x500000,
                    rss: 2932 * 1024
                },
            ],
            "relocated (copied) pages, writable data, the heap, empty and \
             kernel mappings must be left alone"
        );
    }

    #[test]
    fn a_locked_mapping_is_left_alone() {
        let smaps = SMAPS.replacen(
            "Locked:                0 kB",
            "Locked:              240 kB",
            1,
        );
        assert_eq!(clean_file_mappings(&smaps).len(), 1);
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        let before = release_startup_pages().expect("read smaps");
        // The code and data of this very test were among what was released.
        let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(v[999], "999");
        assert!(before > 0);
    }
}
