//! The PostgreSQL probe's guard on its logins: sqlx connects to a private
//! Unix socket of cogno's, and this relays to the server on 127.0.0.1,
//! reading what the server asks for before sqlx sees it. sqlx answers any
//! password request it gets — in clear text or as MD5 — so a process that
//! took the port could otherwise collect the app's and the superuser's
//! passwords by asking. cogno's pg_hba.conf allows SCRAM-SHA-256 only, so a
//! server that asks for anything else is not the one cogno runs: it is cut
//! off before sqlx can answer, and nothing of the password reaches it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio::task::JoinHandle;

/// AuthenticationCleartextPassword and AuthenticationMD5Password.
const CLEARTEXT: u32 = 3;
const MD5: u32 = 5;
/// AuthenticationOk: the login is over, the rest is relayed as is.
const OK: u32 = 0;
/// The longest message taken before the login is over (SASL's are short).
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Where the guards' sockets go: DATA/run once `bundled::prepare` has said
/// so (cogno's own, and writable even on a read-only root filesystem),
/// else the temporary directory.
static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Whether a guard's socket, `DIR/pg-guard-XXXXXX/.s.PGSQL.65535`, fits in
/// a socket address below `dir`. A data directory deep enough (a test's or
/// a throwaway stack's temporary one) leaves too little room in DATA/run:
/// the guard then goes to the temporary directory, in a private (0700)
/// directory of its own as always, or no probe could ever log in.
fn fits(dir: &Path) -> bool {
    dir.as_os_str().len() + "/pg-guard-XXXXXX/.s.PGSQL.65535".len() <= crate::os::MAX_SOCKET_PATH
}

/// Puts the guards' sockets in `dir` from now on.
pub fn use_dir(dir: PathBuf) {
    let _ = DIR.set(dir);
}

/// A relay waiting for sqlx's one connection; the directory of its socket
/// (0700, cogno's) goes away with it. Once it has the connection, the
/// relay lives as long as the connection does.
pub struct Guard {
    dir: PathBuf,
    relay: JoinHandle<Result<(), String>>,
    accepted: Arc<AtomicBool>,
}

impl Guard {
    /// Listens on DIR/.s.PGSQL.`port` in a fresh private directory, and
    /// relays the one connection made there to 127.0.0.1:`port`.
    pub fn new(port: u16) -> std::io::Result<Guard> {
        let parent = DIR
            .get()
            .filter(|d| fits(d))
            .cloned()
            .unwrap_or_else(std::env::temp_dir);
        let template = parent.join("pg-guard-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template)?;
        let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}")));
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let accepted = Arc::new(AtomicBool::new(false));
        let accepting = accepted.clone();
        let relay = tokio::spawn(async move {
            let (client, _) = listener
                .accept()
                .await
                .map_err(|e| format!("cannot accept the probe's connection: {e}"))?;
            accepting.store(true, Ordering::Release);
            drop(listener);
            relay(client, port).await
        });
        Ok(Guard {
            dir,
            relay,
            accepted,
        })
    }

    /// The directory to give sqlx (`PgConnectOptions::socket`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the relay cut the login off, if it did (call once sqlx failed).
    pub async fn refusal(&mut self) -> Option<String> {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.relay).await;
        match waited {
            Ok(Ok(Err(why))) => Some(why),
            _ => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // sqlx never connected (it failed, or its time ran out): nothing
        // will, and the relay must not wait for ever.
        if !self.accepted.load(Ordering::Acquire) {
            self.relay.abort();
        }
    }
}

/// Relays `client` (sqlx) to the server on 127.0.0.1:`port`: the client's
/// bytes as they come, the server's message by message until the login is
/// over, refusing a request for the password in clear text or as MD5.
async fn relay(client: tokio::net::UnixStream, port: u16) -> Result<(), String> {
    let server = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
        let _ = server_w.shutdown().await;
    });
    // Err(None): the connection broke (sqlx tells how); Err(Some): refused.
    let login = async {
        loop {
            let mut head = [0u8; 5];
            server_r.read_exact(&mut head).await.map_err(|_| None)?;
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if !(4..=MAX_AUTH_MESSAGE).contains(&len) {
                return Err(Some(format!(
                    "the server on 127.0.0.1:{port} sent a malformed message during the login"
                )));
            }
            let mut body = vec![0u8; len - 4];
            server_r.read_exact(&mut body).await.map_err(|_| None)?;
            let request = (head[0] == b'R' && body.len() >= 4)
                .then(|| u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
            if let Some(method @ (CLEARTEXT | MD5)) = request {
                return Err(Some(format!(
                    "the server on 127.0.0.1:{port} asked for the password {}, which the \
                     PostgreSQL cogno runs never does (SCRAM-SHA-256 only): it was not sent",
                    if method == CLEARTEXT {
                        "in clear text"
                    } else {
                        "as MD5"
                    }
                )));
            }
            client_w.write_all(&head).await.map_err(|_| None)?;
            client_w.write_all(&body).await.map_err(|_| None)?;
            if request == Some(OK) {
                return Ok::<(), Option<String>>(());
            }
        }
    };
    match login.await {
        Ok(()) => {
            let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
            let _ = client_w.shutdown().await;
            let _ = upstream.await;
            Ok(())
        }
        Err(refused) => {
            upstream.abort();
            refused.map_or(Ok(()), Err)
        }
    }
}
