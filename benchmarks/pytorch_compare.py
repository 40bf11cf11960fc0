#!/usr/bin/env python3
"""Time PyTorch's CPU training of DenseNet-121 composite layers on the shapes
bnff_bench's cpl_fwd / cpl_bwd / cpl_step families use, and set them beside
bnff's fused and unfused medians from the same machine.

    bnff_bench --benchmark_filter='^cpl_' --benchmark_repetitions=3 \\
        --benchmark_out=bnff.json --benchmark_out_format=json
    python3 benchmarks/pytorch_compare.py --bnff bnff.json --out torch.json

The layer is the one bnff's dense_composite_layer computes, in training mode,
as torchvision's DenseNet writes it: BatchNorm2d(c_in) -> ReLU(inplace) ->
Conv2d(c_in, 128, 1) -> BatchNorm2d(128) -> ReLU(inplace) -> Conv2d(128, 32, 3,
padding=1), float32, batch 16, no bias. PyTorch normalizes with the batch's
statistics and updates the running ones (bnff's fused layer reads the input's
statistics from its producers instead, which is the point of fusion).
  fwd   forward with autograd recording, as in training
  bwd   backward of one recorded forward (retain_graph: gradients accumulate into
        x.grad and the parameters' .grad, as bnff's cpl_bwd accumulates dx)
  step  forward + backward
Each is timed as Google Benchmark times bnff: a warm-up, then repetitions of at
least --min-time seconds each; the median over the repetitions of the mean time
per iteration is reported. Memory formats: NCHW (PyTorch's default, bnff's
layout) and, with --channels-last, NHWC as well.

PyTorch is not a dependency of bnff and is not installed by CI; install it
with pip (the CPU-only wheel is enough) to run this script.
"""

import argparse
import json
import re
import statistics
import sys
import time

GROWTH, BOTTLENECK, BATCH = 32, 128, 16


def densenet121_layers():
    """name -> (c_in, extent) for every composite layer of DenseNet-121 (blocks 6-12-24-16)."""
    out, c = {}, 64
    for b, (layers, extent) in enumerate(zip((6, 12, 24, 16), (56, 28, 14, 7))):
        for l in range(layers):
            out["densenet121.b%d.l%d" % (b + 1, l + 1)] = (c + GROWTH * l, extent)
        c = (c + GROWTH * layers) // 2
    return out


DEFAULT_LAYERS = ["densenet121.b1.l1", "densenet121.b1.l6", "densenet121.b2.l1", "densenet121.b2.l12",
                  "densenet121.b3.l1", "densenet121.b3.l24", "densenet121.b4.l1", "densenet121.b4.l16"]
QUICK_LAYERS = ["densenet121.b1.l6"]


def time_median(fn, min_time, repetitions):
    """Median over repetitions of the mean seconds per call (each repetition >= min_time)."""
    fn()  # warm-up: allocations, oneDNN primitive creation
    means = []
    for _ in range(repetitions):
        iters, start = 0, time.perf_counter()
        while True:
            fn()
            iters += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        means.append(elapsed / iters)
    return statistics.median(means)


def time_layer(torch, c_in, extent, channels_last, min_time, repetitions):
    nn = torch.nn
    torch.manual_seed(1)
    layer = nn.Sequential(
        nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, BOTTLENECK, 1, bias=False),
        nn.BatchNorm2d(BOTTLENECK), nn.ReLU(inplace=True), nn.Conv2d(BOTTLENECK, GROWTH, 3, padding=1, bias=False))
    layer.train()
    x = torch.randn(BATCH, c_in, extent, extent)
    g = torch.randn(BATCH, GROWTH, extent, extent)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        g = g.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def fwd():
        return layer(x)

    recorded = [layer(x)]

    def bwd():
        recorded[0].backward(g, retain_graph=True)

    def step():
        layer(x).backward(g)

    return {"fwd": time_median(fwd, min_time, repetitions),
            "bwd": time_median(bwd, min_time, repetitions),
            "step": time_median(step, min_time, repetitions)}


