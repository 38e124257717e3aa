package org.mobilellm.core;

import java.io.File;
import java.io.IOException;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Unit tests of the platform-free core with a self-made runner (no JUnit needed, so they run
 * wherever a JDK is): every `static void test*()` here runs; the last line reads
 * "N passed, M failed". Gradle runs the same methods through CoreJUnitTest.
 */
public final class CoreTests {
  static final String MANIFEST = "{\"schema\": \"mobilellm.manifest\", \"version\": 1, \"artifact\": \"m.pte\","
      + " \"backend\": \"executorch\", \"quant\": {\"scheme\": \"w8a8\"},"
      + " \"model\": {\"name\": \"LS-125M\", \"variant\": \"2x30 shared\", \"stored_blocks\": 30,"
      + " \"executed_blocks\": 60, \"repeat\": 2, \"param_count\": 124635456,"
      + " \"args\": {\"vocab_size\": 32000, \"n_kv_heads\": 3, \"head_dim\": 64}},"
      + " \"max_seq_len\": 512, \"tokenizer\": null, \"sha256\": \"ab\", \"sizes\": {\"file_bytes\": 150000000}}";

  static void check(boolean ok, String what) {
    if (!ok) throw new AssertionError(what);
  }

  static void near(double got, double want, String what) {
    if (Math.abs(got - want) > 1e-9 * Math.max(1, Math.abs(want))) throw new AssertionError(what + ": got " + got + ", want " + want);
  }

  static void raises(Runnable r, String fragment) {
    try {
      r.run();
    } catch (RuntimeException e) {
      check(e.getMessage() != null && e.getMessage().contains(fragment), "message '" + e.getMessage() + "' lacks '" + fragment + "'");
      return;
    }
    throw new AssertionError("no exception (expected one mentioning '" + fragment + "')");
  }

  // ------------------------------------------------------------------------------------ Json
  static void testJsonRoundTrip() {
    String text = "{\"a\": [1, 2.5, -3e-2, true, false, null], \"b\": {\"c\": \"q\\\"\\\\\\n\\u00e9\"}, \"d\": {}}";
    Object doc = Json.parse(text);
    check(Json.at(doc, "b.c").equals("q\"\\\n\u00e9"), "escapes");
    List<?> a = (List<?>) Json.at(doc, "a");
    check(a.get(0).equals(1L) && a.get(1).equals(2.5) && a.get(2).equals(-0.03), "numbers " + a);
    check(Json.parse(Json.write(doc, 2)).equals(doc), "round trip (indented)");
    check(Json.parse(Json.write(doc, 0)).equals(doc), "round trip (one line)");
    check(Json.at(doc, "b.missing.x") == null, "missing path is null");
  }

  static void testJsonRejects() {
    raises(() -> Json.parse("{\"a\": 1,}"), "expected a key");
    raises(() -> Json.parse("[1 2]"), "expected ','");
    raises(() -> Json.parse("{} x"), "trailing");
    raises(() -> Json.write(Double.NaN, 0), "non-finite");
  }

  static void testJsonFloatFormat() {
    check(Json.formatDouble(12.0).equals("12.0"), Json.formatDouble(12.0));
    check(Json.formatDouble(0.001).equals("0.001"), Json.formatDouble(0.001));
    check(Json.parse(Json.formatDouble(1e-7)).equals(1e-7), Json.formatDouble(1e-7));
  }

  // ------------------------------------------------------------------------------------ Stats
  static void testStatsLikeNumpy() {
    double[] xs = {10, 1, 9, 2, 8, 3, 7, 4, 6, 5};
    near(Stats.median(xs), 5.5, "median");
    near(Stats.percentile(xs, 10), 1.9, "p10");  // numpy.percentile(range(1, 11), 10)
    near(Stats.percentile(xs, 90), 9.1, "p90");
    near(Stats.min(xs), 1, "min");
    near(Stats.median(new double[] {3, 1, 2}), 2, "odd median");
    near(Stats.percentile(new double[] {7}, 90), 7, "one sample");
    raises(() -> Stats.median(new double[0]), "no samples");
  }

