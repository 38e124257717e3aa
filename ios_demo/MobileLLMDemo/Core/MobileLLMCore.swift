// The platform-free part of the iOS demo: manifest reader, statistics, benchmark plan and the
// results-schema writer. It mirrors mobilellm/manifest.py and benchmarks/schema.py (and the
// Android app's Kotlin core), imports Foundation only, and so compiles and is tested on Linux
// (ios_demo/LinuxCheck, driven by mobilellm/tests/test_device_ios.py).
import Foundation

public struct CoreError: Error, CustomStringConvertible, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

// MARK: - JSON

/// Any JSON document, decoded without a fixed type (manifests carry backend-specific sections).
public enum JSONValue: Codable, Equatable {
  case null, bool(Bool), int(Int), double(Double), string(String), array([JSONValue]), object([String: JSONValue])

  public init(from decoder: Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() { self = .null }
    else if let v = try? c.decode(Bool.self) { self = .bool(v) }
    else if let v = try? c.decode(Int.self) { self = .int(v) }
    else if let v = try? c.decode(Double.self) { self = .double(v) }
    else if let v = try? c.decode(String.self) { self = .string(v) }
    else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
    else { self = .object(try c.decode([String: JSONValue].self)) }
  }

  public func encode(to encoder: Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .null: try c.encodeNil()
    case .bool(let v): try c.encode(v)
    case .int(let v): try c.encode(v)
    case .double(let v): try c.encode(v)
    case .string(let v): try c.encode(v)
    case .array(let v): try c.encode(v)
    case .object(let v): try c.encode(v)
    }
  }

  public subscript(key: String) -> JSONValue? {
    if case .object(let o) = self { return o[key] }
    return nil
  }
  public var string: String? { if case .string(let s) = self { return s }; return nil }
  public var int: Int? {
    switch self {
    case .int(let v): return v
    case .double(let v) where v.rounded() == v && abs(v) < 9e15: return Int(v)
    default: return nil
    }
  }
  public var double: Double? {
    switch self {
    case .int(let v): return Double(v)
    case .double(let v): return v
    default: return nil
    }
  }
  public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
  public var object: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }

  public static func parse(_ data: Data) throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: data) }

  public func encoded(pretty: Bool = true) throws -> Data {
    let e = JSONEncoder()
    e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys]
    return try e.encode(self)
  }
}

// MARK: - Manifest (mobilellm/manifest.py)

/// Names of the model's inputs and outputs. Core ML artifacts record them in the manifest's "io"
/// section; the defaults are the contract names forward(tokens, input_pos) -> logits.
public struct ModelIO: Equatable {
  public var tokens = "tokens"
  public var position = "input_pos"
  public var logits = "logits"
  public var states: [String] = []
  /// Token counts the model takes per call (the Core ML export's enumerated T: 1, 2, 4, ... 64);
  /// empty when the manifest names none (any length).
  public var chunkLengths: [Int] = []
  /// True when the logits output holds the last position's row only: the manifest gives its dims as
  /// [1, 1, vocab] (an ONNX export's default, onnxruntime-genai's pruned head); false: a row per token fed.
  public var lastLogitsOnly = false

  public init() {}

