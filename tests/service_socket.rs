//! `weir run` with a socket source against the Spark tutorial's tweet
//! server (each tweet's text + `" __end"`, no newline), issue 14: with
//! `delimiter = "__end"` the pipeline of `docs/receivers.md` (read from the
//! file) yields the words of every tweet; without it, the endless line is
//! counted and logged as too long the moment it passes the limit, before any
//! newline, and `/status` and `/metrics` show it. Every wait polls with a
//! deadline.

mod service_common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use service_common::{http_get, line_with, spawn_logged, wait_for, weir};

/// The tutorial's server: on the first connection, `text + " __end"` per
/// tweet (several per write, one split inside its delimiter across two
/// writes), then the connection stays open until `done`.
fn tweet_server(chunks: Vec<Vec<u8>>, done: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_nodelay(true);
        for c in chunks {
            if s.write_all(&c).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    addr
}

/// The first ```toml block after `heading` in `docs/receivers.md`.
fn documented_pipeline(heading: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/receivers.md"))
        .expect("docs/receivers.md");
    let after = doc.split(heading).nth(1).expect("the tutorial section");
    let block = after.split("```toml\n").nth(1).expect("a toml block");
    block.split("```").next().expect("its end").to_string()
}

/// Every line of the batch files under `dir`, with its count.
fn line_counts(dir: &Path) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines() {
            *m.entry(l.to_string()).or_default() += 1;
        }
    }
    m
}

#[test]
fn the_documented_tutorial_pipeline_reads_the_tweet_server_with_delimiter_end() {
    let tweets: Vec<String> = (0..30)
        .map(|i| format!("Tweet{i} about #Spark and @Weir"))
        .collect();
    let sent: Vec<u8> = tweets
        .iter()
        .flat_map(|t| format!("{t} __end").into_bytes())
        .collect();
    // Four writes: ten tweets, then a cut inside the 11th tweet's
    // `__end`, then the rest.
    let cut = tweets[..11].iter().map(|t| t.len() + 6).sum::<usize>() - 3;
    let ten = tweets[..10].iter().map(|t| t.len() + 6).sum::<usize>();
    let chunks = vec![
        sent[..ten].to_vec(),
        sent[ten..cut].to_vec(),
        sent[cut..].to_vec(),
    ];
    let done = Arc::new(AtomicBool::new(false));
    let addr = tweet_server(chunks, done.clone());

    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = documented_pipeline("### Example: the Spark tutorial's tweet server");
    assert!(pipeline.contains("delimiter = \"__end\""), "{pipeline}");
    let pipeline = pipeline.replace("127.0.0.1:9999", &addr)
        + "\n[[sink]]\nkind = \"text_files\"\nprefix = \"out/words\"\n";
    let file = dir.path().join("tweets.toml");
    std::fs::write(&file, pipeline).expect("write pipeline");
    let data = dir.path().join("data");
    let (mut g, _rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http-address", "127.0.0.1:0"]),
    );
    let mut want: BTreeMap<String, u32> = BTreeMap::new();
    for t in &tweets {
        for w in t.split_whitespace() {
            *want.entry(w.to_lowercase()).or_default() += 1;
        }
    }
    let out = data.join("out");
    wait_for("the words of every tweet", || line_counts(&out) == want);
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
    done.store(true, Ordering::Relaxed);
    assert_eq!(line_counts(&out), want, "nothing more after the stop");
}

#[test]
fn a_server_without_newlines_is_counted_and_logged_at_once_and_shown_on_status() {
    // 70 KiB of tutorial tweets, no newline, and the connection stays open:
    // before issue 14 nothing moved until a newline came.
    let tweet = b"Spark streaming is fun #spark __end";
    let mut sent = Vec::new();
    while sent.len() < 70 << 10 {
        sent.extend_from_slice(tweet);
    }
    let done = Arc::new(AtomicBool::new(false));
    let addr = tweet_server(vec![sent], done.clone());

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("silent.toml");
    let pipeline = format!(
        "[[source]]\nid = \"tweets\"\nkind = \"socket\"\naddress = \"{addr}\"\n\n\
         [[step]]\nop = \"split\"\n\n[[sink]]\nkind = \"print\"\n"
    );
    std::fs::write(&file, pipeline).expect("write pipeline");
    let (mut g, rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http-address", "127.0.0.1:0"]),
    );
    let http = line_with(&rx, "status page")
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("status address")
        .to_string();
    let warning = line_with(&rx, "a line passed line_bytes_max");
    for part in [
        "WARN",
        "source=tweets",
        &format!("server={addr}"),
        "line_bytes_max=65536",
        "no newline",
        "set delimiter",
    ] {
        assert!(warning.contains(part), "{part:?} missing in: {warning}");
    }
    let too_long = |http: &str| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(http, "/status").1).expect("status json");
        v["receivers"][0]["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .find(|r| r[0] == "line_too_long")
            .and_then(|r| r[1].as_u64())
            .expect("line_too_long")
    };
    wait_for("line_too_long on /status", || too_long(&http) == 1);
    let metrics = http_get(&http, "/metrics").1;
    assert!(
        metrics
            .contains("weir_receiver_rejected_total{source=\"tweets\",reason=\"line_too_long\"} 1"),
        "{metrics}"
    );
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
    done.store(true, Ordering::Relaxed);
}
