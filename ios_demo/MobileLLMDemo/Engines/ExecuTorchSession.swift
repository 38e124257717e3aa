import ExecuTorch
import Foundation

/// A .pte (XNNPACK, or delegated to Core ML) through ExecuTorch's Module API.
/// Contract: forward(tokens int64 [1, T], input_pos int64 [1]) -> logits float32 [1, T, vocab]. The
/// KV cache lives in the program's mutable buffers, so consecutive calls of one loaded method form
/// one sequence; positions restarting at 0 overwrite it (later entries are masked by position).
final class ExecuTorchSession: LLMSession {
  /// The ExecuTorch Swift package this app links (branch swiftpm-1.5.1), the Python side's version.
  static let version = "1.5.1"

  let url: URL
  let loadMode: ModuleLoadMode
  private var module: Module?

  /// mmap with mlock, errors ignored: what ExecuTorch's own LLM runner uses.
  init(url: URL, loadMode: ModuleLoadMode = .mmapUseMlockIgnoreErrors) {
    self.url = url
    self.loadMode = loadMode
  }

  var threads: Int { DeviceInfo.performanceCores }  // ExecuTorch's threadpool: one per performance core
  var runtimeSettings: [String: JSONValue] {
    let names: [ModuleLoadMode: String] = [.file: "file", .mmap: "mmap", .mmapUseMlock: "mmap_mlock",
                                           .mmapUseMlockIgnoreErrors: "mmap_mlock_ignore_errors"]
    return ["load_mode": .string(names[loadMode] ?? "\(loadMode.rawValue)")]
  }

  func open() async throws -> StageTimes {
    let m = Module(filePath: url.path, loadMode: loadMode)
    var t0 = now()
    try m.load()             // load: the program (flatbuffer) read and verified
    let load = ms(since: t0)
    t0 = now()
    try m.load("forward")    // init: the method, with delegate init and XNNPACK weight packing
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
    guard shape.count == 3, shape[1] == tokens.count else {
      throw CoreError("\(url.lastPathComponent): logits have shape \(shape), expected [1, \(tokens.count), vocab]")
    }
    let vocab = shape[2], t = tokens.count
    return logits.withUnsafeBytes { Array($0[((t - 1) * vocab)..<(t * vocab)]) }
  }

  func reset() throws {}
}
