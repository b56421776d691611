//! Compiles the few lines of C that INCRBYFLOAT needs: Redis adds floats in
//! C's `long double`, which Rust does not have (see `csrc/incrbyfloat.c`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/incrbyfloat.c");
    cc::Build::new()
        .file("csrc/incrbyfloat.c")
        .warnings(true)
        .compile("rkv_incrbyfloat");
}
