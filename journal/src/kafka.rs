//! The Kafka journal: one topic, partition 0 per engine shard, one Kafka record per journal
//! batch (many events per record), idempotent producer with `acks=all`.
//!
//! Durability = the broker acknowledged the record. During an outage records are held and
//! retried without limit (`message.timeout.ms=0`); [`KafkaJournal::durable`] reports a stall
//! after `stall_after`, which the gateway turns into `JournalUnavailable` rejects until
//! deliveries resume. Nothing here uses Kafka transactions or the broker's high watermark:
//! readers poll until idle and replay by sequence numbers (works on Apache Kafka, Redpanda and
//! tansu alike).

use crate::history::{Checkpoint, OffsetIndex};
use crate::recover::{apply_batch, Applied, RecoverError, Recovered};
use crate::writer::{JournalError, JournalWriter};
use caldera_engine::{Engine, EngineConfig};
use caldera_schema::record;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kafka journal errors.
#[derive(Debug, thiserror::Error)]
pub enum KafkaJournalError {
    /// The brokers did not answer.
    #[error("cannot reach Kafka at {brokers}: {source}")]
    Unreachable {
        /// Bootstrap servers.
        brokers: String,
        /// Cause.
        source: KafkaError,
    },
    /// The topic does not exist.
    #[error("Kafka topic {topic:?} does not exist on {brokers}; create it with one partition (topics are not auto-created)")]
    NoTopic {
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
    },
    /// The topic cannot hold a journal (partitions, cleanup policy).
    #[error("Kafka topic {topic:?} cannot hold the journal: {why}")]
    BadTopic {
        /// Topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
    /// A client error.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// Replay failed.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}

struct DeliveryContext {
    /// `(offset, last_seq)` of each acknowledged record, in delivery order. The offset is
    /// negative when the broker acknowledged the record without one (see
    /// [`KafkaJournal::durable`]).
    deliveries: Arc<Mutex<VecDeque<(i64, u64)>>>,
    failed: Arc<Mutex<Option<String>>>,
    /// Fault injection (debug builds, `CALDERA_FAULT=kafka-unknown-offset@N`): the first
    /// acknowledgement and every Nth after it arrive without their offset (-1 and 0 in turn),
    /// as a broker's answer to a retried duplicate can.
    unknown_offset_every: Option<u64>,
    acknowledged: std::sync::atomic::AtomicU64,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, last_seq: usize) {
        match result {
            Ok(m) => {
                let offset = match self.unknown_offset_every {
                    Some(every) if every > 0 => {
                        let n = self
                            .acknowledged
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Stripped: -1 and 0 in turn (Apache Kafka's and tansu's answers).
                        match (n % every, (n / every) % 2) {
                            (0, 0) => -1,
                            (0, _) => 0,
                            _ => m.offset(),
                        }
                    }
                    _ => m.offset(),
                };
                if let Ok(mut d) = self.deliveries.lock() {
                    d.push_back((offset, last_seq as u64));
                }
            }
            Err((e, _)) => {
                if let Ok(mut f) = self.failed.lock() {
                    f.get_or_insert_with(|| {
                        format!("delivery of the batch ending at {last_seq} failed: {e}")
                    });
                }
            }
        }
    }
}

/// What [`KafkaJournal::check_gap`] found.
enum Gap {
    /// Every record of the gap was read; none has a newer epoch.
    Clear,
    /// Not all read yet.
    Pending,
    /// Why this writer is fenced.
    Fenced(String),
}

const KEY: &[u8] = b"shard-0";

/// Default largest record ([`KafkaJournal::set_max_record_bytes`]): under the 1 MB that brokers
/// accept by default, with room for Kafka's own record overhead.
pub const DEFAULT_MAX_RECORD: usize = 900_000;

/// Where the Kafka cluster is and how to reach it: the bootstrap servers and the client
/// properties the operator passes through to librdkafka (TLS, SASL: `[journal.kafka]` in the
/// node's configuration; see docs/configuration.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Brokers {
    /// `host:port[,host:port…]` (`bootstrap.servers`).
    pub servers: String,
    /// librdkafka properties, set as given (only those [`Brokers::check_property`] allows).
    pub properties: Vec<(String, String)>,
}

