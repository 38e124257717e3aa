package org.mobilellm.core;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Entry points the Python tests drive (mobilellm/tests/test_android_jvm.py):
 *   golden MANIFEST OUT       run the benchmark procedure on the fake runtime, write results JSON
 *   manifest MANIFEST         print the fields the app reads, as JSON
 *   sp MODEL TEXT...          print [[ids...], decoded] per text, as JSON
 *   constants                 print the schema constants the writer uses, as JSON
 */
public final class Tool {
  public static void main(String[] args) throws Exception {
    switch (args[0]) {
      case "golden": {
        Manifest m = Manifest.read(new File(args[1]));
        Fakes.Clock clock = new Fakes.Clock();
        Results r = new Results(Fakes.context());
        Benchmark.Config c = new Benchmark.Config();
        c.warmup = 2;
        c.iters = 10;
        c.genTokens = 16;
        Benchmark.run(() -> new Fakes.Session(clock, m.vocabSize), m, c, clock, r, line -> {});
        Files.write(Paths.get(args[2]), r.toJson().getBytes(StandardCharsets.UTF_8));
        break;
      }
      case "manifest": {
        Manifest m = Manifest.read(new File(args[1]));
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("artifact", m.artifact);
        d.put("backend", m.backend);
        d.put("scheme", m.scheme);
        d.put("model", m.modelName);
        d.put("variant", m.variant);
        d.put("stored_blocks", (long) m.storedBlocks);
        d.put("executed_blocks", (long) m.executedBlocks);
        d.put("repeat", (long) m.repeat);
        d.put("param_count", m.paramCount);
        d.put("max_seq_len", (long) m.maxSeqLen);
        d.put("vocab_size", (long) m.vocabSize);
        d.put("n_kv_heads", (long) m.nKvHeads);
        d.put("head_dim", (long) m.headDim);
        d.put("sha256", m.sha256);
        d.put("file_bytes", m.fileBytes);
        d.put("tokenizer", m.tokenizer);
        d.put("genai_dir", m.genaiDir);
        d.put("runtime", m.runtime());
        System.out.println(Json.write(d, 0));
        break;
      }
      case "sp": {
        SentencePiece sp = SentencePiece.load(new File(args[1]));
        List<Object> out = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
          List<Integer> ids = sp.encode(args[i]);
          List<Object> pair = new ArrayList<>();
          List<Object> longs = new ArrayList<>();
          for (int id : ids) longs.add((long) id);
          pair.add(longs);
          pair.add(sp.decode(ids));
          out.add(pair);
        }
        System.out.println(Json.write(out, 0));
        break;
      }
      case "constants": {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("schema", Results.SCHEMA);
        d.put("version", (long) Results.VERSION);
        d.put("metrics", new LinkedHashMap<String, Object>(Results.METRICS));
        d.put("statistics", new ArrayList<Object>(Results.STATISTICS));
        List<Object> fields = new ArrayList<>(Results.REQUIRED);
        fields.addAll(Results.OPTIONAL);
        d.put("fields", fields);
        System.out.println(Json.write(d, 0));
        break;
      }
      default:
        throw new IllegalArgumentException("unknown command " + args[0]);
    }
  }
}
