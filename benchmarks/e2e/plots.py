"""PNG plots (matplotlib, small files): latency CDF per system, throughput bars, concurrency
sweep; one set per profile."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def plot_all(report: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plots: matplotlib is missing (pip install matplotlib)", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    kw = {"dpi": 80}
    for prof, systems in report["results"].items():
        cdf = report["latency_cdf_ms"].get(prof, {})
        if cdf:
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for name, qs in cdf.items():
                if qs:
                    ax.plot(qs, [i / (len(qs) - 1) for i in range(len(qs))], label=name)
            ax.set_xscale("log")
            ax.set_xlabel("latency, ms (log)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(f"sequential GET /hello, one keep-alive connection [{prof}]", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            written.append(_save(fig, out / f"latency_cdf_{prof}.png", kw))
        bars = [(n, sc) for n, sc in systems.items() if "wrk_small" in sc or "ab_small" in sc]
        if bars:
            fig, ax = plt.subplots(figsize=(6, 3.2))
            width = 0.4
            for j, scen in enumerate(("wrk_small", "ab_small")):
                xs, ys, err = [], [], [[], []]
                for i, (_name, sc) in enumerate(bars):
                    m = sc.get(scen, {}).get("req_per_s")
                    if m:
                        xs.append(i + (j - 0.5) * width)
                        ys.append(m["median"])
                        err[0].append(m["median"] - m["min"])
                        err[1].append(m["max"] - m["median"])
                ax.bar(xs, ys, width, yerr=err, capsize=3, label=scen.replace("_small", ""))
            ax.set_xticks(range(len(bars)), [n for n, _ in bars], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("req/s (log), min–max bars")
            ax.set_title(f"small GET throughput [{prof}]", fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
            written.append(_save(fig, out / f"throughput_{prof}.png", kw))
        sweep = {n: sorted((int(k[len("sweep_c"):]), v["req_per_s"]["median"]) for k, v in sc.items()
                           if k.startswith("sweep_c") and "req_per_s" in v) for n, sc in systems.items()}
        if any(sweep.values()):
            fig, ax = plt.subplots(figsize=(6, 3.2))
            for name, pts in sweep.items():
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrent connections (wrk)")
            ax.set_ylabel("req/s (log)")
            ax.set_title(f"concurrency sweep, GET /hello [{prof}]", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            written.append(_save(fig, out / f"sweep_{prof}.png", kw))
    return written


def _save(fig: Any, path: Path, kw: dict[str, Any]) -> Path:
    fig.tight_layout()
    fig.savefig(path, **kw)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
