//! Benchmark of the PostgreSQL sink against a bare binary COPY, in the
//! same run, on a private PostgreSQL 15 (tests/pg_common: loopback TCP,
//! `fsync = off`, so both are bound by the server's CPU, not a disk).
//!
//! Rows of three columns (`id bigint, name text, score double
//! precision`). weir's time runs from the moment its one batch of all the
//! rows falls due to the commit of that batch in weir's checkpoint: reading
//! the rows from its input log, turning each line into a row, encoding,
//! the progress row, COPY, COMMIT, the checkpoint commit. The bare COPY's
//! runs from the start of its transaction to its COMMIT, rows built in
//! memory beforehand, through tokio-postgres' `BinaryCopyInWriter`. Each
//! writes its own empty table; rounds alternate which goes first.
//! `upsert` mode is measured too (COPY into a staging table, then
//! `INSERT ... SELECT ... ON CONFLICT`), against the same bare COPY.
//!
//! Run: `cargo run --release --example bench_pg_sink [ROWS] [ROUNDS]`.

#[path = "../tests/pg_common/mod.rs"]
mod pg_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_common::Pg;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use weir::sink::PgMode;
use weir::{ManualClock, PostgresSinkConfig, StreamingContext};

const T0: u64 = 1_700_000_000_000;

fn row(i: i64) -> (i64, String, f64) {
    (i, format!("name {i:08}"), i as f64 * 0.5)
}

/// Rows per second of a bare binary COPY of `n` rows into `table`.
fn bare(pg: &Pg, table: &str, n: usize) -> f64 {
    let rows: Vec<(i64, String, f64)> = (0..n as i64).map(row).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = pg.url("bench");
    rt.block_on(async move {
        let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let t = Instant::now();
        let tx = client.transaction().await.expect("begin");
        let sink = tx
            .copy_in(&format!(
                "COPY {table} (id, name, score) FROM STDIN (FORMAT binary)"
            ))
            .await
            .expect("copy");
        let w = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::FLOAT8]);
        futures_util::pin_mut!(w);
        for (id, name, score) in &rows {
            let r: [&(dyn ToSql + Sync); 3] = [id, name, score];
            w.as_mut().write(&r).await.expect("row");
        }
        w.finish().await.expect("finish");
        tx.commit().await.expect("commit");
        n as f64 / t.elapsed().as_secs_f64()
    })
}

/// Rows per second of weir's sink loading `n` rows from its input log in
/// one batch.
fn weir_sink(pg: &Pg, table: &str, n: usize, upsert: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = PostgresSinkConfig::new(&pg.url("bench"), table, &["id", "name", "score"]);
    if upsert {
        cfg.mode = PgMode::Upsert {
            key: vec!["id".into()],
            update: None,
        };
    }
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .batch_records_max(n as u64)
            .adaptive_batches(false)
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        lines
            .map(|l| row(l.parse().unwrap_or(-1)))
            .save_to_postgres(cfg)?;
        wal = Some(w);
        Ok(ssc)
    })
    .expect("context");
    let wal = wal.expect("input log");
    ssc.start().expect("start");
    // The first batch connects and reads the table; let it run empty.
    clock.set(T0 + 1000);
    ssc.await_batch(T0 + 1000, Duration::from_secs(60))
        .expect("first batch");
    let recs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    for chunk in recs.chunks(10_000) {
        wal.append(chunk).expect("append");
    }
    let t = Instant::now();
    clock.set(T0 + 2000);
    ssc.await_batch(T0 + 2000, Duration::from_secs(600))
        .expect("the batch");
    let rate = n as f64 / t.elapsed().as_secs_f64();
    ssc.stop(false).expect("stop");
    rate
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let pg = Pg::start();
    pg.create_db("bench");
    let create = "(id bigint PRIMARY KEY, name text NOT NULL, score double precision NOT NULL)";
    println!("rows per round: {n} (id bigint, name text, score double precision), PostgreSQL 15 on loopback, fsync off");
    let (mut b_all, mut w_all, mut u_all) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        for t in ["bare", "weir", "weir_up"] {
            pg.sql(
                "bench",
                &format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} {create}; DROP TABLE IF EXISTS weir_progress"),
            );
        }
        let (b, w, u) = if r % 2 == 0 {
            let b = bare(&pg, "bare", n);
            (
                b,
                weir_sink(&pg, "weir", n, false),
                weir_sink(&pg, "weir_up", n, true),
            )
        } else {
            let u = weir_sink(&pg, "weir_up", n, true);
            let w = weir_sink(&pg, "weir", n, false);
            (bare(&pg, "bare", n), w, u)
        };
        for t in ["bare", "weir", "weir_up"] {
            let c = pg.one("bench", &format!("SELECT count(*) FROM {t}"));
            assert_eq!(c, n.to_string(), "{t} holds every row");
        }
        println!(
            "round {r}: bare COPY {b:>10.0} rows/s   weir insert {w:>10.0} rows/s ({:.2})   weir upsert {u:>10.0} rows/s ({:.2})",
            w / b,
            u / b
        );
        b_all.push(b);
        w_all.push(w);
        u_all.push(u);
    }
    let (b, w, u) = (median(&mut b_all), median(&mut w_all), median(&mut u_all));
    println!(
        "median: bare COPY {b:.0} rows/s, weir insert {w:.0} rows/s ({:.2} of bare), weir upsert {u:.0} rows/s ({:.2} of bare)",
        w / b,
        u / b
    );
}
