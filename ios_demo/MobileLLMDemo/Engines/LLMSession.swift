import Foundation

/// Wall times of the paper's first two stages, in milliseconds.
struct StageTimes {
  var loadMs: Double  // read the artifact into the runtime
  var initMs: Double  // make it ready to run (method load, delegate init, weight packing, compile)
}

/// An artifact opened in its runtime, as export/base.py's Session on the host.
protocol LLMSession: AnyObject {
  /// Load, then init, each timed by the session itself (the runtimes split them differently).
  func open() async throws -> StageTimes
  /// Logits (vocab floats) of the last of `tokens`, fed at positions startPos ..< startPos + count.
  func forward(_ tokens: [Int], startPos: Int) throws -> [Float]
  /// Token counts of the calls that feed a prompt of `count` tokens (Core ML: its enumerated lengths).
  func prefillChunks(count: Int) throws -> [Int]
  /// Forget the KV cache.
  func reset() throws
  /// Threads the runtime computes with (0: scheduled by Core ML).
  var threads: Int { get }
  /// Runtime options worth recording beside the numbers.
  var runtimeSettings: [String: JSONValue] { get }
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
func ms(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }

/// Opens an artifact by its file type; each runtime is one class behind LLMSession. An ONNX export's
/// `<name>.genai/` directory opens through onnxruntime-genai when the app is built with its pod.
enum Runtimes {
  static let byExtension: [String: (LibraryArtifact) -> LLMSession] = {
    var engines: [String: (LibraryArtifact) -> LLMSession] = [
      "pte": { ExecuTorchSession(url: $0.url, manifest: $0.manifest) },
      "mlpackage": { CoreMLSession(url: $0.url, io: $0.manifest.io) },
      "mlmodelc": { CoreMLSession(url: $0.url, io: $0.manifest.io) },
    ]
    #if canImport(onnxruntime_genai_objc)
    engines["genai"] = { GenaiSession(url: $0.url, manifest: $0.manifest) }
    #endif
    return engines
  }()

  static func session(for a: LibraryArtifact) throws -> LLMSession {
    guard let make = byExtension[a.url.pathExtension] else {
      let pods = a.url.pathExtension == "genai"
        ? " (this build has no onnxruntime-genai: run `pod install` in ios_demo and build MobileLLMDemo.xcworkspace)" : ""
      throw CoreError("\(a.name) (backend \(a.manifest.backend)) has no runtime in this app\(pods); it opens "
                      + byExtension.keys.sorted().map { ".\($0)" }.joined(separator: ", "))
    }
    return make(a)
  }
}
