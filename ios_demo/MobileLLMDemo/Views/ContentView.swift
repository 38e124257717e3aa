import SwiftUI

struct ContentView: View {
  var body: some View {
    TabView {
      BenchmarkView().tabItem { Label("Benchmark", systemImage: "speedometer") }
      ChatView().tabItem { Label("Chat", systemImage: "text.bubble") }
    }
  }
}

struct BenchmarkView: View {
  @EnvironmentObject var app: AppModel

  /// Medians and single values, one row per artifact and metric.
  private var rows: [ResultRecord] {
    app.results.filter { $0.statistic == "median" || $0.statistic == "single" }
  }

  var body: some View {
    NavigationStack {
      List {
        Section("Artifacts") {
          if app.artifacts.isEmpty {
            Text("No artifacts. Run `mobilellm device ios --artifacts DIR` on a Mac, drop an artifact and its "
                 + ".manifest.json into this app's folder with Files, or bundle them in MobileLLMDemo/Artifacts.")
              .font(.footnote)
          }
          ForEach(app.artifacts) { a in
            VStack(alignment: .leading, spacing: 2) {
              Text(a.name).font(.headline)
              Text("\(a.manifest.model) · \(a.manifest.variant) · \(a.manifest.backend) · \(a.manifest.scheme) · "
                   + "max \(a.manifest.maxSeqLen) tokens").font(.caption).foregroundStyle(.secondary)
            }
          }
        }
        if !app.problems.isEmpty {
          Section("Unreadable") {
            ForEach(app.problems, id: \.self) { Text($0).font(.caption).foregroundStyle(.red) }
          }
        }
        Section("Benchmark") {
          Button(app.running ? "Running…" : "Run benchmark on all artifacts") {
            Task { await app.benchmarkAll() }
          }
          .disabled(app.running || app.artifacts.isEmpty)
          if !app.status.isEmpty { Text(app.status).font(.caption.monospaced()) }
          if let url = app.resultsURL { ShareLink(item: url) { Label("Share results.json", systemImage: "square.and.arrow.up") } }
        }
        if !rows.isEmpty {
          Section("Results (median)") {
            ForEach(Array(rows.enumerated()), id: \.offset) { _, r in
              HStack {
                VStack(alignment: .leading) {
                  Text(r.metric).font(.callout)
                  Text(r.context.artifact ?? r.context.model).font(.caption2).foregroundStyle(.secondary)
                }
                Spacer()
                Text(String(format: "%.2f %@", r.value, r.unit)).font(.callout.monospacedDigit())
              }
            }
          }
        }
      }
      .navigationTitle("MobileLLM")
      .toolbar { Button("Reload") { app.refresh() }.disabled(app.running) }
      .refreshable { app.refresh() }
    }
  }
}
