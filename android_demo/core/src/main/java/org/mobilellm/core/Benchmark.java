package org.mobilellm.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The measurement procedure of `mobilellm bench`, runtime-free: the app plugs in an ExecuTorch or
 * ONNX Runtime session, tests plug in a fake one.
 *
 * <ul>
 *   <li>load_ms: reading the artifact into the runtime; init_ms: making it ready to run. Each of
 *       warmup + iters rounds opens a fresh session; the last one stays open for the rest.
 *   <li>prefill_ms: one forward of P tokens at position 0 (P = prompt_len, at most max_seq_len / 2).
 *   <li>decode_ms: one forward of 1 token at position P, after a P-token prefill.
 *   <li>decode_tokens_per_s: N greedy tokens after a P-token prefill, N / seconds of those N steps.
 *   <li>memory (PSS: pss_after_init_mb, pss_after_generate_mb) after init and after generation;
 *       size on disk from the manifest.
 * </ul>
 * Every timing record carries its per-iteration samples (settings.raw_samples, and the discarded
 * warm-up ones in settings.warmup_samples) and the device's thermal state at the artifact's start
 * and end (settings.thermal_start, thermal_end).
 */
public final class Benchmark {
  private Benchmark() {}

  /** An artifact opened in its runtime (the paper's stages: load, init, execute). */
  public interface Session {
    void load() throws Exception;

    void init() throws Exception;

    /**
     * Runs `ids` at positions startPos.. (the timed part: no copy of the [1, T, vocab] logits).
     * Cache entries at positions >= startPos are replaced; `commit` false lets a runtime whose cache
     * lives outside the program (ONNX) leave its cache as it was, so a step can be timed repeatedly.
     */
    void run(long[] ids, int startPos, boolean commit) throws Exception;

    /**
     * The logits of the last token of the previous run, copied out of the runtime's output; null from a
     * runtime that hands out no logits (onnxruntime-genai's Java API), which then overrides nextToken.
     */
    float[] lastLogits() throws Exception;

    /**
     * The greedy token after the previous run: argmax of lastLogits, or the runtime's own greedy search
     * where it keeps its logits. Part of a generation step (timed with it in decode_tokens_per_s).
     */
    default long nextToken() throws Exception {
      return argmax(lastLogits());
    }

    /** What the records should say about how this runtime ran the artifact (e.g. which API); may be empty. */
    default Map<String, Object> settings() {
      return Collections.emptyMap();
    }

    void close();
  }

  public interface SessionFactory {
    Session create() throws Exception;
  }

  /** The platform: a monotonic clock and the process's memory. */
  public interface Probe {
    long nanoTime();

    /** Proportional set size of this process in MB, counted as the host's RSS is (KiB / 1024). */
    double pssMb();

    /** The device's thermal state now (Android: PowerManager thermal status, e.g. "none", "light"). */
    String thermal();
  }

  /** run, then the last token's logits (decode steps, where the copy is one row). */
  public static float[] forward(Session s, long[] ids, int startPos, boolean commit) throws Exception {
    s.run(ids, startPos, commit);
    return s.lastLogits();
  }

  public static final class Config {
    public int warmup = 5;
    public int iters = 50;
    public int threads = 4;
    public int promptLen = 128;
    public int genTokens = 64;
    public String loadMode = "mmap";

    public void check() {
      if (iters < 1) throw new IllegalArgumentException("iters must be >= 1, got " + iters);
      if (warmup < 0) throw new IllegalArgumentException("warmup must be >= 0, got " + warmup);
      if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
      if (promptLen < 1) throw new IllegalArgumentException("prompt_len must be >= 1, got " + promptLen);
      if (genTokens < 1) throw new IllegalArgumentException("gen_tokens must be >= 1, got " + genTokens);
    }
  }

  /** P: the requested prefill length capped at max_seq_len / 2. */
  public static int prefillLen(int maxSeqLen, int requested) {
    return Math.max(1, Math.min(requested, maxSeqLen / 2));
  }