  /// Accepts {"inputs": [...], "outputs": [...], "states": [...]} where each list holds names or
  /// objects with "name" (and optionally "role"), or maps name -> spec. An entry's role comes from
  /// "role", else from a known name, else from its place (tokens first, then the start position).
  public init(section: JSONValue?) {
    guard let io = section?.object else { return }
    func entries(_ v: JSONValue?) -> [(name: String, role: String?)] {
      switch v {
      case .array(let a)?:
        return a.compactMap { e in
          if let s = e.string { return (s, nil) }
          if let n = e["name"]?.string { return (n, e["role"]?.string) }
          return nil
        }
      case .object(let o)?:
        return o.keys.sorted().map { k in (k, o[k]?["role"]?.string) }
      default: return []
      }
    }
    let inputs = entries(io["inputs"])
    let outputs = entries(io["outputs"])
    let tokenNames: Set<String> = ["tokens", "input_ids", "inputIds", "ids"]
    let positionNames: Set<String> = ["input_pos", "start_pos", "position", "positions", "cache_position"]
    if let t = inputs.first(where: { $0.role == "tokens" }) ?? inputs.first(where: { tokenNames.contains($0.name) })
      ?? inputs.first(where: { $0.role == nil && !positionNames.contains($0.name) }) {
      tokens = t.name
    }
    if let p = inputs.first(where: { $0.role == "position" || $0.role == "input_pos" })
      ?? inputs.first(where: { positionNames.contains($0.name) })
      ?? inputs.first(where: { $0.name != tokens && $0.role == nil }) {
      position = p.name
    }
    if let l = outputs.first(where: { $0.role == "logits" }) ?? outputs.first(where: { $0.name.contains("logits") })
      ?? outputs.first {
      logits = l.name
    }
    if let dims = io["outputs"]?[logits]?.array, dims.count == 3, dims[1].int == 1 { lastLogitsOnly = true }
    states = entries(io["states"]).map(\.name)
    // export/backends/coreml.py io_contract: "chunk_lengths", and "enumerated_T" on the tokens input
    let enumerated = io["inputs"]?.array?.first { $0["name"]?.string == tokens }?["enumerated_T"]
    chunkLengths = ((io["chunk_lengths"] ?? enumerated)?.array ?? []).compactMap(\.int).sorted()
  }
}

/// How a prompt of `count` tokens is fed to a model that takes only `lengths` tokens per call: the
/// largest length that fits, then the rest (37 with 1...64 = 32 + 4 + 1), as the host's
/// CoreMLSession.forward; one call of `count` when `lengths` is empty.
public func promptChunks(count: Int, lengths: [Int]) throws -> [Int] {
  guard !lengths.isEmpty else { return count > 0 ? [count] : [] }
  let desc = lengths.sorted(by: >)
  var out: [Int] = [], left = count
  while left > 0 {
    guard let n = desc.first(where: { $0 <= left }) else {
      throw CoreError("\(left) tokens cannot be fed in chunks of \(lengths.sorted())")
    }
    out.append(n)
    left -= n
  }
  return out
}

public struct ArtifactManifest: Equatable {
  public static let schema = "mobilellm.manifest"
  public static let version = 2  // versions minVersion...version are read
  public static let minVersion = 1

  public let artifact: String
  public let backend: String
  public let scheme: String
  public let model: String
  public let variant: String
  public let storedBlocks: Int
  public let executedBlocks: Int
  public let repeatFactor: Int
  public let paramCount: Int
  public let vocabSize: Int?
  public let kvHeads: Int?
  public let headDim: Int?
  public let quantizeEmbedding: Bool
  public let maxSeqLen: Int
  public let tokenizer: String?
  public let sha256: String?
  public let fileBytes: Int?
  public let io: ModelIO
  /// The `.ptd` holding the weights (exported with --external-weights), beside the artifact; or nil.
  public let dataFile: String?
  /// The onnxruntime-genai model directory exported beside an ONNX artifact (manifest "genai_dir.path",
  /// e.g. "LS-125M_w8a8_onnx.genai"); the app runs it through onnxruntime-genai. Or nil.
  public let genaiDir: String?
  public let raw: JSONValue

  /// `<artifact>.manifest.json` beside the artifact, as manifest_path() names it.
  public static func url(for artifact: URL) -> URL {
    artifact.deletingLastPathComponent().appendingPathComponent(artifact.lastPathComponent + ".manifest.json")
  }

  public static func read(artifact: URL) throws -> ArtifactManifest {
    let path = url(for: artifact)
    guard let data = FileManager.default.contents(atPath: path.path) else {
      throw CoreError("\(artifact.lastPathComponent) has no manifest (\(path.lastPathComponent) beside it); export it with `mobilellm export`")
    }
    return try ArtifactManifest(data: data, source: path.lastPathComponent)
  }

