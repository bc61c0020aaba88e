use std::process::ExitCode;

fn main() -> ExitCode {
    spatialgen_sync::cli::main()
}
