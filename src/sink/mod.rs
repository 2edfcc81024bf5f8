//! Output operations: `print`, `save_as_text_files`, `foreach_batch`, the
//! transactional key-value sink `save_to_kv` (`kv`), the NATS
//! JetStream sink `save_to_jetstream` (`jetstream`, its connection in
//! `jetstream_conn`), and the PostgreSQL sink `save_to_postgres`
//! (`postgres`, its rows in `postgres_copy`, its transaction in
//! `postgres_conn`, its TLS in `postgres_tls`), and the Kafka sink
//! `save_to_kafka` (`kafka`: replays find what they already wrote).
//!
//! Owns: how a batch's records leave the engine. Files are written
//! atomically through `crate::storage::write_atomic` (temp file, fsync,
//! rename, fsync of the directory; [`write_batch_file`] adds the
//! `sink_write` failpoint before the rename), named
//! `prefix-<batch_time_ms>.suffix`, so a replayed batch rewrites the same
//! name with the same bytes.
//! Limits: `print` takes at most `n + 1` records of a batch (partitions
//! are evaluated in order until it has them); a text file
//! holds one whole batch (the caller bounds batches with
//! `batch_records_max`).
//! Must never: keep state across batches (that belongs to checkpoints).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::dstream::{BoxError, DStream, Data, EngineError, Text};
use crate::storage::{AtomicWriteError, RealFs};

mod dead_letter;
mod jetstream;
mod jetstream_conn;
mod kafka;
mod postgres;
mod postgres_conn;
mod postgres_copy;
mod postgres_tls;
internal! {
    mod kv;
}
pub use dead_letter::{
    read_dead_letters, DeadLetter, DeadLetterLog, DEAD_LETTER_BYTES_MAX_DEFAULT,
    DEAD_LETTER_READ_BYTES_MAX,
};
pub use jetstream::{
    jetstream_sink_op, message_id, JetStreamSinkConfig, JetStreamSinkError, JetStreamSinkStats,
    NatsAuth, ReplayOlderThanWindow, ACKS_IN_FLIGHT_CEILING, ACKS_IN_FLIGHT_MAX_DEFAULT,
    PUBLISH_TRIES_CEILING, PUBLISH_TRIES_MAX_DEFAULT, SINK_ID_BYTES_MAX,
};
pub use kafka::{
    kafka_sink_op, KafkaSinkConfig, KafkaSinkError, KafkaSinkStats,
    BETWEEN_REQUESTS_FAILPOINT as KAFKA_BETWEEN_REQUESTS_FAILPOINT, PLACE_HEADER,
    PRODUCE_BYTES_CEILING, PRODUCE_BYTES_MAX_DEFAULT, REPLAY_SCAN_RECORDS_CEILING,
    REPLAY_SCAN_RECORDS_MAX_DEFAULT, SINK_HEADER,
};
pub use kv::KvTable;
pub use postgres::{
    postgres_sink_op, PgCell, PgFence, PgMode, PgOnError, PgPassword, PgRow, PgValue,
    PostgresSinkConfig, PostgresSinkError, PostgresSinkStats, PG_BACKOFF_MS_FIRST,
    PG_BACKOFF_MS_MAX, PG_COLUMNS_MAX, PG_COPY_CHUNK_BYTES, PG_IDENTIFIER_BYTES_MAX,
    PG_SINK_ID_BYTES_MAX, PG_TIMEOUT_MS_MAX, PG_TRIES_CEILING, PG_TRIES_MAX_DEFAULT,
};
pub use postgres_conn::{
    BEFORE_COMMIT_FAILPOINT as POSTGRES_BEFORE_COMMIT_FAILPOINT,
    BEFORE_TRANSACTION_FAILPOINT as POSTGRES_BEFORE_TRANSACTION_FAILPOINT,
};
pub use postgres_tls::{pg_off_machine_host, PgTls, PgTlsMode};

