//! The environment each service's processes get.

use crate::config::Service;
use crate::os::process::SERVICE_ENV;
use crate::user::RunAs;

/// The environment a service's processes get: what cogno derives for the
/// bundled services, then cogno's own, then the stack's `env`, then the
/// service's `env` (later wins), plus the service marker.
pub fn service_env(
    derived: &[(String, String)],
    base: &[(String, String)],
    stack_env: &[(String, String)],
    svc: &Service,
    run_as: Option<&RunAs>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        Vec::with_capacity(base.len() + stack_env.len() + svc.env.len() + 4);
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for (k, v) in derived.iter().chain(base).chain(stack_env).chain(&svc.env) {
        set(k, v);
    }
    if let Some(u) = run_as {
        set("HOME", &u.home.to_string_lossy());
        set("USER", &u.name);
        set("LOGNAME", &u.name);
    }
    set(SERVICE_ENV, &svc.name);
    env
}
