//! The real binary: commands, exit codes, output.
