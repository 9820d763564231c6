"""From raw samples to the report: medians and spread, ratios to the best peer, the ptproxy vs
Caddy criteria, and the Markdown table. The schema is documented in benchmarks/README.md."""

from __future__ import annotations

from typing import Any

from benchmarks.harness.stats import cdf, median

from .runner import RunData, Settings

SCHEMA = "ptproxy-bench/1"
PEERS_EXCLUDED = {"direct"}  # the floor, not a peer


def higher_is_better(metric: str) -> bool:
    return metric in ("req_per_s", "mb_per_s", "requests")


NO_RATIO = {"duration_s"}  # bookkeeping, not a figure of merit


def summarize(values: list[float]) -> dict[str, Any]:
    med = median(values)
    lo, hi = min(values), max(values)
    return {
        "median": med,
        "min": lo,
        "max": hi,
        "spread_pct": (hi - lo) / med * 100 if med else 0.0,
        "n": len(values),
        "values": values,
    }


def aggregate(data: RunData) -> dict[str, Any]:
    """profiles -> systems -> scenarios -> metrics -> summary (+ ratio_to_best_peer, ratio_to_direct)."""
    out: dict[str, Any] = {}
    for prof, systems in data.samples.items():
        po = out.setdefault(prof, {})
        for system, scenarios in systems.items():
            for scenario, metrics in scenarios.items():
                for metric, values in metrics.items():
                    if values:
                        po.setdefault(system, {}).setdefault(scenario, {})[metric] = summarize(values)
        # ratios: same profile, same scenario, same metric
        for system, scenarios in po.items():
            for scenario, metrics in scenarios.items():
                for metric, summ in metrics.items():
                    if metric in NO_RATIO:
                        summ["ratio_to_best_peer"] = summ["ratio_to_direct"] = None
                        continue
                    peers = [
                        po[o][scenario][metric]["median"]
                        for o in po
                        if o not in PEERS_EXCLUDED and metric in po[o].get(scenario, {})
                    ]
                    best = (max if higher_is_better(metric) else min)(peers) if peers else None
                    ok = best and system not in PEERS_EXCLUDED
                    summ["ratio_to_best_peer"] = summ["median"] / best if ok else None
                    d = po.get("direct", {}).get(scenario, {}).get(metric)
                    summ["ratio_to_direct"] = summ["median"] / d["median"] if d and d["median"] else None
    return out


def _med(results: dict[str, Any], prof: str, system: str, scenario: str, metric: str) -> float | None:
    try:
        return float(results[prof][system][scenario][metric]["median"])
    except KeyError:
        return None


CRITERIA = [
    # name, scenario, metric, ptproxy must be ">=" or "<=" Caddy's
    ("small-GET req/s (wrk)", "wrk_small", "req_per_s", ">="),
    ("small-GET req/s (ab -k)", "ab_small", "req_per_s", ">="),
    ("p99 latency, sequential", "latency_seq", "p99_ms", "<="),
    ("p99 latency under load (wrk)", "wrk_small", "p99_ms", "<="),
    ("CPU per request, both ends (wrk)", "wrk_small", "cpu_s_per_10k_total", "<="),
]


def criteria(results: dict[str, Any], system: str = "ptproxy", against: str = "caddy") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prof in results:
        rows = []
        for label, scenario, metric, op in CRITERIA:
            mine = _med(results, prof, system, scenario, metric)
            theirs = _med(results, prof, against, scenario, metric)
            met = None
            if mine is not None and theirs is not None:
                met = mine >= theirs if op == ">=" else mine <= theirs
            rows.append({"criterion": label, "scenario": scenario, "metric": metric, "must_be": op,
                         system: mine, against: theirs,
                         "ratio": (mine / theirs) if mine is not None and theirs else None, "met": met})
        out[prof] = rows
    return out


