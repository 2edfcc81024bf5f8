//! The ingest source's network rules (#16) with the real binaries: `weir
//! run` of a pipeline whose `kind = "ingest"` source has TLS, client
//! certificates and a tokens file, fed by `weir feed` over TLS with a
//! token from `--token-file` and from `WEIR_TOKEN`: every line stored
//! exactly once; a feed without a token, or without TLS, refused in words
//! that say what to add; a tokens file reloaded on SIGHUP; the token's
//! name in the log, never the token. `weir check` refuses the source off
//! this machine without TLS and tokens, naming the key, and describes it
//! with them.
//!
//! Certificates come from the `openssl` command (`tls_common`); every wait
//! is bounded.

mod service_common;
mod tls_common;

use std::path::Path;
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use service_common::{all_lines, number_counts, start_ingest, wait_for, weir, DEADLINE};
use tls_common::{make_ca, make_leaf};

const TOKEN: &str = "feed-0123456789abcdef0123456789ab";
const NEXT_TOKEN: &str = "next-0123456789abcdef0123456789ab";

const PIPELINE: &str = r#"
[pipeline]
batch_interval = "100ms"
[service]
http_address = "off"
[[source]]
id = "events"
kind = "ingest"
address = "127.0.0.1:0"
tls_cert_file = "server.pem"
tls_key_file = "server.key"
tls_client_ca_file = "ca.pem"
tokens_file = "tokens"
[[sink]]
kind = "text_files"
prefix = "out/records"
"#;

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn numbers(path: &Path, from: u64, to: u64) {
    let text: String = (from..=to).map(|i| format!("{i}\n")).collect();
    std::fs::write(path, text).expect("input");
}

/// `weir feed ADDR FILE --producer P` with `args`, `WEIR_TOKEN` set to
/// `env_token` (or removed).
fn feed(addr: &str, file: &Path, producer: &str, args: &[&str], env_token: Option<&str>) -> Output {
    let mut c = weir();
    c.args(["feed", addr])
        .arg(file)
        .args([
            "--producer",
            producer,
            "--progress",
            "none",
            "--retry-secs",
            "20",
        ])
        .args(args);
    match env_token {
        Some(t) => c.env("WEIR_TOKEN", t),
        None => c.env_remove("WEIR_TOKEN"),
    };
    c.output().expect("feed")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits for a log line with `needle`, keeping every line seen in `seen`.
fn line_kept(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let start = Instant::now();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
            Err(e) => panic!("no log line with {needle:?}: {e}:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn feed_over_tls_with_a_token_into_a_pipeline_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_ca(d, "ca");
    make_leaf(d, "ca", "server", true);
    make_leaf(d, "ca", "client", false);
    write_private(&d.join("tokens"), &format!("ci {TOKEN}\n"));
    write_private(&d.join("feed-token"), &format!("{TOKEN}\n"));
    let p = d.join("p.toml");
    std::fs::write(&p, PIPELINE).expect("pipeline");
    let data = d.join("data");
    let (mut g, addr, rx) = start_ingest(&p, &data);
    let mut seen = Vec::new();
    line_kept(&rx, "ready", &mut seen);
    let (ca, cert, key) = (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"));
    let tls = [
        "--tls-ca",
        ca.to_str().expect("utf-8"),
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    let first = d.join("first.txt");
    numbers(&first, 1, 300);
    let token_file = d.join("feed-token");
    let with_file = [
        &tls[..],
        &["--token-file", token_file.to_str().expect("utf-8")],
    ]
    .concat();
    let o = feed(&addr, &first, "host-a", &with_file, None);
    assert!(o.status.success(), "{}", text(&o));
    let l = line_kept(&rx, "producer connected", &mut seen);
    assert!(l.contains("token=\"ci\"") && l.contains("host-a"), "{l}");
    // Again, the token from WEIR_TOKEN: nothing new to send.
    let o = feed(&addr, &first, "host-a", &tls, Some(TOKEN));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("0 sent now, 300 the server already had"),
        "{}",
        text(&o)
    );
    // No token, no TLS, no client certificate: refused in words.
    let o = feed(&addr, &first, "host-b", &tls, None);
    assert!(!o.status.success());
    assert!(text(&o).contains("requires a token"), "{}", text(&o));
    let o = feed(&addr, &first, "host-b", &[], Some(TOKEN));
    assert!(!o.status.success());
    assert!(text(&o).contains("speaks TLS only"), "{}", text(&o));
    let o = feed(&addr, &first, "host-b", &tls[..2], Some(TOKEN));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("requires a client certificate"),
        "{}",
        text(&o)
    );
    // A new tokens file on SIGHUP: the old token is refused, the new one
    // taken.
    write_private(&d.join("tokens"), &format!("ops {NEXT_TOKEN}\n"));
    g.signal("HUP");
    line_kept(&rx, "tokens reloaded", &mut seen);
    let second = d.join("second.txt");
    numbers(&second, 301, 400);
    let o = feed(&addr, &second, "host-c", &tls, Some(TOKEN));
    assert!(
        text(&o).contains("does not accept this feed's token"),
        "{}",
        text(&o)
    );
    let o = feed(&addr, &second, "host-c", &tls, Some(NEXT_TOKEN));
    assert!(o.status.success(), "{}", text(&o));
    let out = data.join("out");
    wait_for("every record", || number_counts(&out).len() == 400);
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let c = number_counts(&out);
    assert_eq!(c.len(), 400);
    assert!(c.values().all(|&n| n == 1), "duplicates");
    assert_eq!((c.keys().next(), c.keys().last()), (Some(&1), Some(&400)));
    seen.push(all_lines(&rx));
    let log = seen.join("\n");
    assert!(log.contains("token=\"ops\""), "{log}");
    assert!(
        !log.contains(TOKEN) && !log.contains(NEXT_TOKEN),
        "a token was logged:\n{log}"
    );
}

#[test]
fn weir_check_holds_an_ingest_source_off_this_machine_to_tls_and_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    let open = PIPELINE
        .replace("127.0.0.1:0", "0.0.0.0:7070")
        .replace("tls_cert_file = \"server.pem\"\n", "")
        .replace("tls_key_file = \"server.key\"\n", "")
        .replace("tls_client_ca_file = \"ca.pem\"\n", "");
    std::fs::write(&p, &open).expect("pipeline");
    let o = weir().arg("check").arg(&p).output().expect("check");
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("0.0.0.0:7070") && t.contains("tls_cert_file"),
        "{t}"
    );
    let without_tokens = PIPELINE
        .replace("127.0.0.1:0", "0.0.0.0:7070")
        .replace("tokens_file = \"tokens\"\n", "");
    std::fs::write(&p, &without_tokens).expect("pipeline");
    let t = text(&weir().arg("check").arg(&p).output().expect("check"));
    assert!(t.contains("add tokens_file"), "{t}");
    std::fs::write(&p, PIPELINE.replace("127.0.0.1:0", "0.0.0.0:7070")).expect("pipeline");
    // With every key, check reads the files as run will: missing, refused.
    let o = weir().arg("check").arg(&p).output().expect("check");
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("source `events`") && t.contains("server.pem"),
        "{t}"
    );
    let d = dir.path();
    make_ca(d, "ca");
    make_leaf(d, "ca", "server", true);
    write_private(&d.join("tokens"), &format!("ci {TOKEN}\n"));
    let o = weir().arg("check").arg(&p).output().expect("check");
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("ingest server on 0.0.0.0:7070")
            && t.contains("TLS with client certificates, tokens required"),
        "{t}"
    );
}
