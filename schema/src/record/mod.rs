//! Journal records: a `JournalBatch` holds the commands the engine executed and the events they
//! produced. Written in format 2 ([`v2`]: vectors of fixed-size structs); format 1 ([`v1`]:
//! a table per item) is still read.

pub mod v1;
pub mod v2;

use crate::wire;
use caldera_engine::{Command, Event};
use flatbuffers::FlatBufferBuilder;

pub use v1::encode_batch_v1;
pub use v2::BatchBuilder;

/// The format written ([`v2`]).
pub const FORMAT: u16 = 2;

/// A batch as read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Writer's epoch.
    pub epoch: u64,
    /// First event sequence number.
    pub first_seq: u64,
    /// Last event sequence number (`first_seq - 1` for a batch without events).
    pub last_seq: u64,
    /// Commands in execution order.
    pub commands: Vec<Command>,
    /// Writer's wall clock at append (ns since the Unix epoch; 0 if unknown).
    pub written_ns: u64,
}

/// The wall clock in ns since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A record that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// FlatBuffers verification failed.
    #[error("journal batch does not verify: {0}")]
    Malformed(String),
    /// A field is out of range.
    #[error("journal batch has an invalid {0}")]
    Invalid(&'static str),
    /// Written in a format this reader does not know.
    #[error("journal batch format {0} is newer than this reader (format {FORMAT}): upgrade it")]
    UnknownFormat(u16),
}

pub(crate) fn bad(what: &'static str) -> RecordError {
    RecordError::Invalid(what)
}

/// Encodes a batch (format 2) into `fbb` (reset first) and returns the bytes. (The journal
/// stage keeps a [`BatchBuilder`] instead, which allocates nothing per batch.)
pub fn encode_batch<'a>(
    fbb: &'a mut FlatBufferBuilder<'static>,
    epoch: u64,
    commands: &[Command],
    events: &[Event],
    first_seq: u64,
    last_seq: u64,
) -> &'a [u8] {
    let mut b = BatchBuilder::with_capacity(commands.len());
    for e in events {
        b.push_event(e);
    }
    for c in commands {
        b.push_command(c);
    }
    b.finish(fbb, epoch, first_seq, last_seq)
}

fn opts() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_tables: 100_000_000,
        max_apparent_size: 1 << 31,
        ..Default::default()
    }
}

/// Verifies a batch and returns its root.
///
/// # Errors
/// [`RecordError::Malformed`].
pub fn root(bytes: &[u8]) -> Result<wire::JournalBatch<'_>, RecordError> {
    flatbuffers::root_with_opts::<wire::JournalBatch>(&opts(), bytes)
        .map_err(|e| RecordError::Malformed(e.to_string()))
}

/// Decodes the header and the commands of a batch (what replay needs).
///
/// # Errors
/// [`RecordError`] when the batch does not verify, is of an unknown format, or a field is out
/// of range.
pub fn decode_commands(bytes: &[u8]) -> Result<DecodedBatch, RecordError> {
    let b = root(bytes)?;
    let mut commands = Vec::new();
    match b.format() {
        0 | 1 => v1::commands(&b, &mut commands)?,
        2 => v2::commands(&b, &mut commands)?,
        f => return Err(RecordError::UnknownFormat(f)),
    }
    Ok(DecodedBatch {
        epoch: b.epoch(),
        first_seq: b.first_seq(),
        last_seq: b.last_seq(),
        written_ns: b.written_ns(),
        commands,
    })
}

/// Decodes the events of a batch, in sequence order (for dump/tail and consumers).
///
/// # Errors
/// [`RecordError`] when the batch does not verify, is of an unknown format, or a field is out
/// of range.
pub fn decode_events(bytes: &[u8], out: &mut Vec<Event>) -> Result<(), RecordError> {
    let b = root(bytes)?;
    match b.format() {
        0 | 1 => v1::events(&b, out),
        2 => v2::events(&b, out),
        f => Err(RecordError::UnknownFormat(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caldera_engine::Engine;
    use caldera_testkit::flow::{generate, FlowConfig};

    fn flow() -> (Vec<Command>, Vec<Event>, u64) {
        let cfg = FlowConfig {
            seed: 4,
            symbols: 2,
            accounts: 30,
            target_orders: 50,
            full_mix: true,
        };
        let cmds = generate(&cfg, 3000);
        let mut e = Engine::new(cfg.engine_config()).unwrap();
        let mut events = Vec::new();
        for c in &cmds {
            e.process(c, &mut events);
        }
        (cmds, events, e.last_seq())
    }

    #[test]
    fn batches_round_trip_commands_and_events_exactly_in_both_formats() {
        let (cmds, events, last) = flow();
        let mut fbb = FlatBufferBuilder::new();
        for bytes in [
            encode_batch(&mut fbb, 7, &cmds, &events, 1, last).to_vec(),
            encode_batch_v1(&mut fbb, 7, &cmds, &events, 1, last).to_vec(),
        ] {
            let d = decode_commands(&bytes).unwrap();
            assert_eq!((d.epoch, d.first_seq, d.last_seq), (7, 1, last));
            assert_eq!(d.commands, cmds);
            let mut back = Vec::new();
            decode_events(&bytes, &mut back).unwrap();
            assert_eq!(back, events);
        }
    }

    #[test]
    fn a_format_2_batch_whose_events_do_not_cover_its_range_is_an_error() {
        let (cmds, events, last) = flow();
        let mut fbb = FlatBufferBuilder::new();
        // One event too few for the range it claims.
        let bytes = encode_batch(&mut fbb, 1, &cmds, &events[1..], 1, last).to_vec();
        let mut out = Vec::new();
        assert!(matches!(
            decode_events(&bytes, &mut out),
            Err(RecordError::Invalid(_))
        ));
        // Events outside the range.
        let bytes = encode_batch(&mut fbb, 1, &cmds, &events, 2, last + 1).to_vec();
        assert!(matches!(
            decode_events(&bytes, &mut out),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn a_batch_from_a_newer_format_is_refused_by_name() {
        let mut fbb = FlatBufferBuilder::new();
        let root = wire::JournalBatch::create(
            &mut fbb,
            &wire::JournalBatchArgs {
                format: 9,
                ..Default::default()
            },
        );
        fbb.finish(root, None);
        assert_eq!(
            decode_commands(fbb.finished_data()),
            Err(RecordError::UnknownFormat(9))
        );
    }
}
