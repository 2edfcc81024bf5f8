//! Unit tests of the tables: every entry parses from a sample and builds
//! the variant of its own name, names are unique, and the value words.

use std::path::Path;

use super::ops::{op_spec, OPS};
use super::raw::describe;
use super::sinks::SINKS;
use super::sources::SOURCES;
use super::*;

const HEAD: &str = "[[source]]\nid = \"in\"\nkind = \"generator\"\n";

/// A step of op `name` that validates, and the steps it needs above it.
fn op_sample(name: &str) -> (&'static str, &'static str) {
    let json = "[[step]]\nop = \"parse_json\"\n";
    let keyed = "[[step]]\nop = \"parse_json\"\n[[step]]\nop = \"key_by\"\nfield = \"user\"\n";
    let counts = "[[step]]\nop = \"count_by_key\"\n";
    match name {
        "split" => ("", "separator = \",\"\nkeep_empty = true"),
        "lowercase" | "uppercase" | "trim" | "count_by_key" => ("", ""),
        "filter" => ("", "regex = '^#'\ninvert = true"),
        "parse_json" => ("", "on_error = \"drop\""),
        "select" => (json, "fields = [\"user\"]"),
        "rename" => (json, "fields = { user = \"who\" }"),
        "key_by" => (json, "field = \"user\""),
        "sum_by_key" => (keyed, "field = \"hashtags\""),
        "window_count" => ("", "window = \"2s\"\nslide = \"1s\""),
        "window_sum" => (counts, "window = \"2s\""),
        "running_total" => (keyed, "field = \"hashtags\""),
        "top" => (counts, "n = 3"),
        "sql" => ("", "query = '''SELECT upper(value) AS v FROM batch'''"),
        "kmeans" => (
            json,
            "features = [\"x\", \"y\"]\nk = 2\nhalf_life = 5\ntime_unit = \"points\"\ninitial_centers = [[0, 0], [1.5, 2]]\nmodel_to = \"models/km\"",
        ),
        "linear_regression" | "logistic_regression" => (
            json,
            "features = [\"x\"]\nlabel = \"y\"\nstep_size = 0.5\nnum_iterations = 10\ninitial_weights = [1]",
        ),
        other => panic!("add a sample for the new op `{other}` here"),
    }
}

