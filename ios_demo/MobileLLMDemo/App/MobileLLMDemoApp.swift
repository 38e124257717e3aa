import SwiftUI
import UIKit

@main
struct MobileLLMDemoApp: App {
  @StateObject private var app = AppModel()

  var body: some Scene {
    WindowGroup {
      ContentView()
        .environmentObject(app)
        .task { await app.handleLaunch(arguments: ProcessInfo.processInfo.arguments) }
    }
  }
}

/// The app's state: the artifact library and the benchmark runs (in-app button or host-launched).
@MainActor
final class AppModel: ObservableObject {
  @Published var artifacts: [LibraryArtifact] = []
  @Published var problems: [String] = []
  @Published var running = false
  @Published var status = ""
  @Published var results: [ResultRecord] = []
  @Published var resultsURL: URL?

  init() { refresh() }

  func refresh() {
    (artifacts, problems) = ArtifactLibrary.scan()
  }

  /// `--mobilellm-run <id>`: the host (`mobilellm device ios`) copied artifacts and a request to
  /// Documents/inbox/<id>/; `--mobilellm-benchmark`: measure everything with default settings.
  func handleLaunch(arguments: [String]) async {
    do {
      if let runID = try RunLayout.runID(arguments: arguments) {
        let request: RunRequest
        do {
          request = try ArtifactLibrary.importInbox(runID: runID)
        } catch {
          let failed = RunStatus(runID: runID, state: "failed", message: "\(error)")
          BenchmarkJob(runID: runID, request: RunRequest(runID: runID)).write(failed)
          status = "run \(runID) failed: \(error)"
          return
        }
        refresh()
        await benchmark(BenchmarkJob(runID: runID, request: request))
      } else if arguments.contains(RunLayout.benchmarkFlag) {
        let id = BenchmarkJob.newRunID()
        await benchmark(BenchmarkJob(runID: id, request: RunRequest(runID: id)))
      }
    } catch {
      status = "\(error)"
    }
  }

  func benchmarkAll() async {
    let id = BenchmarkJob.newRunID()
    await benchmark(BenchmarkJob(runID: id, request: RunRequest(runID: id)))
  }

  private func benchmark(_ job: BenchmarkJob) async {
    guard !running else { return }
    running = true
    UIApplication.shared.isIdleTimerDisabled = true  // a locked phone suspends the app mid-run
    defer {
      running = false
      UIApplication.shared.isIdleTimerDisabled = false
    }
    let library = artifacts
    let outcome = await job.execute(library: library) { line in
      Task { @MainActor in self.status = line }
    }
    results = outcome.records
    resultsURL = job.resultsURL
    let failures = outcome.errors.map { "\($0.key): \($0.value)" }.sorted()
    status = (["run \(job.runID): \(outcome.records.count) records"] + failures).joined(separator: "\n")
  }
}
