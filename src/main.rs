//! The `lookmig` binary: everything lives in the library; see `lookmig::cli`.

#[global_allocator]
static GLOBAL: lookmig::alloc::Split = lookmig::alloc::Split;

fn main() -> std::process::ExitCode {
    lookmig::cli::main()
}