  /** N: the requested generation length, so that P + N positions fit in max_seq_len. */
  public static int genLen(int maxSeqLen, int prefill, int requested) {
    return Math.max(1, Math.min(requested, maxSeqLen - prefill));
  }

  /** The prompt `mobilellm bench` uses: BOS (1), then (7i + 3) mod (vocab - 3) + 3. */
  public static long[] promptIds(int n, int vocab) {
    long[] ids = new long[n];
    ids[0] = 1;
    for (int i = 1; i < n; i++) ids[i] = (7L * (i - 1) + 3) % Math.max(1, vocab - 3) + 3;
    return ids;
  }

  public static int argmax(float[] logits) {
    int best = 0;
    for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }

  /** Float32 K and V of max_seq_len positions for every executed block, in MB (as `mobilellm bench`). */
  public static double kvCacheMb(Manifest m) {
    return 2.0 * m.executedBlocks * m.nKvHeads * (double) m.maxSeqLen * m.headDim * 4 / 1e6;
  }

  public interface Log {
    void line(String message);
  }

  private static double ms(long ns) {
    return ns / 1e6;
  }

  /** The settings every record of one artifact carries. */
  private static final class Common {
    final Map<String, Object> values = new LinkedHashMap<>();
  }

  private static Map<String, Object> settings(Config c, Common common, Object... kv) {
    Map<String, Object> s = new LinkedHashMap<>();
    s.put("warmup", (long) c.warmup);
    s.put("iters", (long) c.iters);
    s.putAll(common.values);
    for (int i = 0; i < kv.length; i += 2) s.put((String) kv[i], kv[i + 1]);
    return s;
  }

  private static Map<String, Object> timed(Map<String, Object> s, List<Double> warm, List<Double> raw) {
    s.put("warmup_samples", new ArrayList<Object>(warm));
    s.put("raw_samples", new ArrayList<Object>(raw));
    return s;
  }

  /** Records the measurement `ms` as warm-up or measured sample of round i. */
  private static void add(int i, Config c, List<Double> warm, List<Double> raw, double value) {
    (i < c.warmup ? warm : raw).add(Results.round(value));
  }

