//! `rkv`: the command line. All of it lives in [`rkv::cli`].

fn main() -> std::process::ExitCode {
    rkv::cli::main()
}
