#!/usr/bin/python3
"""Stacked bars of one training iteration's time by layer type, forward and backward,
for each network and variant, from the JSON bnff_paper_iterations --json writes; and a
Markdown table of the speedups and the modelled memory traffic beside the paper's numbers
(printed to stdout).

usage: /usr/bin/python3 plot.py results.json out.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["conv", "BN-ReLU-conv1x1", "BN-ReLU-conv3x3", "BN-ReLU", "BN", "BN-add-ReLU", "pooling", "classifier", "SGD"]
COLORS = {
    "conv": "#4c72b0",
    "BN-ReLU-conv1x1": "#55a868",
    "BN-ReLU-conv3x3": "#8c564b",
    "BN-ReLU": "#c44e52",
    "BN": "#dd8452",
    "BN-add-ReLU": "#8172b3",
    "pooling": "#937860",
    "classifier": "#da8bc3",
    "SGD": "#8c8c8c",
}


# Jung et al., MLSys 2019: gains over the baseline (DenseNet-121 with BNFF + ICF; ResNet-50 with BNFF).
PAPER = {
    ("densenet121", "bnff-icf"): {"fwd": "+47.9%", "bwd": "+15.4%", "overall": "+25.7%", "mem": "about -19%"},
    ("resnet50", "bnff"): {"fwd": "", "bwd": "", "overall": "+16.1%", "mem": "about -19%"},
}


def pct(base, x):
    return f"{100 * (base / x - 1):+.1f}%"


def table(data):
    """Two Markdown tables: gains over unfused beside the paper's, then times and traffic."""
    gains = ["| network | variant | wall fwd | wall bwd | wall overall | CPU fwd | CPU bwd | CPU overall "
             "| fastest wall iteration | memory traffic (model) | paper: fwd / bwd / overall / memory |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    times = ["| network | variant | wall fwd ms | wall bwd ms | wall iteration ms | CPU fwd ms | CPU bwd ms "
             "| CPU iteration ms | fastest wall iteration ms | non-conv wall ms | memory traffic (model) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for net in data["networks"]:
        base = net["variants"][0]
        base_bytes = base["bytes_fwd"] + base["bytes_bwd"]
        conv = net["conv_alone_fwd_ms"] + net["conv_alone_bwd_ms"]
        for v in net["variants"]:
            b = v["bytes_fwd"] + v["bytes_bwd"]
            times.append(f"| {net['name']} | {v['name']} | {v['fwd_ms']:.0f} | {v['bwd_ms']:.0f} | {v['total_ms']:.0f} | "
                         f"{v['cpu_fwd_ms']:.0f} | {v['cpu_bwd_ms']:.0f} | {v['cpu_total_ms']:.0f} | "
                         f"{v['best_total_ms']:.0f} | {v['fwd_ms'] + v['bwd_ms'] - conv:.0f} | {b / 1e9:.2f} GB |")
            if v is base:
                continue
            p = PAPER.get((net["name"], v["name"]))
            paper = " / ".join(x or "n/a" for x in (p["fwd"], p["bwd"], p["overall"], p["mem"])) if p else ""
            gains.append(f"| {net['name']} | {v['name']} | {pct(base['fwd_ms'], v['fwd_ms'])} | "
                         f"{pct(base['bwd_ms'], v['bwd_ms'])} | {pct(base['total_ms'], v['total_ms'])} | "
                         f"{pct(base['cpu_fwd_ms'], v['cpu_fwd_ms'])} | {pct(base['cpu_bwd_ms'], v['cpu_bwd_ms'])} | "
                         f"{pct(base['cpu_total_ms'], v['cpu_total_ms'])} | "
                         f"{pct(base['best_total_ms'], v['best_total_ms'])} | {100 * (b / base_bytes - 1):+.1f}% | {paper} |")
    return "\n".join(gains) + "\n\n" + "\n".join(times)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    nets = data["networks"]
    fig, axes = plt.subplots(1, len(nets), figsize=(7.5 * len(nets), 5), squeeze=False)
    for ax, net in zip(axes[0], nets):
        labels, x = [], 0.0
        positions = []
        base_total = net["variants"][0]["total_ms"]
        for v in net["variants"]:
            for phase in ("fwd", "bwd"):
                parts = dict(v[phase + "_by_type_ms"])
                if phase == "bwd":
                    parts["SGD"] = v["sgd_ms"]
                bottom = 0.0
                for k in ORDER:
                    val = parts.get(k, 0.0)
                    if val <= 0:
                        continue
                    ax.bar(x, val, bottom=bottom, color=COLORS[k], width=0.8, edgecolor="white", linewidth=0.3,
                           label=k)
                    bottom += val
                alone = net["conv_alone_" + phase + "_ms"]
                ax.plot([x - 0.4, x + 0.4], [alone, alone], color="black", linestyle="--", linewidth=1,
                        label="convolutions alone")
                positions.append(x)
                labels.append(f"{v['name']}\n{phase}")
                x += 1.0
            top = max(sum(v["fwd_by_type_ms"].values()), sum(v["bwd_by_type_ms"].values()) + v["sgd_ms"])
            ax.text(x - 1.5, top * 1.01, f"{base_total / v['total_ms']:.2f}x", ha="center", va="bottom", fontsize=9)
            x += 0.6
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("median time per iteration (ms)")
        ax.set_title(f"{net['name']}, batch {data['batch']}, {data['image_size']}x{data['image_size']}, "
                     f"{data['threads']} threads")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
        handles, names = ax.get_legend_handles_labels()
        seen = {}
        for h, n in zip(handles, names):
            seen.setdefault(n, h)
        keys = [n for n in ORDER + ["convolutions alone"] if n in seen]
        ax.legend([seen[n] for n in keys], keys, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("One training iteration by layer type (numbers: overall speedup over unfused)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(table(data))


if __name__ == "__main__":
    main()
