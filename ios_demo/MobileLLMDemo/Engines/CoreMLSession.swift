import CoreML
import Foundation

/// A stateful Core ML model: an iOS 18 ML Program whose KV cache is MLState, given as .mlpackage
/// or as a compiled .mlmodelc. Input and output names come from the manifest's "io" section
/// (ModelIO), dtypes from the model description. load and init as the host's CoreMLSession
/// (export/backends/coreml.py): load = read the package's description (Manifest.json and the model
/// spec, no weights); init = compile for this device (MLModel.compileModel for an .mlpackage, then
/// MLModel.load) and makeState. A prompt is fed in the token counts the model takes (the manifest's
/// chunk_lengths, else the model's enumerated shapes): 128 tokens = 64 + 64, as the host does.
final class CoreMLSession: LLMSession {
  let url: URL
  let io: ModelIO
  let computeUnits: MLComputeUnits
  private var model: MLModel?
  private var state: MLState?
  private var tokensType = MLMultiArrayDataType.int32
  private var positionType = MLMultiArrayDataType.int32
  private var tokensShape: MLMultiArrayShapeConstraint?
  private var compiled: URL?  // our compiled copy of an .mlpackage, removed with the session

  init(url: URL, io: ModelIO, computeUnits: MLComputeUnits = .all) {
    self.url = url
    self.io = io
    self.computeUnits = computeUnits
  }

  deinit {
    if let c = compiled { try? FileManager.default.removeItem(at: c) }
  }

  var threads: Int { 0 }
  var runtimeSettings: [String: JSONValue] {
    let names: [MLComputeUnits: String] = [.all: "all", .cpuOnly: "cpu_only", .cpuAndGPU: "cpu_and_gpu",
                                           .cpuAndNeuralEngine: "cpu_and_neural_engine"]
    return ["compute_units": .string(names[computeUnits] ?? "\(computeUnits.rawValue)")]
  }

  /// The files the host's load reads: an .mlpackage's Manifest.json and model spec
  /// (Data/com.apple.CoreML/model.mlmodel; weights stay on disk); a compiled model's description.
  private func descriptionFiles() -> [URL] {
    if url.pathExtension == "mlpackage" {
      return [url.appendingPathComponent("Manifest.json"),
              url.appendingPathComponent("Data/com.apple.CoreML/model.mlmodel")]
    }
    return ["coremldata.bin", "model.mil", "metadata.json"].map { url.appendingPathComponent($0) }
      .filter { FileManager.default.fileExists(atPath: $0.path) }
  }

  func open() async throws -> StageTimes {
    var t0 = now()
    for f in descriptionFiles() {                           // load: the description read, as the host's read_spec
      guard FileManager.default.fileExists(atPath: f.path) else {
        throw CoreError("\(url.lastPathComponent) has no \(f.lastPathComponent): not a complete Core ML model")
      }
      _ = try Data(contentsOf: f)
    }
    let loadMs = ms(since: t0)
    let config = MLModelConfiguration()
    config.computeUnits = computeUnits
    t0 = now()                                              // init: compile for this device + load + state
    var modelURL = url
    if url.pathExtension == "mlpackage" {
      modelURL = try await MLModel.compileModel(at: url)    // .mlpackage -> .mlmodelc
      compiled = modelURL
    }
    let m = try await MLModel.load(contentsOf: modelURL, configuration: config)
    let s = m.makeState()                                   // the KV-cache buffers
    let initMs = ms(since: t0)
    try adopt(m)
    model = m
    state = s
    return StageTimes(loadMs: loadMs, initMs: initMs)
  }

  /// The calls a prompt of `count` tokens takes: the manifest's chunk lengths, else the model's
  /// enumerated token shapes, else one call.
  func prefillChunks(count: Int) throws -> [Int] {
    var lengths = io.chunkLengths
    if lengths.isEmpty, let c = tokensShape, c.type == .enumerated {
      lengths = c.enumeratedShapes.compactMap { $0.last?.intValue }
    }
    return try promptChunks(count: count, lengths: lengths)
  }

