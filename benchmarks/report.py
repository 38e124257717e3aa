"""`mobilellm report`: results files (host and phones) -> report.md, results.csv, PNG plots.

The sharing comparison has the shape of the paper's latency table: for each device, backend and
scheme, the base model (N blocks), its layer-shared twin (N stored, 2N executed) and the same
depth unshared (2N blocks), with each variant's overhead over the base."""
from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from mobilellm.benchmarks import schema
from mobilellm.errors import UserError
from mobilellm.io import atomic_path

# ../shared/MOBILELLM.md: FP16, iPhone 13, ExecuTorch MPS, mean of 50 iterations
PAPER = {"base": (39.2, 1361.7, 15.6), "shared": (43.6, 1388.2, 16.0), "deep": (68.6, 3347.7, 29.0)}
PAPER_LABEL = {"base": "125M, 30 layers", "shared": "LS-125M, 2x30 shared", "deep": "60 layers, unshared"}
STAGES = ("load_ms", "init_ms", "decode_ms")


def _key(r):
    return (r["device"], r["backend"], r["scheme"])


def _median(recs, metric, **match):
    for r in recs:
        if r["metric"] == metric and r["statistic"] in ("median", "single") and all(r[k] == v for k, v in match.items()):
            return r["value"]
    return None


def sharing_rows(records: list[dict]) -> list[dict]:
    """One row per (device, backend, scheme, N) with base/shared/deep figures where present."""
    groups = defaultdict(list)
    for r in records:
        groups[_key(r)].append(r)
    rows = []
    for key, recs in sorted(groups.items()):
        variants = {(r["stored_blocks"], r["executed_blocks"]) for r in recs}
        for n, e in sorted(variants):
            if n != e:
                continue  # bases only; twins are looked up from them
            row = {"device": key[0], "backend": key[1], "scheme": key[2], "n": n, "size_mb": {},
                   "cache_mib": next((r["settings"]["last_level_cache_mib"] for r in recs
                                      if (r.get("settings") or {}).get("last_level_cache_mib")), None)}
            for kind, (sb, eb) in {"base": (n, n), "shared": (n, 2 * n), "deep": (2 * n, 2 * n)}.items():
                vals = [_median(recs, m, stored_blocks=sb, executed_blocks=eb) for m in STAGES]
                if any(v is not None for v in vals):
                    row[kind] = vals
                    row[kind + "_turns"] = _turns(recs, sb, eb)
                    row["size_mb"][kind] = _median(recs, "size_mb", stored_blocks=sb, executed_blocks=eb)
            if "shared" in row or "deep" in row:
                rows.append(row)
    return rows


def _turns(recs, stored: int, executed: int) -> dict:
    """{(series, turn): decode median} of one variant from bench's paired processes (`measure.paired`)."""
    return {(r["settings"].get("series"), r["settings"].get("turn")): r["value"] for r in recs
            if r["metric"] == "decode_ms_paired" and r["stored_blocks"] == stored and r["executed_blocks"] == executed}


def paired_overheads(variant: dict, base: dict) -> list[float]:
    """Execute overhead over the base in each turn both ran in (percent), paired turn by turn."""
    return [(variant[k] / base[k] - 1) * 100 for k in sorted(variant, key=str) if k in base and base[k]]


def _fmt(v, nd=1):
    return "n/a" if v is None else f"{v:,.{nd}f}"


def _overhead(v, base):
    return "" if v is None or not base else f" ({(v / base - 1) * 100:+.1f}%)"