  public init(data: Data, source: String = "manifest") throws {
    let doc: JSONValue
    do { doc = try JSONValue.parse(data) } catch { throw CoreError("manifest \(source) is not valid JSON") }
    guard doc["schema"]?.string == Self.schema else {
      throw CoreError("\(source) is not a mobilellm manifest (schema '\(Self.schema)' expected)")
    }
    guard let v = doc["version"]?.int, (Self.minVersion...Self.version).contains(v) else {
      throw CoreError("manifest \(source) has version \(doc["version"]?.int.map(String.init) ?? "none"); this app reads versions \(Self.minVersion) to \(Self.version)")
    }
    func need<T>(_ v: T?, _ field: String) throws -> T {
      guard let v = v else { throw CoreError("manifest \(source): missing or mistyped field \(field)") }
      return v
    }
    let m = doc["model"]
    artifact = try need(doc["artifact"]?.string, "artifact")
    backend = try need(doc["backend"]?.string, "backend")
    scheme = try need(doc["quant"]?["scheme"]?.string, "quant.scheme")
    model = try need(m?["name"]?.string, "model.name")
    variant = try need(m?["variant"]?.string, "model.variant")
    storedBlocks = try need(m?["stored_blocks"]?.int, "model.stored_blocks")
    executedBlocks = try need(m?["executed_blocks"]?.int, "model.executed_blocks")
    repeatFactor = m?["repeat"]?.int ?? 1
    paramCount = try need(m?["param_count"]?.int, "model.param_count")
    vocabSize = m?["args"]?["vocab_size"]?.int
    kvHeads = m?["args"]?["n_kv_heads"]?.int
    headDim = m?["args"]?["head_dim"]?.int
    if case .bool(let b)? = doc["quant"]?["quantize_embedding"] { quantizeEmbedding = b } else { quantizeEmbedding = false }
    maxSeqLen = try need(doc["max_seq_len"]?.int, "max_seq_len")
    tokenizer = doc["tokenizer"]?.string
    sha256 = doc["sha256"]?.string
    fileBytes = doc["sizes"]?["file_bytes"]?.int
    io = ModelIO(section: doc["io"])
    dataFile = doc["data_file"]?.string
    genaiDir = doc["genai_dir"]?["path"]?.string
    raw = doc
  }

  /// Schemes whose XNNPACK packed weights do not depend on activation quantization parameters
  /// (export/backends/executorch.py CACHE_SAFE): the weight cache is on for these, off otherwise.
  public static let weightCacheSafe: Set<String> = ["fp32", "w8a8", "8da4w"]
  public var xnnpackWeightCache: Bool { Self.weightCacheSafe.contains(scheme) }

  /// Why the chat screen cannot run this artifact, or nil. ExecuTorch's TextRunner takes neither a
  /// data file nor backend options (so its XNNPACK weight cache stays at the package's default: on).
  public var chatRefusal: String? {
    guard artifact.hasSuffix(".pte") else { return nil }
    if let d = dataFile {
      return "\(artifact) keeps its weights in \(d); ExecuTorch's TextRunner takes no data file (the benchmark runs the pair)"
    }
    if !xnnpackWeightCache {
      return "scheme \(scheme) needs XNNPACK's weight cache off; TextRunner takes no backend options (the benchmark runs it)"
    }
    return nil
  }
}

// MARK: - Statistics

public enum Stats {
  /// numpy.percentile's default ("linear") interpolation, q in [0, 100].
  public static func percentile(_ xs: [Double], _ q: Double) -> Double {
    precondition(!xs.isEmpty, "percentile of no samples")
    let a = xs.sorted()
    let h = Double(a.count - 1) * q / 100
    let lo = Int(h.rounded(.down))
    let hi = min(lo + 1, a.count - 1)
    return a[lo] + (h - Double(lo)) * (a[hi] - a[lo])
  }
  public static func median(_ xs: [Double]) -> Double { percentile(xs, 50) }
  public static func mean(_ xs: [Double]) -> Double { xs.reduce(0, +) / Double(xs.count) }

  /// The statistics every timing is reported with, in record order.
  public static let timing: [(statistic: String, value: @Sendable ([Double]) -> Double)] = [
    ("median", { median($0) }), ("p10", { percentile($0, 10) }), ("p90", { percentile($0, 90) }),
    ("min", { $0.min()! }),
  ]
}

// MARK: - Results schema (benchmarks/schema.py)

