//! A library user's pipeline under `run_service` (the one-call service):
//! READY=1 and watchdog pings while batches complete; a stuck batch loop
//! stops the pings (so systemd would restart it); pings resume when it
//! moves again; `batches_max` ends the service with its report.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::service::{run_service, ServiceOptions};
use weir::{Queue, StreamingContext};

#[test]
fn a_stuck_batch_loop_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");

    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(100))
        .parallelism(1)
        .build()
        .expect("context");
    let q: Queue<String> = Queue::new();
    let seen = Arc::new(AtomicU64::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (s2, st2, r2) = (seen.clone(), stuck.clone(), release.clone());
    ssc.queue_stream(&q)
        .foreach_batch(move |_, _| {
            if s2.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                st2.store(true, Ordering::SeqCst);
                let start = Instant::now();
                while !r2.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(())
        })
        .expect("output");
    let opts = ServiceOptions {
        http_address: None,
        batches_max: Some(12),
        notify_socket: Some(sock_path.display().to_string()),
        watchdog: Some(Duration::from_millis(400)),
        ..ServiceOptions::default()
    };
    let service = std::thread::spawn(move || run_service(ssc, opts));

    let mut buf = [0u8; 512];
    let mut recv = |until: Instant, log: &mut Vec<(Instant, String)>| {
        while Instant::now() < until {
            if let Ok(n) = sock.recv(&mut buf) {
                log.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    };
    let mut log = Vec::new();
    // Healthy: READY, then pings.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stuck.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "batch 5 never ran");
        recv(Instant::now() + Duration::from_millis(10), &mut log);
    }
    let t0 = Instant::now();
    assert!(log.iter().any(|(_, m)| m.contains("READY=1")), "{log:?}");
    assert!(
        log.iter().any(|(_, m)| m == "WATCHDOG=1"),
        "pings while healthy: {log:?}"
    );
    // Stuck: no ping from 3/4 of the period after the last batch on.
    let mut during = Vec::new();
    recv(t0 + Duration::from_millis(1200), &mut during);
    let late: Vec<_> = during
        .iter()
        .filter(|(t, m)| m == "WATCHDOG=1" && *t > t0 + Duration::from_millis(400))
        .collect();
    assert!(late.is_empty(), "pings while stuck: {late:?}");
    // Moving again: pings resume, the service ends after 12 batches.
    release.store(true, Ordering::SeqCst);
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !after
        .iter()
        .any(|(_, m): &(Instant, String)| m == "WATCHDOG=1")
    {
        assert!(Instant::now() < deadline, "pings never resumed: {after:?}");
        recv(Instant::now() + Duration::from_millis(10), &mut after);
    }
    let report = service.join().expect("service thread").expect("service");
    assert!(report.batches >= 12, "{report:?}");
    assert_eq!(report.signal, None);
    assert!(seen.load(Ordering::SeqCst) >= 12);
}
