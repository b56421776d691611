//! `rkv-master`: the write-side daemon. All of it lives in [`rkv::master`].

fn main() -> std::process::ExitCode {
    rkv::master::main()
}
