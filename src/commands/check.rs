//! `cogno check`: validate a stack file and print its start plan.

use super::{selection, CheckArgs, Outcome};
use crate::config::Stack;
use crate::fmt::fmt_duration;

pub fn run(args: CheckArgs) -> Outcome {
    let stack = args.config.load()?;
    let selected = args.select.resolve(&stack)?;
    print!(
        "{}{}",
        describe(&stack),
        selection::describe(&stack, &selected)
    );
    Ok(0)
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
            out.push_str(&format!(
                "  {label:<7} {:<width$}  {kind}, priority {}{waits}\n",
                s.name, s.priority
            ));
        }
    }
    let timeouts: Vec<_> = stack.services.iter().map(|s| s.stop_timeout).collect();
    let (total, chain) = stack.plan.longest_stop_chain(&timeouts);
    let chain: Vec<&str> = chain
        .iter()
        .map(|&i| stack.services[i].name.as_str())
        .collect();
    out.push_str(&format!(
        "\nshutdown: reverse order, within shutdown_budget {}; longest chain {} (stop timeouts add up to {}; \
         whatever is left when the budget is used up is killed)\n",
        fmt_duration(stack.shutdown_budget),
        chain.join(" → "),
        fmt_duration(total),
    ));
    out
}
