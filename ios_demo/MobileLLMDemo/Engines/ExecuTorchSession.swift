import ExecuTorch
import Foundation

/// A .pte (XNNPACK, or delegated to Core ML) through ExecuTorch's Module API.
/// Contract: forward(tokens int64 [1, T], input_pos int64 [1]) -> logits float32 [1, 1, vocab] (the last
/// position's, the default export) or [1, T, vocab] (--full-logits). The
/// KV cache lives in the program's mutable buffers, so consecutive calls of one loaded method form
/// one sequence; positions restarting at 0 overwrite it (later entries are masked by position).
final class ExecuTorchSession: LLMSession {
  /// The ExecuTorch Swift package this app links (branch swiftpm-1.5.1), the Python side's version.
  static let version = "1.5.1"

  let url: URL
  let loadMode: ModuleLoadMode
  /// The .ptd beside the .pte (--external-weights), given to Module(filePath:dataFilePaths:loadMode:).
  let dataURL: URL?
  /// XNNPACK's weight cache, set at method load: on for the dynamic schemes (fp32, w8a8, 8da4w), off
  /// for w8a8-static, as the host runs them. The SwiftPM package's XNNPACK is built with the cache
  /// (tools/cmake/preset/apple_common.cmake: EXECUTORCH_XNNPACK_ENABLE_WEIGHT_CACHE ON, so it is
  /// on by default); the option is passed either way so the record says what ran.
  let weightCache: Bool
  private var module: Module?

  /// mmap with mlock, errors ignored: what ExecuTorch's own LLM runner uses.
  init(url: URL, manifest: ArtifactManifest, loadMode: ModuleLoadMode = .mmapUseMlockIgnoreErrors) {
    self.url = url
    self.loadMode = loadMode
    dataURL = manifest.dataFile.map { url.deletingLastPathComponent().appendingPathComponent($0) }
    weightCache = manifest.xnnpackWeightCache
  }

  var threads: Int { DeviceInfo.performanceCores }  // ExecuTorch's threadpool: one per performance core
  var runtimeSettings: [String: JSONValue] {
    let names: [ModuleLoadMode: String] = [.file: "file", .mmap: "mmap", .mmapUseMlock: "mmap_mlock",
                                           .mmapUseMlockIgnoreErrors: "mmap_mlock_ignore_errors"]
    var s: [String: JSONValue] = ["load_mode": .string(names[loadMode] ?? "\(loadMode.rawValue)"),
                                  "xnnpack_weight_cache": .bool(weightCache)]
    if let d = dataURL { s["data_file"] = .string(d.lastPathComponent) }
    return s
  }

  func open() async throws -> StageTimes {
    let m: Module
    if let d = dataURL {
      guard FileManager.default.fileExists(atPath: d.path) else {
        throw CoreError("\(url.lastPathComponent) keeps its weights in \(d.lastPathComponent), which is not beside it")
      }
      m = Module(filePath: url.path, dataFilePaths: [d.path], loadMode: loadMode)
    } else {
      m = Module(filePath: url.path, loadMode: loadMode)
    }
    let options = try BackendOptionsMap(options: ["XnnpackBackend": [BackendOption("weight_cache_enabled", weightCache)]])
    var t0 = now()
    try m.load()             // load: the program (flatbuffer) read and verified
    let load = ms(since: t0)
    t0 = now()
    try m.load("forward", options: options)  // init: the method, delegate init, XNNPACK weight packing
    let initMs = ms(since: t0)
    module = m
    return StageTimes(loadMs: load, initMs: initMs)
  }

  func forward(_ tokens: [Int], startPos: Int) throws -> [Float] {
    guard let module = module else { throw CoreError("forward before open") }
    let input = Tensor<Int64>(tokens.map { Int64($0) }, shape: [1, tokens.count])
    let position = Tensor<Int64>([Int64(startPos)], shape: [1])
    let outputs: [Value] = try module.forward(input, position)
    guard let logits: Tensor<Float> = outputs.first?.tensor() else {
      throw CoreError("\(url.lastPathComponent): forward did not return a float32 logits tensor")
    }
    let shape = logits.shape
    // [1, 1, vocab]: the last position's (the default export); [1, T, vocab] from --full-logits
    guard shape.count == 3, shape[1] == tokens.count || shape[1] == 1 else {
      throw CoreError("\(url.lastPathComponent): logits have shape \(shape), expected [1, \(tokens.count), vocab] or [1, 1, vocab]")
    }
    let vocab = shape[2], t = shape[1]
    return logits.withUnsafeBytes { Array($0[((t - 1) * vocab)..<(t * vocab)]) }
  }

  func prefillChunks(count: Int) throws -> [Int] { [count] }

  func reset() throws {}
}
