//! The `cogno` binary: everything is in the library (see src/lib.rs).

fn main() {
    std::process::exit(cogno::commands::main());
}
