//! Link-time settings for binaries and tests that use libtorch:
//! - an rpath to the libtorch folder, so the binary runs without LD_LIBRARY_PATH where it was built;
//! - `libtorch_cuda` kept with --no-as-needed when it exists: nothing references its symbols
//!   directly, so the linker would drop it and CUDA would never be seen at run time.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
