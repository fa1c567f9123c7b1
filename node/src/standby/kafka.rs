//! Following a Kafka journal: the whole topic, then new records as they arrive; a dropped
//! connection to the primary (`failover.peers`) or silence tells it is gone, and the new
//! epoch record fences it.

use super::peers::PeerWatch;
use super::{epoch_record, Follower};
use crate::config::Config;
use crate::error::NodeError;
use crate::handover::Primary;
use caldera_engine::{Engine, EngineConfig};
use caldera_journal::history::OffsetIndex;
use caldera_journal::kafka::{self, Brokers, KafkaJournal, KafkaReader};
use caldera_journal::recover::Recovered;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Follows a Kafka journal.
pub(crate) struct KafkaFollower {
    brokers: Brokers,
    topic: String,
    engine: Engine,
    rec: Recovered,
    reader: KafkaReader,
    last_record: Instant,
    /// Offset of the record that started the current epoch.
    epoch_offset: i64,
    /// A producer connected ahead of promotion (standby).
    writer: Option<KafkaJournal>,
    peers: Option<PeerWatch>,
    stall: Duration,
    /// `failover.timeout_ms`.
    timeout: Duration,
    /// When the broker last left "has the topic grown?" unanswered (see
    /// [`Follower::on_silence`]); `None` once records arrive or it answers.
    unanswered: Option<Instant>,
    /// When the pre-connected writer's connection was last used.
    warmed: Instant,
    /// Debug builds: `CALDERA_FAULT=kafka-reader-stall@N` makes the reader hear nothing for
    /// 1.5 s once it has read N records (a consumer that stalls while the topic grows).
    #[cfg(debug_assertions)]
    reader_stall: Option<(u64, Option<Instant>)>,
    records: u64,
    /// Where sequences sit in the topic (handed to the primary this becomes).
    index: Arc<OffsetIndex>,
}

impl KafkaFollower {
    /// Reads the topic until nothing arrives for `idle` (zero: just opens the reader; a
    /// standby then catches up while following, since a live primary's heartbeats never let
    /// the topic go idle).
    pub(crate) fn start(
        brokers: &Brokers,
        topic: &str,
        engine_cfg: &EngineConfig,
        idle: Duration,
    ) -> Result<Self, NodeError> {
        let index = Arc::new(OffsetIndex::default());
        let (engine, rec, reader) = kafka::recover(brokers, topic, engine_cfg, idle, Some(&index))
            .map_err(NodeError::recover)?;
        tracing::info!(%brokers, topic, batches = rec.batches, last_seq = engine.last_seq(), epoch = rec.last_epoch, next_offset = reader.next_offset(), elapsed = ?rec.elapsed, "recovered from Kafka");
        Ok(Self {
            brokers: brokers.clone(),
            topic: topic.into(),
            engine,
            rec,
            reader,
            last_record: Instant::now(),
            epoch_offset: -1,
            writer: None,
            peers: None,
            stall: Duration::from_secs(1),
            timeout: Duration::from_millis(crate::config::FailoverSection::default().timeout_ms),
            unanswered: None,
            warmed: Instant::now(),
            #[cfg(debug_assertions)]
            reader_stall: caldera_journal::fault::injected("kafka-reader-stall").map(|n| (n, None)),
            records: 0,
            index,
        })
    }

    /// A standby of the topic: a producer connected now (its start-up is then not on the
    /// failover path), and the peers watched.
    pub(crate) fn follow(
        brokers: &Brokers,
        topic: &str,
        engine_cfg: &EngineConfig,
        cfg: &Config,
        peer: &caldera_auth::ClientCredentials,
    ) -> Result<Self, NodeError> {
        let mut f = Self::start(brokers, topic, engine_cfg, Duration::ZERO)?;
        f.stall = Duration::from_millis(cfg.journal.kafka_stall_ms);
        f.timeout = Duration::from_millis(cfg.failover.timeout_ms);
        f.writer = Some(f.connect_writer(0)?);
        f.peers = PeerWatch::new(&cfg.failover.peers, peer)?;
        tracing::info!(
            %brokers,
            topic,
            seq = f.engine.last_seq(),
            epoch = f.rec.last_epoch,
            offset = f.reader.next_offset(),
            "standby: following the Kafka journal"
        );
        Ok(f)
    }

    fn read(&mut self, wait: Duration) -> Result<usize, NodeError> {
        #[cfg(debug_assertions)]
        if let Some((at, since)) = &mut self.reader_stall {
            if self.records >= *at {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() < Duration::from_millis(1500) {
                    std::thread::sleep(wait);
                    return Ok(0);
                }
            }
        }
        let mut n = 0;
        let mut wait = wait;
        while let Some(r) = self.reader.next_record(wait).map_err(NodeError::recover)? {
            let before = self.rec.last_epoch;
            kafka::apply_and_index(&mut self.engine, &r, &mut self.rec, Some(&self.index))
                .map_err(NodeError::recover)?;
            if self.rec.last_epoch != before {
                self.epoch_offset = r.offset;
            }
            n += 1;
            wait = Duration::ZERO;
            if n >= 4096 {
                break;
            }
        }
        if n > 0 {
            self.last_record = Instant::now();
            self.unanswered = None;
            self.records += n as u64;
        }
        Ok(n)
    }

