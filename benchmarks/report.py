#!/usr/bin/env python3
"""Turn bnff_bench's Google Benchmark JSON into a Markdown report and plots.

    bnff_bench --benchmark_out=bench.json --benchmark_out_format=json
    python3 benchmarks/report.py bench.json --out report/

writes report/report.md (per family and shape/thread count: fused vs unfused,
fused vs oneDNN, % of the machine's ceiling, and the issue's targets) and
report/*.png (speedup bars per layer, a roofline per thread count) when
matplotlib is available. Runs with repetitions use the median aggregate (or the
median of the repetitions when aggregates were not reported). Families or
variants without data are listed as missing, never filled in.
"""

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict

# Every family the benchmark issue asks for, in report order.
FAMILIES = [
    "ceiling_read", "ceiling_copy", "ceiling_triad", "ceiling_gemm",
    "stats", "bn_apply_relu", "bn_backward",
    "conv_fwd", "conv_fwd_stats", "bn_relu_conv_fwd", "conv_bwd_data", "conv_bwd_weights",
    "cpl_fwd", "cpl_bwd", "cpl_step", "bottleneck_step",
]
CEILINGS = {"ceiling_read", "ceiling_copy", "ceiling_triad", "ceiling_gemm"}
VARIANT_ORDER = ["fused", "unfused", "onednn_blocked", "onednn_nchw"]

# Which ceiling each family is judged against. Memory-bound families against
# the bandwidth ceiling with the same access pattern: stats reads one tensor
# (read), apply+ReLU reads one and writes one (copy), backward reads x and dz
# and writes dx (triad: two reads, one write). Everything with convolutions
# against the GEMM ceiling in GFLOP/s.
CEILING_OF = {
    "stats": "ceiling_read",
    "bn_apply_relu": "ceiling_copy",
    "bn_backward": "ceiling_triad",
}
MEMORY_FAMILIES = set(CEILING_OF)

# The targets. ("ceiling", fam, x): fused reaches x of its ceiling;
# ("speedup", fam, x): fused is x times faster than unfused; ("vs_plain", fam,
# x): fused reaches x of the plain convolution (conv_fwd) at the same shape.
TARGETS = [
    ("ceiling", "stats", 0.80),
    ("ceiling", "bn_apply_relu", 0.80),
    ("ceiling", "bn_backward", 0.70),
    ("vs_plain", "conv_fwd_stats", 0.90),
    ("vs_plain", "bn_relu_conv_fwd", 0.90),
    ("speedup", "cpl_fwd", 1.4),
    ("speedup", "cpl_bwd", 1.15),
    ("speedup", "cpl_step", 1.3),
]

TIME_SCALE = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


class Entry:
    """One benchmark (family/variant/shape/threads) reduced to a single value each."""

    def __init__(self, family, variant, shape, threads):
        self.family, self.variant, self.shape, self.threads = family, variant, shape, threads
        self.ms = None      # real time per iteration, milliseconds
        self.bps = None     # bytes_per_second
        self.flops = None   # flops per second
        self.gemm_flops = None  # the GEMMs' multiply-adds per second (Winograd-aware), if reported
        self.label = ""
        self.source = ""    # "median" aggregate, median of N repetitions, or a single run

    @property
    def intensity(self):
        if self.flops and self.bps:
            return self.flops / self.bps
        return None


def parse_name(name):
    """<family>/<variant>/<shape>/threads:<t>[/...] -> (family, variant, shape, threads) or None."""
    parts = name.split("/")
    if len(parts) < 4:
        return None
    threads = None
    for p in parts[3:]:
        m = re.fullmatch(r"threads:(\d+)", p)
        if m:
            threads = int(m.group(1))
    if threads is None:
        return None
    return parts[0], parts[1], parts[2], threads