impl Brokers {
    /// These servers, no extra properties (plain TCP).
    #[must_use]
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            properties: Vec::new(),
        }
    }

    /// Whether the operator may set librdkafka property `key`: connection security
    /// (`security.protocol`, `sasl.*`, `ssl.*`) and `client.id`. Everything else is Caldera's
    /// (acknowledgements, idempotence, timeouts and sizes are part of its guarantees).
    ///
    /// # Errors
    /// Why the property is refused.
    pub fn check_property(key: &str) -> Result<(), String> {
        let ok = key == "security.protocol"
            || key == "client.id"
            || key.starts_with("sasl.")
            || key.starts_with("ssl.");
        if ok {
            Ok(())
        } else {
            Err(format!(
                "journal.kafka: {key:?} cannot be set here: only security.protocol, sasl.*, \
                 ssl.* and client.id (the rest is part of Caldera's durability guarantees)"
            ))
        }
    }

    /// A librdkafka configuration with the servers and the operator's properties.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

impl std::fmt::Display for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.servers)
    }
}

fn check_topic<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaJournalError> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| KafkaJournalError::Unreachable {
            brokers: brokers.into(),
            source,
        })?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Err(KafkaJournalError::NoTopic {
            brokers: brokers.into(),
            topic: topic.into(),
        });
    };
    if t.partitions().len() != 1 {
        return Err(KafkaJournalError::BadTopic {
            topic: topic.into(),
            why: format!(
                "it has {} partitions; the journal is one totally ordered log: create it with exactly one",
                t.partitions().len()
            ),
        });
    }
    Ok(())
}

/// Refuses a topic whose `cleanup.policy` includes `compact` (compaction keeps one record per
/// key and would delete history). A broker that does not answer DescribeConfigs is logged,
/// not refused.
fn check_cleanup_policy(brokers: &Brokers, topic: &str) -> Result<(), KafkaJournalError> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = brokers.client_config().create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let specs = [ResourceSpecifier::Topic(topic)];
    let policy = match block_on(admin.describe_configs(&specs, &opts)) {
        Ok(results) => results
            .into_iter()
            .flatten()
            .find_map(|r| r.get("cleanup.policy").and_then(|e| e.value.clone())),
        Err(e) => {
            tracing::warn!(error = %e, topic, "could not read the topic's cleanup.policy (DescribeConfigs); make sure it is `delete`");
            return Ok(());
        }
    };
    match policy {
        Some(p) if p.contains("compact") => Err(KafkaJournalError::BadTopic {
            topic: topic.into(),
            why: format!("cleanup.policy = {p}: compaction deletes history; use `delete` with retention longer than a full replay needs"),
        }),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(topic, "the broker did not report the topic's cleanup.policy; make sure it is `delete`");
            Ok(())
        }
    }
}

/// Runs a future to completion on this thread (the admin client's futures are driven by
/// librdkafka's own threads; this only waits for them).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Writes journal batches to Kafka, and fences itself when a newer primary has started.
///
/// Fencing (see docs/failover.md): a new primary first appends an epoch-start record with a
/// higher epoch. The writer knows the offset its next record must land on; a record that lands
/// further on means someone else wrote in between, so before counting it durable the writer
/// reads the records in the gap. A higher epoch among them means this writer is fenced: it
/// reports [`KafkaJournal::fenced`] and nothing it wrote after the gap is ever acknowledged.
pub struct KafkaJournal {
    producer: BaseProducer<DeliveryContext>,
    brokers: Brokers,
    topic: String,
    epoch: u64,
    deliveries: Arc<Mutex<VecDeque<(i64, u64)>>>,
    failed: Arc<Mutex<Option<String>>>,
    /// Offset the next acknowledged record must have if nobody else wrote.
    expected_offset: i64,
    delivered: u64,
    sent: u64,
    last_delivered: u64,
    last_progress: Instant,
    stall_after: Duration,
    /// Largest record written: bigger batches are split ([`record::split`]).
    max_record: usize,
    fenced: Option<String>,
    gap_reader: Option<BaseConsumer>,
    /// The offset `gap_reader` reads next (-1: not positioned).
    gap_next: i64,
    /// Where this writer's records sit, for resends ([`KafkaJournal::set_offset_index`]).
    index: Option<Arc<OffsetIndex>>,
}

