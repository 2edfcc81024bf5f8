//! The seed's two files, for real: one thread serves tweet-like lines over a
//! loopback socket (each line holds a few tweets, each ending in `__end`),
//! and the pipeline reads them with `socket_text_stream`, splits on
//! `__end`, lowercases, and prints the first ten tweets of every one-second
//! batch (wall clock).
//!
//! Run: `cargo run --release --example socket_tweets` (stops after 5
//! batches), `-- 12` for 12 batches, or `-- forever`.
//! Lines sent but not yet logged when this process dies are lost: that is
//! the guarantee of a plain socket source (see docs/receivers.md).

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use weir::testdata::{tweet_lines, with_end_markers};
use weir::StreamingContext;

const TWEETS_PER_LINE: usize = 4;
const LINES_PER_SECOND: u64 = 50;

fn main() -> weir::Result<()> {
    let batches = match std::env::args().nth(1).as_deref() {
        None => Some(5),
        Some("forever") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            weir::Error::Usage(format!(
                "`{n}` is not a number of batches; pass a number, or `forever`"
            ))
        })?),
    };

    // The seed's server side: accept one client at a time and write lines
    // of `__end`-terminated tweets, forever (a reconnecting client resumes
    // with new tweets).
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| weir::Error::Usage(format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| weir::Error::Usage(format!("no local address: {e}")))?
        .to_string();
    std::thread::spawn(move || {
        let mut seed = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            loop {
                seed += 1;
                let line = with_end_markers(&tweet_lines(TWEETS_PER_LINE, seed));
                if writeln!(conn, "{line}").is_err() {
                    break; // the client went away; wait for the next one
                }
                std::thread::sleep(Duration::from_millis(1000 / LINES_PER_SECOND));
            }
        }
    });

    // The seed's client side.
    let data = tempfile::tempdir()
        .map_err(|e| weir::Error::Usage(format!("cannot create a data directory: {e}")))?;
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .data_dir(data.path())
        .build()?;
    let tweets = ssc
        .socket_text_stream("tweets", &addr)?
        // The tutorial's first step: split on `__end`, trim, drop the
        // empty pieces, lowercase.
        .flat_map(|line: String| {
            line.split("__end")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<String>>()
        })
        .name("lowercased");
    tweets.print(10)?;
    ssc.start()?;
    match batches {
        None => ssc.await_termination()?,
        Some(n) => {
            while ssc.statistics().len() < n {
                if ssc.await_termination_or_timeout(Duration::from_millis(100))? {
                    break;
                }
            }
            ssc.stop(false)?;
        }
    }
    Ok(())
}