#[test]
fn every_op_builds_the_variant_of_its_name() {
    for spec in OPS {
        if cfg!(not(feature = "sql")) && spec.name == "sql" {
            continue;
        }
        let (above, keys) = op_sample(spec.name);
        let text = format!(
            "{HEAD}{above}[[step]]\nid = \"it\"\nop = \"{}\"\n{keys}\n[[sink]]\nkind = \"print\"\n",
            spec.name
        );
        let p = parse("t.toml", &text, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let Some(Node::Step(step)) = p.nodes.last() else {
            panic!("no step in {text}");
        };
        assert_eq!(step.op.name(), spec.name);
        assert_eq!(step.op.stateful(), spec.stateful, "{}", spec.name);
        let input = p.nodes[step.input].kind();
        assert!(spec.inputs.contains(&input), "{}", spec.name);
        assert_eq!(step.kind, spec.output.of(input), "{}", spec.name);
    }
}

#[test]
fn every_sink_and_source_kind_parses_from_its_table_entry() {
    for spec in SINKS {
        let keys = match spec.name {
            "print" => "count = 2",
            "text_files" | "json_files" => "prefix = \"out/x\"",
            "kv" => "table = \"t\"",
            "jetstream" => "servers = [\"nats://127.0.0.1:4222\"]\nsubject = \"out.x\"",
            "kafka" => "brokers = [\"127.0.0.1:9092\"]\ntopic = \"out\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_user = \"u\"\nsasl_password = \"p\"",
            "postgres" => "url = \"host=127.0.0.1 user=weir dbname=app\"\ntable = \"counts\"\ncolumns = { word = \"key\", n = \"value\" }\nmode = \"upsert\"\nkey = [\"word\"]\nupdate = \"n = counts.n + excluded.n\"\ntls_mode = \"verify-ca\"\ntls_ca_file = \"ca.pem\"",
            other => panic!("add a sample for the new sink `{other}` here"),
        };
        let text = format!(
            "{HEAD}[[step]]\nop = \"count_by_key\"\n[[sink]]\nkind = \"{}\"\n{keys}\n",
            spec.name
        );
        parse("t.toml", &text, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    for spec in SOURCES {
        let keys = match spec.name {
            "generator" => "rate = 5",
            "ingest" => "address = \"127.0.0.1:7070\"",
            "socket" => "address = \"feed.example.com:9999\"\ntls_ca_file = \"ca.pem\"\ntls_server_name = \"feed.example.com\"\ntls_cert_file = \"weir.pem\"\ntls_key_file = \"weir.key\"",
            "directory" => "path = \"in\"",
            "http" => "address = \"0.0.0.0:8080\"\nformat = \"json\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\ntokens_file = \"tokens\"",
            "jetstream" => "servers = [\"nats://127.0.0.1:4222\"]\nstreams = [\"EV0\"]",
            "kafka" => "brokers = [\"kafka.example.com:9093\"]\ntopics = [\"orders\"]\ntls_ca_file = \"ca.pem\"\nstart = \"latest\"\nstart_offsets = [\"orders:0:7\"]\npartitions = [\"orders:0\"]\nformat = \"record\"",
            other => panic!("add a sample for the new source `{other}` here"),
        };
        let text = format!(
            "[[source]]\nid = \"s\"\nkind = \"{}\"\n{keys}\n[[sink]]\nkind = \"print\"\n",
            spec.name
        );
        parse("t.toml", &text, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}

#[test]
fn names_and_keys_are_unique_in_every_table() {
    let unique = |names: Vec<&str>| {
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
    };
    unique(op_names());
    unique(sink_names());
    unique(source_names());
    for o in OPS {
        unique(o.keys.iter().map(|k| k.name).collect());
        assert!(
            !o.inputs.is_empty() && !o.input_hint.is_empty(),
            "{}",
            o.name
        );
        assert!(op_spec(o.name).is_some());
    }
    for s in SINKS {
        unique(s.keys.iter().map(|k| k.name).collect());
    }
    for s in SOURCES {
        unique(s.keys.iter().map(|k| k.name).collect());
    }
}

#[test]
fn found_values_are_described_in_user_words() {
    let v = |t: &str| -> toml::Value {
        let table: toml::Table = toml::from_str(&format!("x = {t}")).expect("toml");
        table["x"].clone()
    };
    assert_eq!(describe(&v("\"ten\"")), "\"ten\"");
    assert_eq!(describe(&v("7")), "7");
    assert_eq!(describe(&v("2.0")), "2.0");
    assert_eq!(describe(&v("2.5")), "2.5");
    assert_eq!(describe(&v("true")), "true");
    assert_eq!(describe(&v("[1, \"a\"]")), "a list [1, \"a\"]");
    assert_eq!(describe(&v("{ a = 1 }")), "a table { a = 1 }");
    assert_eq!(describe(&v("1979-05-27")), "the date-time 1979-05-27");
    let long = describe(&v(&format!("\"{}\"", "é".repeat(100))));
    assert!(long.ends_with("...") && long.chars().count() == FOUND_CHARS_MAX + 3);
}

#[test]
fn a_file_sink_inside_weirs_own_directories_is_refused() {
    for prefix in ["checkpoint/out", "wal/x/out", "./receivers/out"] {
        let text = format!("{HEAD}[[sink]]\nkind = \"text_files\"\nprefix = \"{prefix}\"\n");
        let e = parse("p.toml", &text, Path::new("/data")).expect_err(prefix);
        let shown = e.to_string();
        assert!(shown.contains("outside weir's own directories"), "{shown}");
        assert!(shown.contains("data-dir.md"), "{shown}");
    }
    let text = format!("{HEAD}[[sink]]\nkind = \"text_files\"\nprefix = \"out/checkpoint\"\n");
    parse("p.toml", &text, Path::new("/data")).expect("a prefix elsewhere is fine");
}

/// The scale-out keys of a `jetstream` source: what each builds, and
/// conflicting or out-of-range assignments refused naming the key.
#[test]
fn jetstream_scale_out_keys_build_the_assignment_or_name_the_key() {
    let js = |keys: &str| {
        let text = format!(
            "[[source]]\nid = \"s\"\nkind = \"jetstream\"\nservers = [\"nats://127.0.0.1:4222\"]\nstreams = [\"EV0\", \"EV1\", \"EV2\", \"EV3\"]\n{keys}\n[[sink]]\nkind = \"print\"\n"
        );
        parse("t.toml", &text, Path::new(".")).map(|p| match &p.nodes[0] {
            Node::Source(SourceDef {
                kind: SourceKind::JetStream(cfg),
                ..
            }) => cfg.scale_out.clone(),
            _ => panic!("not a jetstream source"),
        })
    };
    use crate::Assignment as A;
    let so = js("").unwrap();
    assert_eq!((so.assignment, so.leases), (A::All, true));
    let so =
        js("instance = 1\ninstances = 2\nlease_ttl_ms = 5000\ninstance_name = \"n1\"").unwrap();
    assert_eq!(so.assignment, A::Instance { index: 1, count: 2 });
    assert_eq!(
        (so.lease_ttl_ms, so.instance_name.as_deref()),
        (5000, Some("n1"))
    );
    assert_eq!(
        js("partitions = [3, 0]").unwrap().assignment,
        A::Partitions(vec![3, 0])
    );
    assert!(!js("leases = false").unwrap().leases);
    for (keys, words) in [
        ("instance = 1", "instance"),
        ("instances = 2", "instance"),
        ("partitions = [0]\ninstance = 0\ninstances = 2", "not both"),
        ("partitions = [4]", "0 to 3"),
        ("partitions = [-1]", "indexes from 0"),
        ("partitions = [\"EV0\"]", "a list of whole numbers"),
        ("instance = 2\ninstances = 2", "0 to 1"),
        ("lease_ttl_ms = 10", "lease_ttl_ms"),
    ] {
        let e = js(keys).expect_err(keys).to_string();
        assert!(e.contains(words), "{keys}: {e}");
    }
}

/// The JetStream source and sink read their client keys the same way:
/// files from the pipeline file's directory, one way to log in, and a
/// server off this machine only over TLS with credentials.
#[test]
fn jetstream_source_and_sink_share_the_client_keys_and_their_rules() {
    let source = |keys: &str| {
        format!("[[source]]\nid = \"s\"\nkind = \"jetstream\"\nstreams = [\"EV0\"]\n{keys}\n[[sink]]\nkind = \"print\"\n")
    };
    let sink =
        |keys: &str| format!("{HEAD}[[sink]]\nkind = \"jetstream\"\nsubject = \"o.x\"\n{keys}\n");
    let files = "servers = [\"nats://127.0.0.1:4222\"]\ncredentials_file = \"n.creds\"\ntls_ca_file = \"ca.pem\"";
    let base = Path::new("/etc/weir");
    let p = parse("t.toml", &source(files), base).expect("source");
    let Node::Source(SourceDef {
        kind: SourceKind::JetStream(c),
        ..
    }) = &p.nodes[0]
    else {
        panic!("not a jetstream source")
    };
    assert_eq!(
        c.auth,
        crate::NatsAuth::CredentialsFile(base.join("n.creds"))
    );
    assert_eq!(
        c.tls_ca_file.as_deref(),
        Some(base.join("ca.pem").as_path())
    );
    let p = parse("t.toml", &sink(files), base).expect("sink");
    let Some(SinkKind::JetStream(c)) = p.sinks.iter().map(|s| &s.kind).next_back() else {
        panic!("not a jetstream sink")
    };
    assert_eq!(
        c.auth,
        crate::NatsAuth::CredentialsFile(base.join("n.creds"))
    );
    assert_eq!(
        c.tls_ca_file.as_deref(),
        Some(base.join("ca.pem").as_path())
    );
    for text in [source(""), sink("")] {
        let e = parse("t.toml", &text, base)
            .expect_err("no servers")
            .to_string();
        assert!(e.contains("servers"), "{e}");
    }
    for (keys, words) in [
        ("servers = [\"nats://10.1.1.1:4222\"]", "off this machine"),
        (
            "servers = [\"nats://10.1.1.1:4222\"]\ntls_required = true",
            "off this machine",
        ),
        (
            "servers = [\"nats://127.0.0.1:4222\"]\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"",
            "one way to log in",
        ),
        (
            "servers = [\"nats://127.0.0.1:4222\"]\nuser = \"u\"",
            "user and password together",
        ),
    ] {
        for text in [source(keys), sink(keys)] {
            let e = parse("t.toml", &text, base).expect_err(keys).to_string();
            assert!(e.contains(words), "{keys}: {e}");
        }
    }
    let remote = "servers = [\"tls://10.1.1.1:4222\"]\ntls_required = true\ntoken = \"t\"";
    parse("t.toml", &source(remote), base).expect("remote source over TLS with a token");
    parse("t.toml", &sink(remote), base).expect("remote sink over TLS with a token");
}

#[test]
fn an_http_source_listens_off_this_machine_only_with_tls_and_tokens() {
    let source = |keys: &str| {
        format!(
            "[[source]]\nid = \"events\"\nkind = \"http\"\n{keys}\n[[sink]]\nkind = \"print\"\n"
        )
    };
    let base = Path::new("/etc/weir");
    let keys = "address = \"0.0.0.0:8080\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\ntokens_file = \"t\"\nbody_bytes_max = 1024\nrecords_per_request_max = 10";
    let p = parse("t.toml", &source(keys), base).expect("http source");
    let Node::Source(SourceDef {
        kind:
            SourceKind::Http {
                security,
                http,
                json,
                ..
            },
        ..
    }) = &p.nodes[0]
    else {
        panic!("not an http source")
    };
    let tls = security.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, base.join("c.pem"));
    assert_eq!(security.tokens.as_deref(), Some(base.join("t").as_path()));
    assert_eq!(
        (http.body_bytes_max, http.records_per_request_max, *json),
        (1024, 10, false)
    );
    for (keys, words) in [
        ("address = \"0.0.0.0:8080\"", "add tls_cert_file"),
        (
            "address = \"10.0.0.1:8080\"\ntls_cert_file = \"c\"\ntls_key_file = \"k\"",
            "add tokens_file",
        ),
        (
            "address = \"127.0.0.1:8080\"\ntls_cert_file = \"c\"",
            "tls_key_file",
        ),
        (
            "address = \"127.0.0.1:8080\"\ntls_client_ca_file = \"c\"",
            "client certificates need TLS",
        ),
        (
            "address = \"127.0.0.1:8080\"\nformat = \"xml\"",
            "\"text\" or \"json\"",
        ),
        (
            "address = \"127.0.0.1:8080\"\nbody_bytes_max = 0",
            "body_bytes_max",
        ),
    ] {
        let e = parse("t.toml", &source(keys), base)
            .expect_err(keys)
            .to_string();
        assert!(e.contains(words), "{keys}: {e}");
    }
    parse("t.toml", &source("address = \"127.0.0.1:8080\""), base).expect("loopback without TLS");
}

#[test]
fn an_ingest_source_listens_off_this_machine_only_with_tls_and_tokens() {
    let source = |keys: &str| {
        format!(
            "[[source]]\nid = \"events\"\nkind = \"ingest\"\n{keys}\n[[sink]]\nkind = \"print\"\n"
        )
    };
    let base = Path::new("/etc/weir");
    let keys = "address = \"0.0.0.0:7070\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"\ntls_client_ca_file = \"ca.pem\"\ntokens_file = \"t\"";
    let p = parse("t.toml", &source(keys), base).expect("ingest source with TLS and tokens");
    let Node::Source(SourceDef {
        kind: SourceKind::Ingest {
            address, security, ..
        },
        ..
    }) = &p.nodes[0]
    else {
        panic!("not an ingest source")
    };
    assert_eq!(address.to_string(), "0.0.0.0:7070");
    let tls = security.tls.as_ref().expect("tls");
    assert_eq!(
        (&tls.cert, &tls.key, tls.client_ca.as_deref()),
        (
            &base.join("c.pem"),
            &std::path::PathBuf::from("/k.pem"),
            Some(base.join("ca.pem").as_path())
        )
    );
    assert_eq!(security.tokens.as_deref(), Some(base.join("t").as_path()));
    for (keys, words) in [
        ("address = \"0.0.0.0:7070\"", "add tls_cert_file"),
        (
            "address = \"10.0.0.1:7070\"\ntls_cert_file = \"c\"\ntls_key_file = \"k\"",
            "add tokens_file",
        ),
        (
            "address = \"[::]:7070\"\ntokens_file = \"t\"",
            "add tls_cert_file",
        ),
        (
            "address = \"127.0.0.1:7070\"\ntls_key_file = \"k\"",
            "tls_cert_file",
        ),
        (
            "address = \"127.0.0.1:7070\"\ntls_client_ca_file = \"c\"",
            "client certificates need TLS",
        ),
        ("address = \"example.com:7070\"", "give an IP address"),
    ] {
        let e = parse("t.toml", &source(keys), base)
            .expect_err(keys)
            .to_string();
        assert!(e.contains(words), "{keys}: {e}");
    }
    let p = parse("t.toml", &source("address = \"127.0.0.1:0\""), base).expect("loopback");
    let Node::Source(SourceDef {
        kind: SourceKind::Ingest { security, .. },
        ..
    }) = &p.nodes[0]
    else {
        panic!("not an ingest source")
    };
    assert_eq!(*security, crate::net::SecurityFiles::default());
    parse(
        "t.toml",
        &source("address = \"127.0.0.1:7070\"\ntokens_file = \"t\""),
        base,
    )
    .expect("loopback with tokens only");
}

/// A socket source's server and TLS keys: loopback without TLS; off this
/// machine (a name, an IP address) only with `tls_ca_file`; the verified
/// name defaults to the address's host as written; paths from the file's
/// directory; the certificate and key together; TLS keys need the CA file.
#[test]
fn a_socket_source_reaches_a_server_off_this_machine_only_over_verified_tls() {
    use crate::receiver::{ClientCert, SocketTls};
    let base = Path::new("/etc/weir");
    let socket = |keys: &str| {
        let text = format!(
            "[[source]]\nid = \"feed\"\nkind = \"socket\"\n{keys}\n[[sink]]\nkind = \"print\"\n"
        );
        parse("t.toml", &text, base).map(|p| match &p.nodes[0] {
            Node::Source(SourceDef {
                kind: SourceKind::Socket { address, tls, .. },
                ..
            }) => (address.clone(), tls.clone()),
            _ => panic!("not a socket source"),
        })
    };
    let verified = |ca: &str, name: &str| SocketTls {
        ca_file: base.join(ca),
        server_name: Some(name.into()),
        client_cert: None,
    };
    let ok = |keys: &str| socket(keys).unwrap_or_else(|e| panic!("{keys}: {e}"));
    assert_eq!(
        ok("address = \"feed.example.com:9999\"\ntls_ca_file = \"ca.pem\""),
        (
            "feed.example.com:9999".into(),
            Some(verified("ca.pem", "feed.example.com"))
        )
    );
    assert_eq!(
        ok("address = \"[2001:db8::1]:9999\"\ntls_ca_file = \"/pki/ca.pem\""),
        (
            "[2001:db8::1]:9999".into(),
            Some(verified("/pki/ca.pem", "2001:db8::1"))
        )
    );
    let (address, tls) = ok("address = \"10.1.2.3:9999\"\ntls_ca_file = \"ca.pem\"\ntls_server_name = \"feed.internal\"\ntls_cert_file = \"weir.pem\"\ntls_key_file = \"weir.key\"");
    assert_eq!(address, "10.1.2.3:9999");
    assert_eq!(
        tls,
        Some(SocketTls {
            client_cert: Some(ClientCert {
                cert_file: base.join("weir.pem"),
                key_file: base.join("weir.key"),
            }),
            ..verified("ca.pem", "feed.internal")
        })
    );
    assert_eq!(
        ok("address = \"localhost:9999\""),
        ("127.0.0.1:9999".into(), None)
    );
    assert_eq!(ok("address = \"[::1]:9999\"").1, None);
    assert_eq!(
        ok("address = \"localhost:9999\"\ntls_ca_file = \"ca.pem\"").1,
        Some(verified("ca.pem", "localhost"))
    );
    for (keys, key, words) in [
        (
            "address = \"feed.example.com:9999\"",
            "address",
            "add tls_ca_file",
        ),
        ("address = \"10.0.0.1:9999\"", "address", "add tls_ca_file"),
        (
            "address = \"[2001:db8::1]:9999\"",
            "address",
            "add tls_ca_file",
        ),
        (
            "address = \"127.0.0.1:9999\"\ntls_server_name = \"feed\"",
            "tls_ca_file",
            "add tls_ca_file",
        ),
        (
            "address = \"127.0.0.1:9999\"\ntls_cert_file = \"c\"\ntls_key_file = \"k\"",
            "tls_ca_file",
            "add tls_ca_file",
        ),
        (
            "address = \"127.0.0.1:9999\"\ntls_ca_file = \"ca\"\ntls_cert_file = \"c\"",
            "tls_key_file",
            "add tls_key_file",
        ),
        (
            "address = \"127.0.0.1:9999\"\ntls_ca_file = \"ca\"\ntls_key_file = \"k\"",
            "tls_cert_file",
            "add tls_cert_file",
        ),
        (
            "address = \"127.0.0.1:9999\"\ntls_ca_file = \"ca\"\ntls_server_name = \"not a name\"",
            "tls_server_name",
            "a DNS name or an IP address",
        ),
        ("address = \"feed.example.com:0\"", "address", "1 to 65535"),
        ("address = \"feed.example.com\"", "address", "HOST:PORT"),
        ("address = \"2001:db8::1:9999\"", "address", "in brackets"),
        ("address = \"feed_example!:9999\"", "address", "a host name"),
    ] {
        let e = socket(keys).expect_err(keys);
        assert_eq!(e.key, format!("source[0].{key}"), "{keys}: {e}");
        assert!(e.to_string().contains(words), "{keys}: {e}");
    }
}
