"""JSON + Markdown output with each figure and whether its target was met."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RTT = 50.0
ONE_RTT = RTT + 2.0  # "one RTT": the link's RTT plus 2 ms for both proxy ends
TWO_RTT = 2 * RTT
LINK_MBIT = 100.0
RESTART_MS = 300.0  # issue 13: new server process started -> first success
BLACKOUT_MS = RTT + 10.0  # issue 13: end of the blackout -> first success


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (system, target). Targets apply to ptproxy; direct, the nginx pair and the
    Caddy pair are the references. Issue 13: without redundancy, ptproxy's p99 at 1 % loss
    (sequential and 16 concurrent) must be no worse than the Caddy HTTP/3 pair's in the same run
    (no row when the run has no Caddy pair)."""
    systems = doc["systems"]
    nginx_mbit = _get(systems, "nginx-pair", "download_loss1", "mbit_median")
    caddy = systems.get("caddy-pair") or {}
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
        if caddy and not redundant(r):
            c = _get(caddy, "seq_loss1", "summary", "p99")
            add("sequential GET p99, 1% loss, no redundancy (ms)", v, f"<= Caddy pair's ({_f(c)})",
                None if c is None else v is not None and v <= c)  # fmt: skip
        v = _get(r, "first_after_ready", "ms")
        add("first request after 'tunnel ready' (ms)", v, f"<= {ONE_RTT:g} (one RTT)", v is not None and v <= ONE_RTT)
        v = _get(r, "first_after_silence", "ms")
        add("first request after silence (ms)", v, f"<= {ONE_RTT:g} (one RTT)", v is not None and v <= ONE_RTT)
        for key, loss in (("burst_loss0", "0%"), ("burst_loss1", "1%")):
            if key in r:  # a phase left out (--skip burst) has no row
                v = _get(r, key, "summary", "p99")
                add(f"64-request burst after silence p99, {loss} loss (ms)", v, f"<= {TWO_RTT:g}",
                    v is not None and v <= TWO_RTT)  # fmt: skip
        v = _get(r, "conc16_loss1", "summary", "p50")
        add("16 concurrent p50, 1% loss (ms)", v, f"<= {ONE_RTT:g}", v is not None and v <= ONE_RTT)
        v = _get(r, "conc16_loss1", "summary", "p99")
        add("16 concurrent p99, 1% loss (ms)", v, f"<= {TWO_RTT:g}", v is not None and v <= TWO_RTT)
        if caddy and not redundant(r):
            c = _get(caddy, "conc16_loss1", "summary", "p99")
            add("16 concurrent p99, 1% loss, no redundancy (ms)", v, f"<= Caddy pair's ({_f(c)})",
                None if c is None else v is not None and v <= c)  # fmt: skip
        v = _get(r, "restart", "ms_from_spawn")
        add("server restart -> first success (ms from new process)", v, f"<= {RESTART_MS:g}",
            v is not None and v <= RESTART_MS)  # fmt: skip
        v = _get(r, "blackout", "ms_from_blackout_end")
        add("blackout end -> first success (ms)", v, f"<= {BLACKOUT_MS:g}", v is not None and v <= BLACKOUT_MS)
        v = _get(r, "download_loss0", "mbit_median")
        if name.startswith("ptproxy-natural"):
            add("10 MB download, 0% loss (Mbit/s)", None if v is None else round(v, 1), ">= 90", v is not None and v >= 90)
        v = _get(r, "download_loss1", "mbit_median")
        if algo in ("Bbr", "None"):
            ok = v is not None and v >= 0.7 * LINK_MBIT and (nginx_mbit is None or v >= nginx_mbit)
            add("10 MB download, 1% loss (Mbit/s, median)", None if v is None else round(v, 1),
                f">= 70 and >= nginx pair ({nginx_mbit and round(nginx_mbit, 1)})", ok)  # fmt: skip
        else:
            add("10 MB download, 1% loss (Mbit/s, median)", None if v is None else round(v, 1), "(no target)", None)
    return rows


def redundant(r: dict[str, Any]) -> bool:
    """Does this ptproxy system send redundant copies (``[transport] redundancy`` other than
    its default, "None")?"""
    return (_get(r, "config", "config", "transport", "redundancy") or "None") != "None"


