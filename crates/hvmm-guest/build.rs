//! Picks the linker script of the target architecture.

use std::env;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let script = match arch.as_str() {
        "aarch64" => "link-aarch64.ld",
        "arm" => "link-arm.ld",
        // Host builds (cargo check on the host) get no linker script.
        _ => return,
    };
    let path = dir.join(script);
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg=-T{}", path.display());
    println!("cargo:rustc-link-arg=--no-pie");
}
