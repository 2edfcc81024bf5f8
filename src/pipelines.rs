//! Ready-made pipelines built on the public API: the stateful word count
//! that the crash tests run in-process and that `weir-testkit
//! test-pipeline` runs as a real process (so both exercise exactly the
//! same graph).
//!
//! Must never: contain engine logic; these are ordinary user pipelines.

/// The stateful word count that the crash tests run, in-process and as the
/// `weir-testkit test-pipeline` command: lines from the WAL stream `input`,
/// split on whitespace, then three outputs saved as text files under `out`:
/// `counts-<ms>.txt` (per-batch reduce_by_key), `totals-<ms>.txt` (running
/// totals, update_state_by_key) and `window-<ms>.txt` (a 3-batch window
/// sliding by 2 batches); the running totals also go to the key-value
/// table `totals` (`save_to_kv`). Returns the input log.
pub fn stateful_wordcount(
    ssc: &crate::StreamingContext,
    out: &std::path::Path,
) -> crate::Result<std::sync::Arc<crate::wal::Wal>> {
    let interval = std::time::Duration::from_millis(ssc.batch_interval_ms());
    let (lines, wal) = ssc.wal_text_stream("input")?;
    let words = lines
        .flat_map(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|w| (w, 1u64));
    let path = |name: &str| out.join(name).display().to_string();
    words
        .reduce_by_key(|a, b| a + b)
        .name("counts")
        .save_as_text_files(&path("counts"), "txt")?;
    let totals = words
        .update_state_by_key(|new: &[u64], old: Option<&u64>| {
            Some(old.copied().unwrap_or(0) + new.iter().sum::<u64>())
        })
        .name("totals");
    totals.save_as_text_files(&path("totals"), "txt")?;
    totals.save_to_kv("totals")?;
    words
        .reduce_by_key_and_window(|a, b| a + b, interval * 3, interval * 2)
        .name("window")
        .save_as_text_files(&path("window"), "txt")?;
    Ok(wal)
}
