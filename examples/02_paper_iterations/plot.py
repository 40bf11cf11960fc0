#!/usr/bin/python3
"""Stacked bars of one training iteration's time by layer type, forward and backward,
for each network and variant, from the JSON bnff_paper_iterations --json writes.

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


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    nets = data["networks"]
    fig, axes = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 5), squeeze=False)
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
                positions.append(x)
                labels.append(f"{v['name']}\n{phase}")
                x += 1.0
            ax.text(x - 1.5, max(v["fwd_ms"], v["bwd_ms"] + v["sgd_ms"]) * 1.02,
                    f"{base_total / v['total_ms']:.2f}x", ha="center", va="bottom", fontsize=9)
            x += 0.6
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("median time per iteration (ms)")
        ax.set_title(f"{net['name']}, batch {data['batch']}, {data['image_size']}x{data['image_size']}, "
                     f"{data['threads']} threads")
        handles, names = ax.get_legend_handles_labels()
        seen = {}
        for h, n in zip(handles, names):
            seen.setdefault(n, h)
        ax.legend([seen[n] for n in ORDER if n in seen], [n for n in ORDER if n in seen], fontsize=8, loc="upper right")
    fig.suptitle("One training iteration by layer type (numbers: overall speedup over unfused)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
