package org.mobilellm.core;

import java.io.File;
import java.io.IOException;
import java.io.FileInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The JSON manifest written beside every artifact as `<artifact>.manifest.json`
 * (mobilellm/manifest.py). The app reads what it runs from here; nothing parses file names.
 */
public final class Manifest {
  public static final String SCHEMA = "mobilellm.manifest";
  public static final int VERSION = 2;  // manifests of version MIN_VERSION.. VERSION are read
  public static final int MIN_VERSION = 1;
  public static final String SUFFIX = ".manifest.json";

  public static final class Invalid extends Exception {
    public Invalid(String message) {
      super(message);
    }
  }

  public final String artifact;
  public final String backend;
  public final String scheme;
  public final String modelName;
  public final String variant;
  public final int storedBlocks;
  public final int executedBlocks;
  public final int repeat;
  public final long paramCount;
  public final int maxSeqLen;
  public final int vocabSize;
  public final int nKvHeads;
  public final int headDim;
  public final String sha256;
  public final long fileBytes;
  /** Tokenizer path on the machine that exported; may be null. */
  public final String tokenizer;
  /** The `.ptd` beside the artifact holding its weights (exported with --external-weights), or null. */
  public final String dataFile;
  /** The quantization scheme as the manifest spells it (without the "+emb8" of `scheme`). */
  public final String quantScheme;
  /**
   * The onnxruntime-genai model directory exported beside an ONNX artifact (manifest "genai_dir.path",
   * e.g. "LS-125M_w8a8_onnx.genai"), or null.
   */
  public final String genaiDir;

  private Manifest(Map<String, Object> d, String where) throws Invalid {
    if (!SCHEMA.equals(d.get("schema"))) {
      throw new Invalid(where + ": not a mobilellm manifest (schema '" + SCHEMA + "' expected)");
    }
    Object v = d.get("version");
    if (!(v instanceof Long) || (Long) v < MIN_VERSION || (Long) v > VERSION) {
      throw new Invalid(where + ": manifest version " + v + "; this app reads versions " + MIN_VERSION + " to " + VERSION);
    }
    artifact = str(d, "artifact", where);
    backend = str(d, "backend", where);
    // as `mobilellm bench` names it: an int8 embedding is part of the scheme
    quantScheme = str(d, "quant.scheme", where);
    scheme = quantScheme
        + (Boolean.TRUE.equals(Json.at(d, "quant.quantize_embedding")) ? "+emb8" : "");
    modelName = str(d, "model.name", where);
    variant = str(d, "model.variant", where);
    storedBlocks = (int) num(d, "model.stored_blocks", where);
    executedBlocks = (int) num(d, "model.executed_blocks", where);
    repeat = (int) num(d, "model.repeat", where);
    paramCount = num(d, "model.param_count", where);
    maxSeqLen = (int) num(d, "max_seq_len", where);
    vocabSize = (int) num(d, "model.args.vocab_size", where);
    nKvHeads = (int) num(d, "model.args.n_kv_heads", where);
    headDim = (int) num(d, "model.args.head_dim", where);
    sha256 = str(d, "sha256", where);
    fileBytes = num(d, "sizes.file_bytes", where);
    Object t = Json.at(d, "tokenizer");
    tokenizer = t instanceof String ? (String) t : null;
    if (maxSeqLen < 2) throw new Invalid(where + ": max_seq_len must be >= 2, got " + maxSeqLen);
    Object data = Json.at(d, "data_file");
    dataFile = data instanceof String ? (String) data : null;
    Object genai = Json.at(d, "genai_dir.path");
    genaiDir = genai instanceof String ? (String) genai : null;
  }

  /** The file onnxruntime-genai opens a model directory by (export/genai.py writes it). */
  public static final String GENAI_CONFIG = "genai_config.json";

  /**
   * The onnxruntime-genai directory of this artifact in `dir` when the host pushed it (it holds its
   * genai_config.json), else null: then the plain ONNX Runtime session runs the artifact file.
   */
  public File genaiDirIn(File dir) {
    if (genaiDir == null) return null;
    File d = new File(dir, genaiDir);
    return new File(d, GENAI_CONFIG).isFile() ? d : null;
  }

  /**
   * Schemes whose XNNPACK packed weights do not depend on activation quantization parameters, so
   * XNNPACK's weight cache may share them between call sites (export/backends/executorch.py
   * CACHE_SAFE). The official executorch-android AAR is built with the cache on by default
   * (tools/cmake/preset/android.cmake: EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE ON).
   */
  public static final List<String> WEIGHT_CACHE_SAFE = Arrays.asList("fp32", "w8a8", "8da4w");

  /** Whether XNNPACK's weight cache is on when the app runs this artifact (always, for a .pte). */
  public boolean xnnpackWeightCache() {
    return artifact.endsWith(".pte");
  }

  private static String str(Map<String, Object> d, String path, String where) throws Invalid {
    Object v = Json.at(d, path);
    if (!(v instanceof String)) throw new Invalid(where + ": field " + path + " missing or not a string");
    return (String) v;
  }

  private static long num(Map<String, Object> d, String path, String where) throws Invalid {
    Object v = Json.at(d, path);
    if (!(v instanceof Long)) throw new Invalid(where + ": field " + path + " missing or not an integer");
    return (Long) v;
  }