def sharing_markdown(rows: list[dict]) -> str:
    out = []
    for row in rows:
        out.append(f"### {row['backend']} / {row['scheme']} on {row['device']} (N = {row['n']})\n")
        out.append("| variant | load (ms) | init (ms) | execute (ms) | paper: load / init / execute (ms) |")
        out.append("|---|---|---|---|---|")
        base = row.get("base", [None] * 3)
        for kind, label in (("base", f"{row['n']} layers"), ("shared", f"LS 2x{row['n']} shared"),
                            ("deep", f"{2 * row['n']} layers, unshared")):
            vals = row.get(kind)
            p = PAPER[kind]
            paper = f"{p[0]} / {p[1]} / {p[2]}" + (
                f" ({(p[0] + p[1]) / sum(PAPER['base'][:2]) * 100 - 100:+.1f}% load+init, "
                f"{(p[2] / PAPER['base'][2] - 1) * 100:+.1f}% execute)" if kind != "base" else "")
            if vals is None:
                out.append(f"| {label} | not measured | | | {paper} |")
                continue
            cells = [_fmt(v, 2 if i == 2 else 1) + (_overhead(v, b) if kind != "base" else "")
                     for i, (v, b) in enumerate(zip(vals, base))]
            pairs = paired_overheads(row.get(kind + "_turns", {}), row.get("base_turns", {})) if kind != "base" else []
            if pairs:  # the comparison measured side by side: median of the turn-by-turn overheads, and their spread
                q = np.percentile(pairs, [10, 50, 90])
                cells[2] += f"<br>paired {q[1]:+.1f}% (p10 {q[0]:+.1f}%, p90 {q[2]:+.1f}%; {len(pairs)} turns)"
            out.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")
        out.append("")
        note = cache_note(row)
        if note:
            out += [note, ""]
    return "\n".join(out)


def cache_note(row: dict) -> str | None:
    """The variants' file sizes beside the measuring host's last-level cache, where one of them could stay in it
    between decode steps (a step reads every weight): the overheads may then compare cache residency as well as
    depth. None where the cache size or the sizes are not recorded, or where no variant fits (all read from DRAM,
    as on a phone)."""
    llc, sizes = row.get("cache_mib"), {k: v for k, v in (row.get("size_mb") or {}).items() if v}
    if not llc or not sizes or min(sizes.values()) * 1e6 / 2**20 > llc:
        return None
    names = {"base": f"{row['n']} layers", "shared": "LS", "deep": f"{2 * row['n']} layers"}
    held = ", ".join(f"{names[k]} {v:.0f} MB" for k, v in sizes.items())
    return (f"File sizes: {held}; this host's last-level cache: {llc:.0f} MiB, shared with whatever else runs there. "
            f"Weights that stay in it between decode steps are not read from DRAM, so where one variant's do and "
            f"another's do not, the overheads compare cache residency as well as depth; a phone's CPU caches (a few "
            f"MiB) hold none of them.")


def logits_note(records: list[dict]) -> str | None:
    """Where the artifacts compared return logits for different rows (the bench record's `logits_rows`: the last
    prompt position's, as ExecuTorch's and onnxruntime-genai's runners read, or every position's: a backend that
    always does, or a --full-logits export), a line saying their prefill columns include different work. None
    where they agree or where it is not recorded (phone results, and results written before 2026-12-06, when ONNX
    files still returned every row)."""
    rows = defaultdict(set)
    for r in records:
        kind = (r.get("settings") or {}).get("logits_rows")
        if kind and r["metric"].startswith("prefill"):
            rows[kind].add(r.get("artifact") or r["model"])
    if len(rows) < 2:
        return None
    return (f"Prefill computes the output head over the last prompt position only in {', '.join(sorted(rows['last']))}, "
            f"and over every position in {', '.join(sorted(rows['every']))} (a backend that always returns every row, "
            f"or a `--full-logits` export): their prefill columns include different work.")


def artifact_table(records: list[dict]) -> str:
    arts = defaultdict(dict)
    extra = set()
    for r in records:
        if r["statistic"] in ("median", "single"):
            metric = r["metric"]
            if metric == "decode_ms_at_position":  # one column per position timed
                metric = f"decode_ms@{(r.get('settings') or {}).get('decode_position')}"
                extra.add(metric)
            arts[(r["device"], r.get("artifact", r["model"]), r["backend"], r["scheme"], r["variant"])][metric] = r["value"]
    cols = [("size_mb", "size MB", 1), ("load_ms", "load ms", 1), ("init_ms", "init ms", 1),
            ("decode_ms", "decode ms", 2), ("decode_tokens_per_s", "decode tok/s", 1),
            ("prefill_tokens_per_s", "prefill tok/s", 0), ("rss_after_init_mb", "RSS init MB", 0),
            ("pss_after_init_mb", "PSS init MB (Android)", 0),
            ("phys_footprint_after_init_mb", "phys_footprint init MB (iOS)", 0),
            ("kv_cache_mb", "KV cache MB", 1)]
    at = sorted(extra, key=lambda m: int(m.split("@")[1]) if m.split("@")[1].isdigit() else 0)
    cols[4:4] = [(m, f"decode ms at {m.split('@')[1]}", 2) for m in at]
    cols = [c for c in cols if any(c[0] in m for m in arts.values())]
    lines = ["| device | artifact | backend | scheme | variant | " + " | ".join(c[1] for c in cols) + " |",
             "|" + "---|" * (5 + len(cols))]
    for (dev, art, be, sc, var), m in sorted(arts.items()):
        lines.append(f"| {dev} | {art} | {be} | {sc} | {var} | " + " | ".join(_fmt(m.get(c[0]), c[2]) for c in cols) + " |")
    return "\n".join(lines)


