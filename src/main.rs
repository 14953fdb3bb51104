//! The `lookmig` binary: everything lives in the library; see `lookmig::cli`.

// Most of lookmig's work is short-lived JSON values and rows built on every core; glibc's
// allocator spent a third of `restore --database`'s cycles in malloc/free (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lookmig::cli::main()
}