impl KafkaJournal {
    /// Connects an idempotent producer; fails clearly if the brokers or the topic are missing.
    /// `durable_seq` is the last sequence already in the topic and `next_offset` the offset
    /// after the last record read (both from recovery); `epoch` is this writer's epoch.
    ///
    /// # Errors
    /// [`KafkaJournalError`].
    pub fn connect(
        brokers: &Brokers,
        topic: &str,
        durable_seq: u64,
        next_offset: i64,
        epoch: u64,
        stall_after: Duration,
    ) -> Result<Self, KafkaJournalError> {
        let deliveries = Arc::new(Mutex::new(VecDeque::new()));
        let failed = Arc::new(Mutex::new(None));
        let unknown_offset_every = crate::fault::injected("kafka-unknown-offset");
        if let Some(n) = unknown_offset_every {
            tracing::warn!(
                every = n,
                "CALDERA_FAULT: kafka-unknown-offset: acknowledgements will arrive without their offset"
            );
        }
        let producer: BaseProducer<DeliveryContext> = brokers
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.max.bytes", "8388608")
            .create_with_context(DeliveryContext {
                deliveries: Arc::clone(&deliveries),
                failed: Arc::clone(&failed),
                unknown_offset_every,
                acknowledged: std::sync::atomic::AtomicU64::new(0),
            })?;
        check_topic(
            producer.client(),
            &brokers.servers,
            topic,
            Duration::from_secs(10),
        )?;
        check_cleanup_policy(brokers, topic)?;
        Ok(Self {
            producer,
            brokers: brokers.clone(),
            topic: topic.into(),
            epoch,
            deliveries,
            failed,
            expected_offset: next_offset,
            delivered: durable_seq,
            sent: durable_seq,
            last_delivered: durable_seq,
            last_progress: Instant::now(),
            stall_after,
            max_record: DEFAULT_MAX_RECORD,
            fenced: None,
            index: None,
            gap_reader: None,
            gap_next: -1,
        })
    }

    /// Sets the largest record this writer produces (at least 64 KiB): a batch larger than it
    /// is split into event-only parts and a final record ([`record::split`]).
    pub fn set_max_record_bytes(&mut self, max: usize) {
        self.max_record = max.max(64 << 10);
    }

    /// This writer's epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps a writer connected ahead of time warm: a metadata request on its connection (a
    /// connection left idle while the node is a standby may be closed by the broker, and the
    /// reconnect would land on the failover path). Returns whether the broker answered.
    pub fn keep_warm(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .is_ok()
    }

    /// Re-targets a writer connected ahead of time (a standby keeps one ready so promotion
    /// skips the producer's start-up): its epoch, the offset after the last record read and
    /// the last sequence in the topic.
    pub fn retarget(&mut self, epoch: u64, next_offset: i64, durable_seq: u64) {
        self.epoch = epoch;
        self.resume_after(next_offset - 1, durable_seq);
    }

