//! The CognObserve product's defaults, kept apart from the generic servers:
//! the app's database and Temporal task queue, the URLs its services find
//! each other at, and the secrets it needs when the stack declares none.

use crate::config::{Probe, Stack};
use crate::secrets::{Encoding, SecretSpec};

/// The role and database the app gets in the bundled PostgreSQL.
pub const APP_DB: &str = "cognobserve";
/// The Temporal task queue its workers poll.
pub const TEMPORAL_TASK_QUEUE: &str = "cognobserve-tasks";

/// The CognObserve set: NEXTAUTH_SECRET, INTERNAL_API_SECRET,
/// JWT_SHARED_SECRET (32 bytes, hex), POSTGRES_PASSWORD, REDIS_PASSWORD
/// (16 bytes, hex).
pub fn secrets() -> Vec<SecretSpec> {
    let spec = |name: &str, bytes| SecretSpec {
        name: name.to_owned(),
        bytes,
        encoding: Encoding::Hex,
    };
    vec![
        spec("NEXTAUTH_SECRET", 32),
        spec("INTERNAL_API_SECRET", 32),
        spec("JWT_SHARED_SECRET", 32),
        spec("POSTGRES_PASSWORD", 16),
        spec("REDIS_PASSWORD", 16),
    ]
}

/// Where the app's web frontend, API and ingest are, for a stack with
/// bundled services: from the ports its `web` and `ingest` services listen
/// on (see [`port_of`]), so that moving web to another `PORT` moves the
/// URLs too. The stack's `env` and cogno's environment override them.
pub fn app_env(stack: &Stack) -> Vec<super::AppVar> {
    let var = |name: &str, value: String| super::AppVar {
        name: name.into(),
        value,
        carries: None,
    };
    let web = port_of(stack, "web").unwrap_or(WEB_PORT);
    let ingest_health = stack
        .services
        .iter()
        .find(|s| s.name == "ingest")
        .and_then(|s| match s.health.as_ref().map(|h| &h.probe) {
            Some(Probe::Http { url, .. }) => Some(url.clone()),
            _ => None,
        })
        .unwrap_or_else(|| {
            let port = port_of(stack, "ingest").unwrap_or(INGEST_PORT);
            format!("http://127.0.0.1:{port}/health")
        });
    vec![
        var("NEXTAUTH_URL", format!("http://localhost:{web}")),
        var("WEB_API_URL", format!("http://127.0.0.1:{web}")),
        var("INGEST_HEALTH_URL", ingest_health),
    ]
}

/// The web's and the ingest's ports when the stack does not say.
const WEB_PORT: u16 = 3000;
const INGEST_PORT: u16 = 8080;

/// The port service `name` listens on: the `PORT` of its `env` (what the
/// app reads), else the port of its http health check; None when the stack
/// has no such service or says neither.
fn port_of(stack: &Stack, name: &str) -> Option<u16> {
    let svc = stack.services.iter().find(|s| s.name == name)?;
    let from_env = svc
        .env
        .iter()
        .find(|(k, _)| k == "PORT")
        .and_then(|(_, v)| v.trim().parse().ok());
    from_env.or_else(|| match svc.health.as_ref().map(|h| &h.probe) {
        Some(Probe::Http { authority, .. }) => authority.rsplit_once(':')?.1.parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env_of(yaml: &str) -> Vec<(String, String)> {
        let stack = crate::config::parse(yaml, Path::new("stack.yaml"), &|_| None).unwrap();
        app_env(&stack)
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    #[test]
    fn the_urls_follow_web_and_ingest() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            env_of("services:\n  db: {kind: postgres}\n"),
            [
                pair("NEXTAUTH_URL", "http://localhost:3000"),
                pair("WEB_API_URL", "http://127.0.0.1:3000"),
                pair("INGEST_HEALTH_URL", "http://127.0.0.1:8080/health"),
            ]
        );
        let yaml = "services:\n  db: {kind: postgres}\n  \
                    web: {command: w, env: {PORT: 3100}, health: {http: 'http://127.0.0.1:9/x'}}\n  \
                    ingest: {command: i, health: {http: 'http://127.0.0.1:8181/healthz'}}\n";
        assert_eq!(
            env_of(yaml),
            [
                pair("NEXTAUTH_URL", "http://localhost:3100"),
                pair("WEB_API_URL", "http://127.0.0.1:3100"),
                pair("INGEST_HEALTH_URL", "http://127.0.0.1:8181/healthz"),
            ]
        );
        let yaml = "services:\n  db: {kind: postgres}\n  \
                    web: {command: w, health: {http: 'http://127.0.0.1:3200/api/auth/providers'}}\n  \
                    ingest: {command: i, env: {PORT: 8282}}\n";
        assert_eq!(
            env_of(yaml)[1..],
            [
                pair("WEB_API_URL", "http://127.0.0.1:3200"),
                pair("INGEST_HEALTH_URL", "http://127.0.0.1:8282/health"),
            ]
        );
    }
}
