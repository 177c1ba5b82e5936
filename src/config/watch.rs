//! A service's `watch:` block: which paths restart it when they change,
//! what in them is ignored, how long a burst of saves is gathered, whether
//! its dependants restart too, and a oneshot to run first (a build).
//!
//! Parsed here, checked against the disk (a watched path must exist) and
//! against the other services (`before` names a oneshot) by the builder,
//! with the same placed errors as every other key. The runtime is
//! `crate::watch` (the watcher) and `supervisor::rewatch` (what a change does).

use super::diagnostic::{Diagnostic, Seg};
use super::raw::{Dur, Lenient};
use super::{key, Builder, Service};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// `watch:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub paths: Vec<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub default_ignore: Option<Lenient<bool>>,
    pub debounce: Option<Dur>,
    pub restart_dependents: Option<Lenient<bool>>,
    pub before: Option<String>,
}

/// What a developer expects ignored without saying so: version control,
/// dependencies, build output, and the files editors write beside the one
/// being saved (vim's `.swp`/`.swx`/`~` and its `4913` probe, emacs' `.#`
/// locks and `#…#` autosaves). Globs without `/` match any path component.
pub const DEFAULT_IGNORE: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "target",
    "dist",
    "build",
    ".next",
    ".turbo",
    "__pycache__",
    ".venv",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
    ".DS_Store",
];

/// The debounce when none is written: long enough to gather an editor's
/// save (write, rename, chmod) and a formatter's rewrite after it, short
/// enough not to be felt.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// `watch:`, validated.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The stack file's directory (canonical): what changed paths are shown relative to.
    pub base: PathBuf,
    /// Canonical paths that exist: directories (watched recursively) and files.
    pub paths: Vec<PathBuf>,
    pub ignore: Ignore,
    pub debounce: Duration,
    pub restart_dependents: bool,
    /// The oneshot run first, by index in `Stack::services`.
    pub before: Option<usize>,
}

/// The ignore globs, compiled. A glob without `/` (`node_modules`, `*.swp`)
/// matches any component of a path below a watched directory, as in
/// .gitignore; one with `/` (`web/public/generated/**`) matches the path
/// relative to the stack file's directory.
#[derive(Clone)]
pub struct Ignore {
    /// The patterns as written, defaults first: what `cogno check` shows.
    pub patterns: Vec<String>,
    names: GlobSet,
    paths: GlobSet,
}

impl std::fmt::Debug for Ignore {
    // The compiled sets say nothing the patterns do not (and reload
    // compares services through their Debug form).
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl Ignore {
    /// The defaults (unless `defaults` is false), then `globs`; or the index
    /// of the first glob that is not one, and why.
    pub fn new(defaults: bool, globs: &[String]) -> Result<Ignore, (usize, String)> {
        let mut patterns: Vec<String> = Vec::new();
        if defaults {
            patterns.extend(DEFAULT_IGNORE.iter().map(|s| s.to_string()));
        }
        patterns.extend(globs.iter().cloned());
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let first_own = patterns.len() - globs.len();
        for (i, p) in patterns.iter().enumerate() {
            // `dist/` means the directory, as in .gitignore.
            let g = p.trim_end_matches('/');
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| (i.saturating_sub(first_own), e.kind().to_string()))?;
            if g.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| (0, e.kind().to_string()));
        Ok(Ignore {
            names: build(names)?,
            paths: build(paths)?,
            patterns,
        })
    }

    /// Whether `path`, below the watched directory `root`, is ignored;
    /// `relative` is `path` relative to the stack file's directory.
    pub fn ignores(&self, root: &Path, path: &Path, relative: &Path) -> bool {
        let below = path.strip_prefix(root).unwrap_or(path);
        below.components().any(|c| match c {
            Component::Normal(name) => self.names.is_match(name),
            _ => false,
        }) || self.paths.is_match(relative)
    }
}

