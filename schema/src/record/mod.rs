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

/// Format 2 as the final record of a batch [`split`] into several records: its events are the
/// last ones of its range `first_seq..=last_seq` (the parts before it hold the others). Only
/// logs with a record size limit (Kafka) contain it.
pub const FORMAT_SPLIT_FINAL: u16 = 3;

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
    /// A batch cannot be split into records of the size asked for (its commands alone, or one
    /// event, are larger).
    #[error("journal batch cannot be split into records of {0} bytes")]
    TooLarge(usize),
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
        2 | FORMAT_SPLIT_FINAL => v2::commands(&b, &mut commands)?,
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
        2 | FORMAT_SPLIT_FINAL => v2::events(&b, out),
        f => Err(RecordError::UnknownFormat(f)),
    }
}

/// Splits an encoded batch into records of at most `max` bytes (for a log with a record size
/// limit, such as Kafka's): event-only *parts* — batches with events and no commands, in
/// sequence order — then one *final* record (format [`FORMAT_SPLIT_FINAL`]) holding every
/// command, the remaining events and the batch's whole range `first_seq..=last_seq`. A batch
/// that fits is returned as it is.
///
/// Replay re-runs commands, so it needs only the final record (a part, without commands, is
/// passed over like a heartbeat). Readers that print events reassemble them with
/// [`Reassembly`]: a part's events are history only once the final record that follows them
/// has landed (a primary that died between its parts and its final record wrote no history).
///
/// # Errors
/// [`RecordError`] when the batch does not decode, or [`RecordError::TooLarge`] when its
/// commands alone (or a single event) do not fit in `max`.
pub fn split(bytes: &[u8], max: usize) -> Result<Vec<Vec<u8>>, RecordError> {
    if bytes.len() <= max {
        return Ok(vec![bytes.to_vec()]);
    }
    let batch = decode_commands(bytes)?;
    let mut events = Vec::new();
    decode_events(bytes, &mut events)?;
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    let mut rest: &[Event] = &events;
    // Events per part: start from the batch's average size, halve until a part fits.
    let per_item = bytes.len() / (events.len() + batch.commands.len()).max(1);
    let mut n = (max / per_item.max(1)).max(1);
    loop {
        let mut b = BatchBuilder::with_capacity(batch.commands.len());
        for e in rest {
            b.push_event(e);
        }
        for c in &batch.commands {
            b.push_command(c);
        }
        let format = if out.is_empty() {
            FORMAT
        } else {
            FORMAT_SPLIT_FINAL
        };
        let fin = b.finish_as(
            &mut fbb,
            batch.epoch,
            batch.first_seq,
            batch.last_seq,
            format,
        );
        if fin.len() <= max {
            out.push(fin.to_vec());
            return Ok(out);
        }
        if rest.is_empty() {
            return Err(RecordError::TooLarge(max));
        }
        loop {
            let take = n.min(rest.len());
            let part = &rest[..take];
            let enc = encode_batch(
                &mut fbb,
                batch.epoch,
                &[],
                part,
                part[0].seq,
                part[take - 1].seq,
            );
            if enc.len() <= max {
                out.push(enc.to_vec());
                rest = &rest[take..];
                break;
            }
            if take == 1 {
                return Err(RecordError::TooLarge(max));
            }
            n = take / 2;
        }
    }
}

/// Reassembles the events of batches split by [`split`], for readers that print or forward
/// events (replay does not need it). Feed it every batch the epoch rule accepts, in log order.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Events of parts waiting for their final record.
    pending: Vec<Event>,
    /// Epoch of the pending parts.
    epoch: u64,
}

impl Reassembly {
    /// Takes one batch; appends to `out` the events that are now history, in sequence order.
    ///
    /// # Errors
    /// [`RecordError`] when the batch does not decode.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), RecordError> {
        let b = root(bytes)?;
        let (epoch, first, last) = (b.epoch(), b.first_seq(), b.last_seq());
        let commands = match b.format() {
            0 | 1 => b.commands().map_or(0, |c| c.len()),
            _ => b.cmds().map_or(0, |c| c.len()),
        };
        let mut events = Vec::new();
        decode_events(bytes, &mut events)?;
        if epoch != self.epoch {
            // Parts of another writer's batch that never got its final record.
            self.pending.clear();
            self.epoch = epoch;
        }
        if commands == 0 {
            if let Some(e) = events.first() {
                // A part: it must continue the pending ones, else they were abandoned.
                if self.pending.last().is_some_and(|p| p.seq + 1 != e.seq) {
                    self.pending.clear();
                }
                self.pending.extend(events);
            }
            return Ok(());
        }
        // A final record (or a whole batch): pending parts are history if they start its range.
        if self.pending.first().is_some_and(|p| p.seq == first) {
            out.extend(self.pending.drain(..).filter(|e| e.seq <= last));
        }
        self.pending.clear();
        out.extend(events);
        Ok(())
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
    fn a_split_batch_fits_the_limit_replays_from_its_final_record_and_reassembles_exactly() {
        let (cmds, events, last) = flow();
        let mut fbb = FlatBufferBuilder::new();
        let whole = encode_batch(&mut fbb, 3, &cmds, &events, 1, last).to_vec();
        let commands_only = encode_batch(&mut fbb, 3, &cmds, &[], 1, last).len();
        let max = commands_only + (4 << 10);
        assert!(whole.len() > 3 * max, "{} vs {max}", whole.len());
        let parts = split(&whole, max).unwrap();
        assert!(parts.len() > 3);
        assert!(parts.iter().all(|p| p.len() <= max));
        // Replay needs only the final record: the commands and the whole range.
        let fin = decode_commands(parts.last().unwrap()).unwrap();
        assert_eq!((fin.first_seq, fin.last_seq, fin.epoch), (1, last, 3));
        assert_eq!(fin.commands, cmds);
        for p in &parts[..parts.len() - 1] {
            assert!(decode_commands(p).unwrap().commands.is_empty());
        }
        // Reassembled events equal the batch's, in order, once.
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        for p in &parts {
            r.push(p, &mut out).unwrap();
        }
        assert_eq!(out, events);
        // Parts whose final record never came (their writer died) are not history: a new
        // epoch's batch over the same sequences replaces them.
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        for p in &parts[..2] {
            r.push(p, &mut out).unwrap();
        }
        assert!(out.is_empty());
        let redo = encode_batch(&mut fbb, 4, &cmds, &events, 1, last).to_vec();
        r.push(&redo, &mut out).unwrap();
        assert_eq!(out, events);
        // A batch that fits is not split; a limit smaller than one event cannot be met.
        assert_eq!(split(&whole, whole.len()).unwrap(), vec![whole.clone()]);
        assert_eq!(
            split(&whole, commands_only - 1),
            Err(RecordError::TooLarge(commands_only - 1))
        );
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