  /** Measures one artifact and appends its records to `out`. */
  public static void run(SessionFactory factory, Manifest m, Config c, Probe probe, Results out, Log log)
      throws Exception {
    c.check();
    int p = prefillLen(m.maxSeqLen, c.promptLen);
    int n = genLen(m.maxSeqLen, p, c.genTokens);
    int rounds = c.warmup + c.iters;
    Common common = new Common();
    common.values.put("thermal_start", probe.thermal());
    List<Double> load = new ArrayList<>(), init = new ArrayList<>();
    List<Double> loadW = new ArrayList<>(), initW = new ArrayList<>();
    Session s = null;
    for (int i = 0; i < rounds; i++) {
      Session cur = factory.create();
      try {
        long t0 = probe.nanoTime();
        cur.load();
        long t1 = probe.nanoTime();
        cur.init();
        long t2 = probe.nanoTime();
        add(i, c, loadW, load, ms(t1 - t0));
        add(i, c, initW, init, ms(t2 - t1));
      } catch (Exception e) {
        cur.close();
        throw e;
      }
      if (i == rounds - 1) s = cur; else cur.close();
    }
    log.line(m.artifact + ": load/init done (" + rounds + " rounds)");
    try {
      common.values.putAll(s.settings());
      double pssInit = probe.pssMb();
      long[] prompt = promptIds(p, m.vocabSize);
      List<Double> prefill = new ArrayList<>(), prefillTps = new ArrayList<>();
      List<Double> prefillW = new ArrayList<>(), prefillTpsW = new ArrayList<>();
      for (int i = 0; i < rounds; i++) {
        long t0 = probe.nanoTime();
        s.run(prompt, 0, true);
        long t1 = probe.nanoTime();
        add(i, c, prefillW, prefill, ms(t1 - t0));
        add(i, c, prefillTpsW, prefillTps, p / ((t1 - t0) / 1e9));
      }
      float[] logits = s.lastLogits(); // after the clock: the copy is not prefill
      long next;
      if (logits != null) {
        checkLogits(logits, m);
        next = argmax(logits);
      } else { // a runtime that keeps its logits: its greedy token, which must be in the vocabulary
        next = s.nextToken();
        if (next < 0 || next >= m.vocabSize) {
          throw new IllegalStateException(m.artifact + ": the runtime chose token " + next + ", outside the manifest's "
              + "vocab_size " + m.vocabSize);
        }
      }
      List<Double> decode = new ArrayList<>(), decodeW = new ArrayList<>();
      for (int i = 0; i < rounds; i++) {
        long t0 = probe.nanoTime();
        s.run(new long[] {next}, p, false);
        long t1 = probe.nanoTime();
        add(i, c, decodeW, decode, ms(t1 - t0));
      }
      log.line(m.artifact + ": prefill/decode done");
      List<Double> gen = new ArrayList<>(), genW = new ArrayList<>();
      for (int i = 0; i < rounds; i++) {
        s.run(prompt, 0, true);
        long t0 = probe.nanoTime();
        // a step: choose the token after the last run, feed it (never a choice past position p + n - 1)
        for (int k = 0; k < n; k++) s.run(new long[] {s.nextToken()}, p + k, true);
        long t1 = probe.nanoTime();
        add(i, c, genW, gen, n / ((t1 - t0) / 1e9));
      }
      double pssGen = probe.pssMb();
      common.values.put("thermal_end", probe.thermal());
      if (m.runtime() != null && m.runtime().equals("executorch")) {
        common.values.put("xnnpack_weight_cache", m.xnnpackWeightCache());
      }
      log.line(m.artifact + ": generation done");

      Object lm = c.loadMode;
      out.addSamples(m, "load_ms", Stats.toArray(load),
          timed(settings(c, common, "load_mode", lm, "page_cache", "warm"), loadW, load), null);
      out.addSamples(m, "init_ms", Stats.toArray(init), timed(settings(c, common, "load_mode", lm), initW, init), null);
      out.addSamples(m, "prefill_ms", Stats.toArray(prefill),
          timed(settings(c, common, "prompt_len", (long) p), prefillW, prefill), null);
      out.addSamples(m, "prefill_tokens_per_s", Stats.toArray(prefillTps),
          timed(settings(c, common, "prompt_len", (long) p), prefillTpsW, prefillTps), null);
      out.addSamples(m, "decode_ms", Stats.toArray(decode),
          timed(settings(c, common, "decode_position", (long) p), decodeW, decode), null);
      out.addSamples(m, "decode_tokens_per_s", Stats.toArray(gen),
          timed(settings(c, common, "prompt_len", (long) p, "gen_tokens", (long) n, "sampling", "greedy"), genW, gen),
          null);
      String pss = "PSS of the app process (Debug.getPss)";
      out.addSingle(m, "pss_after_init_mb", pssInit, settings(c, common, "memory", "pss"), pss);
      out.addSingle(m, "pss_after_generate_mb", pssGen,
          settings(c, common, "memory", "pss", "positions", (long) (p + n)), pss);
      out.addSingle(m, "kv_cache_mb", kvCacheMb(m), null, "computed: float32 K and V, " + m.executedBlocks
          + " executed blocks x " + m.maxSeqLen + " positions (max_seq_len)");
      out.addSingle(m, "size_mb", m.fileBytes / 1e6, null, "file size from the manifest");
    } finally {
      s.close();
    }
  }

  private static void checkLogits(float[] logits, Manifest m) {
    if (logits == null || logits.length != m.vocabSize) {
      throw new IllegalStateException(m.artifact + ": forward returned " + (logits == null ? "nothing" : logits.length
          + " logits") + ", the manifest says vocab_size " + m.vocabSize);
    }
    for (float x : logits) {
      if (Float.isNaN(x) || Float.isInfinite(x)) throw new IllegalStateException(m.artifact + ": non-finite logits");
    }
  }
}
