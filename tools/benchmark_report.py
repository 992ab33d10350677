"""Regenerates the full benchmark report: op benchmarks (dense sizes and the sparse table, CPU),
optimizer benchmarks, and, when it has been built, the TensorFlow-free measure of the memory
bandwidth limit. Writes one JSON file, a Markdown summary for the README and PNG plots of time
and effective bandwidth against size.

    python tools/benchmark_report.py                  # full sizes, several minutes
    python tools/benchmark_report.py --quick --out /tmp/report     # tiny sizes, seconds
    python tools/benchmark_report.py --gpu-json bench_float32.json bench_bfloat16.json

The GPU machines have no TensorFlow, so the GPU benchmark runs there on its own
(tools/benchmark_gpu.py --json, or tools/gpu_checks.sh, which writes bench_<dtype>.json) and
--gpu-json adds those files to this report.

Each benchmark runs in its own process (they allocate gigabytes). Outputs in --out:
benchmark.json, benchmark.md, dense_time.png, dense_bandwidth.png.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CPU_LIMIT_BINARY = os.path.join(ROOT, "bazel-bin", "tools", "bench_cpu_kernels")

QUICK_OPS = ["--dense-sizes", "1000,20000", "--sparse-rows", "2000", "--sparse-ids", "200",
             "--repeats", "3", "--copy-mb", "8"]
QUICK_OPTIMIZERS = ["--rows", "5000", "--ids", "256", "--repeats", "3", "--fit-steps", "3",
                    "--batch", "64", "--mlp-layers", "2", "--mlp-width", "64"]


def run_json(script, extra_args):
    """Runs tools/<script> with --json into a temporary file and returns the parsed results."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        subprocess.run([sys.executable, os.path.join(HERE, script), *extra_args, "--json", path],
                       check=True, cwd=ROOT)
        with open(path) as f:
            return json.load(f)


def cpu_limit():
    """The TensorFlow-free benchmark's lines ({name: {"ms", "gbps"}}), or None if not built."""
    if not os.path.exists(CPU_LIMIT_BINARY):
        return None
    output = subprocess.run([CPU_LIMIT_BINARY, str(os.cpu_count())], check=True,
                            capture_output=True, text=True).stdout
    pattern = re.compile(r"^(.+?)\s{2,}([\d.]+) ms(?:\s+([\d.]+) GB/s)?")
    lines = {}
    for line in output.splitlines():
        match = pattern.match(line)
        if match:
            lines[match.group(1).strip()] = {
                "ms": float(match.group(2)),
                "gbps": float(match.group(3)) if match.group(3) else None,
            }
    return lines


def dense_series(ops_results, op, implementation):
    rows = sorted((r for r in ops_results["results"] if r["kind"] == "dense" and r["op"] == op
                   and r["implementation"] == implementation), key=lambda r: r["size"])
    return [r["size"] for r in rows], rows