/// Where an exactly-once sink to an outside system sits in the graph:
/// its node and operator name (checked against the checkpoint like any
/// operator's), its output kind for errors, and the parameters that
/// describe it.
pub(crate) struct ExternalSink {
    /// The node kind (`postgres_sink`, `jetstream_sink`).
    pub(crate) node: &'static str,
    /// The output kind errors name (`save_to_postgres`, ...).
    pub(crate) output: &'static str,
    /// The operator's name (`postgres_sink_op(sink_id)`, ...).
    pub(crate) name: String,
    /// Its description's parameters.
    pub(crate) params: Vec<(&'static str, String)>,
}

impl<T: Data> DStream<T> {
    /// The data directory's identity an exactly-once sink fences with
    /// (None: the context has no data directory).
    pub(crate) fn sink_identity(&self) -> Option<String> {
        self.g.data_dir_id()
    }

    /// Registers an outside sink: its node, its name, and the output
    /// that hands `write` every batch's records (time, whether a replay,
    /// the partitions); a failure is the output's error, naming its input.
    pub(crate) fn add_external_sink(
        &self,
        sink: ExternalSink,
        write: impl Fn(u64, bool, &[Vec<T>]) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        let id = self.g.add_node(crate::dstream::meta(
            sink.node,
            vec![self.id],
            self.slide_ms(),
            sink.params,
        ));
        self.g.set_name(id, &sink.name);
        let s = self.s.clone();
        let kind = sink.output;
        self.g.add_output(crate::dstream::graph::OutputEntry {
            node: id,
            kind,
            slide_ms: self.slide_ms(),
            run: Arc::new(move |ctx: &crate::dstream::BatchCtx| {
                let d = s.prepare(ctx)?;
                let parts = ctx.collect(&*d)?;
                write(ctx.time_ms, ctx.is_replay(), &parts).map_err(|reason| EngineError::Output {
                    kind,
                    input: ctx.name(id).to_string(),
                    reason,
                })
            }),
        })
    }
}

/// One counter of a sink, for `/metrics` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounter {
    /// Its name in the metric `weir_sink_<name>_total`.
    pub name: &'static str,
    /// What it counts (the metric's help).
    #[serde(skip)]
    pub help: &'static str,
    /// Its value since start.
    pub value: u64,
}

impl SinkCounter {
    /// The counter `name` (help `help`) read from `v` now.
    pub fn read(name: &'static str, help: &'static str, v: &std::sync::atomic::AtomicU64) -> Self {
        SinkCounter {
            name,
            help,
            value: v.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A sink that counts what it did (the service shows the counters).
pub trait SinkCounters: Send + Sync + std::fmt::Debug {
    /// The sink's kind, as in pipeline files (`jetstream`).
    fn kind(&self) -> &'static str;
    /// Every counter, always in the same order.
    fn counters(&self) -> Vec<SinkCounter>;
}

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing a batch's output file failed (or a crash test's failpoint
    /// fired inside the write); the file's old contents, if any, are intact.
    #[error(transparent)]
    File(#[from] AtomicWriteError),
    /// A key-value table holds a value that does not decode as the type
    /// it is read as.
    #[error("key-value table `{table}`: {source}; read it with the key and value types the pipeline writes")]
    KvDecode {
        /// The table.
        table: String,
        /// The codec's error.
        source: crate::codec::CodecError,
    },
    /// The dead-letter log would pass its bound; the batch is not
    /// committed.
    #[error("the dead-letter log {} holds {used} bytes; this batch's {bytes} more would pass dead_letter_bytes_max ({bytes_max}). The batch is not committed and its input stays in the log. List the entries with `weir dead-letter list`, keep what you need, remove the files you handled, and start again (or raise dead_letter_bytes_max)", dir.display())]
    DeadLetterFull {
        /// The dead-letter directory.
        dir: PathBuf,
        /// Bytes its other files hold.
        used: u64,
        /// Bytes this batch would add.
        bytes: u64,
        /// The bound.
        bytes_max: u64,
    },
    /// Reading or writing the dead-letter log failed.
    #[error("dead-letter log {}: {source}", path.display())]
    DeadLetterIo {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A dead-letter file holds a line that is not an entry.
    #[error("dead-letter file {} line {line}: {reason}; the file was not written by weir or was damaged: move it away to read the others", file.display())]
    DeadLetterEntry {
        /// The file.
        file: PathBuf,
        /// The line (1-based; 0: the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The failpoint inside a sink's file write (after the temp file is
/// durable, before the rename); see `crate::failpoint`.
pub const SINK_WRITE_FAILPOINT: &str = "sink_write";

/// How records are rendered by `print` and `save_as_text_files` (like
/// Scala's `toString`: tuples as `(a,b)`, options as `Some(x)`/`None`,
/// vectors as `[a, b]`). Implement it for your own record types.
pub trait Show {
    /// Appends the rendering of `self` to `out`.
    fn show(&self, out: &mut String);
}

macro_rules! show_display {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self, out: &mut String) {
                let _ = write!(out, "{}", self);
            }
        }
    )*};
}
show_display!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char, String,
    str, Text
);

impl<T: Show + ?Sized> Show for &T {
    fn show(&self, out: &mut String) {
        (**self).show(out)
    }
}
impl<T: Show> Show for Option<T> {
    fn show(&self, out: &mut String) {
        match self {
            Some(x) => {
                out.push_str("Some(");
                x.show(out);
                out.push(')');
            }
            None => out.push_str("None"),
        }
    }
}
impl<T: Show> Show for Vec<T> {
    fn show(&self, out: &mut String) {
        out.push('[');
        for (i, x) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            x.show(out);
        }
        out.push(']');
    }
}
impl<A: Show, B: Show> Show for (A, B) {
    fn show(&self, out: &mut String) {
        out.push('(');
        self.0.show(out);
        out.push(',');
        self.1.show(out);
        out.push(')');
    }
}
impl<A: Show, B: Show, C: Show> Show for (A, B, C) {
    fn show(&self, out: &mut String) {
        out.push('(');
        self.0.show(out);
        out.push(',');
        self.1.show(out);
        out.push(',');
        self.2.show(out);
        out.push(')');
    }
}

