//! Builds the bundled libzmq 4.3.4 (zeromq-src) with libsodium, which turns on ZMQ_CURVE, and
//! with the DRAFT API (for ZMQ_ROUTER_NOTIFY). Upstream zmq-sys 0.12 passes
//! `with_libsodium(None)`, which leaves CURVE out.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    // Set by libsodium-sys-stable (links = "sodium") for the crates that depend on it.
    let include = env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable gives its include dir");
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable gives its lib dir");
    // libzmq's own compiler warnings are not ours to fix: keep them out of every build's output
    // (cargo shows build-script warnings of path dependencies).
    let flags = env::var("CXXFLAGS").unwrap_or_default();
    env::set_var("CXXFLAGS", format!("{flags} -w"));
    // LibLocation::new takes the library directory first.
    // The DRAFT API adds ZMQ_ROUTER_NOTIFY (the gateway learns of disconnects and drops their
    // sessions); the stable API is unchanged.
    zeromq_src::Build::new()
        .enable_draft(true)
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}