  // ------------------------------------------------------------------------------------ Manifest
  static void testManifestFields() throws Exception {
    Manifest m = Manifest.parse(MANIFEST, "m.pte.manifest.json");
    check(m.modelName.equals("LS-125M") && m.variant.equals("2x30 shared"), "model");
    check(m.storedBlocks == 30 && m.executedBlocks == 60 && m.repeat == 2, "blocks");
    check(m.scheme.equals("w8a8") && m.maxSeqLen == 512 && m.vocabSize == 32000, "scheme/len/vocab");
    check(m.fileBytes == 150000000L && m.tokenizer == null, "size/tokenizer");
    check("executorch".equals(m.runtime()), "runtime");
    String emb8 = MANIFEST.replace("{\"scheme\": \"w8a8\"}", "{\"scheme\": \"w8a8\", \"quantize_embedding\": true}");
    check(Manifest.parse(emb8, "x").scheme.equals("w8a8+emb8"), "int8 embedding named as mobilellm bench does");
  }

  static void testManifestErrorsNameTheField() {
    String[][] cases = {
      {MANIFEST.replace("mobilellm.manifest", "other"), "not a mobilellm manifest"},
      {MANIFEST.replace("\"version\": 1", "\"version\": 7"), "version 7"},
      {MANIFEST.replace("\"max_seq_len\": 512,", ""), "max_seq_len"},
      {MANIFEST.replace("\"scheme\": \"w8a8\"", "\"scheme\": 8"), "quant.scheme"},
      {"[1]", "not a JSON object"},
      {"{", "invalid JSON"},
    };
    for (String[] c : cases) {
      try {
        Manifest.parse(c[0], "x.manifest.json");
        throw new AssertionError("accepted: " + c[1]);
      } catch (Manifest.Invalid e) {
        check(e.getMessage().contains(c[1]) && e.getMessage().startsWith("x.manifest.json"), e.getMessage());
      }
    }
  }

  static void testPairsRunInTheChatNotTheBenchmark() throws Exception {
    Manifest m = Manifest.parse(MANIFEST.replace("\"max_seq_len\": 512,", "\"max_seq_len\": 512, \"data_file\": \"m.ptd\","), "x");
    check("m.ptd".equals(m.dataFile) && "executorch".equals(m.runtime()), "a pair opens (LlmModule takes the data path)");
    check(m.whyNotBenchmarkable().contains("Module.load") && m.whyNotBenchmarkable().contains("m.ptd"), m.whyNotBenchmarkable());
    check(Manifest.parse(MANIFEST, "x").whyNotBenchmarkable() == null && Manifest.parse(MANIFEST, "x").dataFile == null, "single file");
  }

  static void testWeightCacheSchemes() throws Exception {
    for (String s : new String[] {"fp32", "w8a8", "8da4w"}) {
      Manifest m = Manifest.parse(MANIFEST.replace("\"scheme\": \"w8a8\"", "\"scheme\": \"" + s + "\""), "x");
      check(m.whyNotRunnable() == null && m.xnnpackWeightCache(), s + " runs with the cache");
    }
    Manifest st = Manifest.parse(MANIFEST.replace("\"scheme\": \"w8a8\"", "\"scheme\": \"w8a8-static\""), "x");
    check(st.runtime() == null && st.whyNotRunnable().contains("weight cache off"), "w8a8-static refused: " + st.whyNotRunnable());
    Manifest onnx = Manifest.parse(MANIFEST.replace("m.pte", "m.onnx").replace("\"scheme\": \"w8a8\"", "\"scheme\": \"w8a8-static\""), "x");
    check("onnxruntime".equals(onnx.runtime()) && !onnx.xnnpackWeightCache(), "ONNX has no XNNPACK cache");
  }

  static void testManifestRuntimeChoice() throws Exception {
    check("onnxruntime".equals(Manifest.parse(MANIFEST.replace("m.pte", "m.onnx").replace("\"executorch\"", "\"onnx\""), "x").runtime()), "onnx");
    check("onnxruntime".equals(Manifest.parse(MANIFEST.replace("m.pte", "m.ort"), "x").runtime()), "ort");
    Manifest coreml = Manifest.parse(MANIFEST.replace("\"executorch\"", "\"executorch-coreml\""), "x");
    check(coreml.runtime() == null && coreml.whyNotRunnable().contains("Apple"), "coreml skipped");
  }

