package org.mobilellm.core;

import java.util.Arrays;
import java.util.List;

/** Order statistics over timing samples, computed as numpy does (linear interpolation). */
public final class Stats {
  private Stats() {}

  public static double[] toArray(List<Double> xs) {
    double[] a = new double[xs.size()];
    for (int i = 0; i < a.length; i++) a[i] = xs.get(i);
    return a;
  }

  /** numpy.percentile(xs, q) with the default 'linear' method; q in [0, 100]. */
  public static double percentile(double[] xs, double q) {
    if (xs.length == 0) throw new IllegalArgumentException("no samples");
    if (q < 0 || q > 100) throw new IllegalArgumentException("percentile out of range: " + q);
    double[] s = xs.clone();
    Arrays.sort(s);
    double pos = q / 100.0 * (s.length - 1);
    int lo = (int) Math.floor(pos);
    int hi = Math.min(lo + 1, s.length - 1);
    double frac = pos - lo;
    return s[lo] + (s[hi] - s[lo]) * frac;
  }

  public static double median(double[] xs) {
    return percentile(xs, 50);
  }

  public static double min(double[] xs) {
    if (xs.length == 0) throw new IllegalArgumentException("no samples");
    double m = xs[0];
    for (double x : xs) m = Math.min(m, x);
    return m;
  }

  public static double mean(double[] xs) {
    if (xs.length == 0) throw new IllegalArgumentException("no samples");
    double t = 0;
    for (double x : xs) t += x;
    return t / xs.length;
  }

  /** The statistics each timing is reported with, in record order. */
  public static final String[] REPORTED = {"median", "p10", "p90", "min"};

  public static double statistic(String name, double[] xs) {
    switch (name) {
      case "median": return median(xs);
      case "p10": return percentile(xs, 10);
      case "p90": return percentile(xs, 90);
      case "min": return min(xs);
      case "mean": return mean(xs);
      default: throw new IllegalArgumentException("unknown statistic " + name);
    }
  }
}
