//! Which services a `cogno up` starts: those named on its command line, or,
//! with none named, every service whose `profiles:` are active (compose's
//! semantics) — and, either way, everything they depend on.
//!
//! A `depends_on` is followed whatever the profiles say (a service cannot
//! run without it); a priority tier only orders what is selected, so an
//! implicit dependency pulls in a service only when its profiles are active.
//! Without names, a selected service that lists a profiled-out service in
//! its `depends_on` is an error: the user chose profiles that cannot run.

use super::Service;

/// The services one start selects, and the profiles it was made with (a
/// service added later, by `cogno start`, brings its dependencies by them).
#[derive(Debug, Clone)]
pub struct Selection {
    /// `chosen[i]`: service i is started.
    pub chosen: Vec<bool>,
    pub profiles: Vec<String>,
}

/// A selected service depends on one whose profiles are not active.
#[derive(Debug, PartialEq)]
pub struct LeftOut {
    pub service: usize,
    pub on: usize,
}

impl Selection {
    /// Every service: what a stack without profiles or names starts.
    pub fn all(n: usize) -> Selection {
        Selection {
            chosen: vec![true; n],
            profiles: Vec::new(),
        }
    }

    /// `named` and their dependencies, or, if none are named, the services
    /// `profiles` enable and their dependencies.
    pub fn new(
        services: &[Service],
        named: &[usize],
        profiles: Vec<String>,
    ) -> Result<Selection, LeftOut> {
        if !named.is_empty() {
            let chosen = with_dependencies(services, named, &profiles);
            return Ok(Selection { chosen, profiles });
        }
        let seeds: Vec<usize> = (0..services.len())
            .filter(|&i| enabled(&services[i], &profiles))
            .collect();
        let chosen = with_dependencies(services, &seeds, &profiles);
        // Only an explicit dependency can reach a disabled service.
        for (i, svc) in services.iter().enumerate().filter(|(i, _)| chosen[*i]) {
            if let Some(d) = svc
                .depends_on
                .iter()
                .find(|d| !d.implicit && !enabled(&services[d.on], &profiles))
            {
                return Err(LeftOut {
                    service: i,
                    on: d.on,
                });
            }
        }
        Ok(Selection { chosen, profiles })
    }

    /// How many services are started.
    pub fn count(&self) -> usize {
        self.chosen.iter().filter(|&&c| c).count()
    }
}

/// Whether `svc` starts with these profiles active: it lists none, or one of them.
pub fn enabled(svc: &Service, profiles: &[String]) -> bool {
    svc.profiles.is_empty() || svc.profiles.iter().any(|p| profiles.contains(p))
}

/// `seeds` and what they depend on: every `depends_on`, and the lower
/// priorities whose profiles are active.
pub fn with_dependencies(services: &[Service], seeds: &[usize], profiles: &[String]) -> Vec<bool> {
    let mut chosen = vec![false; services.len()];
    let mut todo = seeds.to_vec();
    for &s in seeds {
        chosen[s] = true;
    }
    while let Some(i) = todo.pop() {
        for d in &services[i].depends_on {
            if !chosen[d.on] && (!d.implicit || enabled(&services[d.on], profiles)) {
                chosen[d.on] = true;
                todo.push(d.on);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn stack() -> Vec<Service> {
        let yaml = "services:
  db: { command: [db], priority: 10 }
  cache: { command: [cache], priority: 10 }
  debug: { command: [dbg], priority: 20, profiles: [debug] }
  web: { command: [web], priority: 30, depends_on: [cache] }
  tool: { command: [tool], priority: 40, profiles: [tools], depends_on: [debug] }
";
        parse(yaml, Path::new("t.yaml"), &|_| None)
            .expect("valid")
            .services
    }

    fn names(services: &[Service], s: &Selection) -> Vec<String> {
        (0..services.len())
            .filter(|&i| s.chosen[i])
            .map(|i| services[i].name.clone())
            .collect()
    }

    fn index(services: &[Service], name: &str) -> usize {
        services.iter().position(|s| s.name == name).expect("known")
    }

    #[test]
    fn without_profiles_the_profiled_services_are_left_out() {
        let s = stack();
        let sel = Selection::new(&s, &[], Vec::new()).expect("ok");
        assert_eq!(names(&s, &sel), ["db", "cache", "web"]);
    }

    #[test]
    fn an_active_profile_adds_its_services() {
        let s = stack();
        let sel = Selection::new(&s, &[], vec!["debug".into()]).expect("ok");
        assert_eq!(names(&s, &sel), ["db", "cache", "debug", "web"]);
    }

    #[test]
    fn a_named_service_brings_its_dependencies_and_lower_tiers_only() {
        let s = stack();
        let sel = Selection::new(&s, &[index(&s, "web")], Vec::new()).expect("ok");
        // `debug` has a lower priority, but its profile is not active.
        assert_eq!(names(&s, &sel), ["db", "cache", "web"]);
        let sel = Selection::new(&s, &[index(&s, "cache")], Vec::new()).expect("ok");
        assert_eq!(names(&s, &sel), ["cache"]);
    }

    #[test]
    fn a_named_service_starts_whatever_its_profiles_and_so_do_its_dependencies() {
        let s = stack();
        let sel = Selection::new(&s, &[index(&s, "tool")], Vec::new()).expect("ok");
        // `web` comes through its lower priority, `debug` through depends_on.
        assert_eq!(names(&s, &sel), ["db", "cache", "debug", "web", "tool"]);
    }

    #[test]
    fn a_dependency_on_a_profiled_out_service_is_refused() {
        let s = stack();
        let err = Selection::new(&s, &[], vec!["tools".into()]).expect_err("left out");
        assert_eq!(
            err,
            LeftOut {
                service: index(&s, "tool"),
                on: index(&s, "debug")
            }
        );
    }
}
