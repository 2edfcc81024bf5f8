//! Exactly-once across crashes at every step of the commit protocol.
//!
//! A stateful pipeline (word counts per batch, running totals with
//! update_state_by_key, a sliding window) reads its input from a WAL and
//! saves every output as text files and the totals to a key-value table. A
//! reference run goes uninterrupted; a crash run arms one failpoint, "dies"
//! there, restarts with `get_or_create` on the same data directory, and
//! finishes. Output files, final state and the table must be identical. A
//! property test does the same for random pipelines built from every
//! operator family, over random input.
//!
//! The failpoint registry is process-global, so the tests in this file take
//! a lock and run one at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use weir::checkpoint::{CheckpointStore, SledCheckpointStore, SledConfig};
use weir::wal::Wal;
use weir::{failpoint, ManualClock, State, StateSpec, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a pipeline on a context and returns its input log.
type Pipeline<'a> = &'a dyn Fn(&StreamingContext, &Path) -> weir::Result<Arc<Wal>>;

/// A pipeline on `dir`; the same code on every (re)start.
fn build(
    dir: &Path,
    clock: Arc<ManualClock>,
    pipeline: Pipeline,
) -> weir::Result<(StreamingContext, Arc<Wal>)> {
    let out = dir.join("out");
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(3)
            .clock(clock)
            .batch_retries(1, Duration::from_millis(1))
            .build()?;
        wal = Some(pipeline(&ssc, &out)?);
        Ok(ssc)
    })?;
    let wal = wal.expect("the build function opened the input log");
    Ok((ssc, wal))
}

fn wordcount(ssc: &StreamingContext, out: &Path) -> weir::Result<Arc<Wal>> {
    weir::pipelines::stateful_wordcount(ssc, out)
}

fn input(batch: u64) -> Vec<String> {
    (0..(batch % 4) * 3 + 1)
        .map(|i| format!("w{} w{} x{}", (batch + i) % 5, i % 3, batch % 2))
        .collect()
}

/// Every output file (name → bytes), ignoring temp files.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let out = dir.join("out");
    if let Ok(rd) = std::fs::read_dir(&out) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                m.insert(name, std::fs::read(e.path()).expect("read output"));
            }
        }
    }
    m
}

type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

/// The running totals' state and the key-value table `totals`, sorted.
fn final_state(dir: &Path) -> (Encoded, Vec<(String, u64)>) {
    let mut state = {
        let store = SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default())
            .expect("open checkpoint");
        store
            .load_state("totals")
            .expect("load")
            .unwrap_or_default()
    };
    state.sort();
    let table = weir::sink::KvTable::<String, u64>::open(dir, "totals")
        .expect("open table")
        .scan()
        .expect("scan");
    (state, table)
}

const BATCHES: u64 = 7;

/// Runs batches 1..=BATCHES of the word count; with `crash = Some((point,
/// skip))`, dies at that failpoint once, restarts, and finishes. Returns how
/// many restarts.
fn run(dir: &Path, crash: Option<(&str, u64)>) -> usize {
    let inputs: Vec<Vec<String>> = (1..=BATCHES).map(input).collect();
    run_with(dir, crash, &inputs, &wordcount, &|store| {
        // At the crash, the table shows exactly the last committed batch:
        // the running totals' committed state, no more.
        assert_eq!(
            sorted_state(store, "kv:totals"),
            sorted_state(store, "totals"),
            "table and state disagree after a crash at {crash:?}"
        );
    })
}

fn sorted_state(store: &SledCheckpointStore, op: &str) -> Encoded {
    let mut v = store.load_state(op).expect("load").unwrap_or_default();
    v.sort();
    v
}

