package org.mobilellm.core;

import java.util.LinkedHashMap;
import java.util.Map;

/** A deterministic stand-in runtime and platform, for the tests and the golden example. */
final class Fakes {
  private Fakes() {}

  /** A clock that only the fake session advances, so every timing is known in advance. */
  static final class Clock implements Benchmark.Probe {
    long now = 1_000_000_000L;
    int pssCalls = 0;

    @Override
    public long nanoTime() {
      return now;
    }

    @Override
    public double pssMb() {
      return pssCalls++ == 0 ? 210.5 : 231.25;
    }

    @Override
    public String thermal() {
      return "none";
    }

    int ticks = 0;

    /** Advance by `ms`, varied by up to 4% with the number of steps so percentiles differ. */
    void advance(double ms) {
      now += (long) (ms * (1 + (ticks++ % 5) * 0.01) * 1e6);
    }
  }

  static final class Session implements Benchmark.Session {
    final Clock clock;
    final int vocab;
    int calls = 0;
    boolean loaded, ready, closed;
    static int opened = 0;

    Session(Clock clock, int vocab) {
      this.clock = clock;
      this.vocab = vocab;
      opened++;
    }

    @Override
    public void load() {
      clock.advance(40);
      calls++;
      loaded = true;
    }

    @Override
    public void init() {
      if (!loaded) throw new IllegalStateException("init before load");
      clock.advance(1300);
      calls++;
      ready = true;
    }

    long last = -1;
    /** Milliseconds the copy of the logits costs (outside every timing but decode throughput). */
    double copyMs = 0;

    @Override
    public void run(long[] ids, int startPos, boolean commit) {
      if (!ready) throw new IllegalStateException("forward before init");
      clock.advance(ids.length == 1 ? 15 : 2 + 0.9 * ids.length);
      calls++;
      last = ids[ids.length - 1];
    }

    /** A runtime that keeps its logits (onnxruntime-genai's Java API): null logits, its own greedy token. */
    boolean tokensOnly = false;
    /** The token a tokensOnly session chooses when >= 0 (e.g. one outside the vocabulary). */
    long forcedToken = -1;
    /** What the session says about how it ran (Session.settings). */
    Map<String, Object> settings = new LinkedHashMap<>();

    @Override
    public float[] lastLogits() {
      if (last < 0) throw new IllegalStateException("lastLogits before run");
      if (tokensOnly) return null;
      if (copyMs > 0) clock.now += (long) (copyMs * 1e6);
      float[] logits = new float[vocab];
      logits[(int) ((last * 31 + 7) % vocab)] = 1;
      return logits;
    }

    @Override
    public long nextToken() {
      if (!tokensOnly) return Benchmark.argmax(lastLogits());
      if (last < 0) throw new IllegalStateException("nextToken before run");
      return forcedToken >= 0 ? forcedToken : (last * 31 + 7) % vocab;
    }

    @Override
    public Map<String, Object> settings() {
      return settings;
    }

    @Override
    public void close() {
      closed = true;
    }
  }

  static Results.Context context() {
    Map<String, Object> runtime = new LinkedHashMap<>();
    runtime.put("executorch-android", "1.5.1");
    runtime.put("onnxruntime-android", "1.32.0");
    runtime.put("onnxruntime-genai-android", "0.18.0");
    runtime.put("app", "0.1.0");
    return new Results.Context("Google Pixel 8 (Google Tensor G3)", "Android 15 (API 35)", runtime, 4,
        "2026-01-01T00:00:00Z");
  }
}
