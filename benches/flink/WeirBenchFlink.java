// The seed's pipeline in Apache Flink's Java DataStream API, for the
// side-by-side benchmark (benches/side_by_side.py). Written for weir; it
// uses only Flink's public API and runs in a local MiniCluster (one JVM, no
// daemon).
//
// args: HOST PORT WINDOW_MS CHECKPOINT_DIR PARALLELISM
// Exactly-once checkpoints every second to CHECKPOINT_DIR (filesystem
// storage, hashmap state backend). Word counts per tumbling
// processing-time window of WINDOW_MS (weir's and Spark's batch interval).
//
// Prints, like WeirBenchSpark.java, `WEIRBENCH started <wall_ms>` once the
// job is submitted and one line per fired window:
//   WEIRBENCH batch <window_end_ms> <lines> <late_ms> 0 <late_ms> <wall_ms>
// where <lines> counts the socket lines that reached the word splitter in
// that window (counted per subtask and flushed as a count record at least
// every 1,024 lines or 10 ms, so a few lines may land in the next window)
// and <late_ms> is how long after the window's end it fired.

import java.time.Duration;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.ReduceFunction;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingProcessingTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public final class WeirBenchFlink {
    /** The key of the line-count records; no word contains a NUL. */
    static final String LINES = "\u0000lines";
    static final long FLUSH_LINES = 1024;
    static final long FLUSH_NANOS = 10_000_000L;

    /**
     * Socket line -> tweets (split on `__end`, trimmed, lowercased, empty
     * ones dropped) -> words, each as (word, 1). Prints the first tweets of
     * each window (10 in all: 10 / parallelism per subtask), as Spark's
     * `print(10)` and weir's `print(10)` do per batch.
     */
    static final class LinesToWords extends RichFlatMapFunction<String, Tuple2<String, Long>> {
        private final long windowMs;
        private long printEvery;
        private long lines;
        private long lastFlush;
        private long printedWindow = -1;
        private long printed;

        LinesToWords(long windowMs) {
            this.windowMs = windowMs;
        }

        @Override
        public void open(OpenContext ctx) {
            printEvery = Math.max(1, 10 / getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks());
            lastFlush = System.nanoTime();
        }

        @Override
        public void flatMap(String line, Collector<Tuple2<String, Long>> out) {
            for (String t : line.split("__end")) {
                String tweet = t.trim().toLowerCase();
                if (tweet.isEmpty()) {
                    continue;
                }
                maybePrint(tweet);
                for (String w : tweet.split(" ")) {
                    if (!w.isEmpty()) {
                        out.collect(Tuple2.of(w, 1L));
                    }
                }
            }
            lines++;
            if (lines >= FLUSH_LINES || ((lines & 63) == 0 && System.nanoTime() - lastFlush >= FLUSH_NANOS)) {
                out.collect(Tuple2.of(LINES, lines));
                lines = 0;
                lastFlush = System.nanoTime();
            }
        }

        private void maybePrint(String tweet) {
            long window = System.currentTimeMillis() / windowMs;
            if (window != printedWindow) {
                printedWindow = window;
                printed = 0;
            }
            if (printed < printEvery) {
                printed++;
                System.out.println(tweet);
            }
        }
    }

    static final class Sum implements ReduceFunction<Tuple2<String, Long>> {
        @Override
        public Tuple2<String, Long> reduce(Tuple2<String, Long> a, Tuple2<String, Long> b) {
            return Tuple2.of(a.f0, a.f1 + b.f1);
        }
    }

    /** Every key's count is computed; the line count is reported. */
    static final class Report extends ProcessWindowFunction<Tuple2<String, Long>, Long, String, TimeWindow> {
        @Override
        public void process(String key, Context ctx, Iterable<Tuple2<String, Long>> counts, Collector<Long> out) {
            if (!LINES.equals(key)) {
                return;
            }
            long n = counts.iterator().next().f1;
            long wall = System.currentTimeMillis();
            long end = ctx.window().getEnd();
            System.out.println("WEIRBENCH batch " + end + " " + n + " " + (wall - end) + " 0 "
                + (wall - end) + " " + wall);
            System.out.flush();
        }
    }

    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        long windowMs = Long.parseLong(args[2]);
        String checkpoint = args[3];
        int parallelism = Integer.parseInt(args[4]);

        Configuration conf = new Configuration();
        conf.set(StateBackendOptions.STATE_BACKEND, "hashmap");
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, "file://" + checkpoint);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.enableCheckpointing(1000, CheckpointingMode.EXACTLY_ONCE);

        env.socketTextStream(host, port)
            .flatMap(new LinesToWords(windowMs)).name("split")
            .keyBy(t -> t.f0)
            .window(TumblingProcessingTimeWindows.of(Duration.ofMillis(windowMs)))
            .reduce(new Sum(), new Report()).name("word_counts")
            .sinkTo(new DiscardingSink<>());

        JobClient job = env.executeAsync("weir-side-by-side");
        System.out.println("WEIRBENCH started " + System.currentTimeMillis());
        System.out.flush();
        job.getJobExecutionResult().get();
    }
}