/// Runs `pipeline` over one batch per element of `inputs`; with `crash`,
/// dies at that failpoint once, calls `at_crash` on the checkpoint as the
/// crash left it, restarts, and finishes. Returns how many restarts.
fn run_with(
    dir: &Path,
    crash: Option<(&str, u64)>,
    inputs: &[Vec<String>],
    pipeline: Pipeline,
    at_crash: &dyn Fn(&SledCheckpointStore),
) -> usize {
    failpoint::reset();
    if let Some((point, skip)) = crash {
        failpoint::arm(point, skip);
    }
    let clock = Arc::new(ManualClock::new(0));
    let (mut ssc, mut wal) = build(dir, clock.clone(), pipeline).expect("build");
    ssc.start().expect("start");
    let mut restarts = 0;
    let mut batch = 1;
    let mut appended = 0;
    while batch <= inputs.len() as u64 {
        if appended < batch {
            wal.append(&inputs[batch as usize - 1]).expect("append");
            appended = batch;
        }
        clock.set(batch * 1000);
        match ssc.await_batch(batch * 1000, WAIT) {
            Ok(_) => batch += 1,
            Err(e) => {
                assert!(
                    failpoint::fired().is_some(),
                    "batch {batch} failed without a crash: {e}"
                );
                assert!(restarts == 0, "crashed twice");
                let _ = ssc.stop(false);
                drop(ssc);
                drop(wal);
                // The process "restarts": a fresh context on the same data.
                failpoint::reset();
                // A crash after the commit leaves the batch done: the
                // restarted context continues with the next one.
                let store =
                    SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default())
                        .expect("open checkpoint");
                let committed = store
                    .completed()
                    .expect("completed")
                    .iter()
                    .any(|b| b.time_ms == batch * 1000);
                at_crash(&store);
                drop(store);
                if committed {
                    batch += 1;
                }
                let (s, w) = build(dir, clock.clone(), pipeline).expect("rebuild after crash");
                s.start().expect("restart");
                ssc = s;
                wal = w;
                restarts += 1;
            }
        }
    }
    ssc.stop(false).expect("stop");
    restarts
}

fn check_point(point: &str, skip: u64) {
    let _g = serial();
    let reference = tempfile::tempdir().expect("tempdir");
    assert_eq!(run(reference.path(), None), 0);
    let crashed = tempfile::tempdir().expect("tempdir");
    let restarts = run(crashed.path(), Some((point, skip)));
    assert_eq!(restarts, 1, "failpoint {point} (skip {skip}) never fired");
    let (a, b) = (outputs(reference.path()), outputs(crashed.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{point}: output files differ"
    );
    assert_eq!(a, b, "{point}: output contents differ");
    assert_eq!(
        a.len() as u64,
        BATCHES * 2 + BATCHES / 2,
        "one file per batch per output"
    );
    let (state, table) = final_state(reference.path());
    assert_eq!(
        (state.clone(), table.clone()),
        final_state(crashed.path()),
        "{point}: state or key-value table differs"
    );
    // The table holds the running totals: every word of the input, counted.
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    for b in 1..=BATCHES {
        for l in input(b) {
            for w in l.split_whitespace() {
                *truth.entry(w.to_string()).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(
        table,
        truth.into_iter().collect::<Vec<_>>(),
        "{point}: table"
    );
    assert_eq!(state.len(), table.len());
    failpoint::reset();
}

#[test]
fn crash_after_allocate() {
    check_point("after_allocate", 2);
}

#[test]
fn crash_between_outputs() {
    check_point("between_outputs", 5);
}

#[test]
fn crash_inside_a_sink_atomic_write() {
    check_point("sink_write", 7);
}

#[test]
fn crash_after_outputs_before_commit() {
    check_point("before_commit", 3);
}

#[test]
fn crash_after_commit_before_cleanup() {
    check_point("after_commit", 4);
}

#[test]
fn an_incompatible_change_is_refused_and_a_compatible_one_recovers() {
    let _g = serial();
    failpoint::reset();
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), None);
    let clock = Arc::new(ManualClock::new(BATCHES * 1000));
    // Compatible: a stateless filter and an extra output added; the
    // stateful operators keep their names, kinds and parameters.
    {
        let ssc = StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .partitions(3)
                .clock(clock.clone())
                .build()?;
            let (lines, _wal) = ssc.wal_text_stream("input")?;
            let words = lines
                .filter(|l: &String| !l.is_empty())
                .flat_map(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .map(|w| (w, 1u64));
            let totals = words
                .update_state_by_key(|new: &[u64], old: Option<&u64>| {
                    Some(old.copied().unwrap_or(0) + new.iter().sum::<u64>())
                })
                .name("totals");
            totals.foreach_batch(|_, _| Ok(()))?;
            totals.save_to_kv("totals")?;
            words
                .reduce_by_key_and_window(
                    |a, b| a + b,
                    Duration::from_secs(3),
                    Duration::from_secs(2),
                )
                .name("window")
                .foreach_batch(|_, _| Ok(()))?;
            Ok(ssc)
        })
        .expect("build");
        ssc.start().expect("a compatible change recovers");
        ssc.stop(false).expect("stop");
    }
    // Incompatible: the window's length changed.
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(3)
            .clock(clock.clone())
            .build()?;
        let (lines, _wal) = ssc.wal_text_stream("input")?;
        lines
            .map(|l: String| (l, 1u64))
            .reduce_by_key_and_window(|a, b| a + b, Duration::from_secs(4), Duration::from_secs(2))
            .name("window")
            .foreach_batch(|_, _| Ok(()))?;
        Ok(ssc)
    })
    .expect("build");
    let err = ssc
        .start()
        .expect_err("an incompatible change is refused")
        .to_string();
    assert!(
        err.contains(
            "operator `window.window.panes` parameter retain_ms changed from 3000 to 4000"
        ),
        "{err}"
    );
    assert!(
        err.contains("`totals`") && err.contains("orphaned"),
        "{err}"
    );
    assert!(
        err.contains("`kv:totals` (kv_table) is gone"),
        "a dropped table is named: {err}"
    );
    assert!(err.contains("reset-operator"), "names the way out: {err}");
    drop(ssc);
    // The explicit way out: reset the changed operators' state.
    let mut store = SledCheckpointStore::open(dir.path().join("checkpoint"), SledConfig::default())
        .expect("open");
    assert!(store.reset_operator("window").expect("reset") > 0);
    store.reset_operator("totals").expect("reset");
    assert!(store.reset_operator("kv:totals").expect("reset") > 0);
    assert!(store.pending().expect("pending").is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]

    /// Random crash points and moments: outputs and state always equal the
    /// uninterrupted run's.
    #[test]
    fn random_crashes_are_invisible(
        point in prop::sample::select(vec!["after_allocate", "between_outputs", "sink_write", "before_commit", "after_commit"]),
        skip in 0u64..12,
    ) {
        let _g = serial();
        let reference = tempfile::tempdir().expect("tempdir");
        run(reference.path(), None);
        let crashed = tempfile::tempdir().expect("tempdir");
        run(crashed.path(), Some((point, skip)));
        prop_assert_eq!(outputs(reference.path()), outputs(crashed.path()));
        prop_assert_eq!(final_state(reference.path()), final_state(crashed.path()));
        failpoint::reset();
    }
}

