package org.mobilellm.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes the results schema of benchmarks/schema.py: {"schema": "mobilellm.results",
 * "version": 1, "records": [...]}, one record per measured number. The constants below mirror
 * schema.py; a Python test checks they agree and validates what this class writes.
 */
public final class Results {
  public static final String SCHEMA = "mobilellm.results";
  public static final int VERSION = 1;

  /**
   * metric -> unit, as METRICS in benchmarks/schema.py, plus the memory metrics named for what the
   * platforms measure (mobilellm/devices/results.py PLATFORM_METRICS): Android's is PSS.
   */
  public static final Map<String, String> METRICS = new LinkedHashMap<>();

  static {
    String[][] m = {
      {"load_ms", "ms"}, {"init_ms", "ms"}, {"decode_ms", "ms"}, {"prefill_ms", "ms"},
      {"decode_ms_at_position", "ms"}, {"decode_ms_paired", "ms"}, {"decode_tokens_per_s", "tokens/s"},
      {"prefill_tokens_per_s", "tokens/s"},
      {"rss_after_init_mb", "MB"}, {"rss_after_generate_mb", "MB"}, {"kv_cache_mb", "MB"},
      {"size_mb", "MB"}, {"perplexity", ""}, {"top1_agreement", ""}, {"kl_divergence", "nats"},
      {"pss_after_init_mb", "MB"}, {"pss_after_generate_mb", "MB"},
    };
    for (String[] kv : m) METRICS.put(kv[0], kv[1]);
  }

  public static final List<String> STATISTICS =
      Arrays.asList("median", "mean", "min", "max", "p10", "p90", "single");

  /** Record fields in schema order; the required ones first. */
  public static final List<String> REQUIRED = Arrays.asList(
      "model", "variant", "stored_blocks", "executed_blocks", "backend", "scheme", "metric", "unit",
      "value", "statistic", "samples", "device", "os", "runtime", "threads", "timestamp");
  public static final List<String> OPTIONAL = Arrays.asList("artifact", "sha256", "settings", "note");

  /** Where the numbers were measured; the same for every record of one run. */
  public static final class Context {
    public final String device;
    public final String os;
    public final Map<String, Object> runtime;
    public final int threads;
    public final String timestamp;

    public Context(String device, String os, Map<String, Object> runtime, int threads, String timestamp) {
      this.device = device;
      this.os = os;
      this.runtime = runtime;
      this.threads = threads;
      this.timestamp = timestamp;
    }
  }

  private final Context ctx;
  private final List<Map<String, Object>> records = new ArrayList<>();

  public Results(Context ctx) {
    this.ctx = ctx;
  }

  public List<Map<String, Object>> records() {
    return records;
  }

  private Map<String, Object> base(Manifest m, String metric) {
    String unit = METRICS.get(metric);
    if (unit == null) throw new IllegalArgumentException("unknown metric " + metric);
    Map<String, Object> r = new LinkedHashMap<>();
    r.put("model", m.modelName);
    r.put("variant", m.variant);
    r.put("stored_blocks", (long) m.storedBlocks);
    r.put("executed_blocks", (long) m.executedBlocks);
    r.put("backend", m.backend);
    r.put("scheme", m.scheme);
    r.put("metric", metric);
    r.put("unit", unit);
    return r;
  }

  private void finish(Map<String, Object> r, Manifest m, Map<String, Object> settings, String note) {
    r.put("device", ctx.device);
    r.put("os", ctx.os);
    r.put("runtime", ctx.runtime);
    r.put("threads", (long) ctx.threads);
    r.put("timestamp", ctx.timestamp);
    r.put("artifact", m.artifact);
    r.put("sha256", m.sha256);
    if (settings != null) r.put("settings", settings);
    if (note != null) r.put("note", note);
    validate(r);
    records.add(r);
  }

  static double round(double v) {
    if (Double.isNaN(v) || Double.isInfinite(v) || Math.abs(v) > 1e12) return v;
    return Math.round(v * 1e4) / 1e4;
  }

  /** A timing: one record each for median, p10, p90 and min, samples = number of measurements. */
  public void addSamples(Manifest m, String metric, double[] samples, Map<String, Object> settings, String note) {
    for (String stat : Stats.REPORTED) {
      Map<String, Object> r = base(m, metric);
      r.put("value", round(Stats.statistic(stat, samples)));
      r.put("statistic", stat);
      r.put("samples", (long) samples.length);
      finish(r, m, settings, note);
    }
  }

  /** A number measured once (memory, size). */
  public void addSingle(Manifest m, String metric, double value, Map<String, Object> settings, String note) {
    Map<String, Object> r = base(m, metric);
    r.put("value", round(value));
    r.put("statistic", "single");
    r.put("samples", 1L);
    finish(r, m, settings, note);
  }

  /** The same checks as validate_record in benchmarks/schema.py. */
  public static void validate(Map<String, Object> r) {
    for (String f : REQUIRED) {
      if (!r.containsKey(f)) throw new IllegalStateException("record misses field " + f);
    }
    for (String f : r.keySet()) {
      if (!REQUIRED.contains(f) && !OPTIONAL.contains(f)) throw new IllegalStateException("unknown field " + f);
    }
    for (String f : Arrays.asList("model", "variant", "backend", "scheme", "metric", "unit", "statistic",
        "device", "os", "timestamp")) {
      if (!(r.get(f) instanceof String)) throw new IllegalStateException("field " + f + " must be a string");
    }
    for (String f : Arrays.asList("stored_blocks", "executed_blocks", "samples", "threads")) {
      if (!(r.get(f) instanceof Long)) throw new IllegalStateException("field " + f + " must be an integer");
    }
    if (!(r.get("runtime") instanceof Map)) throw new IllegalStateException("field runtime must be an object");
    Object v = r.get("value");
    if (!(v instanceof Double) || Double.isNaN((Double) v) || Double.isInfinite((Double) v)) {
      throw new IllegalStateException("value of " + r.get("metric") + " is not a finite number: " + v);
    }
    String unit = METRICS.get((String) r.get("metric"));
    if (unit == null) throw new IllegalStateException("unknown metric " + r.get("metric"));
    if (!unit.equals(r.get("unit"))) throw new IllegalStateException("metric " + r.get("metric") + " has unit " + unit);
    if (!STATISTICS.contains((String) r.get("statistic"))) throw new IllegalStateException("unknown statistic");
    if ((Long) r.get("samples") < 1) throw new IllegalStateException("samples must be >= 1");
  }

  public Map<String, Object> document() {
    Map<String, Object> d = new LinkedHashMap<>();
    d.put("schema", SCHEMA);
    d.put("version", (long) VERSION);
    d.put("records", new ArrayList<Object>(records));
    return d;
  }

  public String toJson() {
    return Json.write(document(), 1) + "\n";
  }
}
