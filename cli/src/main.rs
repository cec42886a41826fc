//! The `bai` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    bai_cli::main_entry()
}
