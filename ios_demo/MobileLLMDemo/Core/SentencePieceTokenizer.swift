// A SentencePiece BPE tokenizer (the LLaMA-2 tokenizer.model MobileLLM ships) in plain Swift, for
// the Core ML chat screen; ExecuTorch's TextRunner brings its own. It reads the model protobuf and
// follows sentencepiece's bpe_model.cc: highest-score merge first (leftmost on ties), byte
// fallback for unknown pieces. Platform-free: checked against the Python sentencepiece on Linux.
import Foundation

public final class SentencePieceTokenizer {
  enum PieceType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

  public private(set) var pieces: [String] = []
  private var scores: [Float] = []
  private var types: [PieceType] = []
  private var mergeable: [String: Int] = [:]   // normal and user-defined pieces (merge targets)
  private var reserved: [String: Int] = [:]    // control, unknown and byte pieces
  private var userDefined: [String] = []
  public private(set) var unkID = 0, bosID = 1, eosID = 2
  private var byteFallback = false
  private var addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true
  private var unkSurface = " \u{2047} "
  public var vocabSize: Int { pieces.count }

  public convenience init(url: URL) throws {
    guard let data = FileManager.default.contents(atPath: url.path) else {
      throw CoreError("cannot read tokenizer \(url.lastPathComponent)")
    }
    try self.init(data: data)
  }

  public init(data: Data) throws {
    var r = ProtoReader([UInt8](data))
    var modelType = 1
    while let (field, wire) = try r.key() {
      switch (field, wire) {
      case (1, 2): try readPiece(ProtoReader(r.bytes()))
      case (2, 2):
        var t = ProtoReader(try r.bytes())
        while let (f, w) = try t.key() {
          switch (f, w) {
          case (3, 0): modelType = Int(try t.varint())
          case (35, 0): byteFallback = try t.varint() != 0
          case (40, 0): unkID = Int(Int32(truncatingIfNeeded: try t.varint()))
          case (41, 0): bosID = Int(Int32(truncatingIfNeeded: try t.varint()))
          case (42, 0): eosID = Int(Int32(truncatingIfNeeded: try t.varint()))
          case (44, 2): unkSurface = String(decoding: try t.bytes(), as: UTF8.self)
          default: try t.skip(w)
          }
        }
      case (3, 2):
        var n = ProtoReader(try r.bytes())
        while let (f, w) = try n.key() {
          switch (f, w) {
          case (3, 0): addDummyPrefix = try n.varint() != 0
          case (4, 0): removeExtraWhitespaces = try n.varint() != 0
          case (5, 0): escapeWhitespaces = try n.varint() != 0
          default: try n.skip(w)
          }
        }
      default: try r.skip(wire)
      }
    }
    guard modelType == 2 else { throw CoreError("tokenizer model type \(modelType) is not BPE (2); only BPE is supported") }
    guard !pieces.isEmpty else { throw CoreError("tokenizer has no pieces") }
    for (i, p) in pieces.enumerated() {
      switch types[i] {
      case .normal, .userDefined: if mergeable[p] == nil { mergeable[p] = i }
      case .unused: break
      default: if reserved[p] == nil { reserved[p] = i }
      }
      if types[i] == .userDefined { userDefined.append(p) }
    }
    userDefined.sort { $0.utf8.count > $1.utf8.count }
  }

  private func readPiece(_ reader: ProtoReader) throws {
    var r = reader
    var piece = "", score: Float = 0, type = PieceType.normal
    while let (f, w) = try r.key() {
      switch (f, w) {
      case (1, 2): piece = String(decoding: try r.bytes(), as: UTF8.self)
      case (2, 5): score = Float(bitPattern: try r.fixed32())
      case (3, 0): type = PieceType(rawValue: Int(try r.varint())) ?? .normal
      default: try r.skip(w)
      }
    }
    pieces.append(piece); scores.append(score); types.append(type)
  }

  private func id(of piece: String) -> Int? { reserved[piece] ?? mergeable[piece] }

  func normalize(_ text: String) -> String {
    var s = text
    if removeExtraWhitespaces {
      s = s.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }
    if s.isEmpty { return s }
    if addDummyPrefix { s = " " + s }
    return escapeWhitespaces ? s.replacingOccurrences(of: " ", with: "\u{2581}") : s
  }