public enum ResultsSchema {
  public static let schema = "mobilellm.results"
  public static let version = 1
  public static let units: [String: String] = [
    "load_ms": "ms", "init_ms": "ms", "decode_ms": "ms", "prefill_ms": "ms", "decode_ms_at_position": "ms",
    "decode_ms_paired": "ms",
    "decode_tokens_per_s": "tokens/s", "prefill_tokens_per_s": "tokens/s",
    "rss_after_init_mb": "MB", "rss_after_generate_mb": "MB", "kv_cache_mb": "MB", "size_mb": "MB",
    "perplexity": "", "top1_agreement": "", "kl_divergence": "nats",
    // memory named for what iOS measures (mobilellm/devices/results.py PLATFORM_METRICS)
    "phys_footprint_after_init_mb": "MB", "phys_footprint_after_generate_mb": "MB",
  ]
  public static let statistics = ["median", "mean", "min", "max", "p10", "p90", "single"]
  /// MB as `mobilellm bench` counts them: memory in 2^20 bytes (as RSS in KiB / 1024), sizes in 10^6 bytes.
  public static let memoryMB = 1_048_576.0
  public static let sizeMB = 1_000_000.0

  public static func validate(_ r: ResultRecord, _ at: String = "record") throws {
    guard let unit = units[r.metric] else { throw CoreError("\(at): unknown metric '\(r.metric)'") }
    guard r.unit == unit else { throw CoreError("\(at): metric \(r.metric) has unit '\(r.unit)', expected '\(unit)'") }
    guard statistics.contains(r.statistic) else { throw CoreError("\(at): unknown statistic '\(r.statistic)'") }
    guard r.value.isFinite else { throw CoreError("\(at): \(r.metric) value is not finite") }
    guard r.samples >= 1 else { throw CoreError("\(at): samples must be >= 1") }
  }

  /// The results document {"schema", "version", "records"}, validated record by record.
  public static func document(_ records: [ResultRecord]) throws -> Data {
    for (i, r) in records.enumerated() { try validate(r, "record \(i)") }
    let doc: JSONValue = .object([
      "schema": .string(schema), "version": .int(version), "records": .array(records.map(\.json)),
    ])
    return try doc.encoded()
  }

  /// The scheme as records name it: the manifest's, with "+emb8" for an int8 embedding table.
  public static func scheme(of m: ArtifactManifest) -> String { m.scheme + (m.quantizeEmbedding ? "+emb8" : "") }

  /// Float32 K and V of max_seq_len positions for every executed block, in MB (as `mobilellm bench`).
  public static func kvCacheMB(of m: ArtifactManifest) -> Double? {
    guard let h = m.kvHeads, let d = m.headDim else { return nil }
    return 2.0 * Double(m.executedBlocks * m.maxSeqLen * h * d) * 4 / sizeMB
  }
}

/// The fields every record of one artifact on one device shares.
public struct RecordContext: Equatable {
  public var model, variant, backend, scheme: String
  public var storedBlocks, executedBlocks: Int
  public var device, os: String
  public var runtime: [String: String]
  public var threads: Int
  public var timestamp: String
  public var artifact: String?
  public var sha256: String?

  public init(manifest m: ArtifactManifest, device: String, os: String, runtime: [String: String], threads: Int,
              timestamp: String) {
    model = m.model; variant = m.variant; backend = m.backend; scheme = ResultsSchema.scheme(of: m)
    storedBlocks = m.storedBlocks; executedBlocks = m.executedBlocks
    self.device = device; self.os = os; self.runtime = runtime; self.threads = threads
    self.timestamp = timestamp; artifact = m.artifact; sha256 = m.sha256
  }
}

public struct ResultRecord: Equatable {
  public var context: RecordContext
  public var metric: String
  public var value: Double
  public var statistic: String
  public var samples: Int
  public var settings: [String: JSONValue]?
  public var note: String?
  public var unit: String { ResultsSchema.units[metric] ?? "?" }