def load(path):
    """Entries keyed by (family, variant, shape, threads), the run context, and errors."""
    with open(path) as f:
        data = json.load(f)
    runs = defaultdict(lambda: {"median": None, "iterations": []})
    errors, unparsed = [], []
    for b in data.get("benchmarks", []):
        run_name = b.get("run_name", b["name"])
        key = parse_name(run_name)
        if key is None:
            unparsed.append(run_name)
            continue
        if b.get("error_occurred"):
            errors.append((run_name, b.get("error_message", "")))
            continue
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                runs[key]["median"] = b
        else:
            runs[key]["iterations"].append(b)

    entries = {}
    for key, r in runs.items():
        e = Entry(*key)
        # A ceiling is the best the machine did, so with repetitions it takes
        # the best one; kernels take the median (aggregate, else of the runs).
        best = key[0] in CEILINGS and len(r["iterations"]) > 1
        rows = r["iterations"] if best or not r["median"] else [r["median"]]
        if not rows:
            continue
        pick = max if best else statistics.median

        def rate(field):
            vals = [x[field] for x in rows if x.get(field) is not None]
            return pick(vals) if vals else None

        times = [x["real_time"] * TIME_SCALE[x.get("time_unit", "ns")] for x in rows]
        e.ms = min(times) if best else statistics.median(times)
        e.bps = rate("bytes_per_second")
        e.flops = rate("flops")
        e.gemm_flops = rate("gemm_flops")
        e.label = rows[0].get("label", "")
        e.source = ("best of %d repetitions" % len(rows) if best else "median aggregate" if r["median"] else
                    "median of %d repetitions" % len(rows) if len(rows) > 1 else "single run")
        entries[key] = e
    return entries, data.get("context", {}), errors, unparsed


def ceilings(entries):
    """{family: {threads: value}}: GB/s for bandwidth, GFLOP/s for GEMM (best over its shapes)."""
    out = defaultdict(dict)
    for e in entries.values():
        if e.family not in CEILINGS:
            continue
        value = (e.flops if e.family == "ceiling_gemm" else e.bps)
        if value is None:
            continue
        value /= 1e9
        out[e.family][e.threads] = max(value, out[e.family].get(e.threads, 0.0))
    return out


def fmt(x, digits=2, suffix=""):
    if x is None:
        return "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return "–"
    return f"{x:.{digits}f}{suffix}"


def base_variant(variants):
    """The bnff variant the ratios are taken from: fused, else the first non-baseline one."""
    if "fused" in variants:
        return "fused"
    for v in variants:
        if v != "unfused" and not v.startswith("onednn") and v != "ceiling":
            return v
    return None


def ratio(slow, fast):
    """How many times faster `fast` is than `slow` (time ratio); > 1 means fast wins."""
    if slow is None or fast is None or fast.ms is None or slow.ms is None or fast.ms <= 0:
        return None
    return slow.ms / fast.ms


