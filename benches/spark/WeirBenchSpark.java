// The seed's pipeline in Spark Streaming's Java DStream API, for the
// side-by-side benchmark (benches/side_by_side.py). Written for weir; it
// uses only Spark's public API.
//
// args: HOST PORT BATCH_MS CHECKPOINT_DIR
// Prints one line per completed batch on stdout:
//   WEIRBENCH batch <time_ms> <records> <scheduling_ms> <processing_ms> <total_ms> <wall_ms>
// and `WEIRBENCH started <wall_ms>` once the context runs.

import java.util.Arrays;

import org.apache.spark.SparkConf;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaDStream;
import org.apache.spark.streaming.api.java.JavaPairDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.scheduler.BatchInfo;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchCompleted;

import scala.Tuple2;

public final class WeirBenchSpark {
    private static long opt(scala.Option<Object> o) {
        return o.isDefined() ? ((Long) o.get()) : -1L;
    }

    private static JavaStreamingContext create(String host, int port, long batchMs, String checkpoint) {
        SparkConf conf = new SparkConf()
            .setAppName("weir-side-by-side")
            // The receiver write-ahead log: received blocks are written to
            // the checkpoint directory before they are acknowledged.
            .set("spark.streaming.receiver.writeAheadLog.enable", "true")
            // Spark's own backpressure: without it, a full-speed feeder
            // fills the default 1 GiB heap (OutOfMemoryError in about 20 s
            // here), so the benchmark measures Spark at its best setting.
            .set("spark.streaming.backpressure.enabled", "true")
            .set("spark.ui.enabled", "false");
        JavaStreamingContext ssc = new JavaStreamingContext(conf, Durations.milliseconds(batchMs));
        ssc.checkpoint(checkpoint);
        // With the WAL on, Spark's guide advises a serialized, non-replicated level.
        JavaDStream<String> lines = ssc.socketTextStream(host, port, StorageLevel.MEMORY_AND_DISK_SER());
        JavaDStream<String> tweets = lines
            .flatMap(l -> Arrays.asList(l.split("__end")).iterator())
            .map(t -> t.trim().toLowerCase())
            .filter(t -> !t.isEmpty());
        tweets.print(10);
        JavaPairDStream<String, Long> counts = tweets
            .flatMap(t -> Arrays.asList(t.split(" ")).iterator())
            .filter(w -> !w.isEmpty())
            .mapToPair(w -> new Tuple2<>(w, 1L))
            .reduceByKey(Long::sum);
        // Every key is computed (print would take only the first few).
        counts.foreachRDD(rdd -> {
            rdd.count();
        });
        return ssc;
    }

    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        long batchMs = Long.parseLong(args[2]);
        String checkpoint = args[3];

        // getOrCreate: a restart recovers the graph, the pending batches and
        // the received-but-unprocessed blocks from the checkpoint and WAL.
        JavaStreamingContext ssc = JavaStreamingContext.getOrCreate(checkpoint,
            () -> create(host, port, batchMs, checkpoint));
        ssc.ssc().addStreamingListener(new StreamingListener() {
            @Override
            public void onBatchCompleted(StreamingListenerBatchCompleted done) {
                BatchInfo b = done.batchInfo();
                System.out.println("WEIRBENCH batch " + b.batchTime().milliseconds() + " "
                    + b.numRecords() + " " + opt(b.schedulingDelay()) + " "
                    + opt(b.processingDelay()) + " " + opt(b.totalDelay()) + " "
                    + System.currentTimeMillis());
                System.out.flush();
            }
        });
        ssc.start();
        System.out.println("WEIRBENCH started " + System.currentTimeMillis());
        System.out.flush();
        ssc.awaitTermination();
    }
}