impl Builder<'_> {
    /// A service's `watch:` block; its `before` is resolved by [`Builder::watch_before`]
    /// once every service is known.
    pub(super) fn watch(&self, name: &str, raw: &RawWatch) -> Result<Watch, Diagnostic> {
        let at = |rest: &[Seg]| {
            let mut p = self.svc_path(name, &["watch"]);
            p.extend_from_slice(rest);
            p
        };
        let dir = self.file.parent().unwrap_or(Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let base = dir.canonicalize().map_err(|e| {
            self.err(
                &at(&[]),
                format!("cannot resolve the stack file's directory: {e}"),
                "watched paths are relative to it: run cogno where it can be read",
            )
        })?;
        if raw.paths.is_empty() {
            return Err(self.err(
                &at(&[key("paths")]),
                format!("`{name}` watches nothing: `paths` is empty"),
                "list the files or directories whose changes restart it, e.g. paths: [src]",
            ));
        }
        let mut paths = Vec::with_capacity(raw.paths.len());
        for (i, p) in raw.paths.iter().enumerate() {
            let found = base.join(p).canonicalize().map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_owned()
                } else {
                    format!("cannot be read: {e}")
                };
                self.err(
                    &at(&[key("paths"), Seg::Index(i)]),
                    format!("watched path `{p}` ({}) {why}", base.join(p).display()),
                    "paths are relative to the stack file's directory: fix the path, or create it",
                )
            })?;
            paths.push(found);
        }
        let ignore = Ignore::new(raw.default_ignore.is_none_or(|b| b.0), &raw.ignore).map_err(
            |(i, e)| {
                self.err(
                    &at(&[key("ignore"), Seg::Index(i)]),
                    format!("`{}` is not a glob: {e}", raw.ignore[i]),
                    "write it like `*.log`, `tmp`, or `web/public/generated/**`",
                )
            },
        )?;
        Ok(Watch {
            base,
            paths,
            ignore,
            debounce: raw.debounce.map_or(DEFAULT_DEBOUNCE, |d| d.0),
            restart_dependents: raw.restart_dependents.is_some_and(|b| b.0),
            before: None,
        })
    }

    /// `watch.before` of service `i`: a oneshot of the stack, not itself.
    pub(super) fn watch_before(
        &self,
        services: &mut [Service],
        i: usize,
        before: &str,
    ) -> Result<(), Diagnostic> {
        let name = services[i].name.clone();
        let path = self.svc_path(&name, &["watch", "before"]);
        let Some(b) = services.iter().position(|s| s.name == before) else {
            let known: Vec<&str> = services
                .iter()
                .filter(|s| s.oneshot)
                .map(|s| s.name.as_str())
                .collect();
            return Err(self.err(
                &path,
                format!(
                    "`{name}` runs `{before}` before a restart, but there is no service `{before}`"
                ),
                if known.is_empty() {
                    "declare the build as a service with `oneshot: true` and name it here"
                        .to_owned()
                } else {
                    format!("the oneshots of this stack are: {}", known.join(", "))
                },
            ));
        };
        if b == i {
            return Err(self.err(
                &path,
                format!("`{name}` cannot run itself before its own restart"),
                "name the oneshot that builds it (a service with `oneshot: true`)",
            ));
        }
        if !services[b].oneshot {
            return Err(self.err(
                &path,
                format!(
                    "`{name}` runs `{before}` before a restart, but `{before}` is not a oneshot: \
                     a restart would wait for it to finish, and it is not meant to"
                ),
                format!("mark `{before}` as `oneshot: true` (a build that runs and exits), or name another service"),
            ));
        }
        if let Some(w) = &mut services[i].watch {
            w.before = Some(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignores(ignore: &Ignore, below_root: &str) -> bool {
        let root = Path::new("/stack/web");
        let path = root.join(below_root);
        let relative = path.strip_prefix("/stack").unwrap().to_path_buf();
        ignore.ignores(root, &path, &relative)
    }

    #[test]
    fn defaults_match_any_component_and_user_globs_add_to_them() {
        let own = vec!["*.log".to_owned(), "web/public/gen/**".to_owned()];
        let ig = Ignore::new(true, &own).unwrap();
        for p in [
            "node_modules/react/index.js",
            "packages/ui/node_modules/x.js",
            ".git/index",
            "dist",
            "src/.app.ts.swp",
            "src/app.ts~",
            "src/4913",
            "server.log",
            "public/gen/icons.ts",
        ] {
            assert!(ignores(&ig, p), "{p} should be ignored");
        }
        for p in [
            "src/app.ts",
            "builder/x.ts",
            "distance.ts",
            "public/icons.ts",
        ] {
            assert!(!ignores(&ig, p), "{p} should be watched");
        }
    }

    #[test]
    fn without_defaults_only_the_user_globs_count() {
        let ig = Ignore::new(false, &["tmp/".to_owned()]).unwrap();
        assert!(ignores(&ig, "tmp/x"));
        assert!(!ignores(&ig, "node_modules/x.js"));
        assert_eq!(ig.patterns, ["tmp/"]);
    }

    #[test]
    fn a_bad_glob_is_named_by_its_index_among_the_users() {
        let own = vec!["*.log".to_owned(), "a[b".to_owned()];
        let (i, why) = Ignore::new(true, &own).err().unwrap();
        assert_eq!(i, 1);
        assert!(why.contains("unclosed"), "{why}");
    }
}