  static void testScanPairsManifestsWithArtifacts() throws Exception {
    File dir = Files.createTempDirectory("scan").toFile();
    try {
      write(new File(dir, "m.pte"), "x");
      write(new File(dir, "m.pte.manifest.json"), MANIFEST);
      write(new File(dir, "gone.pte.manifest.json"), MANIFEST.replace("m.pte", "gone.pte"));
      write(new File(dir, "m.pte.tokenizer.model"), "t");
      write(new File(dir, "old.pte.failed.manifest.json"), MANIFEST);
      List<Manifest.Entry> es = Manifest.scan(dir);
      check(es.size() == 2, "two entries, got " + es.size());
      check(es.get(0).file.getName().equals("gone.pte") && es.get(0).problem.contains("no artifact"), es.get(0).problem);
      check(es.get(1).manifest != null && es.get(1).problem == null, "m.pte usable");
      check(Manifest.tokenizerFor(dir, "m.pte").getName().equals("m.pte.tokenizer.model"), "tokenizer beside");
      check(Manifest.tokenizerFor(dir, "gone.pte") == null, "no tokenizer");
      try {
        Manifest.scan(new File(dir, "nope"));
        throw new AssertionError("scan of a missing dir");
      } catch (Manifest.Invalid e) {
        check(e.getMessage().contains("chmod"), e.getMessage());
      }
    } finally {
      for (File f : dir.listFiles()) f.delete();
      dir.delete();
    }
  }

  static void testGenaiDirOnlyWhenPushed() throws Exception {
    String onnx = MANIFEST.replace("m.pte", "m.onnx").replace("\"executorch\"", "\"onnx\"");
    check(Manifest.parse(onnx, "x").genaiDir == null, "no genai_dir: the plain session");
    Manifest m = Manifest.parse(onnx.replace("\"max_seq_len\": 512,",
        "\"max_seq_len\": 512, \"genai_dir\": {\"path\": \"m.genai\", \"config\": \"genai_config.json\"},"), "x");
    check("m.genai".equals(m.genaiDir) && "onnxruntime".equals(m.runtime()), "genai_dir read");
    File dir = Files.createTempDirectory("genai").toFile();
    File g = new File(dir, "m.genai");
    try {
      check(m.genaiDirIn(dir) == null, "not pushed: the .onnx runs in a plain session");
      check(g.mkdir(), "mkdir");
      check(m.genaiDirIn(dir) == null, "a directory without genai_config.json is not one");
      write(new File(g, Manifest.GENAI_CONFIG), "{}");
      check(g.equals(m.genaiDirIn(dir)), "pushed: onnxruntime-genai opens the directory");
    } finally {
      new File(g, Manifest.GENAI_CONFIG).delete();
      g.delete();
      dir.delete();
    }
  }

  // ------------------------------------------------------------------------------------ ONNX contract
  static List<String> inputs(String a, String b, int blocks) {
    List<String> in = new java.util.ArrayList<>(Arrays.asList(a, b));
    for (int i = 0; i < blocks; i++) {
      in.add("past_key_values." + i + ".key");
      in.add("past_key_values." + i + ".value");
    }
    return in;
  }

