//! The Kafka journal: one topic, partition 0 per engine shard, one Kafka record per journal
//! batch (many events per record), idempotent producer with `acks=all`.
//!
//! Durability = the broker acknowledged the record. During an outage records are held and
//! retried without limit (`message.timeout.ms=0`); [`KafkaJournal::durable`] reports a stall
//! after `stall_after`, which the gateway turns into `JournalUnavailable` rejects until
//! deliveries resume. Nothing here uses Kafka transactions or the broker's high watermark:
//! readers poll until idle and replay by sequence numbers (works on Apache Kafka, Redpanda and
//! tansu alike).

use crate::record;
use crate::recover::{apply_frame, RecoverError, Recovered};
use caldera_engine::{Engine, EngineConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// A client error.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// Replay failed.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}

struct DeliveryContext {
    delivered: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, last_seq: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_max(last_seq as u64, Ordering::SeqCst);
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

const KEY: &[u8] = b"shard-0";

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
    let ok = md
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if ok {
        Ok(())
    } else {
        Err(KafkaJournalError::NoTopic {
            brokers: brokers.into(),
            topic: topic.into(),
        })
    }
}

/// Writes journal batches to Kafka.
pub struct KafkaJournal {
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    delivered: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
    sent: u64,
    last_delivered: u64,
    last_progress: Instant,
    stall_after: Duration,
}

impl KafkaJournal {
    /// Connects an idempotent producer; fails clearly if the brokers or the topic are missing.
    /// `durable_seq` is the last sequence already in the topic (from recovery).
    ///
    /// # Errors
    /// [`KafkaJournalError`].
    pub fn connect(
        brokers: &str,
        topic: &str,
        durable_seq: u64,
        stall_after: Duration,
    ) -> Result<Self, KafkaJournalError> {
        let delivered = Arc::new(AtomicU64::new(durable_seq));
        let failed = Arc::new(Mutex::new(None));
        let producer: BaseProducer<DeliveryContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.max.bytes", "8388608")
            .create_with_context(DeliveryContext {
                delivered: Arc::clone(&delivered),
                failed: Arc::clone(&failed),
            })?;
        check_topic(producer.client(), brokers, topic, Duration::from_secs(10))?;
        Ok(Self {
            producer,
            topic: topic.into(),
            delivered,
            failed,
            sent: durable_seq,
            last_delivered: durable_seq,
            last_progress: Instant::now(),
            stall_after,
        })
    }

    /// Sends one batch (asynchronously); returns the last durable sequence.
    ///
    /// # Errors
    /// A description of a client error (a full local queue is waited out, not an error).
    pub fn append(&mut self, _first: u64, last: u64, bytes: &[u8]) -> Result<u64, String> {
        let mut rec = BaseRecord::with_opaque_to(&self.topic, last as usize)
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
                Err((e, _)) => return Err(format!("producing to Kafka: {e}")),
            }
        }
        self.sent = last;
        self.durable()
    }

    /// Serves delivery callbacks; returns the last sequence the broker acknowledged.
    ///
    /// # Errors
    /// A delivery failure, or no acknowledgement for `stall_after` while batches are pending.
    pub fn durable(&mut self) -> Result<u64, String> {
        self.producer.poll(Duration::ZERO);
        if let Some(f) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(f);
        }
        let d = self.delivered.load(Ordering::SeqCst);
        if d != self.last_delivered || d >= self.sent {
            self.last_delivered = d;
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() > self.stall_after {
            return Err(format!(
                "Kafka has not acknowledged sequences {}..={} for {:?}",
                d + 1,
                self.sent,
                self.last_progress.elapsed()
            ));
        }
        Ok(d)
    }

    /// Waits for every pending batch (bounded by `timeout`).
    ///
    /// # Errors
    /// When not everything was acknowledged in time.
    pub fn close(&mut self, timeout: Duration) -> Result<(), String> {
        self.producer
            .flush(timeout)
            .map_err(|e| format!("flushing Kafka producer: {e}"))?;
        self.durable().map(|_| ())
    }
}

/// Reads journal batches from the topic.
pub struct KafkaReader {
    consumer: BaseConsumer,
}

impl KafkaReader {
    /// A reader of partition 0 from the beginning.
    ///
    /// # Errors
    /// [`KafkaJournalError`] when the brokers or the topic are missing.
    pub fn open(brokers: &str, topic: &str) -> Result<Self, KafkaJournalError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("caldera-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.message.max.bytes", "8388608")
            // Some brokers (tansu 0.6) hold every fetch for the full wait even when data is
            // available; a short wait keeps catch-up fast and costs little on Apache Kafka.
            .set("fetch.wait.max.ms", "1")
            .create()?;
        check_topic(consumer.client(), brokers, topic, Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        Ok(Self { consumer })
    }

    /// The next batch payload, or `None` when nothing arrived for `idle`.
    ///
    /// # Errors
    /// Client errors.
    pub fn next(&mut self, idle: Duration) -> Result<Option<Vec<u8>>, KafkaJournalError> {
        let deadline = Instant::now() + idle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.consumer.poll(left) {
                Some(Ok(m)) => return Ok(Some(m.payload().unwrap_or_default().to_vec())),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(None),
            }
        }
    }
}

/// Rebuilds the engine from the whole topic (no snapshots for the Kafka journal; see ADR 0004),
/// reading until nothing arrives for `idle`.
///
/// # Errors
/// [`KafkaJournalError`].
pub fn recover(
    brokers: &str,
    topic: &str,
    config: &EngineConfig,
    idle: Duration,
) -> Result<(Engine, Recovered), KafkaJournalError> {
    let mut engine = Engine::new(config.clone()).map_err(RecoverError::from)?;
    let mut out = Recovered::default();
    let mut reader = KafkaReader::open(brokers, topic)?;
    let t = Instant::now();
    while let Some(payload) = reader.next(idle)? {
        let b = record::root(&payload).map_err(RecoverError::from)?;
        let (first, last) = (b.first_seq(), b.last_seq());
        apply_frame(&mut engine, &payload, first, last, &mut out)?;
    }
    out.elapsed = t.elapsed().saturating_sub(idle);
    Ok((engine, out))
}