/// Renders one record.
pub fn show<T: Show + ?Sized>(x: &T) -> String {
    let mut s = String::new();
    x.show(&mut s);
    s
}

/// How `print` shows a batch's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// `Time: 1764934802000 ms`, milliseconds since the epoch (Spark's
    /// Scala and Java `print`); the default.
    #[default]
    Millis,
    /// `Time: 2025-12-05 11:40:02`, the date and time in UTC (Spark's
    /// Python `pprint`; a fraction of a second is shown as pyspark does,
    /// `11:40:02.500000`).
    DateTime,
}

impl TimeFormat {
    /// `time_ms` in this format, as it follows `Time: `.
    pub fn show(self, time_ms: u64) -> String {
        match self {
            TimeFormat::Millis => format!("{time_ms} ms"),
            TimeFormat::DateTime => utc_date_time(time_ms),
        }
    }
}

/// `time_ms` since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC, with
/// `.ffffff` (microseconds, as Python's `datetime` prints them) when the
/// time is not a whole second.
pub fn utc_date_time(time_ms: u64) -> String {
    let secs = time_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days
    // since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if !time_ms.is_multiple_of(1000) {
        let _ = write!(s, ".{:06}", time_ms % 1000 * 1000);
    }
    s
}

/// How a file sink (`save_as_text_files_with`, the `text_files` and
/// `json_files` sinks of pipeline files) writes batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Write no file for a batch without records (default: every batch
    /// gets its file, empty or not). A replayed batch has the same records,
    /// so it decides the same way: exactly-once holds either way, and a
    /// missing file of a committed batch means that batch was empty.
    pub skip_empty: bool,
}

/// A shared writer that `print_to` writes to (tests capture output with it).
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// Spark's `print` format for one batch: a rule, `Time: <ms> ms`, a rule,
/// the first `n` records, `...` if there were more, then a blank line.
pub fn format_print<T: Show>(time_ms: u64, first: &[T], n: usize) -> String {
    format_print_with(TimeFormat::Millis, time_ms, first, n)
}

/// [`format_print`] with the time shown in `format`.
pub fn format_print_with<T: Show>(
    format: TimeFormat,
    time_ms: u64,
    first: &[T],
    n: usize,
) -> String {
    let rule = "-------------------------------------------";
    let mut s = format!("{rule}\nTime: {}\n{rule}\n", format.show(time_ms));
    for x in first.iter().take(n) {
        x.show(&mut s);
        s.push('\n');
    }
    if first.len() > n {
        s.push_str("...\n");
    }
    s.push('\n');
    s
}