  static void testOnnxContractFromInputNames() {
    OnnxContract shared = OnnxContract.of(inputs("input_ids", "attention_mask", 2), 2, "m.onnx");
    check(shared.kind == OnnxContract.Kind.SHARED && shared.sharesCache(), "shared");
    check(shared.tokens.equals("input_ids") && shared.second.equals("attention_mask"), "names");
    check(shared.past.size() == 4 && shared.present.get(3).equals("present.1.value"), "present of " + shared.past.get(3));
    check(shared.initialCachePositions(512) == 512, "one buffer of max_seq_len positions");
    // the mask covers every position held after the step: start + T, all ones
    check(Arrays.equals(shared.secondValues(5, 2), new long[] {1, 1, 1, 1, 1, 1, 1}), "mask");
    check(Arrays.equals(shared.secondShape(5, 2), new long[] {1, 7}), "mask shape");
    check(Arrays.equals(shared.secondShape(0, 3), new long[] {1, 3}), "prefill mask shape");

    OnnxContract growing = OnnxContract.of(inputs("input_ids", "position_ids", 2), 2, "m.onnx");
    check(growing.kind == OnnxContract.Kind.GROWING && !growing.sharesCache(), "growing");
    check(growing.initialCachePositions(512) == 0, "an empty cache that grows");
    check(Arrays.equals(growing.secondValues(5, 2), new long[] {5, 6}), "positions");
    check(Arrays.equals(growing.secondShape(5, 2), new long[] {1, 2}), "positions shape");

    OnnxContract legacy = OnnxContract.of(inputs("tokens", "input_pos", 1), 1, "m.onnx");
    check(legacy.kind == OnnxContract.Kind.LEGACY && legacy.tokens.equals("tokens"), "legacy");
    check(Arrays.equals(legacy.secondValues(5, 2), new long[] {5}) && Arrays.equals(legacy.secondShape(5, 2), new long[] {1}),
        "start position");

    raises(() -> OnnxContract.of(inputs("x", "attention_mask", 2), 2, "m.onnx"), "m.onnx is not a mobilellm ONNX export");
    raises(() -> OnnxContract.of(inputs("input_ids", "attention_mask", 2), 3, "m.onnx"), "4 past_key_values inputs");
    List<String> extra = inputs("input_ids", "attention_mask", 1);
    extra.add("position_ids");
    raises(() -> OnnxContract.of(extra, 1, "m.onnx"), "of 5 inputs");
  }

  static void write(File f, String s) throws IOException {
    Files.write(f.toPath(), s.getBytes(StandardCharsets.UTF_8));
  }

  // ------------------------------------------------------------------------------------ Results
  static void testResultsRecords() throws Exception {
    Manifest m = Manifest.parse(MANIFEST, "x");
    Results r = new Results(Fakes.context());
    r.addSamples(m, "decode_ms", new double[] {10, 12, 11, 30}, null, null);
    r.addSingle(m, "size_mb", 150.0, null, "n");
    List<Map<String, Object>> recs = r.records();
    check(recs.size() == 5, "4 statistics + 1 single");
    String[] stats = {"median", "p10", "p90", "min", "single"};
    for (int i = 0; i < 5; i++) check(recs.get(i).get("statistic").equals(stats[i]), "order " + i);
    near((Double) recs.get(0).get("value"), 11.5, "median");
    check(recs.get(0).get("samples").equals(4L) && recs.get(4).get("samples").equals(1L), "samples");
    check(recs.get(0).get("unit").equals("ms") && recs.get(4).get("unit").equals("MB"), "units");
    check(recs.get(0).keySet().iterator().next().equals("model"), "schema field order");
    Object back = Json.parse(r.toJson());
    check(Json.at(back, "schema").equals("mobilellm.results") && Json.at(back, "version").equals(1L), "envelope");
  }

  static void testResultsValidation() throws Exception {
    Manifest m = Manifest.parse(MANIFEST, "x");
    Results r = new Results(Fakes.context());
    raises(() -> r.addSingle(m, "latency", 1, null, null), "unknown metric");
    raises(() -> r.addSingle(m, "size_mb", Double.NaN, null, null), "not a finite number");
    Results one = new Results(Fakes.context());
    one.addSingle(m, "size_mb", 1, null, null);
    Map<String, Object> rec = new java.util.LinkedHashMap<>(one.records().get(0));
    rec.put("unit", "GB");
    raises(() -> Results.validate(rec), "has unit MB");
    rec.put("unit", "MB");
    rec.put("extra", 1);
    raises(() -> Results.validate(rec), "unknown field extra");
  }

  // ------------------------------------------------------------------------------------ Benchmark
  static void testPlanCaps() {
    check(Benchmark.prefillLen(512, 128) == 128, "P default");
    check(Benchmark.prefillLen(128, 128) == 64, "P capped at max_seq_len/2");
    check(Benchmark.genLen(128, 64, 64) == 64 && Benchmark.genLen(100, 50, 64) == 50, "N fits");
    long[] ids = Benchmark.promptIds(5, 512);
    check(Arrays.equals(ids, new long[] {1, 3 + 3, 10 + 3, 17 + 3, 24 + 3}), "the host's prompt " + Arrays.toString(ids));
    for (long id : ids) check(id >= 1 && id < 512, "ids in vocabulary");
  }