  public var json: JSONValue {
    let c = context
    var o: [String: JSONValue] = [
      "model": .string(c.model), "variant": .string(c.variant), "stored_blocks": .int(c.storedBlocks),
      "executed_blocks": .int(c.executedBlocks), "backend": .string(c.backend), "scheme": .string(c.scheme),
      "metric": .string(metric), "unit": .string(unit), "value": .double((value * 1e4).rounded() / 1e4), "statistic": .string(statistic),
      "samples": .int(samples), "device": .string(c.device), "os": .string(c.os),
      "runtime": .object(c.runtime.mapValues { .string($0) }), "threads": .int(c.threads),
      "timestamp": .string(c.timestamp),
    ]
    if let a = c.artifact { o["artifact"] = .string(a) }
    if let s = c.sha256 { o["sha256"] = .string(s) }
    if let s = settings { o["settings"] = .object(s) }
    if let n = note { o["note"] = .string(n) }
    return .object(o)
  }

  /// A timing (or rate) measured `samples.count` times: median, p10, p90 and min as four records;
  /// the median alone for one sample, nothing for none (as `mobilellm bench`).
  public static func timing(_ metric: String, _ samples: [Double], _ context: RecordContext,
                            settings: [String: JSONValue]? = nil, note: String? = nil) -> [ResultRecord] {
    Stats.timing.prefix(samples.count > 1 ? 4 : samples.count).map { stat in
      ResultRecord(context: context, metric: metric, value: stat.value(samples), statistic: stat.statistic,
                   samples: samples.count, settings: settings, note: note)
    }
  }

  public static func single(_ metric: String, _ value: Double, _ context: RecordContext,
                            settings: [String: JSONValue]? = nil, note: String? = nil) -> ResultRecord {
    ResultRecord(context: context, metric: metric, value: value, statistic: "single", samples: 1,
                 settings: settings, note: note)
  }
}

// MARK: - Benchmark plan (the same definitions as `mobilellm bench`)

public struct BenchSettings: Equatable {
  public var warmup = 3          // discarded runs before each timed series
  public var iters = 20          // timed prefill / decode forwards
  public var loadWarmup = 1      // discarded load+init cycles
  public var loadIters = 3       // timed load+init cycles, each with a fresh runtime object
  public var promptLen = 128     // P: prefill length and decode position, capped at max_seq_len / 2
  public var genTokens = 32      // N: tokens generated per decode-throughput run
  public var genWarmup = 1
  public var genIters = 3
  public init() {}

  /// Reads the "settings" object of a request; unknown keys are an error naming the valid ones.
  public init(json: JSONValue?) throws {
    self.init()
    guard let o = json?.object else { return }
    let keys: [String: WritableKeyPath<BenchSettings, Int>] = [
      "warmup": \.warmup, "iters": \.iters, "load_warmup": \.loadWarmup, "load_iters": \.loadIters,
      "prompt_len": \.promptLen, "gen_tokens": \.genTokens, "gen_warmup": \.genWarmup, "gen_iters": \.genIters,
    ]
    for (k, v) in o {
      guard let path = keys[k] else {
        throw CoreError("unknown benchmark setting '\(k)'; valid: \(keys.keys.sorted().joined(separator: ", "))")
      }
      guard let n = v.int, n >= (k.hasSuffix("warmup") ? 0 : 1) else {
        throw CoreError("benchmark setting \(k) must be an integer >= \(k.hasSuffix("warmup") ? 0 : 1)")
      }
      self[keyPath: path] = n
    }
  }

  public var json: JSONValue {
    .object(["warmup": .int(warmup), "iters": .int(iters), "load_warmup": .int(loadWarmup),
             "load_iters": .int(loadIters), "prompt_len": .int(promptLen), "gen_tokens": .int(genTokens),
             "gen_warmup": .int(genWarmup), "gen_iters": .int(genIters)])
  }

  /// P and N for an artifact with this KV-cache length, as `mobilellm bench`:
  /// P = min(prompt_len, max_seq_len / 2), N = min(gen_tokens, max_seq_len - P - 1).
  public func plan(maxSeqLen: Int) throws -> (promptLen: Int, genTokens: Int) {
    guard maxSeqLen >= 4 else { throw CoreError("max_seq_len \(maxSeqLen) is too short to benchmark") }
    let p = max(1, min(promptLen, maxSeqLen / 2))
    return (p, max(1, min(genTokens, maxSeqLen - p - 1)))
  }

