package org.mobilellm.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * A SentencePiece BPE tokenizer (the LLaMA-2 / MobileLLM `tokenizer.model`) in plain Java, for
 * the ONNX Runtime chat path: ExecuTorch's LlmModule brings its own tokenizer, ONNX Runtime does
 * not. Follows sentencepiece's bpe_model.cc (highest-score merge first, leftmost on ties) and its
 * byte fallback. The Python tests compare it with the sentencepiece library.
 */
public final class SentencePiece {
  static final int NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6;
  static final String SPACE = "\u2581";

  private final String[] pieces;
  private final float[] scores;
  private final int[] types;
  private final Map<String, Integer> normal = new HashMap<>();
  private final Map<String, Integer> reserved = new HashMap<>();
  private final int[] byteIds = new int[256];
  public final int unkId;
  public final int bosId;
  public final int eosId;
  private final boolean byteFallback;
  private final boolean addDummyPrefix;
  private final boolean removeExtraWhitespaces;
  private final boolean escapeWhitespaces;
  private final boolean nfkc;

  public static final class Unsupported extends Exception {
    public Unsupported(String message) {
      super(message);
    }
  }

  public static SentencePiece load(File path) throws IOException, Unsupported {
    return new SentencePiece(Manifest.readAll(path));
  }

  public SentencePiece(byte[] modelProto) throws Unsupported {
    List<String> ps = new ArrayList<>();
    List<Float> ss = new ArrayList<>();
    List<Integer> ts = new ArrayList<>();
    int modelType = 1, unk = 0, bos = 1, eos = 2;
    boolean fallback = false, dummy = true, removeWs = true, escape = true;
    String normName = "";
    boolean charsmap = false;
    Proto top = new Proto(modelProto, 0, modelProto.length);
    while (top.more()) {
      int tag = top.tag();
      if (tag >>> 3 == 1 && (tag & 7) == 2) {
        Proto sp = top.message();
        String piece = "";
        float score = 0;
        int type = NORMAL;
        while (sp.more()) {
          int t = sp.tag();
          if (t >>> 3 == 1 && (t & 7) == 2) piece = sp.string();
          else if (t >>> 3 == 2 && (t & 7) == 5) score = Float.intBitsToFloat(sp.fixed32());
          else if (t >>> 3 == 3 && (t & 7) == 0) type = (int) sp.varint();
          else sp.skip(t);
        }
        ps.add(piece);
        ss.add(score);
        ts.add(type);
      } else if (tag >>> 3 == 2 && (tag & 7) == 2) {
        Proto tr = top.message();
        while (tr.more()) {
          int t = tr.tag();
          int f = t >>> 3;
          if ((t & 7) == 0 && (f == 3 || f == 35 || f == 40 || f == 41 || f == 42)) {
            long v = tr.varint();
            if (f == 3) modelType = (int) v;
            else if (f == 35) fallback = v != 0;
            else if (f == 40) unk = (int) v;
            else if (f == 41) bos = (int) v;
            else eos = (int) v;
          } else {
            tr.skip(t);
          }
        }
      } else if (tag >>> 3 == 3 && (tag & 7) == 2) {
        Proto nm = top.message();
        while (nm.more()) {
          int t = nm.tag();
          int f = t >>> 3;
          if (f == 1 && (t & 7) == 2) normName = nm.string();
          else if (f == 2 && (t & 7) == 2) charsmap = nm.bytes().length > 0;
          else if (f == 3 && (t & 7) == 0) dummy = nm.varint() != 0;
          else if (f == 4 && (t & 7) == 0) removeWs = nm.varint() != 0;
          else if (f == 5 && (t & 7) == 0) escape = nm.varint() != 0;
          else nm.skip(t);
        }
      } else {
        top.skip(tag);
      }
    }
    if (modelType != 2) {
      throw new Unsupported("tokenizer model type " + modelType + " is not BPE (2); the LLaMA/MobileLLM tokenizer is BPE");
    }
    if (ps.isEmpty()) throw new Unsupported("tokenizer has no pieces (not a SentencePiece model?)");
    pieces = ps.toArray(new String[0]);
    scores = new float[ps.size()];
    types = new int[ps.size()];
    java.util.Arrays.fill(byteIds, -1);
    for (int i = 0; i < pieces.length; i++) {
      scores[i] = ss.get(i);
      types[i] = ts.get(i);
      boolean isNormal = types[i] == NORMAL || types[i] == USER_DEFINED || types[i] == UNUSED;
      (isNormal ? normal : reserved).put(pieces[i], i);
      if (types[i] == BYTE && pieces[i].length() == 6 && pieces[i].startsWith("<0x")) {
        byteIds[Integer.parseInt(pieces[i].substring(3, 5), 16)] = i;
      }
    }
    unkId = unk;
    bosId = bos;
    eosId = eos;
    byteFallback = fallback;
    addDummyPrefix = dummy;
    removeExtraWhitespaces = removeWs;
    escapeWhitespaces = escape;
    nfkc = charsmap && !normName.equals("identity");
  }

  public int vocabSize() {
    return pieces.length;
  }

  public String piece(int id) {
    return pieces[id];
  }

  private int pieceToId(String p) {
    Integer r = reserved.get(p);
    if (r != null) return r;
    Integer n = normal.get(p);
    return n != null ? n : unkId;
  }