  public func encode(_ text: String, bos: Bool = false) -> [Int] {
    let normalized = normalize(text)
    // Split into characters, user-defined pieces kept whole (longest match).
    var symbols: [String] = []
    var rest = Substring(normalized)
    while let c = rest.first {
      if let u = userDefined.first(where: { rest.hasPrefix($0) }) {
        symbols.append(u); rest = rest.dropFirst(u.count)
      } else {
        symbols.append(String(c)); rest = rest.dropFirst()
      }
    }
    // Merge the best-scoring adjacent pair (leftmost on ties) until no pair is a piece.
    while symbols.count > 1 {
      var best: (index: Int, score: Float)? = nil
      for i in 0..<(symbols.count - 1) {
        if let pid = mergeable[symbols[i] + symbols[i + 1]], best == nil || scores[pid] > best!.score {
          best = (i, scores[pid])
        }
      }
      guard let b = best else { break }
      symbols[b.index] += symbols[b.index + 1]
      symbols.remove(at: b.index + 1)
    }
    var ids = bos ? [bosID] : []
    var previousUnknown = false
    for s in symbols {
      if let i = id(of: s) {
        ids.append(i); previousUnknown = false
      } else if byteFallback {
        for b in s.utf8 { ids.append(id(of: String(format: "<0x%02X>", b)) ?? unkID) }
      } else if !previousUnknown {
        ids.append(unkID); previousUnknown = true
      }
    }
    return ids
  }

  public func decode(_ ids: [Int]) -> String {
    var out = "", bytes: [UInt8] = []
    var first = true
    func flush() {
      if !bytes.isEmpty { out += String(decoding: bytes, as: UTF8.self); bytes.removeAll() }
    }
    for i in ids where i >= 0 && i < pieces.count {
      switch types[i] {
      case .control: continue
      case .byte:
        let hex = pieces[i].dropFirst(3).dropLast()  // "<0xAB>"
        if let b = UInt8(hex, radix: 16) { bytes.append(b) }
        first = false
        continue
      case .unknown:
        flush(); out += unkSurface
      default:
        flush()
        var p = pieces[i].replacingOccurrences(of: "\u{2581}", with: " ")
        if first && addDummyPrefix && p.hasPrefix(" ") { p.removeFirst() }
        out += p
      }
      first = false
    }
    flush()
    return out
  }
}

/// Just enough protobuf wire format to read a SentencePiece model.
struct ProtoReader {
  let buf: [UInt8]
  var pos = 0
  init(_ buf: [UInt8]) { self.buf = buf }

  mutating func varint() throws -> UInt64 {
    var v: UInt64 = 0, shift: UInt64 = 0
    while true {
      guard pos < buf.count, shift < 64 else { throw CoreError("tokenizer: truncated protobuf varint") }
      let b = buf[pos]; pos += 1
      v |= UInt64(b & 0x7f) << shift
      if b < 0x80 { return v }
      shift += 7
    }
  }

  mutating func key() throws -> (Int, Int)? {
    guard pos < buf.count else { return nil }
    let k = try varint()
    return (Int(k >> 3), Int(k & 7))
  }

  mutating func bytes() throws -> [UInt8] {
    let n = Int(try varint())
    guard n >= 0, pos + n <= buf.count else { throw CoreError("tokenizer: truncated protobuf field") }
    defer { pos += n }
    return Array(buf[pos..<(pos + n)])
  }

  mutating func fixed32() throws -> UInt32 {
    guard pos + 4 <= buf.count else { throw CoreError("tokenizer: truncated protobuf fixed32") }
    defer { pos += 4 }
    return UInt32(buf[pos]) | UInt32(buf[pos + 1]) << 8 | UInt32(buf[pos + 2]) << 16 | UInt32(buf[pos + 3]) << 24
  }

  mutating func skip(_ wire: Int) throws {
    switch wire {
    case 0: _ = try varint()
    case 1: pos += 8
    case 2: _ = try bytes()
    case 5: pos += 4
    default: throw CoreError("tokenizer: unsupported protobuf wire type \(wire)")
    }
    guard pos <= buf.count else { throw CoreError("tokenizer: truncated protobuf") }
  }
}
