//! Caldera's test kit: what tests, benchmarks and the load generator share, kept out of the
//! production crates.
//!
//! - [`flow`]: a seeded, exchange-core-like command-flow generator and its PRNG.
//! - [`harness`]: real processes (`caldera`, tansu) on free 127.0.0.1 ports, real signals.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow;
pub mod harness;