/// A stateless step of a random pipeline.
#[derive(Debug, Clone)]
enum Narrow {
    Upper,
    Prefix(usize),
    DropLen(usize),
    Twice,
}

/// The end of one branch of a random pipeline (every kind of operator and
/// output whose crash safety matters).
#[derive(Debug, Clone)]
enum Terminal {
    Text,
    Reduce,
    UpdateState,
    Window(u64, u64),
    WindowInverse(u64, u64),
    MapWithState(Option<u64>),
    Kv,
}

#[derive(Debug, Clone)]
struct Branch {
    narrow: Vec<Narrow>,
    terminal: Terminal,
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Builds the random pipeline `branches` on the WAL stream `input` of words.
fn random_pipeline(
    branches: &[Branch],
    ssc: &StreamingContext,
    out: &Path,
) -> weir::Result<Arc<Wal>> {
    let (lines, wal) = ssc.wal_text_stream("input")?;
    let words =
        lines.flat_map(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    let secs = Duration::from_secs;
    for (i, b) in branches.iter().enumerate() {
        let name = format!("b{i}");
        let file = out.join(&name).display().to_string();
        let mut s = words.clone();
        for n in &b.narrow {
            s = match *n {
                Narrow::Upper => s.map(|w: String| w.to_uppercase()),
                Narrow::Prefix(k) => s.map(move |w: String| w.chars().take(k).collect()),
                Narrow::DropLen(k) => s.filter(move |w: &String| w.len() != k),
                Narrow::Twice => s.flat_map(|w: String| vec![w.clone(), w]),
            };
        }
        let pairs = s.map(|w| (w, 1u64));
        match b.terminal {
            Terminal::Text => s.save_as_text_files(&file, "txt")?,
            Terminal::Reduce => pairs.reduce_by_key(add).save_as_text_files(&file, "txt")?,
            Terminal::UpdateState => pairs
                .update_state_by_key(|new: &[u64], old: Option<&u64>| {
                    // Drop a key once it reached 6: removals get exercised.
                    let n = old.copied().unwrap_or(0) + new.iter().sum::<u64>();
                    (n < 6).then_some(n)
                })
                .name(&name)
                .save_as_text_files(&file, "txt")?,
            Terminal::Window(w, sl) => pairs
                .reduce_by_key_and_window(add, secs(w), secs(sl))
                .name(&name)
                .save_as_text_files(&file, "txt")?,
            Terminal::WindowInverse(w, sl) => pairs
                .reduce_by_key_and_window_inv(
                    add,
                    |a, b| a - b,
                    secs(w),
                    secs(sl),
                    Some(|kv: &(String, u64)| kv.1 > 0),
                )
                .name(&name)
                .save_as_text_files(&file, "txt")?,
            Terminal::MapWithState(timeout) => {
                let spec = StateSpec::function(
                    |k: &String, v: Option<u64>, st: &mut State<u64>| -> String {
                        if st.is_timing_out() {
                            return format!("{k} timed out at {:?}", st.get());
                        }
                        let n = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
                        if n >= 4 {
                            st.remove();
                        } else {
                            st.update(n);
                        }
                        format!("{k} {n}")
                    },
                );
                let spec = match timeout {
                    Some(t) => spec.timeout(secs(t)),
                    None => spec,
                };
                pairs
                    .map_with_state(spec)
                    .name(&name)
                    .save_as_text_files(&file, "txt")?
            }
            Terminal::Kv => pairs.reduce_by_key(add).save_to_kv(&name)?,
        }
    }
    Ok(wal)
}

/// Every operator's committed state, sorted (tables included: they are
/// state named `kv:<table>`).
fn all_state(dir: &Path) -> BTreeMap<String, Encoded> {
    let store = SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default())
        .expect("open checkpoint");
    store
        .state_sizes()
        .expect("sizes")
        .into_iter()
        .map(|(op, _)| {
            let v = sorted_state(&store, &op);
            (op, v)
        })
        .collect()
}

fn narrow() -> impl Strategy<Value = Narrow> {
    prop_oneof![
        Just(Narrow::Upper),
        (1usize..3).prop_map(Narrow::Prefix),
        (1usize..4).prop_map(Narrow::DropLen),
        Just(Narrow::Twice),
    ]
}

fn terminal() -> impl Strategy<Value = Terminal> {
    // (window, slide) in batches; the slide divides the window.
    let ws = prop::sample::select(vec![(1u64, 1u64), (2, 1), (2, 2), (3, 1), (3, 3), (4, 2)]);
    prop_oneof![
        Just(Terminal::Text),
        Just(Terminal::Reduce),
        Just(Terminal::UpdateState),
        ws.clone().prop_map(|(w, s)| Terminal::Window(w, s)),
        ws.prop_map(|(w, s)| Terminal::WindowInverse(w, s)),
        prop::option::of(1u64..3).prop_map(Terminal::MapWithState),
        Just(Terminal::Kv),
    ]
}

fn branch() -> impl Strategy<Value = Branch> {
    (prop::collection::vec(narrow(), 0..3), terminal())
        .prop_map(|(narrow, terminal)| Branch { narrow, terminal })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 30, ..ProptestConfig::default() })]

    /// Random pipelines (1 to 4 branches of stateless steps ending in any
    /// stateful operator, window, table or file output) over random input,
    /// crashed once at a random step: outputs and every operator's state
    /// (tables included) equal the uninterrupted run's.
    #[test]
    fn random_pipelines_survive_random_crashes(
        branches in prop::collection::vec(branch(), 1..5),
        inputs in prop::collection::vec(
            prop::collection::vec("[a-d]{1,3}( [a-d]{1,3}){0,3}", 0..5), 3..8),
        point in prop::sample::select(vec!["after_allocate", "between_outputs", "sink_write", "before_commit", "after_commit"]),
        skip in 0u64..4,
    ) {
        let _g = serial();
        let pipeline = |ssc: &StreamingContext, out: &Path| random_pipeline(&branches, ssc, out);
        let reference = tempfile::tempdir().expect("tempdir");
        run_with(reference.path(), None, &inputs, &pipeline, &|_| {});
        let crashed = tempfile::tempdir().expect("tempdir");
        // A point a pipeline never reaches (say `between_outputs` with one
        // output) leaves a plain determinism check; most cases crash.
        run_with(crashed.path(), Some((point, skip)), &inputs, &pipeline, &|_| {});
        prop_assert_eq!(outputs(reference.path()), outputs(crashed.path()));
        prop_assert_eq!(all_state(reference.path()), all_state(crashed.path()));
        failpoint::reset();
    }
}

