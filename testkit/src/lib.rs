//! Caldera's test kit: what tests, benchmarks and the load generator share, kept out of the
//! production crates.
//!
//! - [`flow`]: a seeded, exchange-core-like command-flow generator and its PRNG.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow;
