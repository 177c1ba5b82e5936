//! `cogno env`: the environment app services get, as a sourceable .env.

use super::{data_dir, env_lookup, StackArgs};
use crate::bundled;
use crate::secrets;

/// Prints it, for an app run outside cogno.
pub fn run(args: StackArgs) -> i32 {
    let stack = match args.config.load() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let data = data_dir(&args, &stack);
    let specs = bundled::secret_specs(&stack);
    let secrets = match secrets::load_or_create(&data, &specs, &env_lookup) {
        Ok(s) => s,
        Err(e) => return e.report(),
    };
    println!(
        "# The environment cogno gives app services (stack {}).",
        stack.file.display()
    );
    println!("# It contains secrets: keep it out of logs and version control.");
    let mut vars = bundled::derived_env(&stack, &secrets);
    vars.extend(stack.env.iter().cloned());
    for (k, v) in vars.iter().filter(|(k, _)| !k.is_empty()) {
        // Single quotes: nothing in the value is expanded when the file is sourced.
        println!("{k}='{}'", v.replace('\'', "'\\''"));
    }
    0
}