/// A pending batch (allocated, then a crash) holding records of a stream
/// the restarted pipeline no longer reads is refused, naming the batch,
/// the stream and its records, rather than committed without them; with
/// the stream back it replays and commits them.
#[test]
fn a_pending_batch_of_a_removed_stream_is_refused_not_committed_without_it() {
    let _g = serial();
    failpoint::reset();
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let open = |with_b: bool| {
        let seen = seen.clone();
        StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .clock(clock.clone())
                .batch_retries(1, Duration::from_millis(1))
                .build()?;
            let (a, wa) = ssc.wal_text_stream("a")?;
            if wa.end() == 0 {
                wa.append(&["a1".to_string()])?;
            }
            let lines = if with_b {
                let (b, wb) = ssc.wal_text_stream("b")?;
                if wb.end() == 0 {
                    wb.append(&["b1".to_string(), "b2".to_string()])?;
                }
                a.union(&b)
            } else {
                a
            };
            lines.foreach_batch(move |_, v| {
                seen.lock().unwrap().extend(v.iter().cloned());
                Ok(())
            })?;
            Ok(ssc)
        })
        .expect("build")
    };
    failpoint::arm("after_allocate", 0);
    let ssc = open(true);
    ssc.start().expect("start");
    clock.set(1000);
    assert!(ssc.await_batch(1000, WAIT).is_err(), "the failpoint fires");
    let _ = ssc.stop(false);
    drop(ssc);
    failpoint::reset();

    let ssc = open(false);
    let e = match ssc.start() {
        Err(e) => e.to_string(),
        Ok(()) => {
            let e = ssc
                .await_batch(1000, WAIT)
                .expect_err("the pending batch is refused");
            let _ = ssc.stop(false);
            e.to_string()
        }
    };
    assert!(
        e.contains("batch 1000 ms") && e.contains("records 0..2 of stream `b`"),
        "{e}"
    );
    drop(ssc);
    assert!(seen.lock().unwrap().is_empty(), "nothing ran or committed");

    let ssc = open(true);
    ssc.start().expect("restart with the stream back");
    ssc.await_batch(1000, WAIT)
        .expect("the pending batch replays");
    ssc.stop(false).expect("stop");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["a1", "b1", "b2"]);
}

