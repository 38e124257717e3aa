import ExecuTorchLLM
import SwiftUI

struct ChatView: View {
  @EnvironmentObject var app: AppModel
  @StateObject private var chat = ChatModel()
  @State private var artifact: LibraryArtifact?
  @State private var tokenizer: URL?
  @State private var prompt = "The capital of France is"
  @State private var maxNewTokens = 64

  var body: some View {
    NavigationStack {
      Form {
        Section("Model") {
          Picker("Artifact", selection: $artifact) {
            Text("choose…").tag(LibraryArtifact?.none)
            ForEach(app.artifacts) { Text($0.name).tag(Optional($0)) }
          }
          Picker("Tokenizer", selection: $tokenizer) {
            Text("choose…").tag(URL?.none)
            ForEach(ArtifactLibrary.tokenizers(), id: \.self) { Text($0.lastPathComponent).tag(Optional($0)) }
          }
          Stepper("New tokens: \(maxNewTokens)", value: $maxNewTokens, in: 8...512, step: 8)
        }
        Section("Prompt") {
          TextField("Prompt", text: $prompt, axis: .vertical).lineLimit(2...6)
          HStack {
            Button("Generate") {
              guard let a = artifact, let t = tokenizer else { return }
              chat.generate(artifact: a, tokenizer: t, prompt: prompt, maxNewTokens: maxNewTokens)
            }
            .disabled(chat.generating || artifact == nil || tokenizer == nil)
            Spacer()
            Button("Stop", role: .destructive) { chat.stop() }.disabled(!chat.generating)
          }
        }
        Section {
          Text(chat.output.isEmpty ? " " : chat.output).textSelection(.enabled)
          if let e = chat.error { Text(e).font(.caption).foregroundStyle(.red) }
        } header: {
          HStack {
            Text("Output")
            Spacer()
            if let r = chat.tokensPerSecond { Text(String(format: "%.1f tokens/s", r)).monospacedDigit() }
          }
        }
      }
      .navigationTitle("Chat")
      .onChange(of: artifact) { _, a in
        if let t = a?.tokenizer { tokenizer = t }
      }
    }
  }
}

/// Streams generated text. A .pte goes through ExecuTorch's TextRunner (its own tokenizer and
/// sampler); a Core ML model (CoreMLSession) or an onnxruntime-genai directory (GenaiSession) through
/// its LLMSession with the Swift SentencePiece tokenizer, greedy.
/// tokens/s counts the tokens after the first (decode only, as decode_tokens_per_s). TextRunner's
/// Config defaults are echo on and no BOS: the prompt would come back as output (and its time count
/// in tokens/s) and the model would start without the BOS the Core ML chat and the host give it, so
/// the chat sets echo off and one BOS.
@MainActor
final class ChatModel: ObservableObject {
  @Published var output = ""
  @Published var tokensPerSecond: Double?
  @Published var generating = false
  @Published var error: String?

  private var textRunner: (key: String, runner: TextRunner)?
  private var session: (key: String, session: LLMSession)?
  private let stopFlag = StopFlag()

  func stop() {
    stopFlag.stopped = true
    textRunner?.runner.stop()
  }

  func generate(artifact a: LibraryArtifact, tokenizer: URL, prompt: String, maxNewTokens: Int) {
    output = ""; error = nil; tokensPerSecond = nil; generating = true
    stopFlag.stopped = false
    let meter = RateMeter()
    let emit: (String) -> Void = { piece in  // from the generating thread; the main queue keeps the order
      let rate = meter.tick()
      DispatchQueue.main.async {
        MainActor.assumeIsolated {
          self.output += piece
          if let r = rate { self.tokensPerSecond = r }
        }
      }
    }
    let key = a.url.path + "|" + tokenizer.path
    let seqLen = a.manifest.maxSeqLen
    if let why = a.manifest.chatRefusal {
      error = why
      generating = false
      return
    }
    if a.url.pathExtension == "pte" {
      if textRunner?.key != key {
        textRunner = (key, TextRunner(modelPath: a.url.path, tokenizerPath: tokenizer.path))
      }
      let runner = textRunner!.runner
      Task.detached {
        var failure: String?
        do {
          try runner.generate(prompt, Config {
            $0.sequenceLength = seqLen
            $0.maximumNewTokens = maxNewTokens
            $0.temperature = 0
            $0.isEchoEnabled = false  // the prompt is not output, nor timed as output
            $0.bosCount = 1           // as the Core ML chat (encode(bos: true)) and the host
          }) { token in emit(token) }
        } catch {
          failure = "\(error)"
        }
        runner.reset()
        await self.finish(failure)
      }
    } else {
      let cached = session?.key == key ? session?.session : nil
      let stopFlag = self.stopFlag
      Task.detached {
        var failure: String?
        do {
          let session: LLMSession
          if let c = cached {
            session = c
          } else {
            session = try Runtimes.session(for: a)
            _ = try await session.open()
            await self.keep(key: key, session: session)
          }
          let tok = try SentencePieceTokenizer(url: tokenizer)
          let ids = tok.encode(prompt, bos: true)
          guard ids.count < seqLen else { throw CoreError("the prompt has \(ids.count) tokens; the model holds \(seqLen)") }
          try session.reset()
          var logits = try session.forward(ids, startPos: 0)  // in the chunk lengths the model takes
          var generated: [Int] = [], shown = ""
          while generated.count < maxNewTokens, ids.count + generated.count < seqLen, !stopFlag.stopped {
            let next = argmax(logits)
            if next == tok.eosID { break }
            generated.append(next)
            let text = tok.decode(generated)
            if text.count > shown.count, text.hasPrefix(shown) {
              emit(String(text.dropFirst(shown.count)))
              shown = text
            }
            logits = try session.forward([next], startPos: ids.count + generated.count - 1)
          }
        } catch {
          failure = "\(error)"
        }
        await self.finish(failure)
      }
    }
  }

  private func keep(key: String, session: LLMSession) { self.session = (key, session) }

  private func finish(_ failure: String?) {
    error = failure
    generating = false
  }
}

final class StopFlag: @unchecked Sendable {
  var stopped = false
}

/// Tokens per second after the first token.
final class RateMeter: @unchecked Sendable {
  private var first: UInt64?
  private var count = 0
  func tick() -> Double? {
    let t = now()
    guard let f = first else { first = t; return nil }
    count += 1
    return Double(count) / (Double(t - f) / 1e9)
  }
}
