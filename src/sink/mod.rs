//! Output operations: `print`, `save_as_text_files`, `foreach_batch`, and
//! the transactional key-value sink `save_to_kv` ([`kv`]).
//!
//! Owns: how a batch's records leave the engine. Files are written
//! atomically (temp file, fsync, rename, fsync of the directory), named
//! `prefix-<batch_time_ms>.suffix`, so a replayed batch rewrites the same
//! name with the same bytes.
//! Limits: `print` takes at most `n + 1` records of a batch (partitions
//! are evaluated in order until it has them); a text file
//! holds one whole batch (the caller bounds batches with
//! `batch_records_max`).
//! Must never: keep state across batches (that belongs to checkpoints).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::dstream::{BoxError, DStream, Data, EngineError, Text};

pub mod kv;
pub use kv::KvTable;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A key-value table holds a value that does not decode as the type
    /// it is read as.
    #[error("key-value table `{table}`: {source}; read it with the key and value types the pipeline writes")]
    KvDecode {
        /// The table.
        table: String,
        /// The codec's error.
        source: crate::codec::CodecError,
    },
    /// A crash test's failpoint fired inside the write.
    #[error(transparent)]
    Crashed(#[from] crate::failpoint::Crash),
}

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

/// A shared writer that `print_to` writes to (tests capture output with it).
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// Spark's `print` format for one batch: a rule, `Time: <ms> ms`, a rule,
/// the first `n` records, `...` if there were more, then a blank line.
pub fn format_print<T: Show>(time_ms: u64, first: &[T], n: usize) -> String {
    let rule = "-------------------------------------------";
    let mut s = format!("{rule}\nTime: {time_ms} ms\n{rule}\n");
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

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| SinkError::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    crate::failpoint::hit("sink_write")?;
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", &dir))?;
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
        self.add_output_take("print", n.saturating_add(1), move |t, first| {
            let text = format_print(t, &first, n);
            let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(text.as_bytes())?;
            w.flush()?;
            Ok(())
        })
    }

    /// Saves every batch as the text file `prefix-<batch_time_ms>.suffix`
    /// (one record per line), atomically.
    pub fn save_as_text_files(&self, prefix: &str, suffix: &str) -> Result<(), EngineError> {
        let (prefix, suffix) = (prefix.to_string(), suffix.to_string());
        self.add_output("save_as_text_files", move |t, parts| {
            let mut s = String::new();
            for x in parts.iter().flatten() {
                x.show(&mut s);
                s.push('\n');
            }
            write_atomic(&batch_file_name(&prefix, &suffix, t), s.as_bytes())
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
}