def _scheme(label: str):
    """The scheme value of a record's scheme column (`w8a8+emb8`: w8a8 with an int8 embedding), or None."""
    from mobilellm.quant import schemes
    try:
        return schemes.get(label.split("+")[0])
    except UserError:
        return None


def scheme_footnotes(records: list[dict]) -> str:
    """What each scheme named in the tables is, so a column of names compares like with like
    (records and 'not measured' rows alike)."""
    labels = sorted({r["scheme"] for r in records if r.get("backend") != "eager" and isinstance(r.get("scheme"), str)
                     and r["scheme"] not in ("-", "all")})
    lines = []
    for label in labels:
        s = _scheme(label)
        if s is None:
            lines.append(f"- `{label}`: not a scheme this mobilellm knows")
            continue
        extra = "; +emb8: int8 per-row embedding table" if label.endswith("+emb8") else ""
        lines.append(f"- `{label}`: {s.definition()}{extra}")
    return "\n".join(lines)


def accuracy_markdown(records: list[dict], bar: float | None = None) -> str:
    """Perplexity per artifact beside its eager fp32 model on the same text, with top-1 agreement,
    KL divergence and whether a W8A8 scheme meets the perplexity bar."""
    from mobilellm.benchmarks.accuracy_run import W8A8_PPL_BAR
    bar = bar if bar is not None else W8A8_PPL_BAR
    acc = [r for r in records if r["metric"] in ("perplexity", "top1_agreement", "kl_divergence")]
    if not acc:
        return ""
    by = defaultdict(dict)
    for r in acc:
        text = (r.get("settings") or {}).get("text_sha256", "")
        by[(r["device"], r["model"], r["variant"], text, r["backend"], r["scheme"], r.get("artifact", ""))][r["metric"]] = r
    lines = [f"Held-out text, scored through each artifact's own runtime and KV cache; W8A8 bar: perplexity within "
             f"{bar:.0%} of eager fp32 on the same text, applied to every 8-bit-weight, 8-bit-activation scheme and "
             f"naming the scheme where it is not the paper's per-token dynamic W8A8.", "",
             "| device | model | variant | backend | scheme | perplexity | vs eager fp32 | top-1 agreement | KL (nats/token) | W8A8 bar |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    refs = {k[:4]: m["perplexity"]["value"] for k, m in by.items() if k[4] == "eager" and "perplexity" in m}
    for k, m in sorted(by.items(), key=lambda kv: (kv[0][:4], kv[0][4] != "eager", kv[0][4], kv[0][5])):
        if "perplexity" not in m:
            continue
        ppl, ref = m["perplexity"]["value"], refs.get(k[:4])
        rel = None if ref is None else ppl / ref - 1
        s = _scheme(k[5])
        w8a8_like = s is not None and s.weights == "int8" and s.activation_bits == 8
        verdict = "" if k[4] == "eager" or not w8a8_like or rel is None else (
            ("meets" if abs(rel) <= bar else "**misses**") + ("" if s.paper else f" (as {s.name})"))
        if s is not None and s.weights == "int4":
            verdict = "int4 weights: own cost"
        top1 = m.get("top1_agreement", {}).get("value")
        kl = m.get("kl_divergence", {}).get("value")
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[4]} | {k[5]} | {ppl:.3f} | "
                     f"{'reference' if k[4] == 'eager' else f'{rel * 100:+.2f}%' if rel is not None else 'n/a'} | "
                     f"{_fmt(top1, 4)} | {_fmt(kl, 5)} | {verdict} |")
    return "\n".join(lines) + "\n"


def _rank(variant: str) -> float:
    """N layers, then LS kxN shared, then 2N layers: the paper's row order."""
    m = re.match(r"(\d+)x(\d+)", variant)
    return int(m[2]) + 0.5 if m else float(variant.split()[0]) if variant.split()[0].isdigit() else 1e9


