//! `cogno check`: validate a stack file and print its start plan.

use super::{selection, CheckArgs, Outcome};
use crate::config::watch::{Watch, DEFAULT_IGNORE};
use crate::config::Stack;
use crate::fmt::fmt_duration;
use serde_json::{json, Value};

pub fn run(args: CheckArgs) -> Outcome {
    let stack = args.config.load()?;
    let selected = args.select.resolve(&stack)?;
    if args.json {
        println!("{}", plan_json(&stack));
    } else {
        print!(
            "{}{}",
            describe(&stack),
            selection::describe(&stack, &selected)
        );
    }
    Ok(0)
}

/// The same plan for scripts (docs/cli.md has the shape). Nothing secret:
/// no environment values, and webhooks by their host only.
pub fn plan_json(stack: &Stack) -> Value {
    let tier_of = |i: usize| stack.plan.tiers.iter().position(|t| t.contains(&i));
    let services: Vec<Value> = stack
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let waits: Vec<Value> = s
                .depends_on
                .iter()
                .map(|d| {
                    json!({
                        "service": stack.services[d.on].name,
                        "condition": d.condition.to_string(),
                        "implicit": d.implicit,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "kind": s.bundled.as_ref().map(|b| b.kind.facts().name),
                "oneshot": s.oneshot,
                "schedule": s.schedule.as_ref().map(|sch| sch.text()),
                "run_at_start": s.run_at_start,
                "priority": s.priority,
                "tier": tier_of(i).map(|t| t + 1),
                "waits_for": waits,
                "critical": s.critical,
                "restart": s.restart.to_string(),
                "user": s.user,
                "start_timeout_ms": s.start_timeout.map(|d| d.as_millis() as u64),
                "stop_timeout_ms": s.stop_timeout.as_millis() as u64,
                "watch": s.watch.as_ref().map(|w| json!({
                    "paths": watched(w),
                    "ignore": w.ignore.patterns,
                    "debounce_ms": w.debounce.as_millis() as u64,
                    "restart_dependents": w.restart_dependents,
                    "before": w.before.map(|b| &stack.services[b].name),
                })),
            })
        })
        .collect();
    let tiers: Vec<Vec<&str>> = stack
        .plan
        .tiers
        .iter()
        .map(|t| t.iter().map(|&i| stack.services[i].name.as_str()).collect())
        .collect();
    let timeouts: Vec<_> = stack.services.iter().map(|s| s.stop_timeout).collect();
    let (total, chain) = stack.plan.longest_stop_chain(&timeouts);
    let notify = stack.notify.as_ref().map(|n| {
        json!({
            "command": n.command.is_some(),
            "webhooks": n.webhooks.iter().map(|w| w.host.as_str()).collect::<Vec<_>>(),
            "on": n.on.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        })
    });
    json!({
        "file": stack.file.display().to_string(),
        "ok": true,
        "services": services,
        "tiers": tiers,
        "shutdown": {
            "budget_ms": stack.shutdown_budget.as_millis() as u64,
            "longest_chain": chain.iter().map(|&i| stack.services[i].name.as_str()).collect::<Vec<_>>(),
            "longest_chain_ms": total.as_millis() as u64,
        },
        "notify": notify,
        "backup": stack.backup.as_ref().map(|b| json!({
            "schedule": b.schedule.text(),
            "keep": b.keep,
            "to": b.to.as_ref().map(|p| p.display().to_string()),
        })),
    })
}

/// The watched paths, relative to the stack file's directory where they are below it.
fn watched(w: &Watch) -> Vec<String> {
    w.paths
        .iter()
        .map(|p| match p.strip_prefix(&w.base) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => p.display().to_string(),
        })
        .collect()
}

