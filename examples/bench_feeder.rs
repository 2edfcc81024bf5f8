//! The feeder of the side-by-side benchmark (`benches/side_by_side.py`): a
//! loopback TCP server that writes tweet-like lines, each ending in
//! `__end`, to whoever connects (Spark's `socketTextStream` and weir's
//! `socket_text_stream` are both clients), at a fixed rate or as fast as the
//! reader takes them.
//!
//! Usage: `bench_feeder ADDR RATE SECONDS LOG`
//! - `ADDR`: where to listen (`127.0.0.1:0` picks a port; the port is
//!   printed as `FEEDER port <n>`);
//! - `RATE`: lines per second, `0` for as fast as the reader takes them
//!   (TCP flow control is then the only brake);
//! - `SECONDS`: how long to feed, counted from the first connection;
//! - `LOG`: a file that gets `<wall_ms> <lines_sent>` every 10 ms, which
//!   the benchmark uses to learn when each line was sent (FIFO over one
//!   connection), and so each line's end-to-end latency.
//!
//! A dropped connection is waited out (the reader reconnects); the count
//! continues, and a line partly written when the connection dropped is
//! counted as not sent. Limits: one connection at a time; 1,000,000
//! distinct lines cycled; writes of at most 64 KiB.

use std::io::{BufWriter, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DISTINCT_LINES: usize = 1_000_000;
const WRITE_BYTES_MAX: usize = 64 << 10;
const LOG_EVERY: Duration = Duration::from_millis(10);

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: bench_feeder ADDR RATE SECONDS LOG   (e.g. 127.0.0.1:0 0 60 feeder.log)");
        std::process::exit(2);
    }
    let rate: u64 = args[1].parse().map_err(std::io::Error::other)?;
    let seconds: u64 = args[2].parse().map_err(std::io::Error::other)?;
    let mut log = BufWriter::new(std::fs::File::create(&args[3])?);

    // Pre-encode the lines once: the feeder must not be the bottleneck.
    let lines: Vec<Vec<u8>> = weir::testdata::tweet_lines(DISTINCT_LINES, 42)
        .into_iter()
        .map(|l| format!("{l} __end\n").into_bytes())
        .collect();

    let listener = TcpListener::bind(&args[0])?;
    println!("FEEDER port {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;

    let mut sent: u64 = 0;
    let mut start: Option<Instant> = None;
    let mut next_log = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BYTES_MAX + 256);
    'accept: loop {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let began = *start.get_or_insert_with(Instant::now);
        loop {
            let elapsed = began.elapsed();
            if elapsed >= Duration::from_secs(seconds) {
                break 'accept;
            }
            // Lines due by now (or a full write when unpaced).
            let due = if rate == 0 {
                u64::MAX
            } else {
                (elapsed.as_secs_f64() * rate as f64) as u64
            };
            buf.clear();
            let mut n = 0u64;
            while sent + n < due && buf.len() < WRITE_BYTES_MAX {
                buf.extend_from_slice(&lines[((sent + n) % DISTINCT_LINES as u64) as usize]);
                n += 1;
            }
            if n == 0 {
                std::thread::sleep(Duration::from_micros(500));
            } else if conn.write_all(&buf).is_err() {
                eprintln!("FEEDER connection dropped after {sent} lines; waiting for a reconnect");
                continue 'accept;
            } else {
                sent += n;
            }
            if Instant::now() >= next_log {
                writeln!(log, "{} {sent}", wall_ms())?;
                next_log += LOG_EVERY;
            }
        }
    }
    writeln!(log, "{} {sent}", wall_ms())?;
    log.flush()?;
    println!("FEEDER sent {sent}");
    Ok(())
}