def bnff_medians(path):
    """{(family, variant, layer, threads): seconds} from bnff_bench's JSON (median aggregates,
    or the median of the repetitions when aggregates were not written)."""
    with open(path) as f:
        data = json.load(f)
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    runs, medians = {}, {}
    for b in data.get("benchmarks", []):
        parts = b.get("run_name", b["name"]).split("/")
        if len(parts) < 4 or not parts[0].startswith("cpl_") or not parts[3].startswith("threads:"):
            continue
        key = (parts[0], parts[1], parts[2], int(parts[3].split(":")[1]))
        t = b["real_time"] * unit[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = t
        else:
            runs.setdefault(key, []).append(t)
    for key, ts in runs.items():
        medians.setdefault(key, statistics.median(ts))
    return medians


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="default",
                    help="default (bnff_bench's default selection), quick (b1.l6), all, or a comma-separated list")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--channels-last", action="store_true", help="also time PyTorch in NHWC (channels_last)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    ap.add_argument("--repetitions", type=int, default=3, help="repetitions per measurement (default 3)")
    ap.add_argument("--bnff", help="bnff_bench JSON (--benchmark_out) to set beside PyTorch's times")
    ap.add_argument("--out", help="write the measurements as JSON here")
    args = ap.parse_args(argv)

    table = densenet121_layers()
    if args.layers == "default":
        names = DEFAULT_LAYERS
    elif args.layers == "quick":
        names = QUICK_LAYERS
    elif args.layers == "all":
        names = list(table)
    else:
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit("pytorch_compare.py: unknown layer(s) %s (e.g. densenet121.b1.l6)" % ", ".join(unknown))
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if any(t < 1 for t in threads):
            raise ValueError
    except ValueError:
        sys.exit("pytorch_compare.py: --threads takes positive integers, e.g. 1,2")
    if args.min_time <= 0 or args.repetitions < 1:
        sys.exit("pytorch_compare.py: --min-time must be > 0 and --repetitions >= 1")
    try:
        bnff = bnff_medians(args.bnff) if args.bnff else {}
    except (OSError, ValueError, KeyError) as e:
        sys.exit("pytorch_compare.py: cannot read bnff_bench JSON %s: %s" % (args.bnff, e))
    # Arguments are checked before PyTorch is imported: a bad command line fails fast either way.
    try:
        import torch
    except ImportError:
        sys.exit("pytorch_compare.py: PyTorch is not installed (pip install torch; the CPU wheel is enough)")
    formats = ["nchw", "nhwc"] if args.channels_last else ["nchw"]

    results = []
    for t in threads:
        torch.set_num_threads(t)
        for name in names:
            c_in, extent = table[name]
            for fmt in formats:
                times = time_layer(torch, c_in, extent, fmt == "nhwc", args.min_time, args.repetitions)
                for phase, sec in times.items():
                    results.append({"layer": name, "threads": t, "format": fmt, "phase": phase, "seconds": sec})
                print("%s threads=%d %s: fwd %.2f ms, bwd %.2f ms, step %.2f ms" %
                      (name, t, fmt, times["fwd"] * 1e3, times["bwd"] * 1e3, times["step"] * 1e3),
                      file=sys.stderr, flush=True)

    onednn = re.search(r"(?:MKL-DNN|oneDNN\)?) (v[0-9][0-9.]*)", torch.__config__.show())
    print("PyTorch %s (oneDNN %s, %s); medians in ms, batch %d, float32" %
          (torch.__version__, onednn.group(1) if onednn else "version unknown",
           "enabled" if torch.backends.mkldnn.is_available() else "not available", BATCH))
    print()
    head = "| layer | threads | phase | " + " | ".join("PyTorch %s" % f.upper() for f in formats)
    if bnff:
        head += " | bnff fused | bnff unfused | PyTorch NCHW / bnff fused"
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    family = {"fwd": "cpl_fwd", "bwd": "cpl_bwd", "step": "cpl_step"}
    for t in threads:
        for name in names:
            for phase in ("fwd", "bwd", "step"):
                cells = {r["format"]: r["seconds"] for r in results
                         if r["layer"] == name and r["threads"] == t and r["phase"] == phase}
                row = "| %s | %d | %s | " % (name, t, phase) + " | ".join("%.2f" % (cells[f] * 1e3) for f in formats)
                if bnff:
                    fused = bnff.get((family[phase], "fused", name, t))
                    unfused = bnff.get((family[phase], "unfused", name, t))
                    row += " | %s | %s | %s" % ("%.2f" % (fused * 1e3) if fused else "missing",
                                                "%.2f" % (unfused * 1e3) if unfused else "missing",
                                                "%.2fx" % (cells["nchw"] / fused) if fused else "-")
                print(row + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"pytorch": torch.__version__, "batch": BATCH, "results": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