  static Results runFake(String manifest, Benchmark.Config c) throws Exception {
    Manifest m = Manifest.parse(manifest, "x");
    Fakes.Clock clock = new Fakes.Clock();
    Results r = new Results(Fakes.context());
    Benchmark.run(() -> new Fakes.Session(clock, m.vocabSize), m, c, clock, r, line -> {});
    return r;
  }

  static double value(Results r, String metric, String stat) {
    for (Map<String, Object> rec : r.records()) {
      if (rec.get("metric").equals(metric) && rec.get("statistic").equals(stat)) return (Double) rec.get("value");
    }
    throw new AssertionError("no " + metric + " " + stat);
  }

  static void testBenchmarkMeasuresEveryMetric() throws Exception {
    Benchmark.Config c = new Benchmark.Config();
    c.warmup = 2;
    c.iters = 5;
    c.genTokens = 8;
    Results r = runFake(MANIFEST, c);
    check(r.records().size() == 6 * 4 + 4, "6 timings x 4 statistics + 4 singles, got " + r.records().size());
    // the fake clock: load 40 ms, init 1300 ms, decode 15 ms, prefill 2 + 0.9 * 128 ms, each +0..4%
    check(value(r, "load_ms", "min") >= 40 && value(r, "load_ms", "p90") <= 41.6, "load");
    check(value(r, "init_ms", "median") >= 1300 && value(r, "init_ms", "median") <= 1352, "init");
    check(value(r, "decode_ms", "min") >= 15 && value(r, "decode_ms", "p90") <= 15.6 + 1e-9, "decode");
    double prefill = value(r, "prefill_ms", "median");
    check(prefill >= 117.2 && prefill <= 117.2 * 1.04 + 1e-6, "prefill of P=128 tokens: " + prefill);
    double tps = value(r, "decode_tokens_per_s", "median");
    check(tps > 1000 / 15.6 && tps <= 1000 / 15.0 + 1e-6, "tokens/s from 15 ms steps: " + tps);
    near(value(r, "pss_after_init_mb", "single"), 210.5, "pss after init");
    near(value(r, "pss_after_generate_mb", "single"), 231.25, "pss after generate");
    near(value(r, "size_mb", "single"), 150, "size");
    check(Math.abs(value(r, "kv_cache_mb", "single") - 2.0 * 60 * 3 * 512 * 64 * 4 / 1e6) < 1e-4, "kv cache");
    for (Map<String, Object> rec : r.records()) {
      if (rec.get("statistic").equals("single")) continue;
      check(rec.get("samples").equals(5L), "samples = iters");
      Map<?, ?> st = (Map<?, ?>) rec.get("settings");
      check(((java.util.List<?>) st.get("raw_samples")).size() == 5, "5 raw samples of " + rec.get("metric"));
      check(((java.util.List<?>) st.get("warmup_samples")).size() == 2, "2 warm-up samples of " + rec.get("metric"));
      check("none".equals(st.get("thermal_start")) && "none".equals(st.get("thermal_end")), "thermal state");
      check(Boolean.TRUE.equals(st.get("xnnpack_weight_cache")), "a w8a8 .pte runs with the weight cache");
    }
  }

  static void testPrefillTimesTheRunNotTheLogitsCopy() throws Exception {
    Manifest m = Manifest.parse(MANIFEST, "x");
    Benchmark.Config c = new Benchmark.Config();
    c.warmup = 1;
    c.iters = 3;
    c.genTokens = 4;
    Fakes.Clock clock = new Fakes.Clock();
    Results r = new Results(Fakes.context());
    Benchmark.run(() -> {
      Fakes.Session s = new Fakes.Session(clock, m.vocabSize);
      s.copyMs = 1000; // a [1, T, vocab] copy that took a second would show in prefill if it were timed
      return s;
    }, m, c, clock, r, line -> {});
    check(value(r, "prefill_ms", "p90") <= 117.2 * 1.04 + 1e-6, "prefill without the copy: " + value(r, "prefill_ms", "p90"));
    check(value(r, "decode_ms", "p90") <= 15.6 + 1e-9, "decode without the copy");
  }

