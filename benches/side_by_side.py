#!/usr/bin/env python3
"""weir against Spark Streaming and Apache Flink, side by side, in one run.

All three run the seed's pipeline: a socket text stream of tweet-like
lines (each ending in `__end`) from the same loopback feeder
(`examples/bench_feeder.rs`), split on `__end`, lowercased, the first ten
printed per batch, words counted per batch interval.
- Spark 4.0.1: the Java DStream API (`benches/spark/WeirBenchSpark.java`)
  on `local[2]`, receiver write-ahead log and checkpointing on,
  backpressure on with an initial rate, driver heap 4 GiB (with the 1 GiB
  default its driver ran out of memory at full speed);
- Flink 2.3.0: the Java DataStream API (`benches/flink/WeirBenchFlink.java`)
  in a local MiniCluster (one JVM, heap 4 GiB), parallelism 2,
  exactly-once checkpoints every second to a local directory, word counts
  per tumbling processing-time window of the batch interval;
- weir: `examples/bench_socket_wordcount.rs` (every record in the fsynced
  WAL before its batch is cut).

The systems run one after another, never at once, scenario by scenario
(throughput: spark, flink, weir, then again for --rounds; then latency;
then restart), so that the ratios of one run share the machine's state.

Scenarios, for each system:
  throughput  the feeder writes as fast as the reader takes; processed
              lines per wall second and per CPU-second (user + system of
              the whole process tree, every JVM thread included) between
              the first and the last completed batch; the scheduling delay
              (bounded = sustained)
  latency     the feeder writes at a fixed moderate rate; each line's
              end-to-end latency = wall time its batch completed - wall time
              the feeder wrote it (one FIFO connection, so line n is in the
              first batch whose cumulative count reaches n); p50 / p99
  restart     (Spark and weir only: Flink's socket source cannot replay)
              fed at full speed, killed with SIGKILL, restarted with no new
              input: process start to the first completed batch, and to
              the end of the backlog
  each run    peak memory (VmHWM of the process tree); survival (the
              process alive until the feeder ended, no OutOfMemoryError
              and no failed or restarted Flink job in its log); the load
              average before and after, and the CPU the rest of the machine
              used meanwhile (other engineers' builds: noise)

Usage: python3 benches/side_by_side.py [--quick] [--only spark|flink|weir]
(defaults: 60 s runs, 2 throughput rounds, 20,000 lines/s for latency;
about 15 minutes for the three systems; results in
target/side-by-side/results.json, each run's log beside it)
Needs: Java 17, Python 3.11, network access to PyPI (pyspark==4.0.1 and
apache-flink==2.3.0 are installed into target/side-by-side/ on first use),
cargo. Run by hand; CI only checks that this file compiles.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "side-by-side"
PYSPARK_VERSION = "4.0.1"
FLINK_VERSION = "2.3.0"
SYSTEMS = ("spark", "flink", "weir")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Lines in a JVM's log that mean it did not survive the run.
FATAL = re.compile(r"OutOfMemoryError|GC overhead limit exceeded"
                   r"|switched from state \w+ to (?:FAILING|FAILED|RESTARTING)")


def log(msg):
    print(f"[side-by-side] {msg}", flush=True)


def run(cmd, **kw):
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- set-up

def site_packages(venv):
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def pip_install(venv, requirement, marker):
    if not marker.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", requirement])


def compile_jar(src, classpath, name):
    classes = WORK / f"{name}-classes"
    jar = WORK / f"{name}.jar"
    if not jar.exists() or jar.stat().st_mtime < src.stat().st_mtime:
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        run(["javac", "-nowarn", "-cp", classpath, "-d", str(classes), str(src)])
        run(["jar", "cf", str(jar), "-C", str(classes), "."])
    return jar


def setup_spark():
    venv = WORK / "venv"
    spark_home = site_packages(venv) / "pyspark"
    pip_install(venv, f"pyspark=={PYSPARK_VERSION}", spark_home / "jars")
    jar = compile_jar(ROOT / "benches" / "spark" / "WeirBenchSpark.java",
                      str(spark_home / "jars") + "/*", "weirbench-spark")
    return spark_home, jar


def setup_flink():
    # The apache-flink wheel pulls in apache-flink-libraries, which carries
    # Flink's jars (pyflink/lib); the job is plain Java against them.
    venv = WORK / "flink-venv"
    flink_home = site_packages(venv) / "pyflink"
    pip_install(venv, f"apache-flink=={FLINK_VERSION}", flink_home / "lib" / f"flink-dist-{FLINK_VERSION}.jar")
    jar = compile_jar(ROOT / "benches" / "flink" / "WeirBenchFlink.java",
                      str(flink_home / "lib") + "/*", "weirbench-flink")
    return flink_home, jar


def setup_weir(with_weir):
    examples = ["--example", "bench_feeder"]
    if with_weir:
        examples += ["--example", "bench_socket_wordcount"]
    run(["cargo", "build", "--release", *examples], cwd=ROOT)
    ex = ROOT / "target" / "release" / "examples"
    return ex / "bench_feeder", ex / "bench_socket_wordcount"


# ---------------------------------------------------------------- commands

def spark_cmd(spark_home, jar, args, port, batch_ms, ckpt):
    rate = args.spark_initial_rate
    initial = ["--conf", f"spark.streaming.backpressure.initialRate={rate}"] if rate else []
    return [str(spark_home / "bin" / "spark-submit"), "--master", "local[2]",
            "--driver-memory", args.jvm_heap, *initial,
            "--class", "WeirBenchSpark", str(jar), "127.0.0.1", str(port), str(batch_ms), str(ckpt)]


def flink_cmd(flink_home, jar, args, port, batch_ms, ckpt):
    log4j = ROOT / "benches" / "flink" / "log4j2.properties"
    return ["java", f"-Xmx{args.jvm_heap}", f"-Dlog4j.configurationFile={log4j}",
            "-cp", f"{jar}:{flink_home / 'lib'}/*", "WeirBenchFlink",
            "127.0.0.1", str(port), str(batch_ms), str(Path(ckpt).resolve()), str(args.flink_parallelism)]


def weir_cmd(exe, port, batch_ms, data, backlog_mib=None):
    cmd = [str(exe), f"127.0.0.1:{port}", str(batch_ms), str(data)]
    return cmd + [str(backlog_mib)] if backlog_mib else cmd


def make_commands(args, systems, weir_exe):
    """system -> f(port, batch_ms, data_dir, backlog_mib=None) -> argv."""
    cmds = {}
    if "spark" in systems:
        home, jar = setup_spark()
        cmds["spark"] = lambda p, b, d, _m=None: spark_cmd(home, jar, args, p, b, d)
    if "flink" in systems:
        fhome, fjar = setup_flink()
        cmds["flink"] = lambda p, b, d, _m=None: flink_cmd(fhome, fjar, args, p, b, d)
    if "weir" in systems:
        cmds["weir"] = lambda p, b, d, m=None: weir_cmd(weir_exe, p, b, d, m)
    return cmds


# ---------------------------------------------------------------- /proc

def cpu_ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_busy_ticks():
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v[:3]) + sum(v[5:8])  # user nice system, irq softirq steal


def vm_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def loadavg():
    return float(Path("/proc/loadavg").read_text().split()[0])


def session_pids(leader):
    # The process and the rest of its session (spark-submit execs a JVM child).
    out = subprocess.run(["pgrep", "-s", str(leader)], capture_output=True, text=True).stdout
    return {leader, *(int(x) for x in out.split())}


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
        self.ended_wall_ms = None

    def wait(self, timeout):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self.ended_wall_ms = int(time.time() * 1000)
        return True

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
    """A running job: its batch lines, and samples of its CPU and memory."""

    def __init__(self, cmd, outfile, feeder_pid=None):
        self.batches = []  # (batch_ms, records, sched_ms, proc_ms, total_ms, done_wall_ms)
        self.samples = []  # (wall_ms, job_ticks, feeder_ticks, machine_ticks)
        self.hwm_kib = 0
        self.exited_wall_ms = None
        self.feeder_pid = feeder_pid
        self.outfile = outfile
        self.spawn_wall_ms = int(time.time() * 1000)
        self.out = open(outfile, "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.out, text=True,
                                  start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            parts = line.split()
            if len(parts) >= 8 and parts[0] == "WEIRBENCH" and parts[1] == "batch":
                self.batches.append(tuple(int(x) for x in parts[2:8]))

    def _sample(self):
        job = 0
        for pid in session_pids(self.p.pid):
            try:
                job += cpu_ticks(pid)
                self.hwm_kib = max(self.hwm_kib, vm_hwm_kib(pid))
            except (OSError, IndexError, ValueError):
                pass
        try:
            feeder = cpu_ticks(self.feeder_pid) if self.feeder_pid else 0
        except OSError:
            feeder = self.samples[-1][2] if self.samples else 0
        self.samples.append((int(time.time() * 1000), job, feeder, machine_busy_ticks()))

    def _poll(self):
        while self.p.poll() is None:
            self._sample()
            time.sleep(0.1)
        self.exited_wall_ms = int(time.time() * 1000)

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=30)
        self.out.close()

    def fatal_line(self):
        text = Path(self.outfile).read_text(errors="replace")
        m = FATAL.search(text)
        return text[m.start():text.find("\n", m.start())][:200] if m else None


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

def at(samples, t, col):
    """Sample column `col` at wall time t (ms), linearly interpolated."""
    prev = None
    for s in samples:
        if s[0] >= t:
            if prev is None:
                return s[col]
            frac = (t - prev[0]) / max(1, s[0] - prev[0])
            return prev[col] + (s[col] - prev[col]) * frac
        prev = s
    return prev[col] if prev else 0


def cpu_between(samples, t0, t1):
    """The job's CPU-seconds, its cores and the rest of the machine's cores over [t0, t1]."""
    job, feeder, machine = (at(samples, t1, c) - at(samples, t0, c) for c in (1, 2, 3))
    span_s = max(1, t1 - t0) / 1000
    return {"cpu_s": job / CLK_TCK, "cores": job / CLK_TCK / span_s,
            "other_cores": max(0.0, machine - job - feeder) / CLK_TCK / span_s}


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


def rates(b, samples):
    """Lines per wall and per CPU-second over completed batches b (sorted;
    the first one marks the start), and the CPU over the same span."""
    t0, t1 = b[0][5], b[-1][5]
    lines = sum(x[1] for x in b[1:])
    cpu = cpu_between(samples, t0, t1)
    return lines / (max(1, t1 - t0) / 1000), lines / cpu["cpu_s"] if cpu["cpu_s"] else 0, cpu


def busy_batches(batches):
    """Sorted batches less the empty ones after the feed ended and all but
    the last empty one before it began (that one marks the start)."""
    b = sorted(batches)
    while b and b[-1][1] == 0:
        b.pop()
    first = next((i for i, x in enumerate(b) if x[1] > 0), len(b))
    return b[max(0, first - 1):]


def summarize_throughput(s):
    b = busy_batches(s.batches)
    if len(b) < 4:
        return {"lines_per_s": 0, "lines_per_cpu_s": 0, "batches": len(b)}
    per_s, per_cpu_s, cpu = rates(b, s.samples)
    # The second half alone: the JVMs' JIT warm-up is over by then.
    late_per_s, late_per_cpu_s, _ = rates(b[len(b) // 2:], s.samples)
    return {"lines_per_s": per_s, "lines_per_cpu_s": per_cpu_s,
            "late_lines_per_s": late_per_s, "late_lines_per_cpu_s": late_per_cpu_s,
            "cores": cpu["cores"], "other_cores": cpu["other_cores"],
            "final_sched_ms": b[-1][2], "max_sched_ms": max(x[2] for x in b),
            "batches": len(b), "span_s": (b[-1][5] - b[0][5]) / 1000}


def run_info(s, f, load_before):
    """Peak memory, survival and the machine's load for one run."""
    sent = f.sent_log()
    feeder_end = sent[-1][0] if sent else None
    fatal = s.fatal_line()
    exited_early = s.exited_wall_ms is not None and (
        feeder_end is None or s.exited_wall_ms < feeder_end or s.p.returncode not in (0, -9))
    return {"peak_rss_mib": s.hwm_kib / 1024, "survived": fatal is None and not exited_early,
            "fatal": fatal or (f"exited early, status {s.p.returncode}" if exited_early else None),
            "load_before": load_before, "load_after": loadavg()}


