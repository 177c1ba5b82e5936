//! The start plan: explicit `depends_on` plus the implicit dependencies that
//! `priority` creates, checked for cycles and arranged into tiers.
//!
//! A lower priority is an implicit dependency on being healthy (completed, for
//! a oneshot), so stacks can be ordered by priorities alone. Shutdown runs the
//! same graph backwards: a service stops once everything that depends on it
//! has stopped.

use super::{Condition, Dependency, Service};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Plan {
    /// Services grouped by depth in the dependency graph (tier 0 depends on nothing).
    pub tiers: Vec<Vec<usize>>,
    /// For each service, the services that depend on it (explicitly or implicitly).
    pub dependants: Vec<Vec<usize>>,
}

#[derive(Debug)]
pub enum PlanError {
    /// `cycle` lists the names along the loop, first name repeated at the end.
    Cycle {
        cycle: Vec<String>,
        /// A service on the loop whose `depends_on` creates an edge of it.
        at: String,
        explicit_on: Option<String>,
    },
}

impl Plan {
    /// Adds the implicit priority dependencies to `services`, normalizes
    /// conditions, and orders the graph. Fails on a cycle.
    pub fn build(services: &mut [Service]) -> Result<Plan, PlanError> {
        let n = services.len();
        let oneshot: Vec<bool> = services.iter().map(|s| s.oneshot).collect();
        let priority: Vec<i64> = services.iter().map(|s| s.priority).collect();
        // A scheduled oneshot runs at its times, not in the start order:
        // only an explicit `depends_on` waits for it.
        let scheduled: Vec<bool> = services.iter().map(|s| s.schedule.is_some()).collect();
        for (i, svc) in services.iter_mut().enumerate() {
            for dep in &mut svc.depends_on {
                // A oneshot is never "healthy" while it runs: waiting for it means waiting for it to finish.
                if oneshot[dep.on] && dep.condition == Condition::Healthy {
                    dep.condition = Condition::Completed;
                }
            }
            for j in 0..n {
                if priority[j] < priority[i]
                    && !scheduled[j]
                    && !svc.depends_on.iter().any(|d| d.on == j)
                {
                    svc.depends_on.push(Dependency {
                        on: j,
                        condition: if oneshot[j] {
                            Condition::Completed
                        } else {
                            Condition::Healthy
                        },
                        implicit: true,
                    });
                }
            }
        }
        Plan::arrange(services)
    }

    /// Orders `services` whose dependencies (implicit ones included) are
    /// already set: what a reload does with the services it keeps, adds and
    /// is still stopping. Fails on a cycle.
    pub fn arrange(services: &[Service]) -> Result<Plan, PlanError> {
        let n = services.len();
        let priority: Vec<i64> = services.iter().map(|s| s.priority).collect();
        let levels = levels(services)?;
        let depth = levels.iter().copied().max().unwrap_or(0) + 1;
        let mut tiers = vec![Vec::new(); depth];
        let mut dependants = vec![Vec::new(); n];
        for (i, svc) in services.iter().enumerate() {
            tiers[levels[i]].push(i);
            for d in &svc.depends_on {
                dependants[d.on].push(i);
            }
        }
        for tier in &mut tiers {
            tier.sort_by_key(|&i| (priority[i], i));
        }
        Ok(Plan { tiers, dependants })
    }

    /// Services in start order: tier by tier.
    pub fn start_order(&self) -> impl Iterator<Item = usize> + '_ {
        self.tiers.iter().flatten().copied()
    }

    /// The longest sequence of stops that must happen one after another, with
    /// `timeouts[i]` for service i: its total and the services in stop order.
    pub fn longest_stop_chain(&self, timeouts: &[Duration]) -> (Duration, Vec<usize>) {
        let n = timeouts.len();
        // best[i]: the longest chain that ends by stopping i (its dependants stop before it).
        let mut best: Vec<(Duration, Option<usize>)> = vec![(Duration::ZERO, None); n];
        // Dependants sit in higher tiers, so walking tiers from the top sees them first.
        for &i in self.tiers.iter().rev().flatten() {
            let before = self.dependants[i].iter().map(|&d| (best[d].0, d)).max();
            best[i] = match before {
                Some((t, d)) => (t + timeouts[i], Some(d)),
                None => (timeouts[i], None),
            };
        }
        let Some(end) = (0..n).max_by_key(|&i| best[i].0) else {
            return (Duration::ZERO, Vec::new());
        };
        let mut chain = vec![end];
        while let Some(prev) = best[*chain.last().expect("non-empty")].1 {
            chain.push(prev);
        }
        chain.reverse();
        (best[end].0, chain)
    }
}

/// Depth of every service in the graph, or the first cycle found.
fn levels(services: &[Service]) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = services.len();
    let mut mark = vec![Mark::New; n];
    let mut level = vec![0usize; n];
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (service, next dependency index to visit).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            if let Some(dep) = services[i].depends_on.get(*next) {
                *next += 1;
                match mark[dep.on] {
                    Mark::New => {
                        mark[dep.on] = Mark::Active;
                        stack.push((dep.on, 0));
                    }
                    Mark::Active => {
                        let from = stack
                            .iter()
                            .position(|&(s, _)| s == dep.on)
                            .expect("active is on the stack");
                        let members: Vec<usize> = stack[from..].iter().map(|&(s, _)| s).collect();
                        return Err(cycle_error(services, &members));
                    }
                    Mark::Done => {}
                }
            } else {
                stack.pop();
                mark[i] = Mark::Done;
                level[i] = services[i]
                    .depends_on
                    .iter()
                    .map(|d| level[d.on] + 1)
                    .max()
                    .unwrap_or(0);
            }
        }
    }
    Ok(level)
}

/// `members` is the loop in waiting order: members[k] waits for members[k+1].
fn cycle_error(services: &[Service], members: &[usize]) -> PlanError {
    let mut cycle = Vec::new();
    let mut at = None;
    for (k, &i) in members.iter().enumerate() {
        let next = members[(k + 1) % members.len()];
        let edge = services[i]
            .depends_on
            .iter()
            .find(|d| d.on == next)
            .expect("edge on the cycle");
        cycle.push(if edge.implicit {
            format!(
                "{} (priority {} waits for {})",
                services[i].name, services[i].priority, services[next].priority
            )
        } else {
            services[i].name.clone()
        });
        if !edge.implicit && at.is_none() {
            at = Some((services[i].name.clone(), services[next].name.clone()));
        }
    }
    cycle.push(services[members[0]].name.clone());
    let (at, explicit_on) = match at {
        Some((a, on)) => (a, Some(on)),
        None => (services[members[0]].name.clone(), None),
    };
    PlanError::Cycle {
        cycle,
        at,
        explicit_on,
    }
}
