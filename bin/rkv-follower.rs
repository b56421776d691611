//! `rkv-follower`: the read-only replica daemon. All of it lives in [`rkv::follower`].

fn main() -> std::process::ExitCode {
    rkv::follower::main()
}