def plots(records: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = [r for r in records if r["statistic"] in ("median", "single")]
    by_art = defaultdict(dict)
    for r in med:
        by_art[(r["device"], r["backend"], r["scheme"], r["variant"])][r["metric"]] = r["value"]
    keys = sorted((k for k, m in by_art.items() if "decode_ms" in m), key=lambda k: (k[0], k[1], k[2], _rank(k[3])))
    written = []
    if keys:
        fig, axes = plt.subplots(1, 3, figsize=(15, 0.45 * len(keys) + 2.5), sharey=True)
        labels = [f"{be}/{sc}\n{var}" for _, be, sc, var in keys]
        for ax, metric in zip(axes, STAGES):
            ax.barh(range(len(keys)), [by_art[k].get(metric, 0) for k in keys], color="tab:blue")
            ax.set_title(metric.replace("_ms", " (ms)"))
            ax.set_yticks(range(len(keys)), labels, fontsize=8)
            ax.invert_yaxis()
        fig.suptitle("load / init / execute per variant and backend (median)")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "latency.png"))
        fig, ax = plt.subplots(figsize=(7, 5))
        for k in keys:
            m = by_art[k]
            if "size_mb" in m:
                ax.scatter(m["size_mb"], m["decode_ms"])
                ax.annotate(f"{k[1]}/{k[2]} {k[3]}", (m["size_mb"], m["decode_ms"]), fontsize=7)
        ax.margins(x=0.3, y=0.1)  # room for the labels
        ax.set_xlabel("artifact size (MB)")
        ax.set_ylabel("decode step (ms)")
        ax.set_title("size vs decode latency")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "size_vs_latency.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def write_csv(records: list[dict], path: Path) -> Path:
    cols = [c for c in schema.FIELDS if c not in ("runtime", "settings")] + ["runtime", "settings"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in records:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def build_report(result_paths: list[Path], out_dir: Path, notes: list[str] | None = None) -> Path:
    if not result_paths:
        raise UserError("no results files given")
    records, missing = [], []
    for p in result_paths:
        records += schema.load(p)
        missing += schema.load_missing(p)
    if not records and not missing:
        raise UserError("the results files hold no records")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema.save(out_dir / "results.json", records, missing) if len(result_paths) > 1 else None
    write_csv(records, out_dir / "results.csv")
    pngs = plots(records, out_dir)
    md = ["# mobilellm report", ""]
    md += [f"- {n}" for n in (notes or [])]
    devices = sorted({r["device"] for r in records})
    md += [f"- devices: {', '.join(devices)}", f"- {len(records)} records from {len(result_paths)} file(s)", ""]
    md += ["## Layer sharing: load / init / execute", "",
           "Execute is one decode step (median of cold processes, the variants' processes alternating); overhead in "
           "brackets is relative to the N-layer base. 'Paired' is the overhead measured side by side: the variants "
           "open in one process, timed in turns of the same steps, the median over turns (this host's speed drifts "
           "over seconds: the cold-process figure moves by tens of points between reruns, the paired one by a few). "
           "The paper's column is MobileLLM-125M, FP16, iPhone 13, ExecuTorch MPS (mean of 50).", ""]
    rows = sharing_rows(records)
    md.append(sharing_markdown(rows) if rows else "No complete variant set (N, LS 2xN, 2N) in these results.\n")
    acc = accuracy_markdown(records)
    if acc:
        md += ["## Accuracy on held-out text", "", acc]
    timed = [r for r in records if r["metric"] not in ("perplexity", "top1_agreement", "kl_divergence")]
    md += ["## Every artifact (medians)", "", artifact_table(timed), ""]
    note = logits_note(timed)
    if note:
        md += [note, ""]
    if missing:
        md += ["## Not measured here", "", "| artifact | backend | scheme | variant | why |", "|---|---|---|---|---|"]
        md += [f"| {m.get('artifact')} | {m.get('backend')} | {m.get('scheme')} | {m.get('variant')} | {m.get('reason')} |"
               for m in missing]
        md.append("")
    md += ["## Schemes", "", "Each row's scheme column names the scheme that artifact really uses (a backend without the "
           "requested one runs its declared closest; the notes above say which and why):", "",
           scheme_footnotes(records + missing), ""]
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    md += ["Settings (warm-up, iterations, threads, prompt length, decode position, cold runs) are in each record's "
           "`settings` field of results.json / results.csv.", ""]
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(md))
    return path
