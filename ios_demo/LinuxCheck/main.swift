// Drives the app's platform-free Swift (MobileLLMCore.swift, SentencePieceTokenizer.swift) from the
// command line, so mobilellm/tests/test_device_ios.py can check it against the Python side on a
// machine with a Swift toolchain and no Xcode:
//   swiftc ../MobileLLMDemo/Core/*.swift main.swift -o linuxcheck
// Each command prints one JSON document on stdout; errors go to stderr with exit status 1.
import Foundation

func emit(_ v: JSONValue) throws {
  print(String(decoding: try v.encoded(), as: UTF8.self))
}

/// The fixed measurements behind ios_demo/golden/results.example.json, through the app's own
/// record assembly (artifactRecords), so the golden file is exactly what the app writes.
func goldenRecords(manifests: [ArtifactManifest]) throws -> [ResultRecord] {
  var records: [ResultRecord] = []
  let settings = BenchSettings()
  for (k, m) in manifests.enumerated() {
    let coreML = m.backend == "coreml"
    let ctx = RecordContext(manifest: m, device: deviceDescription(machine: "iPhone14,5"),
                            os: osDescription(major: 18, minor: 2, patch: 1),
                            runtime: ["executorch": "1.5.1", "coreml": "iOS 18.2.1", "app": "0.1.0"],
                            threads: coreML ? 0 : 2, timestamp: "2026-05-04T10:00:00Z")
    let (p, n) = try settings.plan(maxSeqLen: m.maxSeqLen)
    let scale = 1.0 + Double(k)
    var s = BenchSamples()
    s.loadMs = [41.0, 39.5, 40.2].map { $0 * scale }
    s.initMs = [1370.0, 1362.5, 1358.0].map { $0 * scale }
    s.prefillMs = (0..<settings.iters).map { (205.0 + Double(($0 * 7) % 9)) * scale }
    s.decodeMs = (0..<settings.iters).map { (15.3 + Double(($0 * 5) % 11) / 10) * scale }
    s.decodeTokensPerS = [61.5, 62.0, 60.75].map { $0 / scale }
    s.rssAfterInitMB = 182.5 * scale
    s.rssAfterGenerateMB = 190.25 * scale
    s.peakMB = 231.0 * scale
    s.sizeBytes = m.fileBytes ?? 0
    s.thermalStart = "nominal"
    s.thermalEnd = "nominal"
    s.prefillChunks = try promptChunks(count: p, lengths: m.io.chunkLengths)
    let runtime: [String: JSONValue] = coreML ? ["compute_units": .string("all")]
                                              : ["load_mode": .string("mmap_mlock_ignore_errors"),
                                                 "xnnpack_weight_cache": .bool(m.xnnpackWeightCache)]
    records += artifactRecords(s, manifest: m, context: ctx, settings: settings, promptLen: p, genTokens: n,
                               runtimeSettings: runtime)
  }
  return records
}

func run(_ args: [String]) throws {
  guard let cmd = args.first else { throw CoreError("usage: linuxcheck COMMAND ...") }
  let rest = Array(args.dropFirst())
  switch cmd {
  case "stats":
    let xs = rest.compactMap(Double.init)
    try emit(.object(Dictionary(uniqueKeysWithValues: Stats.timing.map { ($0.statistic, .double($0.value(xs))) })))
  case "manifest":
    let m = try ArtifactManifest.read(artifact: URL(fileURLWithPath: rest[0]))
    try emit(.object([
      "artifact": .string(m.artifact), "backend": .string(m.backend), "scheme": .string(m.scheme),
      "model": .string(m.model), "variant": .string(m.variant), "stored_blocks": .int(m.storedBlocks),
      "executed_blocks": .int(m.executedBlocks), "repeat": .int(m.repeatFactor), "param_count": .int(m.paramCount),
      "vocab_size": m.vocabSize.map { .int($0) } ?? .null, "max_seq_len": .int(m.maxSeqLen),
      "tokenizer": m.tokenizer.map { .string($0) } ?? .null, "sha256": m.sha256.map { .string($0) } ?? .null,
      "file_bytes": m.fileBytes.map { .int($0) } ?? .null,
      "io": .object(["tokens": .string(m.io.tokens), "position": .string(m.io.position),
                     "logits": .string(m.io.logits), "states": .array(m.io.states.map { .string($0) }),
                     "last_logits_only": .bool(m.io.lastLogitsOnly)]),
    ]))
  case "golden":
    let manifests = try rest.map { try ArtifactManifest.read(artifact: URL(fileURLWithPath: $0)) }
    print(String(decoding: try ResultsSchema.document(try goldenRecords(manifests: manifests)), as: UTF8.self))
  case "validate":  // metric unit statistic value samples: the Swift validator's verdict
    let ctxManifest = try ArtifactManifest.read(artifact: URL(fileURLWithPath: rest[0]))
    let ctx = RecordContext(manifest: ctxManifest, device: "d", os: "o", runtime: [:], threads: 1, timestamp: "t")
    let r = ResultRecord(context: ctx, metric: rest[1], value: Double(rest[3]) ?? .nan, statistic: rest[2],
                         samples: Int(rest[4]) ?? 0)
    do { try ResultsSchema.validate(r); try emit(.string("ok")) } catch { try emit(.string("\(error)")) }
  case "chunks":  // COUNT LENGTH...: how a prompt is fed to a model taking only those lengths
    try emit(.array(try promptChunks(count: Int(rest[0])!, lengths: rest.dropFirst().compactMap { Int($0) }).map { .int($0) }))
  case "plan":
    let s = BenchSettings()
    let (p, n) = try s.plan(maxSeqLen: Int(rest[0])!)
    try emit(.object(["prompt_len": .int(p), "gen_tokens": .int(n)]))
  case "request":
    let r = try RunRequest(data: try Data(contentsOf: URL(fileURLWithPath: rest[0])))
    try emit(.object(["run_id": .string(r.runID), "artifacts": .array(r.artifacts.map { .string($0) }),
                      "settings": r.settings.json, "device_name": r.deviceName.map { .string($0) } ?? .null]))
  case "status":
    var s = RunStatus(runID: rest[0], state: rest[1], message: rest[2])
    s.completed = ["a.pte"]
    s.errors = ["b.mlpackage": "could not compile"]
    try emit(s.json)
  case "runid":
    try emit(try RunLayout.runID(arguments: rest).map { .string($0) } ?? .null)
  case "device":
    try emit(.string(deviceDescription(machine: rest[0], hostName: rest.count > 1 ? rest[1] : nil)))
  case "prompt":
    try emit(.array(benchmarkPrompt(count: Int(rest[0])!, vocabSize: Int(rest[1])!).map { .int($0) }))
  case "size":
    try emit(.int(sizeOnDisk(URL(fileURLWithPath: rest[0]))))
  case "encode":
    let t = try SentencePieceTokenizer(url: URL(fileURLWithPath: rest[0]))
    try emit(.array(rest.dropFirst().map { text in .array(t.encode(text).map { .int($0) }) }))
  case "decode":
    let t = try SentencePieceTokenizer(url: URL(fileURLWithPath: rest[0]))
    let lists = try JSONValue.parse(Data(rest[1].utf8)).array ?? []
    try emit(.array(lists.map { .string(t.decode(($0.array ?? []).compactMap(\.int))) }))
  default:
    throw CoreError("unknown command \(cmd)")
  }
}

do {
  try run(Array(CommandLine.arguments.dropFirst()))
} catch {
  FileHandle.standardError.write(Data("linuxcheck: \(error)\n".utf8))
  exit(1)
}
