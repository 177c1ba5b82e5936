//! The CognObserve product's defaults, kept apart from the generic servers:
//! the app's database and Temporal task queue, the URLs its services find
//! each other at, and the secrets it needs when the stack declares none.

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

/// Where the app's web frontend and API are, for a stack with bundled services.
pub fn app_env() -> Vec<super::AppVar> {
    let var = |name: &str, value: &str| super::AppVar {
        name: name.into(),
        value: value.into(),
        carries: None,
    };
    vec![
        var("NEXTAUTH_URL", "http://localhost:3000"),
        var("WEB_API_URL", "http://127.0.0.1:3000"),
    ]
}
