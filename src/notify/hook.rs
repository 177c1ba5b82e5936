//! The hook command: run once per notice, as an unprivileged user (`nobody`
//! unless `notify.user` says otherwise, when cogno is root), with the notice
//! in its environment and its JSON on stdin. Its environment is built from
//! nothing: it never gets the stack's secrets nor the services' variables.
//! Exit status 0 is a delivery.

use super::notice::Notice;
use super::Target;
use crate::config::Notify;
use crate::os::process::{self, KillOnDrop, Launch};
use crate::os::reaper::Waiters;
use crate::user::RunAs;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;

pub struct Hook {
    argv: Vec<String>,
    run_as: Option<RunAs>,
    name: String,
    /// What every run starts from: PATH, HOME, USER.
    base_env: Vec<(String, String)>,
    waiters: Waiters,
}

impl Hook {
    pub fn new(argv: &[String], cfg: &Notify, waiters: Waiters) -> Hook {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let mut base_env = vec![("PATH".to_owned(), path)];
        if let Some(u) = &cfg.run_as {
            base_env.push(("HOME".into(), u.home.display().to_string()));
            base_env.push(("USER".into(), u.name.clone()));
        } else if let Ok(home) = std::env::var("HOME") {
            base_env.push(("HOME".into(), home));
        }
        Hook {
            argv: argv.to_vec(),
            run_as: cfg.run_as.clone(),
            name: format!("command `{}`", argv[0]),
            base_env,
            waiters,
        }
    }

    async fn run(&self, notice: &Notice) -> Result<(), String> {
        let env: Vec<(String, String)> =
            self.base_env.iter().cloned().chain(notice.env()).collect();
        let (stdin, feed) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make its stdin: {e}"))?;
        let spawned = process::spawn(&Launch {
            argv: &self.argv,
            env: &env,
            working_dir: Some(Path::new("/")),
            run_as: self.run_as.as_ref(),
            stdin: Some(&stdin),
            capture: false,
            no_new_privs: true,
        })
        .map_err(|e| e.to_string())?;
        // Registered before anything awaits, so the reaper hands its status here.
        let exited = self.waiters.wait_for(spawned.pid);
        let guard = KillOnDrop(Some(spawned.pid));
        drop(stdin);
        // Written asynchronously: a hook that does not read its stdin fills
        // the pipe, and must not block cogno's thread.
        let mut feed = tokio::net::unix::pipe::Sender::from_owned_fd(feed)
            .map_err(|e| format!("cannot write its stdin: {e}"))?;
        let body = notice.json().to_string();
        // A hook that ignores its stdin and exits is fine: EPIPE is not a failure.
        let _ = feed.write_all(body.as_bytes()).await;
        drop(feed);
        let reason = guard
            .finished(exited, &spawned.report)
            .await
            .ok_or("its exit status was lost")?;
        if reason.success() {
            Ok(())
        } else {
            Err(reason.to_string())
        }
    }
}

impl Target for Hook {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(self.run(notice))
    }
}
