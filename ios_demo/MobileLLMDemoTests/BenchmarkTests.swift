import XCTest
@testable import MobileLLMDemo

/// `xcodebuild test -project ios_demo/MobileLLMDemo.xcodeproj -scheme MobileLLMDemo
///   -destination 'platform=iOS,id=<udid>'` runs these inside the app (the test host), so they see
/// the app's bundled artifacts and its Documents. Settings come from Documents/xctest-settings.json
/// if it is there (`{"iters": 20, ...}`: Firebase Test Lab pushes it, as it passes no environment to an
/// XCTest), then from MOBILELLM_<SETTING> variables, which win (pass them to xcodebuild as
/// TEST_RUNNER_MOBILELLM_ITERS=20 and so on; AWS Device Farm's spec does). For farms, see
/// `mobilellm device ios --spec devicefarm|firebase` and the README's "Device farms".
final class BenchmarkTests: XCTestCase {
  func testResultsDocumentFollowsTheSchema() throws {
    let manifest = try ArtifactManifest(data: Data("""
      {"schema": "mobilellm.manifest", "version": 1, "artifact": "m.pte", "backend": "executorch",
       "quant": {"scheme": "w8a8"}, "max_seq_len": 512,
       "model": {"name": "125M", "variant": "30 layers", "stored_blocks": 30, "executed_blocks": 30,
                 "repeat": 1, "param_count": 124635456, "args": {"vocab_size": 32000}}}
      """.utf8))
    let ctx = RecordContext(manifest: manifest, device: DeviceInfo.description(), os: DeviceInfo.os,
                            runtime: DeviceInfo.runtime, threads: DeviceInfo.performanceCores, timestamp: isoTimestamp())
    let records = ResultRecord.timing("decode_ms", [3, 1, 2], ctx)
    let doc = try JSONValue.parse(try ResultsSchema.document(records))
    XCTAssertEqual(doc["schema"]?.string, "mobilellm.results")
    XCTAssertEqual(doc["records"]?.array?.count, 4)
    XCTAssertEqual(doc["records"]?.array?.first?["value"]?.double, 2)
    XCTAssertNotNil(DeviceInfo.footprint())
  }

  func testBenchmarkEveryArtifact() async throws {
    let (library, problems) = ArtifactLibrary.scan()
    XCTAssertTrue(problems.isEmpty, "unreadable manifests:\n" + problems.joined(separator: "\n"))
    guard !library.isEmpty else {
      return XCTFail("no artifacts: put an artifact and its .manifest.json in ios_demo/MobileLLMDemo/Artifacts "
                     + "before building, or run `mobilellm device ios --artifacts DIR` once to copy them into Documents")
    }
    var settings: [String: JSONValue] = [:]
    let file = ArtifactLibrary.documents.appendingPathComponent("xctest-settings.json")
    if let data = try? Data(contentsOf: file) {
      guard case .object(let fromFile)? = try? JSONValue.parse(data) else {
        return XCTFail("\(file.path) is not a JSON object of settings")
      }
      settings = fromFile
    }
    for (key, value) in ProcessInfo.processInfo.environment where key.hasPrefix("MOBILELLM_") {
      if let n = Int(value) { settings[String(key.dropFirst("MOBILELLM_".count)).lowercased()] = .int(n) }
    }
    let id = "xctest-" + BenchmarkJob.newRunID().dropFirst("app-".count)
    let job = BenchmarkJob(runID: id, request: RunRequest(runID: id, settings: try BenchSettings(json: .object(settings))))
    let outcome = await job.execute(library: library)
    print("[mobilellm] results: \(job.resultsURL.path)")
    let attachment = XCTAttachment(contentsOfFile: job.resultsURL)
    attachment.name = "results.json"
    attachment.lifetime = .keepAlways
    add(attachment)
    XCTAssertTrue(outcome.errors.isEmpty, outcome.errors.map { "\($0.key): \($0.value)" }.joined(separator: "\n"))
    let doc = try JSONValue.parse(try Data(contentsOf: job.resultsURL))
    let measured = Set((doc["records"]?.array ?? []).compactMap { $0["artifact"]?.string })
    XCTAssertEqual(measured, Set(library.map(\.name)))
  }
}
