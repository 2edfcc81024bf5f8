//! The partitions of an ingest stream: each a log with its own producer
//! table (`DATA_DIR/wal/<name>-p<p>` and its `.producers` snapshot; one
//! partition: the plain stream), fed by the one server.
//!
//! A producer sticks to one partition: the partition whose table already
//! knows it (so a producer resuming after a restart, or after the
//! partition count grew, continues where its sequence numbers are), else
//! the one its id hashes to (FNV-1a modulo the count). Exactly-once per
//! producer then holds per partition, as for one log.
//!
//! Also [`PartitionReceiver`], the receiver of partitions 1.. (the server
//! runs as partition 0's receiver and stores into every partition): it
//! only marks its stream listening and waits for the stop.
//!
//! Limits: `producers_max` applies to each partition's table.
//! Must never: move a producer that a partition's table knows to another
//! partition.

use std::sync::Arc;

use super::producers::ProducerTable;
use crate::dstream::BoxError;
use crate::receiver::{sleep_unless_stopping, Receiver, ReceiverContext, ReceiverState, STOP_POLL};

/// One partition: its stream's context and its producer table.
pub(crate) struct Part {
    pub(crate) ctx: ReceiverContext,
    pub(crate) table: Arc<ProducerTable>,
}

/// The partition producer `id` uses among `parts`.
pub(super) fn partition_of(parts: &[Part], id: &[u8]) -> usize {
    debug_assert!(!parts.is_empty());
    if parts.len() == 1 {
        return 0;
    }
    if let Some(p) = parts.iter().position(|p| p.table.contains(id)) {
        return p;
    }
    let h = id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % parts.len() as u64) as usize
}

/// The receiver of an ingest stream's partitions after the first: the
/// server stores into them; this keeps their stream's life cycle.
pub(crate) struct PartitionReceiver;

impl Receiver for PartitionReceiver {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        ctx.set_state(ReceiverState::Listening, None);
        while !sleep_unless_stopping(&ctx, STOP_POLL) {}
        Ok(())
    }
}