  /// What every record of one artifact carries in "settings".
  public func recordSettings(promptLen p: Int, genTokens n: Int, threads: Int) -> [String: JSONValue] {
    ["warmup": .int(warmup), "iters": .int(iters), "load_warmup": .int(loadWarmup), "load_iters": .int(loadIters),
     "gen_warmup": .int(genWarmup), "gen_iters": .int(genIters), "prompt_len": .int(p), "gen_tokens": .int(n),
     "decode_position": .int(p), "threads": .int(threads)]
  }
}

/// Raw measurements of one artifact, as BenchmarkRunner takes them on the phone.
public struct BenchSamples: Equatable {
  /// Discarded warm-up samples per metric (load_ms, init_ms, prefill_ms, decode_ms, decode_tokens_per_s).
  public var warmup: [String: [Double]] = [:]
  /// ProcessInfo.thermalState at the artifact's start and end ("nominal", "fair", "serious", "critical").
  public var thermalStart = "unknown"
  public var thermalEnd = "unknown"
  /// Token counts of the prefill's calls (Core ML: the enumerated chunks; else one call of P).
  public var prefillChunks: [Int] = []
  public var loadMs: [Double] = []
  public var initMs: [Double] = []
  public var prefillMs: [Double] = []
  public var decodeMs: [Double] = []
  public var decodeTokensPerS: [Double] = []
  public var rssAfterInitMB: Double?
  public var rssAfterGenerateMB: Double?
  public var peakMB: Double?
  public var sizeBytes = 0
  public init() {}
}

/// The records of one artifact: four statistics per timing and rate, single values for memory,
/// size and KV cache; every record carries the run's settings.
public func artifactRecords(_ s: BenchSamples, manifest m: ArtifactManifest, context ctx: RecordContext,
                            settings: BenchSettings, promptLen p: Int, genTokens n: Int,
                            runtimeSettings: [String: JSONValue] = [:]) -> [ResultRecord] {
  var base = settings.recordSettings(promptLen: p, genTokens: n, threads: ctx.threads)
    .merging(runtimeSettings) { _, new in new }
  base["thermal_start"] = .string(s.thermalStart)
  base["thermal_end"] = .string(s.thermalEnd)
  if !s.prefillChunks.isEmpty { base["prefill_chunks"] = .array(s.prefillChunks.map { .int($0) }) }
  func with(_ extra: [String: JSONValue]) -> [String: JSONValue] { base.merging(extra) { _, new in new } }
  func raw(_ metric: String, _ xs: [Double], _ extra: [String: JSONValue] = [:]) -> [String: JSONValue] {
    let round = { (v: Double) -> JSONValue in .double((v * 1e4).rounded() / 1e4) }
    return with(extra.merging(["raw_samples": .array(xs.map(round)),
                               "warmup_samples": .array((s.warmup[metric] ?? []).map(round))]) { _, new in new })
  }
  let prefillTps = s.prefillMs.map { Double(p) * 1000 / $0 }
  var r: [ResultRecord] = []
  r += ResultRecord.timing("load_ms", s.loadMs, ctx, settings: raw("load_ms", s.loadMs, ["cache": .string("warm")]))
  r += ResultRecord.timing("init_ms", s.initMs, ctx, settings: raw("init_ms", s.initMs))
  r += ResultRecord.timing("prefill_ms", s.prefillMs, ctx, settings: raw("prefill_ms", s.prefillMs))
  r += ResultRecord.timing("prefill_tokens_per_s", prefillTps, ctx, settings: with([
    "raw_samples": .array(prefillTps.map { .double(($0 * 1e4).rounded() / 1e4) }),
    "warmup_samples": .array((s.warmup["prefill_ms"] ?? []).map { .double((Double(p) * 1000 / $0 * 1e4).rounded() / 1e4) }),
  ]))
  r += ResultRecord.timing("decode_ms", s.decodeMs, ctx, settings: raw("decode_ms", s.decodeMs))
  r += ResultRecord.timing("decode_tokens_per_s", s.decodeTokensPerS, ctx,
                           settings: raw("decode_tokens_per_s", s.decodeTokensPerS, ["sampling": .string("greedy")]))
  let memory = with(["memory": .string("phys_footprint")])
  if let v = s.rssAfterInitMB { r.append(.single("phys_footprint_after_init_mb", v, ctx, settings: memory)) }
  if let v = s.rssAfterGenerateMB {
    let peak = s.peakMB.map { String(format: "peak %.1f MB", $0) }
    r.append(.single("phys_footprint_after_generate_mb", v, ctx, settings: memory, note: peak))
  }
  r.append(.single("size_mb", Double(s.sizeBytes) / ResultsSchema.sizeMB, ctx, settings: base))
  if let kv = ResultsSchema.kvCacheMB(of: m) {
    r.append(.single("kv_cache_mb", kv, ctx, settings: base, note: "float32 K and V for max_seq_len positions"))
  }
  return r
}