def plot(report, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops_results = report["ops"]
    names = {"tf_ftrl": "tf_ftrl", "builtin": "TensorFlow built-in"}
    paths = []
    for metric, ylabel, filename in (("median_ms", "ms per update", "dense_time.png"),
                                     ("gbps", "effective GB/s", "dense_bandwidth.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, op in zip(axes, ("ftrl", "adagrad")):
            for implementation, label in names.items():
                sizes, rows = dense_series(ops_results, op, implementation)
                ax.plot(sizes, [r[metric] for r in rows], marker="o", label=label)
            if metric == "gbps":
                ax.axhline(ops_results["copy_bandwidth_gbps"], color="gray", linestyle="--",
                           label="NumPy copy (same run)")
                limit = (report.get("cpu_limit") or {}).get("same traffic as FTRL, no math (limit)")
                if limit:
                    ax.axhline(limit["gbps"], color="black", linestyle=":",
                               label="FTRL traffic, no math (C++)")
            ax.set_xscale("log")
            if metric == "median_ms":
                ax.set_yscale("log")
            ax.set_xlabel("elements (float32)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"dense {op}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(report):
    ops_results = report["ops"]
    machine = ops_results["machine"]
    lines = [f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), TensorFlow "
             f"{machine.get('tensorflow')}. Command: `{report['command']}`", ""]
    lines += ["| op | kind | size | implementation | median ms | GB/s |", "|---|---|---|---|---|---|"]
    for r in ops_results["results"]:
        size = f"{r['size']:,}" + (f" {r['id_distribution']} ids" if "id_distribution" in r else "")
        lines.append(f"| {r['op']} | {r['kind']} | {size} | {r['implementation']} | "
                     f"{r['median_ms']:.3f} | {r['gbps']:.1f} |")
    lines += ["", f"NumPy copy bandwidth (same run): {ops_results['copy_bandwidth_gbps']:.1f} GB/s",
              ""]
    config = report["optimizers"]["config"]
    for key, title in (("apply", f"optimizer.apply, Embedding {config['rows']:,} x "
                                 f"{config['dim']}, {config['ids']:,} ids"),
                       ("dense_apply", f"optimizer.apply, {config['mlp_layers']} Dense "
                                       f"{config['mlp_width']} x {config['mlp_width']}")):
        lines += [f"| {title} | tf_ftrl ms | keras ms | speed-up | bare op ms |",
                  "|---|---|---|---|---|"]
        for r in report["optimizers"][key]:
            lines.append(f"| {r['optimizer']} | {r['tf_ftrl_ms']:.3f} | {r['keras_ms']:.1f} | "
                         f"{r['keras_ms'] / r['tf_ftrl_ms']:.1f}x | {r['bare_op_ms']:.3f} |")
        lines.append("")
    lines += ["| model.fit | tf_ftrl steps/s | keras steps/s | speed-up |", "|---|---|---|---|"]
    for r in report["optimizers"]["fit"]:
        lines.append(f"| {r['optimizer']} | {r['tf_ftrl_steps_per_s']:.1f} | "
                     f"{r['keras_steps_per_s']:.1f} | "
                     f"{r['tf_ftrl_steps_per_s'] / r['keras_steps_per_s']:.1f}x |")
    for gpu in report.get("gpu") or []:
        lines += ["", f"GPU: {gpu['device']}, {gpu['dtype']} ({gpu['buffers']} buffers); "
                      f"device-to-device copy {gpu['copy_bandwidth_gbps']:.1f} GB/s", "",
                  "| op | kind | size | median ms | GB/s | % of copy |", "|---|---|---|---|---|---|"]
        for r in gpu["results"]:
            size = (f"{r['size']:,}" if r["kind"] == "dense" else
                    f"{r['rows']:,} x {r['dim']}, {r['size']:,} "
                    f"{r.get('id_distribution', 'uniform')} ids")
            lines.append(f"| {r['op']} | {r['kind']} | {size} | {r['median_ms']:.4f} | "
                         f"{r['gbps']:.1f} | {r['percent_of_copy']:.1f}% |")
    if report.get("cpu_limit"):
        lines += ["", "| TensorFlow-free (C++) | ms | GB/s |", "|---|---|---|"]
        for name, r in report["cpu_limit"].items():
            gbps = f"{r['gbps']:.1f}" if r["gbps"] is not None else ""
            lines.append(f"| {name} | {r['ms']:.3f} | {gbps} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmark_report")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--gpu-json", nargs="+", default=[], metavar="PATH",
                        help="results of tools/benchmark_gpu.py --json from a GPU machine")
    args = parser.parse_args(argv)
    gpu = []
    for path in args.gpu_json:
        with open(path) as f:
            gpu.append(json.load(f))
    os.makedirs(args.out, exist_ok=True)
    report = {
        "command": " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "ops": run_json("benchmark_ops.py", QUICK_OPS if args.quick else []),
        "optimizers": run_json("benchmark_optimizers.py",
                               QUICK_OPTIMIZERS if args.quick else []),
        "cpu_limit": None if args.quick else cpu_limit(),
        "gpu": gpu or None,  # from --gpu-json: tools/benchmark_gpu.py on a GPU machine
    }
    with open(os.path.join(args.out, "benchmark.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "benchmark.md"), "w") as f:
        f.write(markdown(report))
    for path in plot(report, args.out):
        print(f"wrote {path}")
    print(f"wrote {os.path.join(args.out, 'benchmark.json')} and benchmark.md")
    return report


if __name__ == "__main__":
    main()
