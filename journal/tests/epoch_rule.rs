//! The epoch rule every reader applies: a batch from an older epoch than one already seen (a
//! fenced primary's late append) is not history; batches without commands carry only the epoch.
use caldera_engine::{Command, Engine, Event};
use caldera_journal::recover::{apply_frame, Applied, Recovered};
use caldera_schema::record::encode_batch;
use caldera_testkit::flow::{generate, FlowConfig};
use flatbuffers::FlatBufferBuilder;

fn cfg() -> FlowConfig {
    FlowConfig {
        seed: 8,
        symbols: 2,
        accounts: 20,
        target_orders: 50,
        full_mix: true,
    }
}

/// Runs `cmds` on `live` and encodes them as one batch of `epoch`.
fn batch(live: &mut Engine, cmds: &[Command], epoch: u64) -> (Vec<u8>, u64, u64) {
    let mut events: Vec<Event> = Vec::new();
    for c in cmds {
        live.process(c, &mut events);
    }
    let (first, last) = (events[0].seq, events[events.len() - 1].seq);
    let mut fbb = FlatBufferBuilder::new();
    (
        encode_batch(&mut fbb, epoch, cmds, &events, first, last).to_vec(),
        first,
        last,
    )
}

fn marker(epoch: u64, last: u64) -> (Vec<u8>, u64, u64) {
    let mut fbb = FlatBufferBuilder::new();
    (
        encode_batch(&mut fbb, epoch, &[], &[], last + 1, last).to_vec(),
        last + 1,
        last,
    )
}

#[test]
fn a_fenced_writers_late_batch_is_skipped_and_replay_equals_the_new_primary() {
    let c = cfg();
    let cmds = generate(&c, 300);
    // Epoch 1 writes 100 commands, then is paused. The new primary (epoch 2) holds exactly
    // that state, writes its epoch record and goes on with other commands; the zombie wakes and
    // appends its own next batch (same sequence numbers as the new primary's).
    let mut old = Engine::new(c.engine_config()).unwrap();
    let b1 = batch(&mut old, &cmds[..100], 1);
    let mut new = old.clone();
    let zombie = batch(&mut old, &cmds[100..150], 1);
    let m2 = marker(2, new.last_seq());
    let b2 = batch(&mut new, &cmds[150..300], 2);
    let log = [b1, m2, zombie, b2];

    let mut replica = Engine::new(c.engine_config()).unwrap();
    let mut rec = Recovered::default();
    let mut outcomes = Vec::new();
    for (payload, first, last) in &log {
        outcomes.push(apply_frame(&mut replica, payload, *first, *last, &mut rec).unwrap());
    }
    assert_eq!(
        outcomes,
        [
            Applied::Batch,
            Applied::Heartbeat,
            Applied::Stale,
            Applied::Batch
        ]
    );
    assert_eq!(rec.stale_batches, 1);
    assert_eq!(rec.last_epoch, 2);
    assert_eq!(replica.state_hash(), new.state_hash());
    assert_ne!(replica.state_hash(), old.state_hash());
}

#[test]
fn a_late_batch_before_the_epoch_record_counts_and_a_conflict_is_an_error() {
    // A zombie batch that lands before the new epoch record is history (the zombie may have
    // released reports for it). If a new primary had not read up to its own epoch record before
    // writing (the promotion step that prevents this), its batch would repeat sequence numbers:
    // readers stop with a divergence error instead of building a wrong book.
    let c = cfg();
    let cmds = generate(&c, 200);
    let mut old = Engine::new(c.engine_config()).unwrap();
    let b1 = batch(&mut old, &cmds[..100], 1);
    let mut new = old.clone();
    let zombie = batch(&mut old, &cmds[100..150], 1);
    let b2 = batch(&mut new, &cmds[150..200], 2);
    let mut replica = Engine::new(c.engine_config()).unwrap();
    let mut rec = Recovered::default();
    apply_frame(&mut replica, &b1.0, b1.1, b1.2, &mut rec).unwrap();
    apply_frame(&mut replica, &zombie.0, zombie.1, zombie.2, &mut rec).unwrap();
    assert!(apply_frame(&mut replica, &b2.0, b2.1, b2.2, &mut rec).is_err());
}

#[test]
fn a_forged_epoch_jump_is_ignored_and_the_next_epoch_never_overflows() {
    use caldera_journal::recover::{next_epoch, MAX_EPOCH_JUMP};
    let c = cfg();
    let cmds = generate(&c, 200);
    let mut live = Engine::new(c.engine_config()).unwrap();
    let b1 = batch(&mut live, &cmds[..100], 1);
    let forged = marker(u64::MAX, live.last_seq());
    let b2 = batch(&mut live, &cmds[100..200], 1);
    let mut replica = Engine::new(c.engine_config()).unwrap();
    let mut rec = Recovered::default();
    let outcomes: Vec<Applied> = [b1, forged, b2]
        .iter()
        .map(|(p, f, l)| apply_frame(&mut replica, p, *f, *l, &mut rec).unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [Applied::Batch, Applied::RejectedEpoch, Applied::Batch],
        "the primary's batches after the forged record are still history"
    );
    assert_eq!(rec.rejected_epochs, 1);
    assert_eq!(rec.last_epoch, 1);
    assert_eq!(replica.state_hash(), live.state_hash());
    // The next primary's epoch: checked, bounded.
    assert_eq!(next_epoch(1, 0), Ok(2));
    assert_eq!(next_epoch(1, 7), Ok(7));
    assert!(next_epoch(1, 2 + MAX_EPOCH_JUMP).is_err());
    assert!(next_epoch(u64::MAX, 0).is_err());
}