/// The prompt `mobilellm bench` uses: BOS (1), then (7i + 3) mod (vocab - 3) + 3 (no tokenizer needed).
public func benchmarkPrompt(count: Int, vocabSize: Int) -> [Int] {
  [1] + (0..<max(0, count - 1)).map { (7 * $0 + 3) % max(1, vocabSize - 3) + 3 }
}

/// The token the decode step feeds at position P, as `mobilellm bench`.
public let benchmarkDecodeToken = 5

public func argmax(_ xs: [Float]) -> Int {
  var best = 0
  for i in xs.indices where xs[i] > xs[best] { best = i }
  return best
}

// MARK: - Host <-> app protocol (mobilellm/devices/ios.py)

/// `mobilellm device ios` copies artifacts to Documents/inbox/<run>/, then launches the app with
/// `--mobilellm-run <run>`; the app writes Documents/results/<run>/{status,results}.json.
public enum RunLayout {
  public static let runFlag = "--mobilellm-run"
  public static let benchmarkFlag = "--mobilellm-benchmark"  // benchmark everything, no host
  public static let inbox = "inbox"
  public static let artifacts = "artifacts"
  public static let results = "results"
  public static let request = "request.json"
  public static let status = "status.json"
  public static let resultsFile = "results.json"

  /// The run id after --mobilellm-run, nil if absent; a run id is letters, digits, '-' and '_'.
  public static func runID(arguments: [String]) throws -> String? {
    guard let i = arguments.firstIndex(of: runFlag) else { return nil }
    guard i + 1 < arguments.count else { throw CoreError("\(runFlag) needs a run id") }
    let id = arguments[i + 1]
    let ok = !id.isEmpty && id.unicodeScalars.allSatisfy {
      CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_"
    }
    guard ok else { throw CoreError("bad run id '\(id)'") }
    return id
  }
}

public struct RunRequest: Equatable {
  public var runID: String
  public var artifacts: [String]      // names; empty means every artifact the app has
  public var settings: BenchSettings
  public var deviceName: String?      // the host's marketing name for the phone (devicectl)

  public init(runID: String, artifacts: [String] = [], settings: BenchSettings = BenchSettings(),
              deviceName: String? = nil) {
    self.runID = runID; self.artifacts = artifacts; self.settings = settings; self.deviceName = deviceName
  }

  public init(data: Data) throws {
    let doc = try JSONValue.parse(data)
    guard doc["schema"]?.string == "mobilellm.ios-request", let id = doc["run_id"]?.string else {
      throw CoreError("request is not a mobilellm.ios-request with a run_id")
    }
    runID = id
    artifacts = (doc["artifacts"]?.array ?? []).compactMap(\.string)
    settings = try BenchSettings(json: doc["settings"])
    deviceName = doc["device_name"]?.string
  }
}

public struct RunStatus: Equatable {
  public var runID: String
  public var state: String            // running, done, failed
  public var message: String
  public var current: String?         // artifact being measured
  public var completed: [String] = []
  public var errors: [String: String] = [:]  // artifact -> error

  public init(runID: String, state: String, message: String) {
    self.runID = runID; self.state = state; self.message = message
  }