/// A service's `watch:`, in one line under its plan line.
fn watch_line(stack: &Stack, w: &Watch) -> String {
    let defaults = DEFAULT_IGNORE
        .iter()
        .all(|d| w.ignore.patterns.iter().any(|p| p == d));
    let own: Vec<&str> = w
        .ignore
        .patterns
        .iter()
        .filter(|p| !defaults || !DEFAULT_IGNORE.contains(&p.as_str()))
        .map(String::as_str)
        .collect();
    let mut ignores = Vec::new();
    if defaults {
        ignores.push("the defaults".to_owned());
    }
    if !own.is_empty() {
        ignores.push(own.join(" "));
    }
    let mut line = format!(
        "watches: {} (debounce {}; ignores {}",
        watched(w).join(", "),
        fmt_duration(w.debounce),
        if ignores.is_empty() {
            "nothing".to_owned()
        } else {
            ignores.join(" + ")
        }
    );
    if let Some(b) = w.before {
        line.push_str(&format!("; runs {} first", stack.services[b].name));
    }
    if w.restart_dependents {
        line.push_str("; restarts its dependants too");
    }
    line.push(')');
    line
}

/// The resolved start plan, as `cogno check` prints it.
pub fn describe(stack: &Stack) -> String {
    let mut out = format!(
        "{}: ok, {} in {}\n\nstart plan (a tier starts once what it waits for is ready):\n",
        stack.file.display(),
        crate::fmt::count(stack.services.len(), "service"),
        crate::fmt::count(stack.plan.tiers.len(), "tier")
    );
    let width = stack
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for (t, tier) in stack.plan.tiers.iter().enumerate() {
        for (k, &i) in tier.iter().enumerate() {
            let s = &stack.services[i];
            let label = if k == 0 {
                format!("tier {}", t + 1)
            } else {
                String::new()
            };
            let kind = if s.oneshot { "oneshot" } else { "service" };
            let mut waits: Vec<String> = s
                .depends_on
                .iter()
                .filter(|d| !d.implicit)
                .map(|d| format!("{} {}", stack.services[d.on].name, d.condition))
                .collect();
            let lower: Vec<&str> = s
                .depends_on
                .iter()
                .filter(|d| d.implicit)
                .map(|d| stack.services[d.on].name.as_str())
                .collect();
            if !lower.is_empty() {
                waits.push(format!("{} (lower priority)", lower.join(", ")));
            }
            let waits = if waits.is_empty() {
                String::new()
            } else {
                format!("  waits for: {}", waits.join("; "))
            };
            let when = match &s.schedule {
                Some(sch) if s.run_at_start => format!(", at start and on `{}`", sch.text()),
                Some(sch) => format!(", on `{}` (not at start)", sch.text()),
                None => String::new(),
            };
            out.push_str(&format!(
                "  {label:<7} {:<width$}  {kind}, priority {}{when}{waits}\n",
                s.name, s.priority
            ));
            if let Some(w) = &s.watch {
                out.push_str(&format!(
                    "  {:<7} {:<width$}  {}\n",
                    "",
                    "",
                    watch_line(stack, w)
                ));
            }
        }
    }
    let timeouts: Vec<_> = stack.services.iter().map(|s| s.stop_timeout).collect();
    let (total, chain) = stack.plan.longest_stop_chain(&timeouts);
    let chain: Vec<&str> = chain
        .iter()
        .map(|&i| stack.services[i].name.as_str())
        .collect();
    if let Some(b) = &stack.backup {
        out.push_str(&format!(
            "\nbackups: on `{}` (local time), keeping the newest {} in {}\n",
            b.schedule.text(),
            b.keep,
            b.to.as_ref()
                .map_or_else(|| "DATA/backups".to_owned(), |p| p.display().to_string())
        ));
    }
    out.push_str(&format!(
        "\nshutdown: reverse order, within shutdown_budget {}; longest chain {} (stop timeouts add up to {}; \
         whatever is left when the budget is used up is killed)\n",
        fmt_duration(stack.shutdown_budget),
        chain.join(" → "),
        fmt_duration(total),
    ));
    out
}