  static void testBenchmarkClosesSessionsAndRejectsBadConfig() throws Exception {
    Benchmark.Config c = new Benchmark.Config();
    c.iters = 0;
    raises(() -> {
      try {
        runFake(MANIFEST, c);
      } catch (Exception e) {
        throw new RuntimeException(e.getMessage());
      }
    }, "iters must be >= 1");
    Manifest m = Manifest.parse(MANIFEST, "x");
    Fakes.Clock clock = new Fakes.Clock();
    Benchmark.Config ok = new Benchmark.Config();
    ok.warmup = 1;
    ok.iters = 2;
    ok.genTokens = 2;
    java.util.List<Fakes.Session> made = new java.util.ArrayList<>();
    Benchmark.run(() -> {
      Fakes.Session s = new Fakes.Session(clock, m.vocabSize);
      made.add(s);
      return s;
    }, m, ok, clock, new Results(Fakes.context()), line -> {});
    check(made.size() == 3, "warmup + iters sessions");
    for (Fakes.Session s : made) check(s.closed, "every session closed");
    // a runtime returning the wrong vocabulary is caught, not reported
    try {
      Benchmark.run(() -> new Fakes.Session(clock, 7), m, ok, clock, new Results(Fakes.context()), line -> {});
      throw new AssertionError("wrong vocabulary accepted");
    } catch (IllegalStateException e) {
      check(e.getMessage().contains("vocab_size 32000"), e.getMessage());
    }
  }

  static void testRuntimeWithoutLogitsIsMeasuredByItsTokens() throws Exception {
    Manifest m = Manifest.parse(MANIFEST, "x");
    Benchmark.Config c = new Benchmark.Config();
    c.warmup = 1;
    c.iters = 3;
    c.genTokens = 4;
    Fakes.Clock clock = new Fakes.Clock();
    Results r = new Results(Fakes.context());
    Benchmark.run(() -> {
      Fakes.Session s = new Fakes.Session(clock, m.vocabSize);
      s.tokensOnly = true;
      s.settings.put("onnx_api", "onnxruntime-genai");
      return s;
    }, m, c, clock, r, line -> {});
    check(r.records().size() == 6 * 4 + 4, "every metric, got " + r.records().size());
    check(value(r, "decode_tokens_per_s", "median") > 1000 / 15.6, "steps of 15 ms");
    for (Map<String, Object> rec : r.records()) {
      if (rec.get("statistic").equals("single")) continue;
      check("onnxruntime-genai".equals(((Map<?, ?>) rec.get("settings")).get("onnx_api")), "the session's settings recorded");
    }
    try { // a token outside the vocabulary is caught, as wrong logits are
      Benchmark.run(() -> {
        Fakes.Session s = new Fakes.Session(clock, m.vocabSize);
        s.tokensOnly = true;
        s.forcedToken = 32000;
        return s;
      }, m, c, clock, new Results(Fakes.context()), line -> {});
      throw new AssertionError("a token outside the vocabulary accepted");
    } catch (IllegalStateException e) {
      check(e.getMessage().contains("outside the manifest's vocab_size 32000"), e.getMessage());
    }
  }

  // ------------------------------------------------------------------------------------ runner
  public static int runAll() {
    int passed = 0, failed = 0;
    Method[] ms = CoreTests.class.getDeclaredMethods();
    Arrays.sort(ms, (a, b) -> a.getName().compareTo(b.getName()));
    for (Method mt : ms) {
      if (!mt.getName().startsWith("test") || !Modifier.isStatic(mt.getModifiers())) continue;
      try {
        mt.invoke(null);
        passed++;
        System.out.println("ok   " + mt.getName());
      } catch (InvocationTargetException e) {
        failed++;
        System.out.println("FAIL " + mt.getName() + ": " + e.getCause());
      } catch (IllegalAccessException e) {
        failed++;
        System.out.println("FAIL " + mt.getName() + ": " + e);
      }
    }
    System.out.println(passed + " passed, " + failed + " failed");
    return failed;
  }

  public static void main(String[] args) {
    System.exit(runAll() == 0 ? 0 : 1);
  }
}