def redundancy_cost(r: dict[str, Any]) -> dict[str, Any] | None:
    """Redundant bytes against the bytes each end sent (QUIC payload), from the /metrics scrapes:
    after the small-request phases at 1 % loss, and before the restart (downloads included)."""
    out: dict[str, Any] = {}
    for key in ("metrics_after_small_loss1", "metrics_before_restart"):
        scrape = r.get(key)
        if not scrape:
            continue
        for end, vals in scrape.items():
            red = vals.get("ptproxy_redundant_bytes_total")
            sent = vals.get('ptproxy_quic_bytes_total{direction="sent"}')
            if red is None or not sent:
                continue
            out[f"{key}/{end}"] = {"redundant": red, "sent": sent, "share": red / sent}
    return out or None


def _load(v: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in v) if v else "–"


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
        "# linkbench: issues 4 and 13's measurements on an emulated sensitive link",
        "",
        f"Run {m['started']} ({m['duration_s']} s){', code at commit ' + m['commit'] if m.get('commit') else ''}. Link (user-space emulator, tools/netem): "
        f"RTT {m['link']['rtt_ms']:g} ms, {m['link']['rate_mbit']:g} Mbit/s each way, drop-tail queue = 1 BDP, "
        f"random loss 0 % then 1 % per direction. BDP = {m['link']['bdp_bytes']} bytes. "
        f"Silence {m['settings']['silence_s']:g} s; {m['settings']['seq']} sequential GETs at 0 %, "
        f"{m['settings']['seq_loss']} at 1 %; {m['settings']['downloads']} downloads of 10 MiB at 1 % "
        f"(1 at 0 %); 16 keep-alive connections x {m['settings'].get('conc_per_conn', '–')} GETs back to back "
        f"at 0 % and 1 %; blackout {m['settings']['blackout_s']:g} s. Machine: {m['machine']['nproc']} CPUs, "
        f"load average {_load(m['machine'].get('loadavg_start'))} at the start, {_load(m['machine'].get('loadavg_end'))} "
        "at the end (shared: figures are noisy). "
        + (f"Phases left out: {', '.join(m['settings']['skipped_phases'])}. " if m["settings"].get("skipped_phases") else "")
        + ("**Quick run.**" if m["settings"].get("quick") else ""),
        "",
        "Latencies are measured by a client in namespace a from writing the request to the last byte "
        "of the response (for the first request after start: including the local TCP connect; "
        "for bursts: from the burst's start). Small GETs fetch a 5-byte body.",
        "",
        "## Figures",
        "",
        "| system | seq p50 0% | seq p99 0% | seq p50 1% | seq p99 1% | 16 conc p50/p99 0% | 16 conc p50/p99 1% | first after ready | first after silence | burst p50/p99 0% | burst p50/p99 1% | 10 MiB 0% (Mbit/s) | 10 MiB 1% (Mbit/s, median; each) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in S.items():
        b0, b1 = _get(r, "burst_loss0", "summary") or {}, _get(r, "burst_loss1", "summary") or {}
        each = _get(r, "download_loss1", "mbit_each") or []
        out.append(
            f"| {name} | {_f(_get(r, 'seq_loss0', 'summary', 'p50'))} | {_f(_get(r, 'seq_loss0', 'summary', 'p99'))} "
            f"| {_f(_get(r, 'seq_loss1', 'summary', 'p50'))} | {_f(_get(r, 'seq_loss1', 'summary', 'p99'))} "
            f"| {_f(_get(r, 'conc16_loss0', 'summary', 'p50'))} / {_f(_get(r, 'conc16_loss0', 'summary', 'p99'))} "
            f"| {_f(_get(r, 'conc16_loss1', 'summary', 'p50'))} / {_f(_get(r, 'conc16_loss1', 'summary', 'p99'))} "
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
        "starting the new process to the end of the first successful request (ptproxy ends have a "
        "`[tls] ticket_key_file`, so a new server process can resume its client's session; nginx and "
        "Caddy: a full handshake, TLS over TCP or QUIC). *Blackout*: the link drops everything for longer than "
        "max_idle_timeout, the connection dies, the client reconnects to the same server process "
        "(resumption + 0-RTT possible); time from the blackout's end; one blackout per system, polled alone from its end (the agent's first request is timed to leave at that instant). The blackout is longer than "
        "ptproxy's max_idle_timeout only: the nginx pair's TCP connection and the Caddy pair's QUIC "
        "connection (quic-go's idle timeout, 30 s unless configured) may outlive it and need no reconnect.",
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
    out += ["", "## Cost of redundancy", "",
            "Bytes sent a second time (`ptproxy_redundant_bytes_total`) against all QUIC payload bytes the "
            "same end sent (`ptproxy_quic_bytes_total{direction=\"sent\"}`): after the small-request phases "
            "at 1 % loss, and at the end (10 MiB downloads included).", "",
            "| system | end | after small requests, 1 %: redundant / sent | share | at the end: redundant / sent | share |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in S.items():
        cost = redundancy_cost(r)
        if not cost or not any(c["redundant"] for c in cost.values()):
            continue
        for end in ("client", "server"):
            a = cost.get(f"metrics_after_small_loss1/{end}") or {}
            b = cost.get(f"metrics_before_restart/{end}") or {}
            out.append(f"| {name} | {end} | {_f(a.get('redundant'), 0)} / {_f(a.get('sent'), 0)} | "
                       f"{_f(100 * a['share'] if a else None)} % | {_f(b.get('redundant'), 0)} / {_f(b.get('sent'), 0)} | "
                       f"{_f(100 * b['share'] if b else None)} % |")  # fmt: skip
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


README_SYSTEMS = (
    ("direct", "direct"),
    ("nginx-pair", "nginx pair"),
    ("caddy-pair", "Caddy pair (HTTP/3)"),
    ("ptproxy-Bbr", "ptproxy tuned"),
    ("ptproxy-natural", "ptproxy natural"),
    ("ptproxy-natural-probe", "natural + Probe"),
    ("ptproxy-natural-tail", "natural + Tail"),
    ("ptproxy-natural-tail-0.1", "natural + Tail, cap 0.1"),
)


def readme_table(doc: dict[str, Any]) -> str:
    """The README's table (section "On an emulated sensitive link") from a run's JSON."""
    S = doc["systems"]
    cols = [(k, label) for k, label in README_SYSTEMS if k in S]

    def pair(r: dict[str, Any], key: str, a: str, b: str) -> str:
        x, y = _get(r, key, "summary", a), _get(r, key, "summary", b)
        return "–" if x is None and y is None else f"{_f(x)} / {_f(y)}"

    def mbit(r: dict[str, Any]) -> str:
        return f"{_f(_get(r, 'download_loss0', 'mbit_median'))} / {_f(_get(r, 'download_loss1', 'mbit_median'))}"

    def share(r: dict[str, Any]) -> str:
        cost = redundancy_cost(r) or {}
        ends = [cost.get(f"metrics_after_small_loss1/{end}") for end in ("client", "server")]
        return " · ".join("–" if c is None else f"{100 * c['share']:.1f} %" for c in ends)

    rows: list[tuple[str, Any, str]] = [
        ("sequential GET p50, 0 %", lambda r: _f(_get(r, "seq_loss0", "summary", "p50")), "≤ 52"),
        ("sequential GET p99, 1 %", lambda r: _f(_get(r, "seq_loss1", "summary", "p99")),
         "≤ 100 (Tail); no redundancy: ≤ Caddy pair"),
        ("16 concurrent p50 / p99, 1 %", lambda r: pair(r, "conc16_loss1", "p50", "p99"),
         "≤ 52 / ≤ 100 (Tail); p99 without redundancy: ≤ Caddy pair"),
        ("first request after ready", lambda r: _f(_get(r, "first_after_ready", "ms")), "≤ 52"),
        ("first request after 120 s silence", lambda r: _f(_get(r, "first_after_silence", "ms")), "≤ 52"),
        ("10 MiB download, 0 % / 1 %, Mbit/s", mbit, "natural: ≥ 90 / ≥ 70 and ≥ nginx"),
        ("server restart → first success", lambda r: _f(_get(r, "restart", "ms_from_spawn"), 0), "≤ 300"),
        ("7 s blackout end → first success", lambda r: _f(_get(r, "blackout", "ms_from_blackout_end"), 0), "≤ 60"),
        ("redundant / sent bytes, client · server end (after the small requests)", share, "–"),
    ]
    out = ["| (ms unless noted) | " + " | ".join(label for _, label in cols) + " | target |",
           "|---" * (len(cols) + 2) + "|"]  # fmt: skip
    for what, fn, target in rows:
        out.append(f"| {what} | " + " | ".join(fn(S[k]) for k, _ in cols) + f" | {target} |")
    return "\n".join(out) + "\n"


def write_reports(doc: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = targets(doc)
    doc["targets"] = rows
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(doc, rows))
