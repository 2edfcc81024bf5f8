//! The stream-creating constructors of [`StreamingContext`]: in-memory
//! queues and any [`Source`]; write-ahead-log streams; receiver-fed streams
//! (custom receivers, `socket_text_stream`, `text_file_stream`). The
//! receivers themselves live in `crate::receiver` and never see the
//! context: a constructor here validates, builds the receiver, opens the
//! stream's log and registers both.
//!
//! Every named stream's name passes [`validate_stream_name`] before any
//! path is built from it; its files are where [`crate::layout`] puts them.
//!
//! Limits: a stream name is 1 to [`crate::names::STREAM_NAME_BYTES_MAX`]
//! bytes; receivers register only before `start()`.
//! Must never: open a log, or create a file, for a name the rule refuses.

use std::path::Path;
use std::sync::Arc;

use super::{ContextError, PendingReceiver, Phase, StreamingContext};
use crate::dstream::{BoxError, DStream, Data, Queue, Source};
use crate::names::validate_stream_name;
use crate::receiver::dir::{self, DirConfig, DirStats};
use crate::receiver::socket::{self, SocketConfig, SocketStats};
use crate::receiver::{Receiver, ReceiverContext, ReceiverError, StreamShared};
use crate::source::{Decoder, WalSource};
use crate::wal::Wal;
use crate::{layout, Result};

impl StreamingContext {
    /// A stream of the batches pushed to `queue` (Spark's `queueStream`).
    pub fn queue_stream<T: Data>(&self, queue: &Queue<T>) -> DStream<T> {
        DStream::from_source(&self.graph, "queue", Arc::new(queue.clone()))
    }

    /// A stream over any [`Source`]; `kind` is its auto-name base.
    pub fn source_stream<T: Data>(
        &self,
        kind: &'static str,
        src: Arc<dyn Source<T>>,
    ) -> DStream<T> {
        DStream::from_source(&self.graph, kind, src)
    }

    /// A stream whose input is the write-ahead log `name` under the data
    /// directory (`DATA_DIR/wal/<name>`), opened (and recovered) now.
    /// Returns the stream, named `name`, and the log, to which receivers or
    /// user code append; an append is acknowledged once durable, and each
    /// acknowledged record lands in exactly one batch. `name` must pass
    /// `validate_stream_name`.
    pub fn wal_stream<T: Data>(
        &self,
        name: &str,
        decode: impl Fn(&[u8]) -> std::result::Result<T, BoxError> + Send + Sync + 'static,
    ) -> Result<(DStream<T>, Arc<Wal>)> {
        let wal = self.open_stream_wal("wal_stream", name)?;
        let src = WalSource::new(wal.clone(), Arc::new(decode));
        let stream = DStream::from_source(&self.graph, "wal", Arc::new(src)).name(name);
        Ok((stream, wal))
    }

    /// [`StreamingContext::wal_stream`] of UTF-8 text records.
    pub fn wal_text_stream(&self, name: &str) -> Result<(DStream<String>, Arc<Wal>)> {
        self.wal_stream(name, crate::receiver::utf8)
    }

