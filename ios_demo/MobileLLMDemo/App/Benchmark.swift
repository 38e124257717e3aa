import Foundation

/// Measures one artifact with the definitions of `mobilellm bench` on the host (benchmarks/measure.py):
///   load_ms / init_ms   load+init cycles, each with a fresh runtime object (LLMSession.open)
///   prefill_ms          one forward of P tokens at position 0
///   decode_ms           one forward of 1 token at position P, after a P-token prefill
///   decode_tokens_per_s N greedy tokens after a P-token prefill, argmax included
///   phys_footprint_*_mb phys_footprint after init and after the generations; size_mb on disk
/// Warm-up and per-iteration samples, and ProcessInfo.thermalState at start and end, go in settings.
/// Warmup runs are discarded; timings give median, p10, p90 and min records (artifactRecords).
struct BenchmarkRunner {
  var settings: BenchSettings
  var hostDeviceName: String? = nil
  var log: (String) -> Void = { print($0) }

  func run(_ a: LibraryArtifact) async throws -> [ResultRecord] {
    let m = a.manifest, s = settings
    guard let vocab = m.vocabSize else { throw CoreError("\(a.name): manifest has no model.args.vocab_size") }
    let (p, n) = try s.plan(maxSeqLen: m.maxSeqLen)
    var out = BenchSamples()
    out.thermalStart = DeviceInfo.thermalState
    func keep(_ metric: String, _ i: Int, _ warm: Int, _ v: Double, _ into: inout [Double]) {
      if i >= warm { into.append(v) } else { out.warmup[metric, default: []].append(v) }
    }

    log("\(a.name): load + init x\(s.loadWarmup + s.loadIters)")
    var session: LLMSession? = nil
    for i in 0..<(s.loadWarmup + s.loadIters) {
      session = nil  // the previous runtime object goes before the next one comes
      let fresh = try Runtimes.session(for: a)
      let t = try await fresh.open()
      keep("load_ms", i, s.loadWarmup, t.loadMs, &out.loadMs)
      keep("init_ms", i, s.loadWarmup, t.initMs, &out.initMs)
      session = fresh
    }
    guard let llm = session else { throw CoreError("no load+init cycle ran") }
    out.rssAfterInitMB = DeviceInfo.footprint()?.current

    log("\(a.name): prefill \(p) tokens x\(s.warmup + s.iters)")
    let prompt = benchmarkPrompt(count: p, vocabSize: vocab)
    out.prefillChunks = try llm.prefillChunks(count: p)
    for i in 0..<(s.warmup + s.iters) {
      try llm.reset()
      let t0 = now()
      _ = try llm.forward(prompt, startPos: 0)
      keep("prefill_ms", i, s.warmup, ms(since: t0), &out.prefillMs)
    }

    log("\(a.name): decode at position \(p) x\(s.warmup + s.iters)")
    for i in 0..<(s.warmup + s.iters) {  // the same step each time: position P, cache filled to P
      let t0 = now()
      _ = try llm.forward([benchmarkDecodeToken], startPos: p)
      keep("decode_ms", i, s.warmup, ms(since: t0), &out.decodeMs)
    }

    log("\(a.name): generate \(n) tokens x\(s.genWarmup + s.genIters)")
    for i in 0..<(s.genWarmup + s.genIters) {
      try llm.reset()
      var logits = try llm.forward(prompt, startPos: 0)
      let t0 = now()
      for pos in p..<(p + n) { logits = try llm.forward([argmax(logits)], startPos: pos) }
      keep("decode_tokens_per_s", i, s.genWarmup, Double(n) / (ms(since: t0) / 1000), &out.decodeTokensPerS)
    }
    if let f = DeviceInfo.footprint() { out.rssAfterGenerateMB = f.current; out.peakMB = f.peak }
    out.sizeBytes = a.manifest.fileBytes ?? sizeOnDisk(a.url)  // a .pte + .ptd pair: both files
    out.thermalEnd = DeviceInfo.thermalState

    var ctx = RecordContext(manifest: m, device: DeviceInfo.description(hostName: hostDeviceName), os: DeviceInfo.os,
                            runtime: DeviceInfo.runtime, threads: llm.threads, timestamp: isoTimestamp())
    ctx.artifact = a.name  // what ran: an ONNX export's <name>.genai directory shares the .onnx's manifest
    return artifactRecords(out, manifest: m, context: ctx, settings: s, promptLen: p, genTokens: n,
                           runtimeSettings: llm.runtimeSettings)
  }
}

/// One benchmark run over several artifacts, written as it goes to Documents/results/<run>/:
/// status.json (what the host polls), results.json (the results schema) and log.txt.
struct BenchmarkJob {
  let runID: String
  let request: RunRequest
  var dir: URL { ArtifactLibrary.resultsDir.appendingPathComponent(runID) }
  var resultsURL: URL { dir.appendingPathComponent(RunLayout.resultsFile) }

  static func newRunID() -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyyMMdd-HHmmss"
    f.locale = Locale(identifier: "en_US_POSIX")
    return "app-" + f.string(from: Date())
  }

  /// Measures the requested artifacts (all of `library` if the request names none); returns the
  /// records and the per-artifact errors. `progress` gets each log line.
  func execute(library: [LibraryArtifact], progress: @escaping (String) -> Void = { _ in }) async
    -> (records: [ResultRecord], errors: [String: String]) {
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let logURL = dir.appendingPathComponent("log.txt")
    let log: (String) -> Void = { line in
      print("[mobilellm] \(line)")
      progress(line)
      if let h = try? FileHandle(forWritingTo: logURL) {
        h.seekToEndOfFile(); h.write(Data("\(isoTimestamp()) \(line)\n".utf8)); try? h.close()
      } else {
        try? Data("\(isoTimestamp()) \(line)\n".utf8).write(to: logURL)
      }
    }
    var status = RunStatus(runID: runID, state: "running", message: "starting")
    var records: [ResultRecord] = []
    let wanted = request.artifacts.isEmpty ? library.map(\.name) : request.artifacts
    for name in wanted where !library.contains(where: { $0.name == name }) {
      status.errors[name] = "not found on the phone (looked in the app bundle's Artifacts and Documents)"
    }
    let runner = BenchmarkRunner(settings: request.settings, hostDeviceName: request.deviceName, log: log)
    for a in library where wanted.contains(a.name) {
      status.current = a.name
      status.message = "measuring \(a.name)"
      write(status)
      do {
        records += try await runner.run(a)
        status.completed.append(a.name)
        try ResultsSchema.document(records).write(to: resultsURL, options: .atomic)
      } catch {
        status.errors[a.name] = "\(error)"
        log("\(a.name): failed: \(error)")
      }
    }
    status.current = nil
    status.state = records.isEmpty ? "failed" : "done"
    status.message = records.isEmpty ? "no artifact was measured" : "\(status.completed.count) artifact(s) measured"
    if records.isEmpty { try? ResultsSchema.document([]).write(to: resultsURL, options: .atomic) }
    write(status)
    log(status.message)
    return (records, status.errors)
  }

  func write(_ status: RunStatus) {
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    if let data = try? status.json.encoded() {
      try? data.write(to: dir.appendingPathComponent(RunLayout.status), options: .atomic)
    }
  }
}
