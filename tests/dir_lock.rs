//! One writer per directory (issue 13, item 7), with the real binary: a
//! second `weir run` on a data directory in use is refused naming it and
//! the holder's pid; `weir wal repair` on a running service's log is
//! refused; `weir wal verify` reads beside it; after a SIGKILL the lock is
//! gone with the process and a restart works. Plus the same rule for two
//! opens of one log in a process, and on the simulated filesystem.

mod service_common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use service_common::{line_with, spawn_logged, weir};
use weir::storage::sim::{SimFs, Tear};
use weir::storage::Storage;
use weir::wal::{Wal, WalConfig, WalError};

const PIPELINE: &str = service_common::INGEST_TO_FILES;

fn run(pipeline: &Path, data: &Path) -> std::process::Command {
    let mut c = weir();
    c.arg("run").arg(pipeline).arg("--data-dir").arg(data);
    c
}

#[test]
fn a_second_weir_on_a_running_data_directory_is_refused_until_the_first_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, PIPELINE).expect("write");
    let data = dir.path().join("data");
    let (mut first, rx) = spawn_logged(&mut run(&p, &data));
    line_with(&rx, "ready");
    let pid = first.child().id();

    let second = run(&p, &data).output().expect("second run");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second weir started: {err}");
    assert!(
        err.contains(&format!("data directory {} is in use", data.display()))
            && err.contains(&format!("pid {pid}")),
        "names the directory and the holder: {err}"
    );

    let wal = data.join("wal").join("events");
    let repair = weir()
        .args(["wal", "repair"])
        .arg(&wal)
        .output()
        .expect("repair");
    let err = String::from_utf8_lossy(&repair.stderr);
    assert!(
        !repair.status.success(),
        "repair ran beside the service: {err}"
    );
    assert!(
        err.contains(&format!("WAL directory {} is in use", wal.display()))
            && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    let verify = weir()
        .args(["wal", "verify"])
        .arg(&wal)
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "verify reads without the lock: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // SIGKILL: the kernel drops the flock with the process.
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10));
    let (mut again, rx) = spawn_logged(&mut run(&p, &data));
    line_with(&rx, "ready");
    again.signal("TERM");
    assert_eq!(again.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let repair = weir()
        .args(["wal", "repair"])
        .arg(&wal)
        .output()
        .expect("repair");
    assert!(
        repair.status.success(),
        "repair after the stop: {}",
        String::from_utf8_lossy(&repair.stderr)
    );
}

#[test]
fn a_log_opened_twice_is_refused_and_released_on_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalConfig::default()).expect("open");
    let err = Wal::open(dir.path(), WalConfig::default()).expect_err("second open");
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("one writer"), "{err}");
    drop(wal);
    Wal::open(dir.path(), WalConfig::default()).expect("open after the first closed");
}

#[test]
fn a_simulated_crash_releases_the_lock() {
    let fs = SimFs::new();
    let storage: Arc<dyn Storage> = Arc::new(fs.clone());
    let dir = Path::new("/data/wal");
    let (wal, _) = Wal::open_with(storage.clone(), dir, WalConfig::default()).expect("open");
    wal.append(&[b"a".as_slice()]).expect("append");
    let err = Wal::open_with(storage.clone(), dir, WalConfig::default()).expect_err("locked");
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    // Power loss: the holder is dead, its lock with it.
    fs.crash(Tear::None);
    let (again, report) =
        Wal::open_with(storage.clone(), dir, WalConfig::default()).expect("open after crash");
    assert_eq!(report.next_lsn, 1);
    // The dead process's handle going away must not free the new lock.
    drop(wal);
    let err = Wal::open_with(storage, dir, WalConfig::default()).expect_err("still locked");
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    drop(again);
}

/// A child process being started (fork, then exec) holds a copy of every
/// descriptor for a moment, the lock file's too: a log closed and opened
/// again at once, while other threads start processes, still opens.
#[test]
fn a_log_reopens_while_other_threads_start_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::process::Command::new("true").status();
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for i in 0..100 {
        match Wal::open(dir.path(), WalConfig::default()) {
            Ok((wal, _)) => drop(wal),
            Err(e) => {
                result = Err(format!("open {i}: {e}"));
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spawners {
        s.join().expect("spawner");
    }
    result.expect("every reopen succeeds");
}