    /// Opens (and recovers) `DATA_DIR/wal/<name>` for a stream, after
    /// checking the name: every named stream comes through here.
    fn open_stream_wal(&self, what: &'static str, name: &str) -> Result<Arc<Wal>> {
        let dir = self
            .data_dir
            .as_ref()
            .ok_or_else(|| ContextError::NoDataDir {
                call: what,
                stream: name.to_string(),
            })?;
        validate_stream_name(name).map_err(ContextError::from)?;
        let log = layout::wal_dir(dir, name);
        if let Some(id) = self.data_dir_id {
            super::identity::check_log(dir, &log, id)?;
        }
        let (wal, report) = Wal::open(&log, self.wal_config.clone())?;
        if let Some(id) = self.data_dir_id {
            super::identity::ensure_log_id(&log, id)?;
        }
        if let Some(t) = &report.torn_tail {
            tracing::warn!(stream = name, segment = %t.path.display(), bytes = t.bytes_cut, "recovered the input log: cut a torn tail of never-acknowledged bytes");
        }
        let wal = Arc::new(wal);
        self.input_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), wal.clone()));
        Ok(wal)
    }

    /// `(stream name, log)` of every input log this context opened (WAL and
    /// receiver streams), for metrics and status.
    pub fn input_logs(&self) -> Vec<(String, Arc<Wal>)> {
        self.input_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A stream fed by `receiver`, through the WAL `DATA_DIR/wal/<name>`
    /// (opened and recovered now); `decode` maps a stored record to `T`.
    /// The receiver's thread starts at `start()` and is stopped first at
    /// `stop()` (it stops storing, then batches drain what was logged). An
    /// error of the receiver stops the context with
    /// [`crate::receiver::ReceiverError::Failed`] naming the stream.
    pub fn receiver_stream<T: Data>(
        &self,
        name: &str,
        receiver: impl Receiver,
        decode: impl Fn(&[u8]) -> std::result::Result<T, BoxError> + Send + Sync + 'static,
    ) -> Result<DStream<T>> {
        Ok(self
            .receiver_stream_shared(name, Box::new(receiver), Arc::new(decode))?
            .0)
    }

    /// [`StreamingContext::receiver_stream`], also returning the stream's
    /// shared state (built-in receivers that need it before `start()`).
    pub(crate) fn receiver_stream_shared<T: Data>(
        &self,
        name: &str,
        receiver: Box<dyn Receiver>,
        decode: Decoder<T>,
    ) -> Result<(DStream<T>, Arc<StreamShared>)> {
        if self.lock().phase != Phase::Initialized {
            return Err(ContextError::AlreadyStarted.into());
        }
        let wal = self.open_stream_wal("receiver_stream", name)?;
        let shared = StreamShared::new(
            name,
            wal.clone(),
            self.backlog_bytes_max,
            self.records_per_second_max,
        );
        let src = WalSource::with_release(wal, decode, shared.clone());
        let stream = DStream::from_source(&self.graph, "receiver", Arc::new(src)).name(name);
        self.lock().receivers.push(PendingReceiver {
            receiver,
            shared: shared.clone(),
        });
        Ok((stream, shared))
    }

    /// Spark's `socketTextStream`: lines of text read from the TCP server at
    /// `addr` ("host:port"), through the WAL `DATA_DIR/wal/<name>`, with
    /// default [`SocketConfig`]. See `crate::receiver::socket` for the
    /// guarantee (safe once logged; in-flight lines are lost if weir dies).
    pub fn socket_text_stream(&self, name: &str, addr: &str) -> Result<DStream<String>> {
        Ok(self
            .socket_text_stream_with(name, addr, SocketConfig::default())?
            .0)
    }

    /// [`StreamingContext::socket_text_stream`] with explicit settings
    /// (e.g. `delimiter: b"__end".to_vec()` for a server that ends its
    /// records with `__end` and sends no newline, as the Spark tutorial's
    /// does); also returns the stream's counters, which count an over-long
    /// line the moment it passes `line_bytes_max`.
    pub fn socket_text_stream_with(
        &self,
        name: &str,
        addr: &str,
        config: SocketConfig,
    ) -> Result<(DStream<String>, Arc<SocketStats>)> {
        config.validate(name, self.wal_config())?;
        let (receiver, stats) = socket::receiver(name, addr, config)?;
        let (stream, _) =
            self.receiver_stream_shared(name, receiver, Arc::new(crate::receiver::utf8))?;
        Ok((stream, stats))
    }

    /// Spark's `textFileStream`: the lines of every file moved into `dir`,
    /// each file read exactly once (across crashes too), through the WAL
    /// `DATA_DIR/wal/<name>` and the progress file
    /// `DATA_DIR/receivers/<name>.progress`, with default [`DirConfig`].
    /// See `crate::receiver::dir` for the rules.
    pub fn text_file_stream(&self, name: &str, dir: impl AsRef<Path>) -> Result<DStream<String>> {
        Ok(self
            .text_file_stream_with(name, dir, DirConfig::default())?
            .0)
    }

    /// [`StreamingContext::text_file_stream`] with explicit settings; also
    /// returns the stream's counters.
    pub fn text_file_stream_with(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        config: DirConfig,
    ) -> Result<(DStream<String>, Arc<DirStats>)> {
        config.validate(name, self.wal_config())?;
        let data_dir = self.data_dir().ok_or_else(|| ReceiverError::Config {
            stream: name.to_string(),
            message: "text_file_stream needs a data directory: set .data_dir(..) or use StreamingContext::get_or_create".into(),
        })?;
        // The progress file's path comes from the name: check it first.
        validate_stream_name(name).map_err(ContextError::from)?;
        let receivers = layout::receivers_dir(data_dir);
        std::fs::create_dir_all(&receivers).map_err(|e| ReceiverError::Io {
            stream: name.to_string(),
            action: "create the directory",
            path: receivers.display().to_string(),
            source: e,
        })?;
        let parts = dir::receiver(
            dir.as_ref().to_path_buf(),
            layout::dir_progress(data_dir, name),
            config,
        );
        let (chunks, shared) =
            self.receiver_stream_shared(name, parts.receiver, Arc::new(dir::decode_lines))?;
        // Set before start: a batch may be released before the receiver
        // thread runs.
        ReceiverContext::new(shared).set_release_hook(parts.release_hook);
        Ok((chunks.flat_map(|lines: Vec<String>| lines), parts.stats))
    }
}
