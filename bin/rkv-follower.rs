//! `rkv-follower`: the read-only replica daemon. All of it lives in [`rkv::follower`].

fn main() {
    std::process::exit(rkv::follower::main());
}
