#!/usr/bin/env python3
"""weir against Spark Streaming, side by side, in one run on this machine.

Both run the seed's pipeline: a socket text stream of tweet-like lines
(each ending in `__end`) from the same loopback feeder
(`examples/bench_feeder.rs`), split on `__end`, lowercased, the first ten
printed per batch, words counted with reduceByKey. Spark runs the Java
DStream API (`benches/spark/WeirBenchSpark.java`) on `local[2]` with the
receiver write-ahead log and checkpointing on; weir runs
`examples/bench_socket_wordcount.rs` (every record in the fsynced WAL
before its batch is cut).

Scenarios, for each system:
  throughput  the feeder writes as fast as the reader takes; processed
              lines/s over the run, and the scheduling delay at its end
              (bounded = sustained; growing = falling behind)
  latency     the feeder writes at a fixed moderate rate; each line's
              end-to-end latency = wall time its batch completed - wall time
              the feeder wrote it (one FIFO connection, so line n is in the
              first batch whose cumulative count reaches n); p50 / p99
  restart     fed at full speed, killed with SIGKILL (leaving a backlog;
              weir's backlog limit raised to --restart-backlog-mib, default
              1200, so the log can hold about 1 GiB), restarted with no new
              input: process start to the first completed batch, and to
              the end of the backlog
  peak memory VmHWM of the process (Spark: the driver JVM) over each run

Usage: python3 benches/side_by_side.py [--quick] [--only spark|weir]
Needs: Java 17, Python 3.11, network access to PyPI (pyspark==4.0.1 is
installed into target/side-by-side/venv on first use), cargo.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "side-by-side"
PYSPARK_VERSION = "4.0.1"


def log(msg):
    print(f"[side-by-side] {msg}", flush=True)


def run(cmd, **kw):
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- set-up

def setup_spark():
    venv = WORK / "venv"
    spark_home = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "pyspark"
    if not (spark_home / "jars").is_dir():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", f"pyspark=={PYSPARK_VERSION}"])
    classes = WORK / "spark-classes"
    jar = WORK / "weirbench-spark.jar"
    src = ROOT / "benches" / "spark" / "WeirBenchSpark.java"
    if not jar.exists() or jar.stat().st_mtime < src.stat().st_mtime:
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        run(["javac", "-nowarn", "-cp", str(spark_home / "jars") + "/*", "-d", str(classes), str(src)])
        run(["jar", "cf", str(jar), "-C", str(classes), "."])
    return spark_home, jar


def setup_weir(with_weir):
    examples = ["--example", "bench_feeder"]
    if with_weir:
        examples += ["--example", "bench_socket_wordcount"]
    run(["cargo", "build", "--release", *examples], cwd=ROOT)
    ex = ROOT / "target" / "release" / "examples"
    return ex / "bench_feeder", ex / "bench_socket_wordcount"


# ---------------------------------------------------------------- processes

class Feeder:
    def __init__(self, exe, rate, seconds, logfile):
        self.logfile = logfile
        self.p = subprocess.Popen([str(exe), "127.0.0.1:0", str(rate), str(seconds), str(logfile)],
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()  # generating the lines takes a few seconds
        if not line.startswith("FEEDER port"):
            raise RuntimeError(f"feeder did not start: {line!r}")
        self.port = int(line.split()[2])

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=30)

    def sent_log(self):
        pts = []
        for l in Path(self.logfile).read_text().splitlines():
            ms, n = l.split()
            pts.append((int(ms), int(n)))
        return pts


class System:
    """A running Spark or weir job, its batch lines and peak memory."""

    def __init__(self, cmd, env=None, outfile=None):
        self.batches = []  # (batch_ms, records, sched_ms, proc_ms, total_ms, done_wall_ms)
        self.started_wall_ms = None
        self.spawn_wall_ms = int(time.time() * 1000)
        self.hwm_kib = 0
        self.lines = []
        self.out = open(outfile, "w") if outfile else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.out, text=True,
                                  env=env, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.poller = threading.Thread(target=self._poll_memory, daemon=True)
        self.poller.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line) if len(self.lines) < 100_000 else None
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "WEIRBENCH":
                if parts[1] == "batch":
                    self.batches.append(tuple(int(x) for x in parts[2:8]))
                elif parts[1] == "started":
                    self.started_wall_ms = int(parts[2])

    def _pids(self):
        # The process and its children (spark-submit execs a JVM child).
        pids = [self.p.pid]
        try:
            out = subprocess.run(["pgrep", "-s", str(self.p.pid)], capture_output=True, text=True).stdout
            pids += [int(x) for x in out.split()]
        except OSError:
            pass
        return set(pids)

    def _poll_memory(self):
        while self.p.poll() is None:
            for pid in self._pids():
                try:
                    for l in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if l.startswith("VmHWM:"):
                            self.hwm_kib = max(self.hwm_kib, int(l.split()[1]))
                except OSError:
                    pass
            time.sleep(0.1)

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=30)


def spark_cmd(spark_home, jar, port, batch_ms, ckpt):
    return [str(spark_home / "bin" / "spark-submit"), "--master", "local[2]",
            "--class", "WeirBenchSpark", str(jar), "127.0.0.1", str(port), str(batch_ms), str(ckpt)]


def weir_cmd(exe, port, batch_ms, data, backlog_mib=None):
    cmd = [str(exe), f"127.0.0.1:{port}", str(batch_ms), str(data)]
    return cmd + [str(backlog_mib)] if backlog_mib else cmd


def dir_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for n in files:
            try:
                total += os.path.getsize(os.path.join(root, n))
            except OSError:
                pass
    return total / (1 << 20)


# ---------------------------------------------------------------- analysis

def latencies(batches, sent_log):
    """Per-line latency (ms) from cumulative counts; sampled per 1000 lines."""
    if not sent_log:
        return []
    out = []
    cum = 0
    j = 0
    step = 1000
    n = step
    for b in sorted(batches):
        records, done = b[1], b[5]
        cum += records
        while n <= cum:
            while j + 1 < len(sent_log) and sent_log[j + 1][1] < n:
                j += 1
            # Line n was written between log points j and j+1.
            t0, c0 = sent_log[j]
            t1, c1 = sent_log[min(j + 1, len(sent_log) - 1)]
            sent_at = t0 if c1 == c0 else t0 + (t1 - t0) * (n - c0) / (c1 - c0)
            out.append(done - sent_at)
            n += step
    return out


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summarize_throughput(sys_, seconds):
    b = sorted(sys_.batches)
    if not b:
        return {"lines_per_s": 0, "final_sched_ms": None, "batches": 0}
    # Processed lines over the span of completed batches.
    first_done = b[0][5]
    last_done = b[-1][5]
    span = max(1, last_done - first_done) / 1000
    lines = sum(x[1] for x in b[1:])
    return {
        "lines_per_s": lines / span,
        "final_sched_ms": b[-1][2],
        "max_sched_ms": max(x[2] for x in b),
        "batches": len(b),
    }


# ---------------------------------------------------------------- scenarios

def scenario(system, make_cmd, feeder_exe, rate, seconds, batch_ms, work, name):
    work.mkdir(parents=True, exist_ok=True)
    # A fresh data directory each run (a checkpoint of another batch
    # interval would be refused, rightly).
    shutil.rmtree(work / f"{name}-data", ignore_errors=True)
    f = Feeder(feeder_exe, rate, seconds, work / f"{name}-feeder.log")
    s = System(make_cmd(f.port, batch_ms, work / f"{name}-data"), outfile=work / f"{name}-stderr.log")
    deadline = time.time() + seconds + 60
    while f.p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2 * batch_ms / 1000 + 1)  # let the last batches complete
    if s.p.poll() is not None:
        log(f"{system} {name}: the job exited early with status {s.p.returncode}; see {work / (name + '-stderr.log')}")
    s.kill()
    f.stop()
    return s, f


def measure(system, make_cmd, feeder_exe, args, work):
    res = {}
    # Throughput at full speed.
    s, f = scenario(system, make_cmd, feeder_exe, 0, args.seconds, args.batch_ms, work, "throughput")
    res["throughput"] = summarize_throughput(s, args.seconds)
    res["throughput"]["peak_rss_mib"] = s.hwm_kib / 1024
    log(f"{system} throughput: {json.dumps(res['throughput'])}")
    # Latency at a fixed moderate rate.
    s, f = scenario(system, make_cmd, feeder_exe, args.rate, args.seconds, args.latency_batch_ms, work, "latency")
    lat = latencies(s.batches, f.sent_log())
    res["latency"] = {"rate": args.rate, "batch_ms": args.latency_batch_ms,
                      "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "samples": len(lat),
                      "peak_rss_mib": s.hwm_kib / 1024}
    log(f"{system} latency: {json.dumps(res['latency'])}")
    # Restart with a backlog: full speed, SIGKILL, restart without input.
    data = work / "restart-data"
    shutil.rmtree(data, ignore_errors=True)
    # weir's backlog limit is raised for this run so that the log can hold
    # the backlog the issue names (about 1 GiB); Spark has no such limit.
    backlog = args.restart_backlog_mib
    f = Feeder(feeder_exe, 0, args.restart_feed_seconds, work / "restart-feeder.log")
    s = System(make_cmd(f.port, args.batch_ms, data, backlog), outfile=work / "restart-1-stderr.log")
    try:
        f.p.wait(timeout=args.restart_feed_seconds + 120)
    except subprocess.TimeoutExpired:
        log(f"{system}: the feeder did not finish (the job never connected or died)")
    s.kill()
    f.stop()
    on_disk = dir_mib(data)
    idle = Feeder(feeder_exe, 1, 600, work / "restart-idle.log")
    s = System(make_cmd(idle.port, args.batch_ms, data, backlog), outfile=work / "restart-2-stderr.log")
    deadline = time.time() + 180
    # The first completed batch, whatever it holds: Spark re-runs the
    # batches it missed while down first (and reports no record count for
    # them), weir goes straight to one batch of backlog.
    while time.time() < deadline and not s.batches:
        time.sleep(0.05)
    # Then until the backlog is drained (a batch of almost nothing after
    # batches of backlog), at most 60 s more.
    drained = None
    until = time.time() + 60
    while time.time() < until and drained is None:
        time.sleep(0.2)
        done = sorted(s.batches, key=lambda b: b[5])
        for i in range(1, len(done)):
            if done[i][1] < 1000 and any(b[1] >= 1000 for b in done[:i]):
                drained = (done[i - 1][5] - s.spawn_wall_ms) / 1000
                break
    first = min(s.batches, key=lambda b: b[5]) if s.batches else None
    res["restart"] = {"data_dir_mib_at_kill": round(on_disk),
                      "first_batch_s": (first[5] - s.spawn_wall_ms) / 1000 if first else None,
                      "first_batch_records": first[1] if first else 0,
                      "backlog_drained_s": drained,
                      "backlog_records": sum(b[1] for b in s.batches if b[1] >= 1000)}
    s.kill()
    idle.stop()
    log(f"{system} restart: {json.dumps(res['restart'])}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60, help="seconds per throughput/latency run")
    ap.add_argument("--batch-ms", type=int, default=1000)
    ap.add_argument("--latency-batch-ms", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=50_000, help="lines/s of the latency run")
    ap.add_argument("--restart-feed-seconds", type=int, default=20)
    ap.add_argument("--restart-backlog-mib", type=int, default=1200,
                    help="weir's backlog_bytes_max for the restart run (the backlog to restart with)")
    ap.add_argument("--only", choices=["spark", "weir"])
    ap.add_argument("--quick", action="store_true", help="20 s runs, for a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 20
        args.restart_feed_seconds = 10
    WORK.mkdir(parents=True, exist_ok=True)
    feeder_exe, weir_exe = setup_weir(args.only != "spark")
    results = {}
    if args.only in (None, "spark"):
        spark_home, jar = setup_spark()
        results["spark"] = measure("spark", lambda port, b, d, _backlog=None: spark_cmd(spark_home, jar, port, b, d),
                                   feeder_exe, args, WORK / "spark")
    if args.only in (None, "weir"):
        results["weir"] = measure("weir", lambda port, b, d, backlog=None: weir_cmd(weir_exe, port, b, d, backlog),
                                  feeder_exe, args, WORK / "weir")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(r):
    rows = [
        ("throughput, lines/s (full-speed feeder)", lambda x: x["throughput"]["lines_per_s"], "{:,.0f}", "ratio"),
        ("scheduling delay at the end, ms", lambda x: x["throughput"]["final_sched_ms"], "{}", None),
        ("largest scheduling delay, ms", lambda x: x["throughput"]["max_sched_ms"], "{}", None),
        ("peak RSS at full speed, MiB", lambda x: x["throughput"]["peak_rss_mib"], "{:,.0f}", "inv"),
        ("latency p50, ms", lambda x: x["latency"]["p50_ms"], "{:,.0f}", "inv"),
        ("latency p99, ms", lambda x: x["latency"]["p99_ms"], "{:,.0f}", "inv"),
        ("data directory at the kill, MiB", lambda x: x["restart"]["data_dir_mib_at_kill"], "{:,}", None),
        ("restart to first batch, s", lambda x: x["restart"]["first_batch_s"], "{:.2f}", "inv"),
        ("restart to backlog drained, s", lambda x: x["restart"]["backlog_drained_s"], "{:.2f}", "inv"),
    ]
    print()
    print(f"| measurement | Spark Streaming {PYSPARK_VERSION} | weir | weir vs Spark |")
    print("|---|---:|---:|---:|")
    for name, get, fmt, kind in rows:
        vals = {}
        for k in ("spark", "weir"):
            try:
                vals[k] = get(r[k])
            except (KeyError, TypeError):
                vals[k] = None
        cells = [fmt.format(vals[k]) if vals[k] is not None else "—" for k in ("spark", "weir")]
        ratio = "—"
        if kind and vals["spark"] and vals["weir"]:
            ratio = f"{vals['weir'] / vals['spark']:.1f}x" if kind == "ratio" else f"{vals['spark'] / vals['weir']:.1f}x better"
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main()