/// Writes one batch's output file atomically on the real filesystem
/// (`crate::storage::write_atomic`: temp file, fsync, rename, directory
/// fsync), passing the `sink_write` failpoint before the rename.
pub fn write_batch_file(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    crate::storage::write_atomic_with_failpoint(&RealFs, path, bytes, SINK_WRITE_FAILPOINT)?;
    Ok(())
}

/// The file a batch is saved to: `prefix-<ms>.suffix`, or `prefix-<ms>`
/// without a suffix.
pub fn batch_file_name(prefix: &str, suffix: &str, time_ms: u64) -> PathBuf {
    if suffix.is_empty() {
        PathBuf::from(format!("{prefix}-{time_ms}"))
    } else {
        PathBuf::from(format!("{prefix}-{time_ms}.{suffix}"))
    }
}

impl<T: Data> DStream<T> {
    /// Runs `f(batch_time_ms, records)` for every batch this stream
    /// produces (Spark's `foreachRDD`). Records are in partition order.
    pub fn foreach_batch(
        &self,
        f: impl Fn(u64, Vec<T>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        self.add_output("foreach_batch", move |t, parts| {
            f(t, parts.into_iter().flatten().collect())
        })
    }
}

impl<T: Data + Show> DStream<T> {
    /// Prints the first `n` records of every batch to stdout in Spark's
    /// format.
    pub fn print(&self, n: usize) -> Result<(), EngineError> {
        self.print_to(n, Arc::new(Mutex::new(io::stdout())))
    }

    /// Like [`DStream::print`], writing to `out`.
    pub fn print_to(&self, n: usize, out: SharedWriter) -> Result<(), EngineError> {
        self.print_with(n, TimeFormat::Millis, out)
    }

    /// Like [`DStream::print_to`], the batch time shown in `format`
    /// (`TimeFormat::DateTime`: as Spark's Python `pprint`).
    pub fn print_with(
        &self,
        n: usize,
        format: TimeFormat,
        out: SharedWriter,
    ) -> Result<(), EngineError> {
        self.add_output_take("print", n.saturating_add(1), move |t, first| {
            let text = format_print_with(format, t, &first, n);
            let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(text.as_bytes())?;
            w.flush()?;
            Ok(())
        })
    }

    /// Saves every batch as the text file `prefix-<batch_time_ms>.suffix`
    /// (one record per line), atomically.
    pub fn save_as_text_files(&self, prefix: &str, suffix: &str) -> Result<(), EngineError> {
        self.save_as_text_files_with(prefix, suffix, FileOptions::default())
    }

    /// [`DStream::save_as_text_files`] with `options` (`skip_empty`: no
    /// file for a batch without records).
    pub fn save_as_text_files_with(
        &self,
        prefix: &str,
        suffix: &str,
        options: FileOptions,
    ) -> Result<(), EngineError> {
        let (prefix, suffix) = (prefix.to_string(), suffix.to_string());
        self.add_output("save_as_text_files", move |t, parts| {
            if options.skip_empty && parts.iter().all(Vec::is_empty) {
                return Ok(());
            }
            let mut s = String::new();
            for x in parts.iter().flatten() {
                x.show(&mut s);
                s.push('\n');
            }
            write_batch_file(&batch_file_name(&prefix, &suffix, t), s.as_bytes())
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_format_matches_spark() {
        let s = format_print(1000, &[(Text::new("a"), 1u64), (Text::new("b"), 2)], 1);
        assert_eq!(
            s,
            "-------------------------------------------\nTime: 1000 ms\n-------------------------------------------\n(a,1)\n...\n\n"
        );
        assert_eq!(show(&Some(vec![1, 2])), "Some([1, 2])");
        assert_eq!(batch_file_name("out/c", "", 5).to_str(), Some("out/c-5"));
    }

    #[test]
    fn date_times_are_utc_as_pyspark_prints_them() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_date_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_date_time(1_796_470_802_000), "2026-12-05 11:40:02");
        assert_eq!(
            utc_date_time(1_796_470_802_500),
            "2026-12-05 11:40:02.500000"
        );
        assert_eq!(
            utc_date_time(4_102_444_799_999),
            "2099-12-31 23:59:59.999000"
        );
        let s = format_print_with(TimeFormat::DateTime, 1_796_470_802_000, &[1u8], 10);
        assert!(s.contains("\nTime: 2026-12-05 11:40:02\n"), "{s}");
    }
}