def family_table(fam, entries, ceil):
    """Markdown rows for one family and a list of (shape, threads, {ratio name: value}) for plots."""
    es = [e for e in entries.values() if e.family == fam]
    variants = sorted({e.variant for e in es}, key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99, v))
    base = base_variant(variants)
    by = {(e.shape, e.threads, e.variant): e for e in es}
    shapes = sorted({(e.shape, e.threads) for e in es}, key=lambda st: (natural_key(st[0]), st[1]))
    memory = fam in MEMORY_FAMILIES
    cname = CEILING_OF.get(fam, "ceiling_gemm")

    # Rates and % of ceiling for the bnff variant and the strongest library layout.
    rated = [v for v in dict.fromkeys([base, "onednn_blocked"]) if v in variants] or variants[:2]
    unit = "GB/s" if memory else "GFLOP/s"
    head = ["shape", "threads"] + [f"{v} ms" for v in variants]
    if base:
        head += [f"{base} / {v}" for v in variants if v != base]
    for v in rated:
        head += [f"{v} {unit}", f"{v} % of {cname}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    plot_rows = []
    for shape, t in shapes:
        row = [f"`{shape}`", str(t)] + [fmt(by[(shape, t, v)].ms, 2) if (shape, t, v) in by else "–" for v in variants]
        ratios = {}
        if base:
            b = by.get((shape, t, base))
            for v in variants:
                if v == base:
                    continue
                r = ratio(by.get((shape, t, v)), b)
                ratios[v] = r
                row.append(fmt(r, 2, "x"))
        c = ceil.get(cname, {}).get(t)
        for v in rated:
            e = by.get((shape, t, v))
            rate = (e.bps if memory else e.flops) if e is not None else None
            rate = rate / 1e9 if rate else None
            row.append(fmt(rate, 1))
            row.append(fmt(100 * rate / c, 0, "%") if rate and c else "–")
        lines.append("| " + " | ".join(row) + " |")
        plot_rows.append((shape, t, ratios))
    return lines, variants, base, plot_rows


def natural_key(s):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def check_targets(entries, ceil):
    """Rows (target, measured range, verdict) for each of the issue's targets."""
    rows = []
    for kind, fam, goal in TARGETS:
        vals = []
        for e in entries.values():
            if e.family != fam or e.variant != "fused":
                continue
            if kind == "ceiling":
                c = ceil.get(CEILING_OF[fam], {}).get(e.threads)
                if c and e.bps:
                    vals.append((e.bps / 1e9 / c, e.shape, e.threads))
            elif kind == "speedup":
                r = ratio(entries.get((fam, "unfused", e.shape, e.threads)), e)
                if r:
                    vals.append((r, e.shape, e.threads))
            elif kind == "vs_plain":
                # the plain conv at the same shape: bnff's own engine (conv_fwd/fused)
                plain = entries.get(("conv_fwd", "fused", e.shape, e.threads))
                if plain and e.flops and plain.flops:
                    vals.append((e.flops / plain.flops, e.shape, e.threads))
        if kind == "ceiling":
            text = f"`{fam}` fused >= {goal:.0%} of `{CEILING_OF[fam]}`"
        elif kind == "speedup":
            text = f"`{fam}` fused / unfused >= {goal:.2f}x"
        else:
            text = f"`{fam}` fused >= {goal:.0%} of plain `conv_fwd` GFLOP/s"
        if not vals:
            rows.append((text, "no data", "missing"))
            continue
        lo, hi = min(vals), max(vals)
        show = (lambda v: f"{v:.0%}") if kind != "speedup" else (lambda v: f"{v:.2f}x")
        measured = f"{show(lo[0])} (`{lo[1]}`, {lo[2]}t) .. {show(hi[0])} (`{hi[1]}`, {hi[2]}t)"
        met = sum(1 for v in vals if v[0] >= goal)
        verdict = "met" if met == len(vals) else f"met in {met} of {len(vals)}"
        rows.append((text, measured, verdict))
    return rows


def headroom(entries, ceil):
    """Rows bounding what any fusion can give a composite layer against this run's unfused baseline.

    Both engines run the same convolutions, which cannot take less than C* = the
    multiply-adds of their GEMMs at ceiling_gemm (the gemm_flops counter: the layer's
    flops, a quarter of them for Winograd layers; the flops counter in runs that
    predate it). Then, for fused/unfused:
      - with today's saving s = unfused - fused (the passes fusion removes, minus the
        fusion's own cost) and convolutions at the ceiling: at most 1 + s / C*;
      - forward only: with every non-convolution millisecond of the unfused run removed,
        U = unfused - (plain conv1 + plain conv2) (conv_fwd/fused at the layer's two
        convolutions), and convolutions at the ceiling: at most 1 + U / C*.
    """
    rows = []
    for fam in ["cpl_fwd", "cpl_bwd", "cpl_step", "bottleneck_step"]:
        for e in sorted((e for e in entries.values() if e.family == fam and e.variant == "fused"),
                        key=lambda e: (natural_key(e.shape), e.threads)):
            u = entries.get((fam, "unfused", e.shape, e.threads))
            c = ceil.get("ceiling_gemm", {}).get(e.threads)
            if u is None or not c or not e.flops or not e.ms or not u.ms:
                continue
            floor_ms = (e.gemm_flops or e.flops) * e.ms / (c * 1e9)  # GEMM flops per iteration at the ceiling, in ms
            saved = u.ms - e.ms
            best_now = 1 + saved / floor_ms
            best_any = None
            if fam == "cpl_fwd":
                convs = [entries.get(("conv_fwd", "fused", f"{e.shape}.conv{i}", e.threads)) for i in (1, 2)]
                if all(x is not None and x.ms for x in convs):
                    best_any = 1 + (u.ms - sum(x.ms for x in convs)) / floor_ms
            rows.append((fam, e.shape, e.threads, ratio(u, e), floor_ms, saved, best_now, best_any))
    return rows


def write_report(path_json, entries, context, errors, unparsed, out_dir, plots):
    ceil = ceilings(entries)
    present = {e.family for e in entries.values()}
    L = []
    L.append("# bnff benchmark report")
    L.append("")
    L.append(f"Made {datetime.date.today().isoformat()} by `benchmarks/report.py` from `{os.path.basename(path_json)}`.")
    ctx_keys = [("date", "run date"), ("host_name", "host"), ("num_cpus", "CPUs"), ("mhz_per_cpu", "MHz"),
                ("bnff_shapes", "shape set"), ("onednn_version", "oneDNN"), ("library_build_type", "benchmark lib")]
    L.append("")
    for k, name in ctx_keys:
        if k in context:
            L.append(f"- {name}: {context[k]}")
    caches = context.get("caches")
    if caches:
        L.append("- caches (as reported): " + ", ".join(f"L{c['level']} {c['type']} {c['size'] // 1024} KiB"
                                                        for c in caches))
    L.append("")
    L.append("Ratios are time ratios (`a / b` = how many times faster a is than b; above 1 means a wins). "
             "GB/s counts the compulsory traffic of the problem (every input read once, every output written once), "
             "the same for every variant; GFLOP/s counts multiply-adds as two flops.")
    L.append("")

    L.append("## Ceilings")
    L.append("")
    threads = sorted({t for v in ceil.values() for t in v})
    if ceil:
        L.append("| ceiling | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |")
        L.append("|---|" + "---|" * len(threads))
        for fam in ["ceiling_read", "ceiling_copy", "ceiling_triad", "ceiling_gemm"]:
            if fam in ceil:
                unit = "GFLOP/s" if fam == "ceiling_gemm" else "GB/s"
                L.append(f"| `{fam}` ({unit}) | " + " | ".join(fmt(ceil[fam].get(t), 1) for t in threads) + " |")
    missing_ceil = [f for f in ["ceiling_read", "ceiling_copy", "ceiling_triad", "ceiling_gemm"] if f not in ceil]
    if missing_ceil:
        L.append("")
        L.append("Missing ceilings (no data in this run): " + ", ".join(f"`{f}`" for f in missing_ceil) + ".")
    L.append("")

    L.append("## Targets")
    L.append("")
    L.append("| target | measured (worst .. best) | verdict |")
    L.append("|---|---|---|")
    for text, measured, verdict in check_targets(entries, ceil):
        L.append(f"| {text} | {measured} | {verdict} |")
    L.append("")

    head = headroom(entries, ceil)
    if head:
        L.append("## Headroom of the layer targets")
        L.append("")
        L.append("Upper bounds on fused / unfused for the composite layers, from this run alone. Both engines run "
                 "the same convolutions, which cannot take less than the multiply-adds of their GEMMs at "
                 "`ceiling_gemm` (C*): the layer's flops, and a quarter of them for the 3x3 layers that run "
                 "Winograd F(4x4, 3x3) (counter `gemm_flops`; runs without it use `flops`). "
                 "*At the ceiling* keeps today's saving (unfused - fused) and puts the convolutions at C*: "
                 "1 + saving / C*. *Any fusion* (forward) also removes every millisecond of the unfused run that is "
                 "not its two plain convolutions (`conv_fwd` at `<layer>.conv1` and `.conv2`): 1 + that / C*. "
                 "A target above the bound cannot be met on this machine by fusion or by faster convolutions.")
        L.append("")
        L.append("| family | shape | threads | fused / unfused | C* ms | saving ms | at the ceiling | any fusion |")
        L.append("|---|---|---|---|---|---|---|---|")
        for fam, shape, t, r, floor_ms, saved, best_now, best_any in head:
            L.append(f"| `{fam}` | `{shape}` | {t} | {fmt(r, 2, 'x')} | {fmt(floor_ms, 1)} | {fmt(saved, 1)} | "
                     f"{fmt(best_now, 2, 'x')} | {fmt(best_any, 2, 'x')} |")
        L.append("")

    plot_data = {}
    L.append("## Families")
    for fam in FAMILIES:
        if fam in CEILINGS:
            continue
        L.append("")
        L.append(f"### `{fam}`")
        L.append("")
        if fam not in present:
            L.append("Missing: no data in this run.")
            continue
        lines, variants, base, rows = family_table(fam, entries, ceil)
        absent = [v for v in VARIANT_ORDER if v not in variants]
        if fam == "stats":
            absent = [v for v in absent if not v.startswith("onednn")]  # oneDNN has no stats-only primitive
        if absent:
            L.append("Variants without data: " + ", ".join(f"`{v}`" for v in absent) + ".")
            L.append("")
        L.extend(lines)
        plot_data[fam] = (base, rows)
        if any(re.search(r"\| (1[0-9][0-9]|[2-9][0-9][0-9])% ", ln) for ln in lines[2:]):
            L.append("")
            L.append("Above 100% of a ceiling means the ceiling's run was slowed by other work on the machine: "
                     "rerun, or use `--benchmark_repetitions` (ceilings then take their best repetition).")
    others = sorted(present - set(FAMILIES))
    if others:
        L.append("")
        L.append("## Other families")
        for fam in others:
            L.append("")
            L.append(f"### `{fam}`")
            L.append("")
            lines, _, base, rows = family_table(fam, entries, ceil)
            L.extend(lines)
    if errors:
        L.append("")
        L.append("## Errors")
        L.append("")
        for name, msg in errors:
            L.append(f"- `{name}`: {msg}")
    if unparsed:
        L.append("")
        L.append(f"{len(unparsed)} benchmark(s) not named `<family>/<variant>/<shape>/threads:<t>` were left out.")

    images = []
    if plots:
        images = make_plots(entries, ceil, plot_data, out_dir)
    if images:
        L.append("")
        L.append("## Plots")
        for img in images:
            L.append("")
            L.append(f"![{img}]({img})")
    L.append("")
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(L))
    return images