  @SuppressWarnings("unchecked")
  public static Manifest parse(String text, String where) throws Invalid {
    Object doc;
    try {
      doc = Json.parse(text);
    } catch (Json.ParseException e) {
      throw new Invalid(where + ": " + e.getMessage());
    }
    if (!(doc instanceof Map)) throw new Invalid(where + ": not a JSON object");
    return new Manifest((Map<String, Object>) doc, where);
  }

  public static Manifest read(File path) throws Invalid {
    try {
      return parse(new String(readAll(path), StandardCharsets.UTF_8), path.getPath());
    } catch (IOException e) {
      throw new Invalid("cannot read " + path + ": " + e.getMessage());
    }
  }

  /** The whole file (java.io: java.nio.file needs Android API 26, the app's minSdk is 24). */
  public static byte[] readAll(File path) throws IOException {
    try (FileInputStream in = new FileInputStream(path)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[1 << 16];
      for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
      return out.toByteArray();
    }
  }

  /** Which runtime in the app runs this artifact, or null when none (see whyNotRunnable). */
  public String runtime() {
    if (whyNotRunnable() != null) return null;
    return artifact.endsWith(".pte") ? "executorch" : "onnxruntime";
  }

  /**
   * Why the headless benchmark cannot measure this artifact, or null. It times load and init through
   * ExecuTorch's Module API, whose Android `Module.load` takes no data file: a .pte + .ptd pair runs
   * in the chat screen (LlmModule takes the data path) but is not benchmarked.
   */
  public String whyNotBenchmarkable() {
    String why = whyNotRunnable();
    if (why != null) return why;
    if (dataFile != null) {
      return artifact + " keeps its weights in " + dataFile + " (--external-weights); ExecuTorch's Android "
          + "Module.load, which the benchmark times, takes no data file (the chat screen runs the pair through "
          + "LlmModule)";
    }
    return null;
  }

  public String whyNotRunnable() {
    if (backend.contains("coreml") || backend.contains("mps")) {
      return "backend " + backend + " runs on Apple devices only";
    }
    if (artifact.endsWith(".pte") && !WEIGHT_CACHE_SAFE.contains(quantScheme)) {
      // The host runs these with the cache off: a cached packing carries one call site's input
      // quantization into every other. The AAR's cache is on by default and its Java API can only
      // pass integer backend options (Module.load with BackendOptionsMap); weight_cache_enabled is
      // a bool, so the app cannot switch it off.
      return "scheme " + quantScheme + " needs XNNPACK's weight cache off (as the host runs it); the "
          + "executorch-android AAR has it on and its Java API cannot switch it off";
    }
    if (artifact.endsWith(".pte")) return null;
    if (artifact.endsWith(".onnx") || artifact.endsWith(".ort")) return null;
    return "no Android runtime for " + artifact + " (backend " + backend + ")";
  }

  /** One artifact found in a folder: its manifest, or why it cannot be used. */
  public static final class Entry {
    public final File file;
    public final Manifest manifest; // null when problem != null
    public final String problem;

    Entry(File file, Manifest manifest, String problem) {
      this.file = file;
      this.manifest = manifest;
      this.problem = problem;
    }
  }

  /** Every `*.manifest.json` in `dir`, sorted by name, paired with its artifact. */
  public static List<Entry> scan(File dir) throws Invalid {
    String[] names = dir.list();
    if (names == null) {
      throw new Invalid("cannot list " + dir + " (missing, or not readable by the app: run "
          + "`adb shell chmod 755 " + dir + "` and `adb shell chmod 644 " + dir + "/*`)");
    }
    Arrays.sort(names);
    List<Entry> out = new ArrayList<>();
    for (String n : names) {
      if (!n.endsWith(SUFFIX)) continue;
      File artifact = new File(dir, n.substring(0, n.length() - SUFFIX.length()));
      if (artifact.getName().endsWith(".failed")) continue;
      Manifest m;
      try {
        m = read(new File(dir, n));
      } catch (Invalid e) {
        out.add(new Entry(artifact, null, e.getMessage()));
        continue;
      }
      if (!m.artifact.equals(artifact.getName())) {
        out.add(new Entry(artifact, null, n + " describes " + m.artifact + ", not " + artifact.getName()));
      } else if (!artifact.isFile()) {
        out.add(new Entry(artifact, null, "manifest " + n + " has no artifact " + artifact.getName() + " beside it"));
      } else if (m.dataFile != null && !new File(dir, m.dataFile).isFile()) {
        out.add(new Entry(artifact, null, artifact.getName() + " keeps its weights in " + m.dataFile
            + ", which is not beside it"));
      } else {
        String why = m.whyNotRunnable();
        out.add(new Entry(artifact, why == null ? m : null, why));
      }
    }
    return out;
  }

  /** The tokenizer the host pushed for this artifact (`<artifact>.tokenizer.*`), or null. */
  public static File tokenizerFor(File dir, String artifactName) {
    String[] names = dir.list();
    if (names == null) return null;
    Arrays.sort(names);
    for (String n : names) {
      if (n.startsWith(artifactName + ".tokenizer.")) return new File(dir, n);
    }
    return null;
  }
}