def build(s: Settings, data: RunData, meta: dict[str, Any]) -> dict[str, Any]:
    results = aggregate(data)
    latency_cdf = {
        prof: {sysn: [round(x, 4) for x in cdf(v)] for sysn, v in per.items()} for prof, per in data.latency_raw.items()
    }
    return {
        "schema": SCHEMA,
        **meta,
        "settings": {
            "systems": s.systems, "profiles": s.profiles, "scenarios": s.scenarios, "repeat": s.repeat,
            "duration_s": s.duration, "warmup_s": s.warmup, "connections": s.conns,
            "latency_requests": s.latency_n, "transfer_count": s.transfer_n, "sweep_connections": s.sweep,
            "sweep_duration_s": s.sweep_duration, "proxy_cores": s.proxy_cores, "wrk_threads": s.threads,
            "quick": s.quick,
        },
        "systems_info": data.info,
        "results": results,
        "criteria_ptproxy_vs_caddy": criteria(results),
        "latency_cdf_ms": latency_cdf,
        "loadavg": data.loadavg,
        "link_stats": data.link_stats,
        "errors": data.errors,
    }


# -- Markdown ------------------------------------------------------------------------------------

COLUMNS = [
    ("wrk req/s", "wrk_small", "req_per_s", "{:.0f}"),
    ("ab -k req/s", "ab_small", "req_per_s", "{:.0f}"),
    ("wrk p99 ms", "wrk_small", "p99_ms", "{:.2f}"),
    ("seq p50 ms", "latency_seq", "p50_ms", "{:.3f}"),
    ("seq p99 ms", "latency_seq", "p99_ms", "{:.3f}"),
    ("first req ms", "first_request", "ms", "{:.1f}"),
    ("launch ms", "launch", "ms", "{:.0f}"),
    ("down MB/s", "download_10m", "mb_per_s", "{:.0f}"),
    ("up MB/s", "upload_10m", "mb_per_s", "{:.0f}"),
    ("CPU s/10k req", "wrk_small", "cpu_s_per_10k_total", "{:.2f}"),
    ("pkts/req (wrk)", "wrk_small", "packets_per_req_total", "{:.2f}"),
    ("ACK-only pkts/req", "wrk_small", "packets_per_req_ack", "{:.2f}"),
    ("RSS MiB", "process", "peak_rss_mib_total", "{:.0f}"),
]


def _cell(summ: dict[str, Any] | None, fmt: str, show_spread: bool) -> str:
    if not summ:
        return "–"
    text = fmt.format(summ["median"])
    if show_spread and summ["n"] > 1:
        text += f" ±{summ['spread_pct'] / 2:.0f}%"
    r = summ.get("ratio_to_best_peer")
    if r is not None:
        text += f" ({r:.2f}×)"
    return text


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    m = report["machine"]
    lines.append(
        f"Machine: {m['cpu_model']}, {m['cores']} cores; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in m['loadavg_start'])}. Repetitions: {report['settings']['repeat']}."
    )
    lines.append("Cells: median (± half the min–max spread) (× ratio to the best peer; 1.00× = best of the "
                 "proxies; `direct` has no peer role).")
    for prof, systems in report["results"].items():
        lines += ["", f"**{prof}**", ""]
        lines.append("| system | " + " | ".join(c[0] for c in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for system, scen in systems.items():
            cells = [_cell(scen.get(sc, {}).get(mt), fmt, sc != "first_request") for _, sc, mt, fmt in COLUMNS]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        crit = report["criteria_ptproxy_vs_caddy"].get(prof, [])
        if any(c["met"] is not None for c in crit):
            lines += ["", "| ptproxy vs Caddy pair | ptproxy | Caddy | ratio | met |", "|---|---|---|---|---|"]
            for c in crit:
                if c["met"] is None:
                    continue
                lines.append(f"| {c['criterion']} (must be {c['must_be']}) | {c['ptproxy']:.4g} | {c['caddy']:.4g} | "
                             f"{c['ratio']:.2f} | {'yes' if c['met'] else '**no**'} |")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    if report["errors"]:
        lines += ["", "Errors:"] + [f"- [{e['profile']}] {e['system']} {e.get('scenario', '*')}: {e['error']}"
                                    for e in report["errors"]]
    return "\n".join(lines) + "\n"