/// A training pipeline: lines `x y label` train a k-means model (k = 2,
/// decay 0.9) and a linear regression; both models go to text files as
/// JSON after every batch.
fn ml_pipeline(ssc: &StreamingContext, out: &Path) -> weir::Result<Arc<Wal>> {
    use weir::ml::{StreamingKMeans, StreamingLinearRegressionWithSGD};
    let (lines, wal) = ssc.wal_text_stream("input")?;
    let nums = lines.map(|l: String| {
        l.split_whitespace()
            .map(|w| w.parse::<f64>().unwrap_or(0.0))
            .collect::<Vec<f64>>()
    });
    let points = nums.map(|v: Vec<f64>| v[..2].to_vec());
    let labelled = nums.map(|v: Vec<f64>| (v[2], v[..2].to_vec()));
    let km = StreamingKMeans::new(2)
        .decay_factor(0.9)
        .initial_centers(vec![vec![0.0, 0.0], vec![1.0, 1.0]], vec![1.0, 1.0])
        .expect("centers")
        .train_on(&points)
        .expect("kmeans")
        .name("km");
    let path = |name: &str| out.join(name).display().to_string();
    km.models()
        .map(|m| serde_json::to_string(&m).expect("json"))
        .save_as_text_files(&path("km"), "json")?;
    km.predict_on(&points)
        .save_as_text_files(&path("clusters"), "txt")?;
    let reg = StreamingLinearRegressionWithSGD::new()
        .initial_weights(vec![0.0, 0.0])
        .train_on(&labelled)
        .expect("regression")
        .name("reg");
    reg.models()
        .map(|m| serde_json::to_string(&m).expect("json"))
        .save_as_text_files(&path("reg"), "json")?;
    Ok(wal)
}