    /// Appends this writer's epoch-start record (a batch without commands) and waits for the
    /// broker to acknowledge it. Returns its offset: the caller reads the topic up to it (to
    /// pick up anything an old primary wrote before it), then calls
    /// [`KafkaJournal::resume_after`]. `None` when the acknowledgement carried no usable offset
    /// (see [`KafkaJournal::durable`]): the caller then reads up to the first record of the
    /// epoch.
    ///
    /// # Errors
    /// When the broker does not acknowledge within `timeout`.
    pub fn start_epoch(
        &mut self,
        record: &[u8],
        timeout: Duration,
    ) -> Result<Option<i64>, JournalError> {
        let before = self.deliveries.lock().map(|d| d.len()).unwrap_or(0);
        let rec = BaseRecord::with_opaque_to(&self.topic, 0usize)
            .partition(0)
            .key(KEY)
            .payload(record);
        self.producer.send(rec).map_err(|(e, _)| {
            JournalError::Unavailable(format!("producing the epoch record: {e}"))
        })?;
        // Poll in 1 ms steps (flush() sleeps in coarser steps; this is the failover path).
        let deadline = Instant::now() + timeout;
        while self.deliveries.lock().map(|d| d.len()).unwrap_or(0) <= before {
            if let Some(f) = self.failed.lock().ok().and_then(|f| f.clone()) {
                return Err(JournalError::Fatal(f));
            }
            if Instant::now() > deadline {
                return Err(JournalError::Unavailable(
                    "the epoch record was not acknowledged in time".into(),
                ));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        let mut d = self
            .deliveries
            .lock()
            .map_err(|_| JournalError::Fatal("delivery state poisoned".into()))?;
        let (offset, _) = *d.back().ok_or_else(|| {
            JournalError::Unavailable("the epoch record was not acknowledged".into())
        })?;
        d.truncate(before);
        Ok(self.usable(offset).then_some(offset))
    }

    /// Whether a record of this writer can have landed at `offset`: never before the offset
    /// after its last known record. A broker's answer to a retried duplicate (after it
    /// restarted, or lost the first answer) can carry no offset (-1: Apache Kafka when it no
    /// longer holds the original's metadata) or a wrong one (tansu 0.6: 0).
    fn usable(&self, offset: i64) -> bool {
        offset >= self.expected_offset
    }

    /// Continues after the epoch record at `offset`, with everything up to `durable_seq` in
    /// the topic (the caller caught up to the record).
    pub fn resume_after(&mut self, offset: i64, durable_seq: u64) {
        self.expected_offset = offset + 1;
        self.delivered = durable_seq;
        self.sent = durable_seq;
        self.last_delivered = durable_seq;
        self.last_progress = Instant::now();
    }

    /// Notes in `index` where the history stands after each of this writer's records that the
    /// broker acknowledged at a known offset (and that completed a batch).
    pub fn set_offset_index(&mut self, index: Arc<OffsetIndex>) {
        self.index = Some(index);
    }

    /// Why this writer is fenced (a newer epoch started), if it is. Sticky.
    #[must_use]
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// Sends one batch (asynchronously); returns the last durable sequence.
    ///
    /// # Errors
    /// A description of a client error (a full local queue is waited out, not an error), when
    /// fenced, or a failed delivery. A broker that stopped acknowledging is not an error here:
    /// the batch is queued, and [`KafkaJournal::durable`] reports the stall.
    pub fn append(&mut self, _first: u64, last: u64, bytes: &[u8]) -> Result<u64, JournalError> {
        if let Some(f) = &self.fenced {
            return Err(JournalError::Fenced(f.clone()));
        }
        if bytes.len() > self.max_record {
            // One command's events can exceed any record limit: parts first, then the final
            // record; only the final one's delivery makes the batch durable.
            let parts = record::split(bytes, self.max_record).map_err(|e| {
                JournalError::Fatal(format!("splitting a batch ending at {last}: {e}"))
            })?;
            tracing::debug!(
                parts = parts.len(),
                bytes = bytes.len(),
                last,
                "batch split into records"
            );
            let n = parts.len();
            for (i, p) in parts.iter().enumerate() {
                let upto = if i + 1 == n { last } else { self.sent };
                self.produce(p, upto)?;
            }
        } else {
            self.produce(bytes, last)?;
        }
        self.sent = self.sent.max(last);
        // The record is queued: the append itself succeeded, whatever the broker does now. A
        // stall is [`KafkaJournal::durable`]'s to report (the journal stage polls it), never
        // the append's: a failed append is sent again, and this batch would then be in the
        // topic twice — the second time with the commands taken since, a record that overlaps
        // the first one and that replay refuses (`Diverged`).
        match self.durable() {
            Err(JournalError::Unavailable(_)) => Ok(self.delivered),
            other => other,
        }
    }

    /// Queues one record whose delivery makes everything up to `upto` durable.
    fn produce(&mut self, bytes: &[u8], upto: u64) -> Result<(), JournalError> {
        let mut rec = BaseRecord::with_opaque_to(&self.topic, upto as usize)
            .partition(0)
            .key(KEY)
            .payload(bytes);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(JournalError::Unavailable(format!(
                        "producing to Kafka: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Serves delivery callbacks; returns the last sequence the broker acknowledged (and that
    /// no newer epoch precedes).
    ///
    /// # Errors
    /// A delivery failure, fencing, or no acknowledgement for `stall_after` while batches are
    /// pending.
    pub fn durable(&mut self) -> Result<u64, JournalError> {
        if let Some(f) = &self.fenced {
            return Err(JournalError::Fenced(f.clone()));
        }
        self.producer.poll(Duration::ZERO);
        if let Some(f) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(JournalError::Fatal(f));
        }
        loop {
            // The next record acknowledged at a usable offset, and the last sequence of every
            // record acknowledged before it without one ([`KafkaJournal::usable`]). Those
            // records are durable and were produced in order, so they lie between the expected
            // offset and the next known one: that gap is checked for a newer epoch like any
            // other. Until a later record is acknowledged with its offset (a heartbeat follows
            // within `heartbeat_ms`), they are held.
            let next = self.deliveries.lock().ok().and_then(|d| {
                let known = d.iter().position(|(offset, _)| self.usable(*offset))?;
                let before = d.iter().take(known).map(|(_, last)| *last).max();
                Some((known, d[known].0, d[known].1, before.unwrap_or(0)))
            });
            let Some((unknown, offset, own, before)) = next else {
                break;
            };
            let last = own.max(before);
            // The record completed a batch (its commands carry the history past every record
            // before it; parts and heartbeats do not): a place a resend may start after.
            let completes = own > before.max(self.delivered);
            if offset != self.expected_offset {
                match self.check_gap(self.expected_offset, offset) {
                    Ok(Gap::Clear) => {}
                    Ok(Gap::Fenced(why)) => {
                        tracing::error!(why, "fenced by a newer primary");
                        self.fenced = Some(why.clone());
                        return Err(JournalError::Fenced(why));
                    }
                    // Not read yet: hold (not durable) and go on checking on the next call.
                    Ok(Gap::Pending) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not check the offset gap yet");
                        break;
                    }
                }
            }
            if unknown > 0 {
                tracing::warn!(
                    records = unknown,
                    before = offset,
                    "records acknowledged without a usable offset (a duplicate's answer): placed by the next one's"
                );
            }
            if let Ok(mut d) = self.deliveries.lock() {
                d.drain(..=unknown);
            }
            self.expected_offset = offset + 1;
            self.delivered = self.delivered.max(last);
            if let (true, Some(index)) = (completes, &self.index) {
                index.record(Checkpoint {
                    segment: 0,
                    next_offset: offset + 1,
                    epoch: self.epoch,
                    last_seq: self.delivered,
                });
            }
        }
        let d = self.delivered;
        if d != self.last_delivered || d >= self.sent {
            self.last_delivered = d;
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() > self.stall_after {
            return Err(JournalError::Unavailable(format!(
                "Kafka has not acknowledged sequences {}..={} for {:?}",
                d + 1,
                self.sent,
                self.last_progress.elapsed()
            )));
        }
        Ok(d)
    }

    /// Reads offsets `from..to` (records someone else wrote between two of ours, or ours that
    /// were acknowledged without an offset) without blocking: whatever the reader has fetched
    /// is checked, and [`Gap::Pending`] says to call again (the journal thread keeps appending
    /// meanwhile: some brokers serve a record only once a later batch has landed). Every record
    /// read is checked for a higher epoch, so a check resumes where the last one stopped.
    fn check_gap(&mut self, from: i64, to: i64) -> Result<Gap, KafkaJournalError> {
        if self.gap_reader.is_none() {
            self.gap_reader = Some(reader_consumer(&self.brokers)?);
            self.gap_next = -1;
        }
        let consumer = self.gap_reader.as_ref().expect("created");
        let next = &mut self.gap_next;
        // Records before `gap_next` were read and checked by an earlier call (`from` only grows).
        if *next < from || *next > to {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, 0, Offset::Offset(from))?;
            consumer.assign(&tpl)?;
            *next = from;
        }
        while *next < to {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    if m.offset() < *next {
                        continue;
                    }
                    *next = m.offset() + 1;
                    let epoch = m
                        .payload()
                        .and_then(|p| record::root(p).ok())
                        .map_or(0, |b| b.epoch());
                    if epoch > self.epoch && crate::recover::epoch_acceptable(self.epoch, epoch) {
                        return Ok(Gap::Fenced(format!(
                            "epoch {epoch} started at offset {} (this writer has epoch {})",
                            m.offset(),
                            self.epoch
                        )));
                    }
                    if epoch != self.epoch {
                        tracing::warn!(
                            offset = m.offset(),
                            epoch,
                            "a record of an older epoch between two of ours (ignored by readers)"
                        );
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => return Ok(Gap::Pending),
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok(Gap::Clear)
    }

    /// Waits for every pending batch (bounded by `timeout`).
    ///
    /// # Errors
    /// When not everything was acknowledged in time.
    pub fn close(&mut self, timeout: Duration) -> Result<(), JournalError> {
        self.producer
            .flush(timeout)
            .map_err(|e| JournalError::Unavailable(format!("flushing Kafka producer: {e}")))?;
        self.durable().map(|_| ())
    }
}

impl JournalWriter for KafkaJournal {
    fn append(&mut self, first: u64, last: u64, bytes: &[u8]) -> Result<u64, JournalError> {
        KafkaJournal::append(self, first, last, bytes)
    }
    fn durable(&mut self) -> Result<u64, JournalError> {
        KafkaJournal::durable(self)
    }
    fn synced(&self) -> u64 {
        self.delivered
    }
    fn tick(&mut self) -> Result<(), JournalError> {
        KafkaJournal::durable(self).map(|_| ())
    }
    fn close(&mut self) -> Result<(), JournalError> {
        KafkaJournal::close(self, Duration::from_secs(30))
    }
}

fn reader_consumer(brokers: &Brokers) -> Result<BaseConsumer, KafkaError> {
    brokers
        .client_config()
        .set("group.id", format!("caldera-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.message.max.bytes", "8388608")
        // Some brokers (tansu 0.6) hold every fetch for the full wait even when data is
        // available; a short wait keeps catch-up fast and costs little on Apache Kafka.
        .set("fetch.wait.max.ms", "1")
        // After a failed fetch librdkafka waits 500 ms by default: longer than a failover
        // timeout, so a standby would hear nothing from a live primary for that long.
        .set("fetch.error.backoff.ms", "10")
        // A reader placed at an offset retention has removed starts at the oldest one kept
        // (and sees that history is missing), never at the end.
        .set("auto.offset.reset", "earliest")
        .create()
}

/// Reads journal batches from the topic.
pub struct KafkaReader {
    consumer: BaseConsumer,
    /// For a new consumer when the reader is placed again ([`KafkaReader::reseek`]).
    brokers: Brokers,
    next_offset: i64,
    topic: String,
    /// Placed at an offset ([`KafkaReader::open_at`]) and no record at or before it read yet.
    landing: Option<Landing>,
}

/// A reader placed at an offset that must not be skipped ([`KafkaReader::open_at`]).
#[derive(Clone, Copy, Debug)]
struct Landing {
    /// The offset asked for.
    want: i64,
    /// How many records before it the next try starts.
    back: i64,
    /// When the current try started.
    since: Instant,
}

/// How long a reader placed at an offset waits for a first record before it starts further
/// back ([`KafkaReader::open_at`]).
const LANDING_WAIT: Duration = Duration::from_millis(20);

/// How many records before its offset a reader placed at one starts ([`KafkaReader::open_at`]):
/// reading them costs less than a second try.
const LANDING_MARGIN: i64 = 4;

/// One record read from the topic.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// Its offset.
    pub offset: i64,
    /// The `JournalBatch` bytes.
    pub payload: Vec<u8>,
}

impl KafkaReader {
    /// A reader of partition 0 from the beginning.
    ///
    /// # Errors
    /// [`KafkaJournalError`] when the brokers or the topic are missing.
    pub fn open(brokers: &Brokers, topic: &str) -> Result<Self, KafkaJournalError> {
        Self::open_from(brokers, topic, Offset::Beginning, 0)
    }

    /// A reader of partition 0 from `offset` (an [`crate::history::OffsetIndex`] checkpoint).
    ///
    /// A broker may answer a fetch from an offset inside a batch of records produced together
    /// with the batch after it (tansu 0.6 does; Kafka returns the batch holding the offset):
    /// so the reader starts a few records (4) before `offset`, and when the first
    /// record read still lies past `offset`, or none comes for 20 ms (the offset may be inside
    /// the topic's last batch), it starts again twice as far back (the beginning at worst).
    /// No record from `offset` on is skipped; records before it are returned too.
    ///
    /// # Errors
    /// [`KafkaJournalError`] when the brokers or the topic are missing.
    pub fn open_at(brokers: &Brokers, topic: &str, offset: i64) -> Result<Self, KafkaJournalError> {
        let from = offset - LANDING_MARGIN;
        if from <= 0 {
            return Self::open(brokers, topic);
        }
        let mut r = Self::open_from(brokers, topic, Offset::Offset(from), from)?;
        r.landing = Some(Landing {
            want: offset,
            back: LANDING_MARGIN * 2,
            since: Instant::now(),
        });
        Ok(r)
    }

    fn open_from(
        brokers: &Brokers,
        topic: &str,
        from: Offset,
        next_offset: i64,
    ) -> Result<Self, KafkaJournalError> {
        let consumer = reader_consumer(brokers)?;
        check_topic(
            consumer.client(),
            &brokers.servers,
            topic,
            Duration::from_secs(10),
        )?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, from)?;
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            brokers: brokers.clone(),
            next_offset,
            topic: topic.to_string(),
            landing: None,
        })
    }

    /// The offset after the last record returned (0 before any).
    #[must_use]
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The topic's end as the broker reports it (its high watermark): past
    /// [`KafkaReader::next_offset`] when the topic holds records this reader has not received, so
    /// that a reader hearing nothing is stalled, not following a silent writer. (Some brokers,
    /// tansu 0.6 among them, report the base offset of the last produce batch + 1; a primary's
    /// idle heartbeats are one record per batch, so that is exact when it matters.)
    ///
    /// # Errors
    /// The broker did not answer within `timeout`, or answered with an error: the end is then
    /// unknown, which is no evidence either way.
    pub fn topic_end(&self, topic: &str, timeout: Duration) -> Result<i64, KafkaJournalError> {
        let (_, high) = self.consumer.fetch_watermarks(topic, 0, timeout)?;
        Ok(high)
    }

    /// Re-positions the consumer at [`KafkaReader::next_offset`] (restarts a stalled fetch).
    ///
    /// # Errors
    /// Client errors.
    pub fn reseek(&mut self) -> Result<(), KafkaJournalError> {
        self.place(Offset::Offset(self.next_offset))
    }

    /// Re-positions the reader at `from`, with a new consumer: assigning a consumer again while
    /// its last assignment's fetch is still stopping can abort the process inside librdkafka
    /// (2.12: "rd_kafka_assignment_partition_stopped: Assertion `rktp->rktp_started' failed",
    /// librdkafka issue 5573; seen in a test whose readers step back from a checkpoint).
    fn place(&mut self, from: Offset) -> Result<(), KafkaJournalError> {
        let consumer = reader_consumer(&self.brokers)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, from)?;
        consumer.assign(&tpl)?;
        self.consumer = consumer;
        Ok(())
    }

    /// The next record, or `None` when nothing arrived for `idle`.
    ///
    /// # Errors
    /// Client errors.
    pub fn next_record(
        &mut self,
        idle: Duration,
    ) -> Result<Option<KafkaRecord>, KafkaJournalError> {
        let deadline = Instant::now() + idle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.poll(left) {
                Some(Ok(m)) => {
                    let record = KafkaRecord {
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    };
                    drop(m);
                    if self.landed_past(Some(record.offset))? {
                        continue;
                    }
                    self.next_offset = record.offset + 1;
                    return Ok(Some(record));
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) if passing(&e) => {
                    // librdkafka reconnects and fetches again by itself: wait through it.
                    tracing::debug!(error = %e, "Kafka reader: the connection failed; librdkafka retries");
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    self.landed_past(None)?;
                    return Ok(None);
                }
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// After [`KafkaReader::open_at`], until a record at or before its offset is read: whether
    /// the record read (`offset`; `None`: none came) shows the fetch landed past the offset
    /// asked for — a record further on, or nothing for [`LANDING_WAIT`] (the offset may be
    /// inside the topic's last batch) — in which case the reader starts again further back.
    fn landed_past(&mut self, offset: Option<i64>) -> Result<bool, KafkaJournalError> {
        let Some(l) = self.landing else {
            return Ok(false);
        };
        match offset {
            Some(o) if o <= l.want => {
                self.landing = None;
                return Ok(false);
            }
            None if l.since.elapsed() < LANDING_WAIT => return Ok(false),
            _ => {}
        }
        let from = l.want - l.back;
        if from > 0 {
            self.place(Offset::Offset(from))?;
            self.landing = Some(Landing {
                want: l.want,
                back: l.back * 2,
                since: Instant::now(),
            });
        } else {
            self.place(Offset::Beginning)?;
            self.landing = None;
        }
        tracing::debug!(
            want = l.want,
            landed = ?offset,
            from,
            "Kafka reader landed past its offset: starting further back"
        );
        Ok(true)
    }

    /// The next batch payload, or `None` when nothing arrived for `idle`.
    ///
    /// # Errors
    /// Client errors.
    pub fn next(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, KafkaJournalError> {
        Ok(self.next_record(idle)?.map(|r| r.payload))
    }
}

/// Whether a consumer error is one librdkafka recovers from by itself (it reconnects and fetches
/// again): a broker restarting or unreachable for a while, a request timed out, leadership
/// moving. A reader waits through these; a resend, a recovery or a standby must not fail on
/// them.
fn passing(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageConsumption(
            C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::Resolve
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::BrokerNotAvailable
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
        )
    )
}

/// Applies one Kafka record to `engine` under the epoch rule ([`crate::recover::apply_frame`]).
///
/// # Errors
/// [`RecoverError`] when the record does not decode or does not follow the engine.
pub fn apply_record(
    engine: &mut Engine,
    payload: &[u8],
    out: &mut Recovered,
) -> Result<Applied, RecoverError> {
    // Decoded (and verified) once; the record carries its own sequence range. A record that
    // is not a journal batch (anyone with produce rights can write one) is skipped and
    // counted, not fatal: if it held history, the next batch does not follow and replay stops
    // with `Diverged` there.
    let b = match record::decode_commands(payload) {
        Ok(b) => b,
        Err(e) => {
            out.undecodable += 1;
            tracing::error!(error = %e, bytes = payload.len(), "Kafka record is not a journal batch: skipped");
            return Ok(Applied::Undecodable);
        }
    };
    let (first, last) = (b.first_seq, b.last_seq);
    apply_batch(engine, &b, first, last, out)
}

/// Applies one record ([`apply_record`]) and, when it re-ran commands, notes where the history
/// stands after it in `index` (resends then start near their sequence).
///
/// # Errors
/// As [`apply_record`].
pub fn apply_and_index(
    engine: &mut Engine,
    record: &KafkaRecord,
    out: &mut Recovered,
    index: Option<&OffsetIndex>,
) -> Result<Applied, RecoverError> {
    let applied = apply_record(engine, &record.payload, out)?;
    if let (Applied::Batch, Some(index)) = (applied, index) {
        index.record(Checkpoint {
            segment: 0,
            next_offset: record.offset + 1,
            epoch: out.last_epoch,
            last_seq: engine.last_seq(),
        });
    }
    Ok(applied)
}

/// Rebuilds the engine from the whole topic (no snapshots for the Kafka journal; see ADR 0004),
/// reading until nothing arrives for `idle`, and notes checkpoints in `index`. Returns the
/// reader too, positioned after the last record, to keep following.
///
/// # Errors
/// [`KafkaJournalError`].
pub fn recover(
    brokers: &Brokers,
    topic: &str,
    config: &EngineConfig,
    idle: Duration,
    index: Option<&OffsetIndex>,
) -> Result<(Engine, Recovered, KafkaReader), KafkaJournalError> {
    let mut engine = Engine::new(config.clone()).map_err(RecoverError::from)?;
    let mut out = Recovered::default();
    let mut reader = KafkaReader::open(brokers, topic)?;
    let t = Instant::now();
    while let Some(r) = reader.next_record(idle)? {
        apply_and_index(&mut engine, &r, &mut out, index)?;
    }
    out.elapsed = t.elapsed().saturating_sub(idle);
    Ok((engine, out, reader))
}
