"""JSON + Markdown output with each figure and whether its target was met."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RTT = 50.0
ONE_RTT = RTT + 2.0  # "one RTT": the link's RTT plus 2 ms for both proxy ends
TWO_RTT = 2 * RTT
LINK_MBIT = 100.0


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (system, target). Targets apply to ptproxy; direct/nginx are the references."""
    systems = doc["systems"]
    nginx_mbit = _get(systems, "nginx-pair", "download_loss1", "mbit_median")
    rows = []
    for name, r in systems.items():
        if r.get("kind") != "ptproxy":
            continue
        algo = r.get("algo")

        def add(what: str, value: Any, limit: Any, ok: bool | None, note: str = "", name: str = name) -> None:
            rows.append({"system": name, "target": what, "value": value, "limit": limit,
                         "met": ok, "note": note})  # fmt: skip

        v = _get(r, "seq_loss0", "summary", "p50")
        add("sequential GET p50, 0% loss (ms)", v, f"<= {ONE_RTT:g}", v is not None and v <= ONE_RTT)
        v = _get(r, "seq_loss1", "summary", "p99")
        add("sequential GET p99, 1% loss (ms)", v, f"<= {TWO_RTT:g}", v is not None and v <= TWO_RTT)
        v = _get(r, "first_after_ready", "ms")
        add("first request after 'tunnel ready' (ms)", v, f"<= {ONE_RTT:g} (one RTT)", v is not None and v <= ONE_RTT)
        v = _get(r, "first_after_silence", "ms")
        add("first request after silence (ms)", v, f"<= {ONE_RTT:g} (one RTT)", v is not None and v <= ONE_RTT)
        v = _get(r, "burst_loss0", "summary", "p99")
        add("64-request burst after silence p99, 0% loss (ms)", v, f"<= {TWO_RTT:g}", v is not None and v <= TWO_RTT)
        v = _get(r, "burst_loss1", "summary", "p99")
        add("64-request burst after silence p99, 1% loss (ms)", v, f"<= {TWO_RTT:g}", v is not None and v <= TWO_RTT)
        v = _get(r, "download_loss1", "mbit_median")
        if algo in ("Bbr", "None"):
            ok = v is not None and v >= 0.7 * LINK_MBIT and (nginx_mbit is None or v >= nginx_mbit)
            add("10 MB download, 1% loss (Mbit/s, median)", None if v is None else round(v, 1),
                f">= 70 and >= nginx pair ({nginx_mbit and round(nginx_mbit, 1)})", ok)  # fmt: skip
        else:
            add("10 MB download, 1% loss (Mbit/s, median)", None if v is None else round(v, 1), "(no target)", None)
    return rows


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = doc["meta"]
    S = doc["systems"]
    out = [
        "# linkbench: issue 4's measurements on an emulated sensitive link",
        "",
        f"Run {m['started']} ({m['duration_s']} s). Link (user-space emulator, tools/netem): "
        f"RTT {m['link']['rtt_ms']:g} ms, {m['link']['rate_mbit']:g} Mbit/s each way, drop-tail queue = 1 BDP, "
        f"random loss 0 % then 1 % per direction. BDP = {m['link']['bdp_bytes']} bytes. "
        f"Silence {m['settings']['silence_s']:g} s; {m['settings']['seq']} sequential GETs at 0 %, "
        f"{m['settings']['seq_loss']} at 1 %; {m['settings']['downloads']} downloads of 10 MiB at 1 % "
        f"(1 at 0 %); blackout {m['settings']['blackout_s']:g} s. Machine: {m['machine']['nproc']} CPUs. "
        + ("**Quick run.**" if m["settings"].get("quick") else ""),
        "",
        "Latencies are measured by a client in namespace a from writing the request to the last byte "
        "of the response (for the first request after start: including the local TCP connect; "
        "for bursts: from the burst's start). Small GETs fetch a 5-byte body.",
        "",
        "## Figures",
        "",
        "| system | seq p50 0% | seq p99 0% | seq p50 1% | seq p99 1% | first after ready | first after silence | burst p50/p99 0% | burst p50/p99 1% | 10 MiB 0% (Mbit/s) | 10 MiB 1% (Mbit/s, median; each) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in S.items():
        b0, b1 = _get(r, "burst_loss0", "summary") or {}, _get(r, "burst_loss1", "summary") or {}
        each = _get(r, "download_loss1", "mbit_each") or []
        out.append(
            f"| {name} | {_f(_get(r, 'seq_loss0', 'summary', 'p50'))} | {_f(_get(r, 'seq_loss0', 'summary', 'p99'))} "
            f"| {_f(_get(r, 'seq_loss1', 'summary', 'p50'))} | {_f(_get(r, 'seq_loss1', 'summary', 'p99'))} "
            f"| {_f(_get(r, 'first_after_ready', 'ms'))} | {_f(_get(r, 'first_after_silence', 'ms'))}"
            f"{' (reconnect)' if _get(r, 'first_after_silence', 'reconnected') and r['kind'] == 'direct' else ''} "
            f"| {_f(b0.get('p50'))} / {_f(b0.get('p99'))} | {_f(b1.get('p50'))} / {_f(b1.get('p99'))} "
            f"| {_f(_get(r, 'download_loss0', 'mbit_median'))} "
            f"| {_f(_get(r, 'download_loss1', 'mbit_median'))} ({', '.join(f'{x:.1f}' for x in each)}) |"
        )
    out += ["", "All latencies in ms.", "", "## Targets (ptproxy)", "",
            "| system | target | value | limit | met |", "|---|---|---|---|---|"]  # fmt: skip
    for t in rows:
        met = "–" if t["met"] is None else ("**met**" if t["met"] else "**MISSED**")
        out.append(f"| {t['system']} | {t['target']} | {_f(t['value'])} | {t['limit']} | {met} |")
    out += [
        "",
        "## Recovery: server-end restart and link blackout",
        "",
        "Client polls through the client end (fresh connection each try, 0.5 s timeout, 50 ms apart). "
        "*Restart*: the server end gets SIGINT (nginx: SIGTERM), a new process is started; time from "
        "starting the new process to the end of the first successful request (a new process has no "
        "tickets: full handshake, no 0-RTT). *Blackout*: the link drops everything for longer than "
        "max_idle_timeout, the connection dies, the client reconnects to the same server process "
        "(resumption + 0-RTT possible); time from the blackout's end.",
        "",
        "| system | restart: ms from new process | attempts | server saw resumption | blackout: ms from end | attempts | resumed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in S.items():
        rs, bo = r.get("restart") or {}, r.get("blackout") or {}
        out.append(
            f"| {name} | {_f(rs.get('ms_from_spawn') or rs.get('error'))} | {_f(rs.get('attempts'))} | {_f(rs.get('resumed'))} "
            f"| {_f(bo.get('ms_from_blackout_end') or bo.get('error'))} | {_f(bo.get('attempts'))} | {_f(bo.get('resumed'))} |"
        )
    out += ["", "## Configuration used", ""]
    for name, r in S.items():
        outer = r.get("config") or {}
        cfg = outer.get("config") or {}
        if "transport" in cfg:
            out.append(f"- **{name}** (QUIC port {outer.get('quic_port')}) `[transport]`: "
                       + ", ".join(f"{k} = {json.dumps(v)}" for k, v in cfg["transport"].items())
                       + " (full client/server TOML in the JSON)")
        elif cfg:
            out.append(f"- **{name}**: " + ", ".join(f"{k}: {v}" for k, v in cfg.items()))
        else:
            out.append(f"- **{name}**: HTTP/1.1 keep-alive client in ns a straight to the origin nginx in ns b "
                       "(kernel TCP, keepalive_timeout 300 s)")
    errs = {n: {k: v.get("errors") for k, v in r.items() if isinstance(v, dict) and v.get("errors")} for n, r in S.items()}
    errs = {k: v for k, v in errs.items() if v}
    if errs:
        out += ["", "## Errors", "", "```", json.dumps(errs, indent=1)[:4000], "```"]
    out.append("")
    out.append("Diagnosis of missed targets: see `linkbench-diagnosis.md` next to this file.")
    return "\n".join(out) + "\n"


def write_reports(doc: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = targets(doc)
    doc["targets"] = rows
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(doc, rows))