  public var json: JSONValue {
    var o: [String: JSONValue] = [
      "schema": .string("mobilellm.ios-status"), "run_id": .string(runID), "state": .string(state),
      "message": .string(message), "completed": .array(completed.map { .string($0) }),
      "errors": .object(errors.mapValues { .string($0) }), "results": .string(RunLayout.resultsFile),
    ]
    if let c = current { o["current"] = .string(c) }
    return .object(o)
  }
}

// MARK: - Device description

/// iPhone model identifiers (utsname.machine) -> marketing name and chip, for the "device" field.
public let iPhoneModels: [String: (name: String, chip: String)] = [
  "iPhone11,2": ("iPhone XS", "A12"), "iPhone11,4": ("iPhone XS Max", "A12"), "iPhone11,6": ("iPhone XS Max", "A12"),
  "iPhone11,8": ("iPhone XR", "A12"),
  "iPhone12,1": ("iPhone 11", "A13"), "iPhone12,3": ("iPhone 11 Pro", "A13"), "iPhone12,5": ("iPhone 11 Pro Max", "A13"),
  "iPhone12,8": ("iPhone SE (2nd generation)", "A13"),
  "iPhone13,1": ("iPhone 12 mini", "A14"), "iPhone13,2": ("iPhone 12", "A14"), "iPhone13,3": ("iPhone 12 Pro", "A14"),
  "iPhone13,4": ("iPhone 12 Pro Max", "A14"),
  "iPhone14,4": ("iPhone 13 mini", "A15"), "iPhone14,5": ("iPhone 13", "A15"), "iPhone14,2": ("iPhone 13 Pro", "A15"),
  "iPhone14,3": ("iPhone 13 Pro Max", "A15"), "iPhone14,6": ("iPhone SE (3rd generation)", "A15"),
  "iPhone14,7": ("iPhone 14", "A15"), "iPhone14,8": ("iPhone 14 Plus", "A15"),
  "iPhone15,2": ("iPhone 14 Pro", "A16"), "iPhone15,3": ("iPhone 14 Pro Max", "A16"), "iPhone15,4": ("iPhone 15", "A16"),
  "iPhone15,5": ("iPhone 15 Plus", "A16"),
  "iPhone16,1": ("iPhone 15 Pro", "A17 Pro"), "iPhone16,2": ("iPhone 15 Pro Max", "A17 Pro"),
  "iPhone17,3": ("iPhone 16", "A18"), "iPhone17,4": ("iPhone 16 Plus", "A18"), "iPhone17,1": ("iPhone 16 Pro", "A18 Pro"),
  "iPhone17,2": ("iPhone 16 Pro Max", "A18 Pro"), "iPhone17,5": ("iPhone 16e", "A18"),
]

/// "iPhone 13 (A15)"; unknown identifiers keep the host's name if given, and the identifier.
public func deviceDescription(machine: String, hostName: String? = nil) -> String {
  if let m = iPhoneModels[machine] { return "\(m.name) (\(m.chip))" }
  if let h = hostName, !h.isEmpty { return "\(h) (\(machine))" }
  return machine
}

/// "iOS 17.2.1", or "iOS 18.2" when the patch version is 0.
public func osDescription(major: Int, minor: Int, patch: Int, name: String = "iOS") -> String {
  patch == 0 ? "\(name) \(major).\(minor)" : "\(name) \(major).\(minor).\(patch)"
}

public func isoTimestamp(_ date: Date = Date()) -> String {
  let f = ISO8601DateFormatter()
  f.formatOptions = [.withInternetDateTime]
  f.timeZone = TimeZone(identifier: "UTC")
  return f.string(from: date)
}

/// Bytes on disk of a file, or of all files under a directory (an .mlpackage), as mobilellm.io.size_bytes.
public func sizeOnDisk(_ url: URL) -> Int {
  let fm = FileManager.default
  var isDir: ObjCBool = false
  guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { return 0 }
  if !isDir.boolValue { return ((try? fm.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? 0 }
  guard let files = fm.enumerator(atPath: url.path) else { return 0 }
  var total = 0
  for case let rel as String in files {
    let p = url.appendingPathComponent(rel).path
    var d: ObjCBool = false
    if fm.fileExists(atPath: p, isDirectory: &d), !d.boolValue {
      total += ((try? fm.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0
    }
  }
  return total
}
