//! Caldera's FlatBuffers messages: order entry, execution reports, market data and journal
//! records, generated from `schema/fbs/caldera.fbs` by flatc 23.5.26 (`schema/regen.sh`; the
//! generated code is committed and checked for drift by the test command).
//!
//! The normative description of every message is `docs/protocol.md`.
// The generated module implements flatbuffers' unsafe `Follow`/`Push` traits, so `unsafe_code`
// is denied crate-wide and allowed only on that module.
// SAFETY: the generated accessors are only reached through `flatbuffers::root` (verified
// buffers) or the builder; hand-written code in this crate uses no `unsafe`.
#![deny(unsafe_code)]

#[allow(
    unsafe_code,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    mismatched_lifetime_syntaxes,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
mod caldera_generated;

/// The generated types (`caldera.wire` namespace).
pub use caldera_generated::caldera::wire;

pub mod codec;
pub mod convert;
pub mod map;
pub mod record;
