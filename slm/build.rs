//! Link-time settings for binaries and tests that use libtorch:
//! - an rpath to the libtorch folder, so the binary runs without LD_LIBRARY_PATH where it was built;
//! - `libtorch_cuda` kept with --no-as-needed when it exists: nothing references its symbols
//!   directly, so the linker would drop it and CUDA would never be seen at run time.
//!
//! It also compiles, against the same libtorch headers and C++ ABI as `torch-sys`, the libtorch
//! ops `tch` does not wrap: `csrc/int8.cpp` (int8 linear layers through fbgemm) and
//! `csrc/onednn.cpp` (fp32 linear layers through oneDNN with packed weights) and
//! `csrc/attention.cpp` (the encoder's attention on CPU, an AVX-512 kernel).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/int8.cpp");
    println!("cargo:rerun-if-changed=csrc/onednn.cpp");
    println!("cargo:rerun-if-changed=csrc/attention.cpp");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        let root = std::path::Path::new(&lib)
            .parent()
            .expect("libtorch lib folder has a parent");
        // PyTorch wheels since 2.7 and libtorch's cxx11 builds use the new ABI.
        let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(root.join("include"))
            .include(root.join("include/torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            // `at::parallel_for` is inline OpenMP in libtorch's headers: without this flag the
            // attention kernel would run on one thread. It uses libtorch's own libgomp (below),
            // the same thread pool as libtorch's ops.
            .flag("-fopenmp")
            .file("csrc/int8.cpp")
            .file("csrc/onednn.cpp")
            .file("csrc/attention.cpp")
            .compile("labelfleet_torch_ops");
        println!("cargo:rustc-link-lib=dylib=torch_cpu");
        println!("cargo:rustc-link-lib=dylib=c10");
        if std::path::Path::new(&lib).join("libgomp.so.1").exists() {
            println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
        } else {
            println!("cargo:rustc-link-lib=dylib=gomp");
        }
        println!("cargo:rustc-link-search=native={lib}");
    }
}
