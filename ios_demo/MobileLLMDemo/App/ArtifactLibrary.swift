import Foundation

/// An artifact the app can open, with its manifest.
struct LibraryArtifact: Identifiable, Hashable {
  let url: URL
  let manifest: ArtifactManifest
  var id: String { url.path }
  var name: String { url.lastPathComponent }

  static func == (a: LibraryArtifact, b: LibraryArtifact) -> Bool { a.url == b.url }
  func hash(into h: inout Hasher) { h.combine(url) }

  /// The tokenizer beside it: `<artifact>.tokenizer.model|json` (what `mobilellm device ios` copies),
  /// else the manifest's tokenizer file name, else tokenizer.model / tokenizer.json in its folder, else
  /// (an onnxruntime-genai directory) the tokenizer.model inside it.
  var tokenizer: URL? {
    let dir = url.deletingLastPathComponent()
    var names = ["\(name).tokenizer.model", "\(name).tokenizer.json"]
    if let t = manifest.tokenizer { names.append(URL(fileURLWithPath: t).lastPathComponent) }
    names += ["tokenizer.model", "tokenizer.json"]
    let candidates = names.map { dir.appendingPathComponent($0) } + [url.appendingPathComponent("tokenizer.model")]
    return candidates.first { FileManager.default.fileExists(atPath: $0.path) }
  }
}

/// Where artifacts live on the phone: bundled into the app (MobileLLMDemo/Artifacts/ at build time),
/// copied into Documents/artifacts/ by `mobilellm device ios`, or dropped into Documents/ with Files.
enum ArtifactLibrary {
  static var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }
  static var artifactsDir: URL { documents.appendingPathComponent(RunLayout.artifacts) }
  static var resultsDir: URL { documents.appendingPathComponent(RunLayout.results) }
  static var folders: [URL] {
    [Bundle.main.resourceURL?.appendingPathComponent("Artifacts"), artifactsDir, documents].compactMap { $0 }
  }

  /// Every artifact with a readable manifest, and a line for each one that is unreadable. An ONNX
  /// export's onnxruntime-genai directory (its manifest's genai_dir, holding genai_config.json) is an
  /// artifact of its own, with the .onnx's manifest, whether or not the .onnx is there.
  static func scan() -> (artifacts: [LibraryArtifact], problems: [String]) {
    var found: [LibraryArtifact] = [], problems: [String] = [], seen = Set<String>()
    let fm = FileManager.default
    for dir in folders {
      guard let names = try? fm.contentsOfDirectory(atPath: dir.path) else { continue }
      for manifestName in names.sorted() where manifestName.hasSuffix(".manifest.json") {
        let name = String(manifestName.dropLast(".manifest.json".count))
        let url = dir.appendingPathComponent(name)
        guard !name.hasSuffix(".failed"), !seen.contains(name) else { continue }
        let hasFile = fm.fileExists(atPath: url.path)
        do {
          let m = try ArtifactManifest.read(artifact: url)
          var urls: [URL] = hasFile ? [url] : []
          if let g = m.genaiDir.map({ dir.appendingPathComponent($0) }),
             fm.fileExists(atPath: g.appendingPathComponent("genai_config.json").path) {
            urls.append(g)
          }
          found += urls.map { LibraryArtifact(url: $0, manifest: m) }
          if !urls.isEmpty { seen.insert(name) }
        } catch {
          if hasFile { problems.append("\(name): \(error)") }
        }
      }
    }
    return (found, problems)
  }

  /// Tokenizer files the chat screen offers.
  static func tokenizers() -> [URL] {
    let fm = FileManager.default
    return folders.flatMap { dir -> [URL] in
      let names = (try? fm.contentsOfDirectory(atPath: dir.path)) ?? []
      return names.filter { $0.hasSuffix(".model") || ($0.hasSuffix(".json") && $0.contains("tokenizer")) }
        .sorted().map { dir.appendingPathComponent($0) }
    }
  }

  /// Moves what the host copied to Documents/inbox/<run>/ into Documents/artifacts/ (replacing
  /// older copies of the same names) and returns the request the host left there.
  static func importInbox(runID: String) throws -> RunRequest {
    let fm = FileManager.default
    let inbox = documents.appendingPathComponent(RunLayout.inbox).appendingPathComponent(runID)
    let requestURL = inbox.appendingPathComponent(RunLayout.request)
    guard let data = fm.contents(atPath: requestURL.path) else {
      throw CoreError("run \(runID): no \(RunLayout.inbox)/\(runID)/\(RunLayout.request) in the app's Documents")
    }
    let request = try RunRequest(data: data)
    try fm.createDirectory(at: artifactsDir, withIntermediateDirectories: true)
    for name in try fm.contentsOfDirectory(atPath: inbox.path) where name != RunLayout.request {
      let dest = artifactsDir.appendingPathComponent(name)
      if fm.fileExists(atPath: dest.path) { try fm.removeItem(at: dest) }
      try fm.moveItem(at: inbox.appendingPathComponent(name), to: dest)
    }
    try? fm.removeItem(at: inbox)
    return request
  }
}
