package org.mobilellm.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Minimal JSON reader and writer, so the platform-free core needs no library (Android's org.json
 * is absent on a plain JVM). Objects are LinkedHashMap (key order kept), arrays ArrayList,
 * numbers Long when integral in the text and Double otherwise.
 */
public final class Json {
  private Json() {}

  public static final class ParseException extends RuntimeException {
    public ParseException(String message) {
      super(message);
    }
  }

  // ---------------------------------------------------------------------------------- reading
  public static Object parse(String text) {
    Reader r = new Reader(text);
    r.skipWs();
    Object v = r.value();
    r.skipWs();
    if (r.i != text.length()) throw r.error("trailing characters");
    return v;
  }

  private static final class Reader {
    final String s;
    int i;

    Reader(String s) {
      this.s = s;
    }

    ParseException error(String what) {
      return new ParseException("invalid JSON at character " + i + ": " + what);
    }

    void skipWs() {
      while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) i++;
    }

    char peek() {
      if (i >= s.length()) throw error("unexpected end");
      return s.charAt(i);
    }

    void expect(String word) {
      if (!s.startsWith(word, i)) throw error("expected " + word);
      i += word.length();
    }

    Object value() {
      char c = peek();
      switch (c) {
        case '{':
          return object();
        case '[':
          return array();
        case '"':
          return string();
        case 't':
          expect("true");
          return Boolean.TRUE;
        case 'f':
          expect("false");
          return Boolean.FALSE;
        case 'n':
          expect("null");
          return null;
        default:
          if (c == '-' || (c >= '0' && c <= '9')) return number();
          throw error("unexpected '" + c + "'");
      }
    }

    Map<String, Object> object() {
      Map<String, Object> m = new LinkedHashMap<>();
      i++;
      skipWs();
      if (peek() == '}') {
        i++;
        return m;
      }
      while (true) {
        skipWs();
        if (peek() != '"') throw error("expected a key");
        String k = string();
        skipWs();
        if (peek() != ':') throw error("expected ':'");
        i++;
        skipWs();
        m.put(k, value());
        skipWs();
        char c = peek();
        i++;
        if (c == '}') return m;
        if (c != ',') throw error("expected ',' or '}'");
      }
    }

    List<Object> array() {
      List<Object> a = new ArrayList<>();
      i++;
      skipWs();
      if (peek() == ']') {
        i++;
        return a;
      }
      while (true) {
        skipWs();
        a.add(value());
        skipWs();
        char c = peek();
        i++;
        if (c == ']') return a;
        if (c != ',') throw error("expected ',' or ']'");
      }
    }

    String string() {
      StringBuilder b = new StringBuilder();
      i++;
      while (true) {
        char c = peek();
        i++;
        if (c == '"') return b.toString();
        if (c != '\\') {
          b.append(c);
          continue;
        }
        char e = peek();
        i++;
        switch (e) {
          case '"': b.append('"'); break;
          case '\\': b.append('\\'); break;
          case '/': b.append('/'); break;
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          case 'n': b.append('\n'); break;
          case 'r': b.append('\r'); break;
          case 't': b.append('\t'); break;
          case 'u':
            if (i + 4 > s.length()) throw error("short \\u escape");
            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
            i += 4;
            break;
          default:
            throw error("bad escape \\" + e);
        }
      }
    }

    Object number() {
      int start = i;
      if (peek() == '-') i++;
      boolean integral = true;
      while (i < s.length()) {
        char c = s.charAt(i);
        if (c >= '0' && c <= '9') {
          i++;
        } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
          integral = false;
          i++;
        } else {
          break;
        }
      }
      String t = s.substring(start, i);
      try {
        if (integral) return Long.parseLong(t);
        return Double.parseDouble(t);
      } catch (NumberFormatException ex) {
        throw error("bad number " + t);
      }
    }
  }

  // ---------------------------------------------------------------------------------- writing
  /** Pretty-printed with `indent` spaces per level (0: one line). */
  public static String write(Object v, int indent) {
    StringBuilder b = new StringBuilder();
    write(b, v, indent, 0);
    return b.toString();
  }

  private static void newline(StringBuilder b, int indent, int level) {
    if (indent <= 0) return;
    b.append('\n');
    for (int k = 0; k < indent * level; k++) b.append(' ');
  }

  @SuppressWarnings("unchecked")
  private static void write(StringBuilder b, Object v, int indent, int level) {
    if (v == null) {
      b.append("null");
    } else if (v instanceof String) {
      quote(b, (String) v);
    } else if (v instanceof Boolean) {
      b.append(v.toString());
    } else if (v instanceof Integer || v instanceof Long) {
      b.append(v.toString());
    } else if (v instanceof Number) {
      double d = ((Number) v).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) {
        throw new IllegalArgumentException("JSON cannot hold a non-finite number: " + d);
      }
      b.append(formatDouble(d));
    } else if (v instanceof Map) {
      Map<String, Object> m = (Map<String, Object>) v;
      if (m.isEmpty()) {
        b.append("{}");
        return;
      }
      b.append('{');
      boolean first = true;
      for (Map.Entry<String, Object> e : m.entrySet()) {
        if (!first) b.append(',');
        first = false;
        newline(b, indent, level + 1);
        quote(b, e.getKey());
        b.append(indent > 0 ? ": " : ":");
        write(b, e.getValue(), indent, level + 1);
      }
      newline(b, indent, level);
      b.append('}');
    } else if (v instanceof List) {
      List<Object> a = (List<Object>) v;
      if (a.isEmpty()) {
        b.append("[]");
        return;
      }
      b.append('[');
      for (int k = 0; k < a.size(); k++) {
        if (k > 0) b.append(',');
        newline(b, indent, level + 1);
        write(b, a.get(k), indent, level + 1);
      }
      newline(b, indent, level);
      b.append(']');
    } else {
      throw new IllegalArgumentException("cannot write " + v.getClass().getName() + " as JSON");
    }
  }

  /** Like Python's repr for floats in the common range: 12.5, 0.001, 1e-07. */
  static String formatDouble(double d) {
    if (d == Math.rint(d) && Math.abs(d) < 1e15) return String.format(java.util.Locale.ROOT, "%.1f", d);
    String s = Double.toString(d);
    return s.replace("E", "e");
  }

  private static void quote(StringBuilder b, String s) {
    b.append('"');
    for (int k = 0; k < s.length(); k++) {
      char c = s.charAt(k);
      switch (c) {
        case '"': b.append("\\\""); break;
        case '\\': b.append("\\\\"); break;
        case '\n': b.append("\\n"); break;
        case '\r': b.append("\\r"); break;
        case '\t': b.append("\\t"); break;
        default:
          if (c < 0x20) {
            b.append(String.format(java.util.Locale.ROOT, "\\u%04x", (int) c));
          } else {
            b.append(c);
          }
      }
    }
    b.append('"');
  }

  // ---------------------------------------------------------------------------------- access
  /** Follows a dotted path through nested objects; null when any step is missing. */
  @SuppressWarnings("unchecked")
  public static Object at(Object doc, String dottedPath) {
    Object cur = doc;
    for (String k : dottedPath.split("\\.")) {
      if (!(cur instanceof Map)) return null;
      cur = ((Map<String, Object>) cur).get(k);
    }
    return cur;
  }
}