def make_plots(entries, ceil, plot_data, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib not available, plots skipped (Debian: apt install python3-matplotlib)")
        return []
    images = []

    # Speedup bars per layer: the bnff variant against each baseline, one panel per thread count.
    for fam, (base, rows) in plot_data.items():
        if not base or not rows:
            continue
        baselines = [v for v in VARIANT_ORDER if v != base and any(v in r[2] and r[2][v] for r in rows)]
        if not baselines:
            continue
        threads = sorted({t for _, t, _ in rows})
        fig, axes = plt.subplots(len(threads), 1, figsize=(max(6, 0.9 * len(rows) / len(threads) + 3), 3.2 * len(threads)),
                                 squeeze=False)
        for ax, t in zip(axes[:, 0], threads):
            sub = [r for r in rows if r[1] == t]
            width = 0.8 / len(baselines)
            for i, v in enumerate(baselines):
                ys = [r[2].get(v) or 0.0 for r in sub]
                ax.bar([j + i * width for j in range(len(sub))], ys, width, label=f"{base} vs {v}")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sub))])
            ax.set_xticklabels([r[0].replace("densenet121.", "").replace("resnet50.", "") for r in sub],
                               rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("speedup (x)")
            ax.set_title(f"{fam}, {t} thread{'s' if t > 1 else ''}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"speedup_{fam}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        images.append(name)

    # Roofline per thread count: kernels with a flops counter by arithmetic
    # intensity; the measured read bandwidth and GEMM ceiling as lines.
    threads = sorted({e.threads for e in entries.values()})
    markers = "os^vD<>pPX*h"
    for t in threads:
        pts = [e for e in entries.values()
               if e.threads == t and e.intensity and e.family not in CEILINGS]
        bw = ceil.get("ceiling_read", {}).get(t)
        peak = ceil.get("ceiling_gemm", {}).get(t)
        if not pts and not bw:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 5))
        xs = [e.intensity for e in pts] or [1.0]
        lo, hi = min(xs + [0.1]) / 2, max(xs + [100.0]) * 2
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        if bw:
            ax.plot(grid, [bw * x for x in grid], "k--", linewidth=1, label=f"read bandwidth {bw:.1f} GB/s")
        if peak:
            ax.axhline(peak, color="k", linestyle=":", linewidth=1, label=f"GEMM {peak:.0f} GFLOP/s")
        if bw and peak:
            ax.plot(grid, [min(peak, bw * x) for x in grid], "k-", linewidth=1.5, alpha=0.4)
        fams = sorted({e.family for e in pts}, key=lambda f: (FAMILIES.index(f) if f in FAMILIES else 99, f))
        variants = sorted({e.variant for e in pts}, key=lambda v: VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for e in pts:
            ax.scatter(e.intensity, e.flops / 1e9, marker=markers[fams.index(e.family) % len(markers)],
                       color=colors[variants.index(e.variant) % len(colors)], s=28)
        for i, f in enumerate(fams):
            ax.scatter([], [], marker=markers[i % len(markers)], color="gray", label=f)
        for i, v in enumerate(variants):
            ax.scatter([], [], marker="s", color=colors[i % len(colors)], label=v)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (flop / compulsory byte)")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"Roofline, {t} thread{'s' if t > 1 else ''}")
        ax.legend(fontsize=7, loc="lower right", ncol=2)
        ax.grid(True, which="both", alpha=0.2)
        fig.tight_layout()
        name = f"roofline_threads{t}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        images.append(name)

    # Memory-bound kernels have no flops: their GB/s against the bandwidth ceilings.
    mem = [e for e in entries.values() if e.family in MEMORY_FAMILIES and e.bps]
    if mem:
        threads = sorted({e.threads for e in mem})
        fig, axes = plt.subplots(1, len(MEMORY_FAMILIES), figsize=(13, 4), squeeze=False)
        for ax, fam in zip(axes[0], ["stats", "bn_apply_relu", "bn_backward"]):
            es = [e for e in mem if e.family == fam]
            variants = sorted({e.variant for e in es}, key=lambda v: VARIANT_ORDER.index(v) if v in VARIANT_ORDER else 99)
            labels = [f"{v}\n{t}t" for t in threads for v in variants]
            vals = [max([e.bps / 1e9 for e in es if e.variant == v and e.threads == t] or [0]) for t in threads
                    for v in variants]
            if not es:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.bar(range(len(vals)), vals)
            ax.set_xticks(range(len(vals)))
            ax.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
            for t in threads:
                c = ceil.get(CEILING_OF[fam], {}).get(t)
                if c:
                    ax.axhline(c, linestyle="--", linewidth=1, color="k" if t == 1 else "gray",
                               label=f"{CEILING_OF[fam]} {t}t {c:.0f} GB/s")
            ax.set_title(f"{fam} (best shape)")
            ax.set_ylabel("GB/s")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        name = "bandwidth.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        images.append(name)
    return images


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="Google Benchmark JSON from bnff_bench --benchmark_out=... --benchmark_out_format=json")
    ap.add_argument("--out", default="bench_report", help="output directory (default: bench_report)")
    ap.add_argument("--no-plots", action="store_true", help="write only report.md")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    entries, context, errors, unparsed = load(args.json)
    if not entries:
        print(f"report.py: no benchmark named <family>/<variant>/<shape>/threads:<t> in {args.json}", file=sys.stderr)
        return 1
    images = write_report(args.json, entries, context, errors, unparsed, args.out, not args.no_plots)
    print(f"report.py: {len(entries)} benchmarks -> {os.path.join(args.out, 'report.md')}"
          + (f" and {len(images)} plot(s)" if images else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