    /// Appends the epoch record, reads up to it (anything the old primary got in before it is
    /// history and is applied; anything after it is not), and returns the primary.
    pub(crate) fn take_over(
        mut self,
        cfg: &Config,
        detected: Instant,
    ) -> Result<Primary, NodeError> {
        self.stall = Duration::from_millis(cfg.journal.kafka_stall_ms);
        let epoch = caldera_journal::recover::next_epoch(self.rec.last_epoch, cfg.journal.epoch)
            .map_err(NodeError::Recover)?;
        let mut journal = match self.writer.take() {
            Some(mut w) => {
                w.retarget(epoch, self.reader.next_offset(), self.engine.last_seq());
                w
            }
            None => self.connect_writer(epoch)?,
        };
        journal.set_max_record_bytes(cfg.journal.kafka_max_record_bytes);
        let marker = epoch_record(epoch, self.engine.last_seq());
        let t_produce = Instant::now();
        // `None`: acknowledged without a usable offset; the record is then the first of this
        // epoch the reader finds.
        let acked_at = journal.start_epoch(&marker, Duration::from_secs(30))?;
        let acked = t_produce.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        while match acked_at {
            Some(at) => self.reader.next_offset() <= at,
            None => self.rec.last_epoch < epoch,
        } {
            if Instant::now() > deadline {
                return Err(NodeError::Recover(format!(
                    "could not read back the epoch record (acknowledged at {acked_at:?})"
                )));
            }
            self.read(Duration::from_millis(50))?;
        }
        let offset = acked_at.unwrap_or(self.epoch_offset);
        if self.rec.last_epoch != epoch || self.epoch_offset != offset {
            return Err(NodeError::Recover(format!(
                "another primary started epoch {} (offset {}) while this one started {epoch} \
                 (offset {offset}): not taking over",
                self.rec.last_epoch, self.epoch_offset
            )));
        }
        journal.resume_after(offset, self.engine.last_seq());
        journal.set_offset_index(Arc::clone(&self.index));
        tracing::info!(
            epoch,
            offset,
            last_seq = self.engine.last_seq(),
            catch_up_us = detected.elapsed().as_micros() as u64,
            epoch_ack_us = acked.as_micros() as u64,
            read_back_us = (t_produce.elapsed() - acked).as_micros() as u64,
            "primary: epoch started (Kafka journal)"
        );
        // Closing a consumer waits for its broker connections: not on the failover path.
        let reader = self.reader;
        let _ = std::thread::Builder::new()
            .name("caldera-reader-close".into())
            .spawn(move || drop(reader));
        Ok(Primary {
            engine: self.engine,
            journal: Some(Box::new(journal)),
            journal_dir: None,
            epoch,
            offsets: Some(self.index),
        })
    }

    fn connect_writer(&self, epoch: u64) -> Result<KafkaJournal, NodeError> {
        KafkaJournal::connect(
            &self.brokers,
            &self.topic,
            self.engine.last_seq(),
            self.reader.next_offset(),
            epoch,
            self.stall,
        )
        .map_err(NodeError::recover)
    }
}

impl Follower for KafkaFollower {
    fn poll(&mut self) -> Result<usize, NodeError> {
        self.read(Duration::from_millis(2))
    }

    /// Keeps the pre-connected writer's broker connection in use (once a second), so the
    /// epoch record at promotion does not wait for a reconnect.
    fn idle(&mut self, _applied: usize) {
        if self.warmed.elapsed() >= Duration::from_secs(1) {
            self.warmed = Instant::now();
            if let Some(w) = &self.writer {
                if !w.keep_warm(Duration::from_millis(200)) {
                    tracing::debug!("standby: the pre-connected writer's broker did not answer");
                }
            }
        }
    }

    fn catch_up(&mut self) -> Result<usize, NodeError> {
        self.read(Duration::from_millis(50))
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn recovered(&self) -> &Recovered {
        &self.rec
    }

    fn silence(&self) -> Duration {
        self.last_record.elapsed()
    }

    fn primary_gone(&mut self) -> Result<bool, NodeError> {
        Ok(self.peers.as_mut().is_some_and(PeerWatch::lost))
    }

    /// Silence of the *topic* is enough (the new epoch record fences a primary that is in fact
    /// alive); silence of this reader while the topic grows is not: the reader is stalled, so
    /// it restarts its fetch and keeps following. Nor is silence while the broker does not say
    /// how far the topic goes (a broker that stalls silences every primary): the standby then
    /// asks again only after another `failover.timeout_ms`, so a live primary gets a whole
    /// timeout of a working broker to be heard before it is fenced.
    fn on_silence(&mut self) -> bool {
        if self.unanswered.is_some_and(|t| t.elapsed() < self.timeout) {
            return false;
        }
        match self
            .reader
            .topic_end(&self.topic, Duration::from_millis(200))
        {
            Ok(end) if end > self.reader.next_offset() => {
                tracing::warn!(
                    silence_ms = self.last_record.elapsed().as_millis() as u64,
                    next_offset = self.reader.next_offset(),
                    topic_end = end,
                    "standby: heard nothing, but the topic has new records: the reader stalled, not the primary; restarting the fetch"
                );
                if let Err(e) = self.reader.reseek() {
                    tracing::warn!(error = %e, "standby: could not restart the fetch");
                }
                self.last_record = Instant::now();
                self.unanswered = None;
                false
            }
            Ok(_) => true,
            Err(e) => {
                if self.unanswered.is_none() {
                    tracing::warn!(
                        silence_ms = self.last_record.elapsed().as_millis() as u64,
                        error = %e,
                        "standby: heard nothing, and the broker did not answer how far the topic goes: waiting for its answer before taking over (a stalled broker silences a live primary too)"
                    );
                }
                self.unanswered = Some(Instant::now());
                false
            }
        }
    }

    fn promote(self: Box<Self>, cfg: &Config, detected: Instant) -> Result<Primary, NodeError> {
        (*self).take_over(cfg, detected)
    }
}