  String normalize(String text) {
    String s = nfkc ? java.text.Normalizer.normalize(text, java.text.Normalizer.Form.NFKC) : text;
    if (removeExtraWhitespaces) s = s.trim().replaceAll(" +", " ");
    if (s.isEmpty()) return s;
    if (addDummyPrefix) s = " " + s;
    return escapeWhitespaces ? s.replace(" ", SPACE) : s;
  }

  private static final class Pair {
    final int left, right, size;
    final float score;

    Pair(int left, int right, int size, float score) {
      this.left = left;
      this.right = right;
      this.size = size;
      this.score = score;
    }
  }

  /** Token ids of `text`, without BOS/EOS. */
  public List<Integer> encode(String text) {
    String norm = normalize(text);
    List<Integer> out = new ArrayList<>();
    if (norm.isEmpty()) return out;
    // symbols: one per code point, linked list by prev/next; merged away = null
    List<String> sym = new ArrayList<>();
    for (int i = 0; i < norm.length(); ) {
      int n = Character.charCount(norm.codePointAt(i));
      sym.add(norm.substring(i, i + n));
      i += n;
    }
    int count = sym.size();
    String[] piece = sym.toArray(new String[0]);
    int[] prev = new int[count], next = new int[count];
    for (int i = 0; i < count; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }
    PriorityQueue<Pair> agenda = new PriorityQueue<>((a, b) ->
        a.score != b.score ? Float.compare(b.score, a.score) : Integer.compare(a.left, b.left));
    for (int i = 1; i < count; i++) addPair(agenda, piece, i - 1, i);
    while (!agenda.isEmpty()) {
      Pair top = agenda.poll();
      String l = piece[top.left], r = piece[top.right];
      if (l.isEmpty() || r.isEmpty() || l.length() + r.length() != top.size) continue;
      piece[top.left] = l + r;
      next[top.left] = next[top.right];
      if (next[top.right] >= 0) prev[next[top.right]] = top.left;
      piece[top.right] = "";
      if (prev[top.left] >= 0) addPair(agenda, piece, prev[top.left], top.left);
      if (next[top.left] >= 0) addPair(agenda, piece, top.left, next[top.left]);
    }
    for (int i = 0; i >= 0; i = next[i]) {
      int id = pieceToId(piece[i]);
      if (id == unkId && byteFallback) {
        for (byte b : piece[i].getBytes(StandardCharsets.UTF_8)) {
          int bid = byteIds[b & 0xff];
          out.add(bid >= 0 ? bid : unkId);
        }
      } else {
        out.add(id);
      }
    }
    return out;
  }

  private void addPair(PriorityQueue<Pair> agenda, String[] piece, int left, int right) {
    String merged = piece[left] + piece[right];
    Integer id = normal.get(merged);
    if (id == null) return;
    agenda.add(new Pair(left, right, merged.length(), scores[id]));
  }

  /** Text of `ids`: control tokens dropped, byte pieces joined as UTF-8, the dummy prefix removed. */
  public String decode(List<Integer> ids) {
    StringBuilder sb = new StringBuilder();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    for (int id : ids) {
      if (id < 0 || id >= pieces.length) continue;
      int t = types[id];
      if (t == BYTE) {
        bytes.write(Integer.parseInt(pieces[id].substring(3, 5), 16));
        continue;
      }
      flush(sb, bytes);
      if (t == CONTROL) continue;
      if (t == UNKNOWN) sb.append(" \u2047 ");
      else sb.append(pieces[id].replace(SPACE, " "));
    }
    flush(sb, bytes);
    String s = sb.toString();
    if (addDummyPrefix && s.startsWith(" ")) s = s.substring(1);
    return s;
  }

  private static void flush(StringBuilder sb, ByteArrayOutputStream bytes) {
    if (bytes.size() == 0) return;
    sb.append(new String(bytes.toByteArray(), StandardCharsets.UTF_8));
    bytes.reset();
  }

  /** Protocol-buffer wire format, just enough to read a ModelProto. */
  private static final class Proto {
    final byte[] b;
    int i;
    final int end;

    Proto(byte[] b, int start, int end) {
      this.b = b;
      this.i = start;
      this.end = end;
    }

    boolean more() {
      return i < end;
    }

    long varint() {
      long v = 0;
      for (int shift = 0; ; shift += 7) {
        byte x = b[i++];
        v |= (long) (x & 0x7f) << shift;
        if ((x & 0x80) == 0) return v;
      }
    }

    int tag() {
      return (int) varint();
    }

    int fixed32() {
      int v = (b[i] & 0xff) | (b[i + 1] & 0xff) << 8 | (b[i + 2] & 0xff) << 16 | (b[i + 3] & 0xff) << 24;
      i += 4;
      return v;
    }

    byte[] bytes() {
      int n = (int) varint();
      byte[] out = java.util.Arrays.copyOfRange(b, i, i + n);
      i += n;
      return out;
    }

    String string() {
      return new String(bytes(), StandardCharsets.UTF_8);
    }

    Proto message() {
      int n = (int) varint();
      Proto p = new Proto(b, i, i + n);
      i += n;
      return p;
    }

    void skip(int tag) {
      switch (tag & 7) {
        case 0: varint(); break;
        case 1: i += 8; break;
        case 2: {
          int n = (int) varint(); // not `i += varint()`: Java reads i before the call moves it
          i += n;
          break;
        }
        case 5: i += 4; break;
        default: throw new IllegalStateException("unsupported protobuf wire type " + (tag & 7));
      }
    }
  }
}
