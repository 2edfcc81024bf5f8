//! The JetStream source and sink against a server that requires TLS and
//! a token (tests/nats_common, one node, `sync_interval: always`): a
//! throwaway certificate authority and server certificate made with the
//! `openssl` command (`tests/tls_common`); weir's sink publishes into a stream over TLS with
//! the token, weir's source reads it back over TLS with the token (its
//! scale-out lease too: the key-value buckets go over the same
//! connection), each record exactly once. A wrong token, a missing
//! certificate authority and a plain-text client with `tls_required` are
//! refused at connect, naming the servers.

mod common;
mod nats_common;
mod tls_common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::{collect, Out};
use nats_common::{Cluster, ClusterOptions};
use weir::source::JetStreamConnection;
use weir::{JetStreamConfig, JetStreamSinkConfig, ManualClock, NatsAuth, StreamingContext};

const TOKEN: &str = "weir-test-token-7f3a9c";
const WAIT: Duration = Duration::from_secs(60);

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost
/// signed by it (`server.pem`, `server.key`), in `dir`.
fn certificates(dir: &Path) {
    tls_common::make_ca(dir, "ca");
    tls_common::make_leaf(dir, "ca", "server", true);
}

/// One node requiring TLS (the certificates in `certs`) and the token.
fn tls_server(certs: &Path) -> Cluster {
    let extra = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\nauthorization {{\n  token: \"{TOKEN}\"\n}}\n",
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    );
    Cluster::start_with(
        1,
        ClusterOptions {
            extra_config: extra,
        },
    )
}

/// A client of the test's own (the harness's speaks plain text).
async fn admin(url: &str, ca: &Path) -> Result<jetstream::Context, async_nats::Error> {
    let client = async_nats::ConnectOptions::new()
        .token(TOKEN.into())
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok(jetstream::new(client))
}

fn sink_config(url: &str, ca: &Path) -> JetStreamSinkConfig {
    let mut c = JetStreamSinkConfig::new(&[url], "secure.out");
    c.auth = NatsAuth::Token(TOKEN.into());
    c.tls_ca_file = Some(ca.to_path_buf());
    c.tls_required = true;
    c
}

fn source_config(url: &str, ca: &Path) -> JetStreamConfig {
    let mut c = JetStreamConfig::new(&[url], &["SECURE"]);
    c.auth = NatsAuth::Token(TOKEN.into());
    c.tls_ca_file = Some(ca.to_path_buf());
    c.tls_required = true;
    c.scale_out.lease_ttl_ms = weir::source::LEASE_TTL_MS_MIN;
    c
}

/// Publishes `lines` through weir's sink (one batch), on data dir `data`.
fn publish_with_weir(data: &Path, cfg: JetStreamSinkConfig, lines: &[String]) {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        / 1000
        * 1000;
    let clock = Arc::new(ManualClock::new(t0));
    let mut got = None;
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .build()?;
        let (s, wal) = ssc.wal_text_stream("input")?;
        got = Some((wal, s.save_to_jetstream(cfg)?));
        Ok(ssc)
    })
    .expect("build the sink's context");
    let (wal, stats) = got.expect("built");
    ssc.start().expect("start");
    wal.append(lines).expect("append");
    clock.set(t0 + 1000);
    ssc.await_batch(t0 + 1000, WAIT)
        .expect("the batch publishes");
    assert_eq!(stats.acked.load(Ordering::Relaxed), lines.len() as u64);
    ssc.stop(false).expect("stop");
}

/// Reads stream SECURE through weir's source until `want` records came.
fn read_with_weir(data: &Path, cfg: JetStreamConfig, want: usize) -> Vec<String> {
    let clock = Arc::new(ManualClock::new(0));
    let mut out: Option<Out<String>> = None;
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .build()?;
        let (s, _) = ssc.jetstream_stream("in", cfg)?;
        out = Some(collect(&s));
        Ok(ssc)
    })
    .expect("build the source's context");
    let out = out.expect("built");
    ssc.start().expect("start");
    let deadline = Instant::now() + WAIT;
    let total = |o: &Out<String>| {
        o.lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.len())
            .sum::<usize>()
    };
    while total(&out) < want {
        assert!(Instant::now() < deadline, "only {} of {want}", total(&out));
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).expect("batch");
    }
    ssc.stop(false).expect("stop");
    let v = out.lock().unwrap();
    v.iter().flat_map(|(_, r)| r.iter().cloned()).collect()
}

#[test]
fn source_and_sink_speak_tls_with_a_token_and_refuse_what_does_not_fit() {
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let ca = certs.path().join("ca.pem");
    let c = tls_server(certs.path());
    let url = c.urls()[0].clone();
    c.block_on(async {
        let js = admin(&url, &ca).await?;
        js.create_stream(stream::Config {
            name: "SECURE".into(),
            subjects: vec!["secure.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        Ok::<_, async_nats::Error>(())
    })
    .expect("create the stream over TLS");

    let lines: Vec<String> = (0..500).map(|i| format!("secret {i}")).collect();
    let data = tempfile::tempdir().expect("tempdir");
    publish_with_weir(&data.path().join("sink"), sink_config(&url, &ca), &lines);
    let mut got = read_with_weir(&data.path().join("source"), source_config(&url, &ca), 500);
    got.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got, want, "each record once, over TLS with the token");

    // What does not fit is refused at connect, naming the servers.
    let refused = |cfg: JetStreamConfig| {
        JetStreamConnection::connect(&cfg)
            .expect_err("refused")
            .to_string()
    };
    let mut wrong = source_config(&url, &ca);
    wrong.auth = NatsAuth::Token("not-the-token".into());
    wrong.connect_timeout_ms = 2_000;
    let e = refused(wrong);
    assert!(
        e.contains("could not connect to NATS at") && e.contains(&url),
        "{e}"
    );
    let mut no_ca = source_config(&url, &ca);
    no_ca.tls_ca_file = None;
    no_ca.connect_timeout_ms = 2_000;
    let e = refused(no_ca);
    assert!(e.contains("could not connect to NATS at"), "{e}");
    let mut no_token = source_config(&url, &ca);
    no_token.auth = NatsAuth::None;
    no_token.connect_timeout_ms = 2_000;
    let e = refused(no_token);
    assert!(e.contains("could not connect to NATS at"), "{e}");
}
