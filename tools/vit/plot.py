#!/usr/bin/python3
"""Draws docs/vit.png from the JSON of `smyrf-vit interchange`.

Left: training loss per epoch of the dense- and the SMYRF-trained model. Right: test accuracy
of each trained model evaluated with each attention (the 2 x 2 interchange table).

    /usr/bin/python3 tools/vit/plot.py tools/vit/results/interchange.json docs/vit.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(json_path: str, png_path: str) -> None:
    with open(json_path) as f:
        results = json.load(f)
    smyrf = results["smyrf"]
    smyrf_label = f"SMYRF ({smyrf['n_hashes']}x{smyrf['cluster']})"
    labels = {"dense": "dense", "smyrf": smyrf_label}

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, trained in results["trained"].items():
        epochs = [e["epoch"] for e in trained["epochs"]]
        ax_loss.plot(epochs, [e["loss"] for e in trained["epochs"]], marker="o",
                     label=f"trained with {labels[name]} ({trained['minutes']:.1f} min)")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss")
    ax_loss.set_title("Training")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)

    width = 0.35
    trained_names = list(results["evaluated"].keys())
    for offset, eval_name in enumerate(["dense", "smyrf"]):
        values = [100 * results["evaluated"][t][eval_name]["accuracy"] for t in trained_names]
        xs = [i + (offset - 0.5) * width for i in range(len(trained_names))]
        bars = ax_acc.bar(xs, values, width, label=f"evaluated with {labels[eval_name]}")
        ax_acc.bar_label(bars, fmt="%.1f")
    ax_acc.set_xticks(range(len(trained_names)),
                      [f"trained with {labels[t]}" for t in trained_names])
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_ylim(0, 118)  # room above the bars for the legend
    ax_acc.set_yticks(range(0, 101, 20))
    ax_acc.set_title(f"Fashion-MNIST, {results['data']['test_images']} test images")
    ax_acc.legend(loc="upper center", ncol=2, fontsize="small")

    fig.suptitle(f"ViT with {results['tokens']} tokens: train with one attention, "
                 f"evaluate with the other")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py interchange.json out.png")
    main(sys.argv[1], sys.argv[2])