# ---------------------------------------------------------------- scenarios

def wait_feed(f, s, timeout):
    """Until the feeder ends (True), the job exits or the time is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if f.wait(0.2):
            return True
        if s.p.poll() is not None:
            return f.wait(2)  # Flink's job ends when the feeder closes the socket
    return False


def scenario(name, make_cmd, feeder_exe, rate, seconds, batch_ms, work):
    work.mkdir(parents=True, exist_ok=True)
    # A fresh data directory each run (a checkpoint of another batch
    # interval would be refused, rightly).
    data = work / f"{name}-data"
    shutil.rmtree(data, ignore_errors=True)
    load_before = loadavg()
    f = Feeder(feeder_exe, rate, seconds, work / f"{name}-feeder.log")
    s = System(make_cmd(f.port, batch_ms, data), work / f"{name}-stderr.log", f.p.pid)
    if not wait_feed(f, s, seconds + 60):
        log(f"{work.name} {name}: the feeder did not finish (the job died or never connected)")
    time.sleep(2 * batch_ms / 1000 + 1)  # let the last batches complete
    s.kill()
    f.stop()
    info = run_info(s, f, load_before)
    if not info["survived"]:
        log(f"{work.name} {name}: did NOT survive: {info['fatal']}; see {s.outfile}")
    return s, f, info


def measure_throughput(system, make_cmd, feeder_exe, args, rnd):
    s, _, info = scenario(f"throughput-{rnd}", make_cmd, feeder_exe, 0, args.seconds,
                          args.batch_ms, WORK / system)
    res = {**summarize_throughput(s), **info}
    log(f"{system} throughput round {rnd}: {json.dumps(res)}")
    return res


def measure_latency(system, make_cmd, feeder_exe, args):
    s, f, info = scenario("latency", make_cmd, feeder_exe, args.rate, args.seconds,
                          args.latency_batch_ms, WORK / system)
    lat = latencies(s.batches, f.sent_log())
    res = {"rate": args.rate, "batch_ms": args.latency_batch_ms, "p50_ms": pct(lat, 50),
           "p99_ms": pct(lat, 99), "samples": len(lat), **info}
    log(f"{system} latency: {json.dumps(res)}")
    return res


def restart_fill(make_cmd, feeder_exe, args, work, data):
    """Full speed into a fresh data directory, then SIGKILL; MiB on disk."""
    shutil.rmtree(data, ignore_errors=True)
    # weir's backlog limit is raised for this run so that the log can hold
    # the backlog the issue names (about 1 GiB); Spark has no such limit.
    f = Feeder(feeder_exe, 0, args.restart_feed_seconds, work / "restart-feeder.log")
    s = System(make_cmd(f.port, args.batch_ms, data, args.restart_backlog_mib),
               work / "restart-1-stderr.log", f.p.pid)
    if not f.wait(args.restart_feed_seconds + 120):
        log(f"{work.name}: the feeder did not finish (the job never connected or died)")
    s.kill()
    f.stop()
    return dir_mib(data)


def backlog_drained_s(s):
    """Start to the end of the backlog: a batch of almost nothing after batches of backlog."""
    done = sorted(s.batches, key=lambda b: b[5])
    for i in range(1, len(done)):
        if done[i][1] < 1000 and any(b[1] >= 1000 for b in done[:i]):
            return (done[i - 1][5] - s.spawn_wall_ms) / 1000
    return None


def measure_restart(system, make_cmd, feeder_exe, args):
    work = WORK / system
    data = work / "restart-data"
    on_disk = restart_fill(make_cmd, feeder_exe, args, work, data)
    idle = Feeder(feeder_exe, 1, 600, work / "restart-idle.log")
    s = System(make_cmd(idle.port, args.batch_ms, data, args.restart_backlog_mib),
               work / "restart-2-stderr.log")
    # The first completed batch, whatever it holds: Spark re-runs the
    # batches it missed while down first (and reports no record count for
    # them), weir goes straight to one batch of backlog.
    deadline = time.time() + 180
    while time.time() < deadline and not s.batches:
        time.sleep(0.05)
    drained = None
    until = time.time() + 60  # then until the backlog is drained, at most 60 s more
    while time.time() < until and drained is None:
        time.sleep(0.2)
        drained = backlog_drained_s(s)
    first = min(s.batches, key=lambda b: b[5]) if s.batches else None
    res = {"data_dir_mib_at_kill": round(on_disk),
           "first_batch_s": (first[5] - s.spawn_wall_ms) / 1000 if first else None,
           "first_batch_records": first[1] if first else 0, "backlog_drained_s": drained,
           "backlog_records": sum(b[1] for b in s.batches if b[1] >= 1000)}
    s.kill()
    idle.stop()
    log(f"{system} restart: {json.dumps(res)}")
    return res


# ---------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60, help="seconds per throughput/latency run")
    ap.add_argument("--rounds", type=int, default=2, help="throughput runs per system, alternating")
    ap.add_argument("--batch-ms", type=int, default=1000)
    ap.add_argument("--latency-batch-ms", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=20_000,
                    help="lines/s of the latency run (one all three sustain on a shared 2-core machine)")
    ap.add_argument("--restart-feed-seconds", type=int, default=15)
    ap.add_argument("--restart-backlog-mib", type=int, default=1200,
                    help="weir's backlog_bytes_max for the restart run (the backlog to restart with)")
    ap.add_argument("--no-restart", action="store_true", help="skip the restart scenario")
    ap.add_argument("--jvm-heap", default="4g", help="Spark's driver memory and Flink's JVM heap")
    ap.add_argument("--spark-initial-rate", type=int, default=100_000,
                    help="spark.streaming.backpressure.initialRate, lines/s (0: unset)")
    ap.add_argument("--flink-parallelism", type=int, default=2)
    ap.add_argument("--only", choices=SYSTEMS, action="append",
                    help="run only this system (repeatable)")
    ap.add_argument("--quick", action="store_true", help="20 s runs, one round, for a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.restart_feed_seconds = 20, 1, 10
    return args


def main():
    args = parse_args()
    systems = [s for s in SYSTEMS if not args.only or s in args.only]
    WORK.mkdir(parents=True, exist_ok=True)
    feeder_exe, weir_exe = setup_weir("weir" in systems)
    cmds = make_commands(args, systems, weir_exe)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results = {s: {"throughput": []} for s in systems}
    for rnd in range(1, args.rounds + 1):
        for s in systems:
            results[s]["throughput"].append(measure_throughput(s, cmds[s], feeder_exe, args, rnd))
    for s in systems:
        results[s]["latency"] = measure_latency(s, cmds[s], feeder_exe, args)
    for s in systems:
        if s != "flink" and not args.no_restart:
            results[s]["restart"] = measure_restart(s, cmds[s], feeder_exe, args)
    meta = {"started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "argv": sys.argv[1:], "cpus": os.cpu_count()}
    (WORK / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    print_table(results, systems, meta)


# ---------------------------------------------------------------- report

def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def runs(r):
    return r.get("throughput", []) + ([r["latency"]] if "latency" in r else [])


def tp(key):
    return lambda r: [t.get(key) for t in r.get("throughput", [])]


def one(scn, key):
    return lambda r: [r[scn].get(key)] if scn in r else []


ROWS = [
    ("throughput, lines per wall second", tp("lines_per_s"), "{:,.0f}", "higher"),
    ("throughput, lines per CPU-second", tp("lines_per_cpu_s"), "{:,.0f}", "higher"),
    ("second half of the run, lines per wall second", tp("late_lines_per_s"), "{:,.0f}", "higher"),
    ("second half of the run, lines per CPU-second", tp("late_lines_per_cpu_s"), "{:,.0f}", "higher"),
    ("CPU the job used, cores", tp("cores"), "{:.2f}", None),
    ("largest scheduling delay, ms", tp("max_sched_ms"), "{:,.0f}", None),
    ("peak memory at full speed, MiB", tp("peak_rss_mib"), "{:,.0f}", "lower"),
    ("rest of the machine meanwhile, cores", tp("other_cores"), "{:.2f}", None),
    ("latency p50, ms", one("latency", "p50_ms"), "{:,.0f}", "lower"),
    ("latency p99, ms", one("latency", "p99_ms"), "{:,.0f}", "lower"),
    ("peak memory at the latency rate, MiB", one("latency", "peak_rss_mib"), "{:,.0f}", "lower"),
    ("data directory at the kill, MiB", one("restart", "data_dir_mib_at_kill"), "{:,.0f}", None),
    ("restart to first batch, s", one("restart", "first_batch_s"), "{:.2f}", "lower"),
    ("restart to backlog drained, s", one("restart", "backlog_drained_s"), "{:.2f}", "lower"),
]


def cell(vals, fmt):
    shown = [fmt.format(v) if v is not None else "—" for v in vals]
    return " / ".join(shown) if shown else "—"


def ratio(weir, other, kind):
    if not kind or not weir or not other:
        return "—"
    return f"{weir / other:.2f}x" if kind == "higher" else f"{other / weir:.2f}x less"


def survival_cell(r):
    bad = [x for x in runs(r) if not x.get("survived")]
    return "yes" if not bad else f"**no** ({len(bad)} of {len(runs(r))}: {bad[0].get('fatal')})"


def load_cell(r):
    return " / ".join(f"{x['load_before']:.2f}→{x['load_after']:.2f}" for x in runs(r))


def print_table(r, systems, meta):
    names = {"spark": f"Spark {PYSPARK_VERSION}", "flink": f"Flink {FLINK_VERSION}", "weir": "weir"}
    others = [s for s in systems if s != "weir"] if "weir" in systems else []
    print(f"\nRun {meta['started']} – {meta['ended']}, {meta['cpus']} CPUs; "
          "cells with several values: one per throughput round (ratios use medians)\n")
    print("| measurement | " + " | ".join(names[s] for s in systems) + "".join(
        f" | weir vs {names[o].split()[0]}" for o in others) + " |")
    print("|---|" + "---:|" * (len(systems) + len(others)))
    print(row("survived every run", [survival_cell(r[s]) for s in systems], ["—"] * len(others)))
    print(row("load average (1 min) before→after", [load_cell(r[s]) for s in systems], ["—"] * len(others)))
    for name, get, fmt, kind in ROWS:
        vals = {s: get(r[s]) for s in systems}
        ratios = [ratio(median(vals["weir"]), median(vals[o]), kind) for o in others]
        print(row(name, [cell(vals[s], fmt) for s in systems], ratios))


def row(name, cells, ratios):
    return "| " + " | ".join([name, *cells, *ratios]) + " |"


if __name__ == "__main__":
    main()