  /// Checks the model against the manifest's names and reads the input dtypes and shapes.
  private func adopt(_ m: MLModel) throws {
    let d = m.modelDescription
    let inputs = d.inputDescriptionsByName, outputs = d.outputDescriptionsByName
    func missing(_ kind: String, _ name: String, _ have: [String]) -> CoreError {
      CoreError("\(url.lastPathComponent): no \(kind) named '\(name)' (the manifest's io section); the model has "
                + have.sorted().joined(separator: ", "))
    }
    guard let t = inputs[io.tokens]?.multiArrayConstraint else { throw missing("input", io.tokens, Array(inputs.keys)) }
    guard let p = inputs[io.position]?.multiArrayConstraint else { throw missing("input", io.position, Array(inputs.keys)) }
    guard outputs[io.logits] != nil else { throw missing("output", io.logits, Array(outputs.keys)) }
    guard !d.stateDescriptionsByName.isEmpty else {
      throw CoreError("\(url.lastPathComponent) has no MLState: export it with the KV cache as Core ML state (iOS 18)")
    }
    tokensType = t.dataType
    positionType = p.dataType
    tokensShape = t.shapeConstraint
  }

  /// Whether the tokens input takes [1, n]; nil if so, else the shapes it takes.
  private func refusal(length n: Int) -> String? {
    guard let c = tokensShape else { return nil }
    switch c.type {
    case .enumerated:
      let shapes = c.enumeratedShapes.map { $0.map(\.intValue) }
      return shapes.contains { $0.last == n } ? nil : "takes token shapes \(shapes) only"
    case .range:
      guard let r = c.sizeRangeForDimension.last?.rangeValue else { return nil }
      return r.contains(n) || n == r.upperBound ? nil : "takes \(r.lowerBound)...\(r.upperBound) tokens per call"
    default:
      return nil
    }
  }

  /// Feeds `tokens` in the chunks the model takes, each at its own position; the last chunk's last row.
  func forward(_ tokens: [Int], startPos: Int) throws -> [Float] {
    var at = 0, row: [Float] = []
    for n in try prefillChunks(count: tokens.count) {
      row = try call(Array(tokens[at..<(at + n)]), startPos: startPos + at)
      at += n
    }
    return row
  }

  /// One prediction of `tokens` (a length the model takes) at `startPos`.
  private func call(_ tokens: [Int], startPos: Int) throws -> [Float] {
    guard let model = model, let state = state else { throw CoreError("forward before open") }
    if let why = refusal(length: tokens.count) {
      throw CoreError("\(url.lastPathComponent) cannot run \(tokens.count) tokens at once: its tokens input \(why)")
    }
    let ids = try MLMultiArray(shape: [1, NSNumber(value: tokens.count)], dataType: tokensType)
    for (i, t) in tokens.enumerated() { ids[i] = NSNumber(value: t) }
    let pos = try MLMultiArray(shape: [1], dataType: positionType)
    pos[0] = NSNumber(value: startPos)
    let inputs = try MLDictionaryFeatureProvider(dictionary: [
      io.tokens: MLFeatureValue(multiArray: ids), io.position: MLFeatureValue(multiArray: pos),
    ])
    let out = try model.prediction(from: inputs, using: state)
    guard let logits = out.featureValue(for: io.logits)?.multiArrayValue else {
      throw CoreError("\(url.lastPathComponent): output '\(io.logits)' is not a multi-array")
    }
    return try lastRow(logits, tokens: tokens.count)
  }

  /// Row T-1 of logits [1, T, vocab] (or [T, vocab]) as Float, honouring the array's strides.
  private func lastRow(_ a: MLMultiArray, tokens t: Int) throws -> [Float] {
    let shape = a.shape.map(\.intValue), strides = a.strides.map(\.intValue)
    guard shape.count >= 2, shape[shape.count - 2] == t else {
      throw CoreError("\(url.lastPathComponent): logits have shape \(shape), expected [1, \(t), vocab]")
    }
    let vocab = shape[shape.count - 1], step = strides[strides.count - 1]
    let base = (t - 1) * strides[strides.count - 2]
    var row = [Float](repeating: 0, count: vocab)
    switch a.dataType {
    case .float32:
      a.withUnsafeBufferPointer(ofType: Float.self) { p in for j in 0..<vocab { row[j] = p[base + j * step] } }
#if arch(arm64)
    case .float16:
      a.withUnsafeBufferPointer(ofType: Float16.self) { p in for j in 0..<vocab { row[j] = Float(p[base + j * step]) } }
#endif
    case .double:
      a.withUnsafeBufferPointer(ofType: Double.self) { p in for j in 0..<vocab { row[j] = Float(p[base + j * step]) } }
    default:
      throw CoreError("\(url.lastPathComponent): logits of Core ML data type \(a.dataType.rawValue) are not supported")
    }
    return row
  }

  func reset() throws {
    guard let model = model else { return }
    state = model.makeState()
  }
}
