// Compiled only when the onnxruntime-genai pod is installed (ios_demo/Podfile: `pod install`, then open
// MobileLLMDemo.xcworkspace); without it the app builds with ExecuTorch and Core ML alone.
#if canImport(onnxruntime_genai_objc)
import Foundation
import onnxruntime_genai_objc

/// An ONNX artifact's `<name>.genai/` directory (model.onnx, genai_config.json, tokenizer files; written
/// beside the .onnx by the export) through onnxruntime-genai's generator (its Objective-C API), as the
/// host's GenaiSession (export/genai.py) runs it.
///   load: `OGAModel` (reads genai_config.json, creates the ONNX Runtime session; the app's thread count
///         is overlaid on the config's)
///   init: `OGAGeneratorParams` + `OGAGenerator` (the KV cache: one buffer of max_seq_len positions per
///         tensor, shared by past and present)
///   forward: `rewind(to:)` when the generator holds more, `appendTokens` (runs the model), then the last
///         row of the float32 `logits` output: [1, 1, vocab] from a default export (the last position's;
///         the manifest's io.outputs.logits says so), [1, T, vocab] from --full-logits (the host checks
///         these logits against the plain session's, export/tests/test_onnx.py).
final class GenaiSession: LLMSession {
  /// The onnxruntime-genai pod this app links (ios_demo/Podfile), the Python side's genai extra.
  static let version = "0.18.0"

  let url: URL
  let vocab: Int
  let maxSeqLen: Int
  // logits [1, 1, vocab]; OGATensor has no shape accessor, so the manifest says. The export writes the graph and
  // its manifest together; a graph replaced under an older manifest would be read at the wrong row (not checked here)
  let lastLogitsOnly: Bool
  private var model: OGAModel?
  private var generator: OGAGenerator?
  private var held = 0  // tokens the generator holds (the host's GenaiSession._len)

  init(url: URL, manifest: ArtifactManifest) {
    self.url = url
    vocab = manifest.vocabSize ?? 0
    maxSeqLen = manifest.maxSeqLen
    lastLogitsOnly = manifest.io.lastLogitsOnly
  }

  var threads: Int { DeviceInfo.performanceCores }
  var runtimeSettings: [String: JSONValue] {
    ["onnx_api": .string("onnxruntime-genai OGAGenerator"), "genai_dir": .string(url.lastPathComponent)]
  }

  func open() async throws -> StageTimes {
    var t0 = now()
    let config = try OGAConfig(path: url.path)
    try config.overlay("{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": \(threads)}}}}")
    let m = try OGAModel(config: config)
    let load = ms(since: t0)
    t0 = now()
    let params = try OGAGeneratorParams(model: m)
    try params.setSearchOption("max_length", doubleValue: Double(maxSeqLen))
    let g = try OGAGenerator(model: m, params: params)
    let initMs = ms(since: t0)
    model = m
    generator = g
    held = 0
    return StageTimes(loadMs: load, initMs: initMs)
  }

  func forward(_ tokens: [Int], startPos: Int) throws -> [Float] {
    guard let g = generator else { throw CoreError("forward before open") }
    guard vocab > 0 else { throw CoreError("\(url.lastPathComponent): manifest has no model.args.vocab_size") }
    guard startPos <= held else {
      throw CoreError("the generator holds \(held) positions; cannot run at position \(startPos)")
    }
    if startPos < held { try g.rewind(to: startPos) }
    try g.appendTokens(tokens.map { NSNumber(value: $0) })
    held = startPos + tokens.count
    let logits = try g.getOutput("logits")  // a copy of the model's output [1, 1 or T, vocab]
    let row = lastLogitsOnly ? 0 : tokens.count - 1
    return try withExtendedLifetime(logits) {
      let p = try logits.dataPointer().assumingMemoryBound(to: Float.self)
      return Array(UnsafeBufferPointer(start: p + row * vocab, count: vocab))
    }
  }

  func prefillChunks(count: Int) throws -> [Int] { [count] }

  func reset() throws {
    if held > 0 { try generator?.rewind(to: 0) }
    held = 0
  }
}
#endif
