//! A pipeline written in Rust, run with the same service behaviour as
//! `weir run` (SIGTERM/SIGINT drain and commit, systemd READY/watchdog,
//! `/metrics`, `/status` and the status page) through one call.
//!
//! Run: `cargo run --release --example service` (Ctrl-C stops it);
//! `-- 5` stops after five batches. With no logging set up here,
//! `run_service` logs to stderr as `weir run` does (the status page's
//! address, a line per batch; `WEIR_LOG=warn` quiets it); a `tracing`
//! subscriber installed before the call replaces it.

use std::sync::Arc;
use std::time::Duration;

use weir::service::{run_service, ServiceOptions};
use weir::source::generator::{GeneratorConfig, GeneratorSource};
use weir::{StreamingContext, Text};

fn main() -> weir::Result<()> {
    let batches = std::env::args().nth(1).and_then(|n| n.parse().ok());
    let mut generator = None;
    let ssc = StreamingContext::get_or_create("weir-data-example", |b| {
        let ssc = b.batch_interval(Duration::from_secs(1)).build()?;
        // Any source works; the bundled generator needs no set-up.
        let gen = Arc::new(GeneratorSource::new(
            GeneratorConfig::default(),
            ssc.clock(),
        ));
        generator = Some(gen.clone());
        ssc.source_stream("generator", gen)
            .name("lines")
            .flat_map_with(|l: Text, out| Text::for_each_lowercase_word(&l, out))
            .map(|w| (w, 1u64))
            .update_state_by_key(|new: &[u64], old: Option<&u64>| {
                Some(old.copied().unwrap_or(0) + new.iter().sum::<u64>())
            })
            .name("totals")
            .print(5)?;
        Ok(ssc)
    })?;
    let report = run_service(
        ssc,
        ServiceOptions {
            batches_max: batches,
            // At a stop, the source stops making records available (a
            // receiver does this itself); then the backlog is drained.
            on_stop: generator
                .map(|g| -> weir::service::StopHook { Box::new(move || g.stop_accepting()) })
                .into_iter()
                .collect(),
            ..ServiceOptions::default()
        },
    )?;
    eprintln!("{} batches, {} records", report.batches, report.records);
    Ok(())
}
