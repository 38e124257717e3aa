package org.mobilellm.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * The decode-step contract of an ONNX artifact's graph, read from its input names as the host's
 * OnnxSession.init does (export/backends/onnx.py): the first two inputs say which one.
 *
 * <ul>
 *   <li>SHARED (exports from 2026-12-06): {@code input_ids} [1,T], {@code attention_mask} [1,total] all
 *       ones (total = startPos + T), {@code past_key_values.N.key/value} [1, n_kv_heads, S, head_dim] with S
 *       = max_seq_len; {@code present.N.*} is the same buffer, bound as both input and output and written
 *       in place (onnxruntime-genai's past_present_share_buffer).
 *   <li>GROWING (2026-12-02 to -05): {@code input_ids}, {@code position_ids} [1,T]; present = past + T
 *       positions, fed back as the next past.
 *   <li>LEGACY (before 2026-12-02): {@code tokens}, {@code input_pos} [1]; cache as GROWING.
 * </ul>
 */
public final class OnnxContract {
  public enum Kind { SHARED, GROWING, LEGACY }

  public final Kind kind;
  /** Name of the token input: input_ids, or tokens (LEGACY). */
  public final String tokens;
  /** Name of the second input: attention_mask, position_ids or input_pos. */
  public final String second;
  /** The past_key_values.N.key/value inputs, in input order. */
  public final List<String> past;
  /** The present output written from each past input, in the same order. */
  public final List<String> present;

  private OnnxContract(Kind kind, String tokens, String second, List<String> past) {
    this.kind = kind;
    this.tokens = tokens;
    this.second = second;
    this.past = Collections.unmodifiableList(past);
    List<String> pr = new ArrayList<>();
    for (String p : past) pr.add("present." + p.substring("past_key_values.".length()));
    this.present = Collections.unmodifiableList(pr);
  }

  /**
   * The contract of a graph with these input names (in input order), with one key and one value cache
   * input per executed block; `where` names the file in errors.
   */
  public static OnnxContract of(List<String> inputs, int executedBlocks, String where) {
    List<String> first = inputs.subList(0, Math.min(2, inputs.size()));
    Kind kind;
    if (first.equals(Arrays.asList("input_ids", "attention_mask"))) {
      kind = Kind.SHARED;
    } else if (first.equals(Arrays.asList("input_ids", "position_ids"))) {
      kind = Kind.GROWING;
    } else if (first.equals(Arrays.asList("tokens", "input_pos"))) {
      kind = Kind.LEGACY;
    } else {
      throw new IllegalArgumentException(where + " is not a mobilellm ONNX export: its first inputs are " + first
          + ", expected input_ids and attention_mask (or, from older exports, input_ids and position_ids, or "
          + "tokens and input_pos)");
    }
    List<String> past = new ArrayList<>();
    for (String n : inputs) if (n.startsWith("past_key_values.")) past.add(n);
    if (past.size() != 2 * executedBlocks || inputs.size() != 2 + past.size()) {
      throw new IllegalArgumentException(where + ": " + past.size() + " past_key_values inputs (of " + inputs.size()
          + " inputs), expected 2 x " + executedBlocks + " executed blocks after " + first);
    }
    return new OnnxContract(kind, first.get(0), first.get(1), past);
  }

  /** Whether each present output is written into its past input's buffer (one buffer per cache tensor). */
  public boolean sharesCache() {
    return kind == Kind.SHARED;
  }

  /** Positions each cache tensor holds before the first step: the capacity (SHARED) or none (it grows). */
  public int initialCachePositions(int maxSeqLen) {
    return kind == Kind.SHARED ? maxSeqLen : 0;
  }

  /** The second input's values for `count` tokens fed at startPos. */
  public long[] secondValues(int startPos, int count) {
    switch (kind) {
      case SHARED: {
        long[] ones = new long[startPos + count];
        Arrays.fill(ones, 1L);
        return ones;
      }
      case GROWING: {
        long[] pos = new long[count];
        for (int i = 0; i < count; i++) pos[i] = startPos + i;
        return pos;
      }
      default:
        return new long[] {startPos};
    }
  }

  /** The second input's shape for `count` tokens fed at startPos. */
  public long[] secondShape(int startPos, int count) {
    switch (kind) {
      case SHARED:
        return new long[] {1, startPos + count};
      case GROWING:
        return new long[] {1, count};
      default:
        return new long[] {1};
    }
  }
}