fn ml_input(batch: u64) -> Vec<String> {
    (0..(batch % 3) * 4)
        .map(|i| {
            let (x, y) = ((batch * 7 + i * 3) % 11, (batch + i * 5) % 9);
            format!("{x}.5 {y}.25 {}", x * 2 + y)
        })
        .collect()
}

/// Runs the training pipeline over 8 batches, crashing at `crash`;
/// returns the restarts, the output files and the committed models.
fn ml_run(
    dir: &Path,
    crash: Option<(&str, u64)>,
) -> (usize, BTreeMap<String, Vec<u8>>, Vec<Encoded>) {
    let inputs: Vec<Vec<String>> = (1..=8).map(ml_input).collect();
    let restarts = run_with(dir, crash, &inputs, &ml_pipeline, &|_| {});
    let store =
        SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default()).expect("open");
    let models = ["km", "reg"]
        .iter()
        .map(|op| sorted_state(&store, op))
        .collect();
    (restarts, outputs(dir), models)
}

#[test]
fn models_are_trained_exactly_once_across_a_crash_at_every_commit_step() {
    let _g = serial();
    let reference = tempfile::tempdir().expect("tempdir");
    let (_, want_files, want_models) = ml_run(reference.path(), None);
    assert_eq!(
        want_files.len(),
        8 * 3,
        "a model file per batch and model, clusters per batch"
    );
    assert!(
        want_models.iter().all(|m| m.len() == 1),
        "one committed model per operator"
    );
    for (point, skip) in [
        ("after_allocate", 3),
        ("between_outputs", 7),
        ("sink_write", 5),
        ("before_commit", 4),
        ("after_commit", 2),
    ] {
        let crashed = tempfile::tempdir().expect("tempdir");
        let (restarts, files, models) = ml_run(crashed.path(), Some((point, skip)));
        assert_eq!(restarts, 1, "failpoint {point} (skip {skip}) never fired");
        assert_eq!(
            files, want_files,
            "{point}: the models after each batch differ"
        );
        assert_eq!(models, want_models, "{point}: the committed models differ");
    }
    failpoint::reset();
}

/// A changed `k` is an incompatible state change: refused at start naming
/// the operator and the way out; `reset-operator` starts the model over.
#[test]
fn a_changed_k_is_refused_and_reset_operator_starts_the_model_over() {
    let _g = serial();
    failpoint::reset();
    let dir = tempfile::tempdir().expect("tempdir");
    ml_run(dir.path(), None);
    let clock = Arc::new(ManualClock::new(8000));
    let with_k3 = || {
        StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .clock(clock.clone())
                .build()?;
            let (lines, _wal) = ssc.wal_text_stream("input")?;
            let points = lines.map(|_: String| vec![0.0, 0.0]);
            weir::ml::StreamingKMeans::new(3)
                .initial_centers(
                    vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.0]],
                    vec![1.0; 3],
                )
                .expect("centers")
                .train_on(&points)
                .expect("kmeans")
                .name("km")
                .models()
                .foreach_batch(|_, _| Ok(()))?;
            Ok(ssc)
        })
        .expect("build")
    };
    let err = with_k3()
        .start()
        .expect_err("a changed k is refused")
        .to_string();
    assert!(
        err.contains("operator `km` parameter k changed from 2 to 3"),
        "{err}"
    );
    assert!(err.contains("reset-operator"), "{err}");
    let mut store = SledCheckpointStore::open(dir.path().join("checkpoint"), SledConfig::default())
        .expect("open");
    assert!(store.reset_operator("km").expect("reset") > 0);
    store.reset_operator("reg").expect("reset");
    drop(store);
    let ssc = with_k3();
    ssc.start().expect("starts over after reset-operator");
    ssc.stop(false).expect("stop");
}
