#!/usr/bin/env python3
"""Renders load-tests/report/results.json as REPORT.md, chart.svg and a text table.

bench.py calls it at the end of a run; to re-render without measuring again:

    python3 load-tests/report.py [load-tests/report]
"""

import json
import math
import os
import sys
from html import escape

# Short labels for the chart and the text table.
SHORT = {
    "1": "direct", "2": "plain", "2f": "floor", "3": "nginx", "4": "api-key", "5a": "jwt-hs256",
    "5b": "jwt-rs256", "6": "limit", "7": "edge", "8": "3 nodes", "9": "cache",
}
GATEWAY_KINDS = ("gateway", "cluster")
# What "well below 1" Redis round trip per request means here.
ROUND_TRIPS_TARGET = 0.5


def rows_by_id(results):
    return {r["id"]: r for r in results["rows"]}


def measured(row):
    return row is not None and "max" in row and "fixed" in row


def fmt(value, digits=0, unit=""):
    if value is None:
        return "—"
    if isinstance(value, float) and digits == 0:
        value = round(value)
    text = f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)
    return text + unit


def p99_added(row):
    """Row's p99 at its fixed rate minus the upstream's alone at the same rate, in µs."""
    if not measured(row) or "direct_at_rate" not in row:
        return None
    return row["fixed"]["latency_us"]["p99"] - row["direct_at_rate"]["latency_us"]["p99"]


def cpu_per_request_us(row):
    if row is None or row.get("cpu_s_per_10k") is None:
        return None
    return row["cpu_s_per_10k"] * 100  # s per 10,000 → µs per request


def rss_mib(row):
    rss = row.get("peak_rss_kb")
    return max(rss) / 1024 if rss else None


# === targets ===


def targets(results):
    """The issue's targets, each with its measured value and whether it is met (None: unknown)."""
    r = rows_by_id(results)
    plain, nginx, edge = r.get("2"), r.get("3"), r.get("7")
    out = []

    def add(target, value, met, detail=""):
        out.append({"target": target, "value": value, "met": met, "detail": detail})

    if measured(plain) and measured(nginx):
        ratio = plain["max"]["rps"] / max(1, nginx["max"]["rps"])
        add("plain route ≥ 0.8× nginx's requests/s", f"{ratio:.2f}×", ratio >= 0.8,
            f"{plain['max']['rps']:,.0f} vs {nginx['max']['rps']:,.0f} req/s")
        cp, cn = cpu_per_request_us(plain), cpu_per_request_us(nginx)
        if cp and cn:
            add("plain route ≤ 1.25× nginx's CPU per request", f"{cp / cn:.2f}×", cp / cn <= 1.25,
                f"{cp:.1f} vs {cn:.1f} µs CPU per request")
    else:
        add("plain route ≥ 0.8× nginx's requests/s", "not measured", None)
        add("plain route ≤ 1.25× nginx's CPU per request", "not measured", None)
    floor = r.get("2f")
    if measured(floor) and measured(nginx) and measured(plain):
        cf, cn, cp = (cpu_per_request_us(floor), cpu_per_request_us(nginx),
                      cpu_per_request_us(plain))
        if cf and cn and cp:
            # Context, not a target: how much of the gap is Pingora's and how much ours.
            add("context: Pingora with no logic vs nginx (not a target)",
                f"{floor['max']['rps'] / max(1, nginx['max']['rps']):.2f}×", None,
                f"{cf:.1f} µs CPU per request vs nginx {cn:.1f}; the plain route adds "
                f"{cp - cf:.1f} µs over this floor")

    if measured(plain) and measured(edge):
        ratio = edge["max"]["rps"] / max(1, plain["max"]["rps"])
        add("edge route (7) ≥ 0.75× the plain route's requests/s", f"{ratio:.2f}×", ratio >= 0.75,
            f"{edge['max']['rps']:,.0f} vs {plain['max']['rps']:,.0f} req/s")
        ce, cp = cpu_per_request_us(edge), cpu_per_request_us(plain)
        if ce and cp:
            redis = edge["redis"]["cpu_s_per_10k"] * 100
            add("edge route (7) ≥ 0.75× the plain route, by gateway CPU per request",
                f"{cp / ce:.2f}×", cp / ce >= 0.75,
                f"gateway {ce:.1f} vs {cp:.1f} µs CPU per request; Redis adds {redis:.1f} µs "
                "per request on its own CPU")
    else:
        add("edge route (7) ≥ 0.75× the plain route", "not measured", None)

    added = [(row["id"], p99_added(row)) for row in results["rows"]
             if row["kind"] in GATEWAY_KINDS and p99_added(row) is not None]
    if added:
        worst_id, worst = max(added, key=lambda a: a[1])
        plain_added = dict(added).get("2")
        nginx_added = p99_added(nginx)
        add("p99 added over direct ≤ 1 ms at 50 % load (every gateway scenario)",
            f"worst {worst / 1000:.2f} ms ({worst_id})", worst <= 1000,
            (f"plain route {plain_added / 1000:.2f} ms; " if plain_added is not None else "")
            + (f"nginx under the same conditions {nginx_added / 1000:.2f} ms; "
               if nginx_added is not None else "")
            + "each row's p99 at half its maximum minus the upstream's p99 alone at that rate")
    else:
        add("p99 added over direct ≤ 1 ms at 50 % load", "not measured", None)

    if measured(edge):
        cmds = edge["redis"]["commands_per_request"]
        lua = edge["redis"]["commands_in_lua_per_request"]
        add("Redis commands per request ≤ 1 on route 7", f"{cmds:.2f}", cmds <= 1.0,
            f"commands the gateway sent; the Lua script ran {lua:.2f} more per request inside Redis")
        reads = edge["redis"]["reads_per_request"]
        add(f"Redis round trips per request well below 1 on route 7 (< {ROUND_TRIPS_TARGET})",
            f"{reads:.2f}", reads < ROUND_TRIPS_TARGET,
            "Redis read events (INFO total_reads_processed) per request, 32 connections")
    else:
        add("Redis commands per request ≤ 1 on route 7", "not measured", None)
    return out


def mark(met):
    return {True: "met", False: "**missed**", None: "—"}[met]


# === tables ===

COLUMNS = [
    ("#", lambda r: r["id"]),
    ("req/s", lambda r: fmt(r["max"]["rps"])),
    ("p50", lambda r: fmt(r["max"]["latency_us"]["p50"])),
    ("p90", lambda r: fmt(r["max"]["latency_us"]["p90"])),
    ("p99", lambda r: fmt(r["max"]["latency_us"]["p99"])),
    ("p99.9", lambda r: fmt(r["max"]["latency_us"]["p999"])),
    ("50% rate", lambda r: fmt(r["fixed"]["target_rate"])),
    ("p50", lambda r: fmt(r["fixed"]["latency_us"]["p50"])),
    ("p99", lambda r: fmt(r["fixed"]["latency_us"]["p99"])),
    ("p99.9", lambda r: fmt(r["fixed"]["latency_us"]["p999"])),
    ("p99 added", lambda r: fmt(p99_added(r))),
    ("CPU s/10k", lambda r: fmt(r.get("cpu_s_per_10k"), 3)),
    ("RSS MiB", lambda r: fmt(rss_mib(r), 1)),
    ("Redis cmd/req", lambda r: fmt(r["redis"]["commands_per_request"], 2)),
    ("+Lua", lambda r: fmt(r["redis"]["commands_in_lua_per_request"], 2)),
    ("reads/req", lambda r: fmt(r["redis"]["reads_per_request"], 3)),
    ("Redis CPU s/10k", lambda r: fmt(r["redis"]["cpu_s_per_10k"], 3)),
    ("other CPU %", lambda r: fmt(r.get("other_cpu_pct"), 0)),
]


def cells(row):
    if row.get("skipped"):
        return [row["id"]] + ["skipped"] + ["—"] * (len(COLUMNS) - 2)
    if not measured(row):
        return [row["id"]] + ["failed"] + ["—"] * (len(COLUMNS) - 2)
    return [get(row) for _name, get in COLUMNS]


def text_table(results):
    head = ["#", "scenario"] + [c[0] for c in COLUMNS[1:]]
    body = [[c[0], SHORT.get(r["id"], r["name"])] + c[1:] for r in results["rows"]
            for c in [cells(r)]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda vals: "  ".join(str(v).rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [
        "latency in µs; columns 3-7: max throughput; 8-12: fixed rate at 50 % of it "
        "(timed from each request's due time), 'p99 added' = p99 minus the upstream's alone at "
        "that rate",
        line(head),
    ]
    out += [line(b) for b in body]
    return "\n".join(out)


def targets_text(results):
    out = ["", "targets (issue 5):"]
    for t in targets(results):
        out.append(f"  [{mark(t['met']).strip('*')}] {t['target']}: {t['value']}"
                   + (f" ({t['detail']})" if t["detail"] else ""))
    return "\n".join(out)


def markdown(results):
    m = results["machine"]
    rows = results["rows"]
    by = rows_by_id(results)
    pin = results["pinning"]
    out = [
        "# Portcullis load-test report",
        "",
        f"Generated by `{results['command']}` — {results['started']} to {results['finished']} "
        f"(UTC){' — **quick run**, figures are rough' if results['quick'] else ''}.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['nproc']} × {m['cpu_model']}"
        + (f" (virtualised, {m['hypervisor']})" if m.get("hypervisor") else ""),
        f"- memory: {m['memory']}; kernel {m['kernel']}; {m['os']}",
        f"- {m['rustc']}; {m['nginx']}; {m['redis'].split(' sha=')[0]}",
        f"- portcullis at {m['git']}",
        f"- load average before / after the run: {m['loadavg_before']} / {m['loadavg_after']}"
        " (anything well above the ~2 this bench adds means other work shared the machine)",
        "",
        "```",
        m["free"],
        "```",
        "",
        "Timer wake-up lateness of a 500 µs sleep on an otherwise idle CPU, before and after the "
        "run (µs; the machine's own noise floor: a VM's hiccups show here, not in the proxy):",
        "",
    ]
    for when, probes in results.get("timer_jitter_us", {}).items():
        for cpu, j in probes.items():
            out.append(f"- {when}, {cpu.replace('_', ' ')}: p50 {j['p50']}, p99 {j['p99']}, "
                       f"p99.9 {j['p999']}, max {j['max']}")
    out += [
        "",
        "## Method",
        "",
        f"- Every figure comes from one run of all scenarios, {results['duration_s']:g} s per "
        f"measurement. Max throughput: {results['connections']} keep-alive connections, each "
        "sending its next request when the previous answer is in. Then fixed-rate runs at "
        f"{results['load_share']:.0%} of that maximum, latency timed from each request's due "
        "time when an earlier response held it back (no coordinated omission): three runs of "
        "a third of the time each, and the columns show the run with the median p99, so that "
        "one stall of the machine does not decide a row (results.json has all three p99s).",
        "- 'p99 added' is that fixed-rate p99 minus the p99 of the upstream alone at the same "
        "rate, measured right after the scenario.",
        "- Pinning: " + ("none (fewer than 2 CPUs, or --no-pin)." if pin["proxy_cpu"] is None else
                         f"the proxy under test (each gateway, or nginx in row 3) alone on CPU "
                         f"{pin['proxy_cpu']}; the upstream nginx, redis-server, the load "
                         f"generator and the driver on CPU {pin['client_cpu']}. Gateways run "
                         "`threads = 1`, nginx `worker_processes 1`."),
        "- CPU s/10k: the proxy's user + system CPU seconds (`/proc/<pid>/stat`) per 10,000 "
        "requests of the max-throughput run; for row 8 the sum of the three gateways. RSS: "
        "peak resident memory (`VmHWM`), the largest process in row 8.",
        "- Redis cmd/req: commands the gateway sent (`INFO commandstats`, minus the commands "
        "the gateway's Lua scripts run inside Redis, shown as +Lua); reads/req: Redis read "
        "events (`total_reads_processed`), i.e. network round trips that carried commands.",
        "- other CPU %: CPU time used during the max-throughput run by processes that are not "
        "part of this bench (`/proc/stat` minus ours), in % of one CPU: other work on the "
        "machine that the figures of that row competed with.",
        "",
        "## Results",
        "",
        "Latency in µs. Max-throughput columns first, then the fixed-rate run.",
        "",
    ]
    head = ["#", "scenario", "req/s", "p50", "p90", "p99", "p99.9", "50 % rate", "p50 @50%",
            "p99 @50%", "p99.9 @50%", "p99 added", "CPU s/10k", "peak RSS MiB",
            "Redis cmd/req", "+Lua", "Redis reads/req", "Redis CPU s/10k", "other CPU %"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join("---" if i < 2 else "--:" for i in range(len(head))) + "|")
    for r in rows:
        c = cells(r)
        out.append("| " + " | ".join([c[0], r["name"]] + c[1:]) + " |")
    out += ["", "![throughput and latency per scenario](chart.svg)", "", "## Targets (issue 5)",
            "", "| target | measured | result | detail |", "|---|---|---|---|"]
    for t in targets(results):
        out.append(f"| {t['target']} | {t['value']} | {mark(t['met'])} | {t['detail']} |")

    cluster = by.get("8")
    if cluster and cluster.get("exactness"):
        out += ["", "## Row 8: how exact a shared limit held", "",
                "Three gateways on one Redis, one route limited to L requests per hour "
                "(`by = \"route\"`), offered 5 × L requests spread over the three nodes "
                "within one window.", "",
                "| algorithm | limit L | offered | admitted (200) | denied (429) | other | "
                "admitted − L | one window |", "|---|--:|--:|--:|--:|---|--:|---|"]
        for e in cluster["exactness"]:
            out.append(f"| {e['algorithm']} | {e['limit']:,} | {e['offered']:,} | "
                       f"{e['admitted']:,} | {e['denied']:,} | {e['other'] or '—'} | "
                       f"{e['admitted'] - e['limit']:+,} | {'yes' if e['one_window'] else 'no'} |")

    out += ["", "## Notes per scenario", ""]
    for r in rows:
        bits = [r["note"]] if r.get("note") else []
        if r.get("upstream_cpu_s_per_10k") is not None and r["id"] == "1":
            bits.append(f"upstream nginx CPU {r['upstream_cpu_s_per_10k']:.3f} s/10k")
        if r.get("access_log_lines") is not None:
            bits.append(f"access log: {r['access_log_lines']:,} lines for "
                        f"{r['requests_sent']:,} responses")
        if r.get("other_cpu_pct", 0) >= 5:
            bits.append(f"other processes used {r['other_cpu_pct']:.0f} % of a CPU meanwhile")
        gm = r.get("gateway_metrics")
        if gm:
            ops = ", ".join(f"{k} {v:.2f}" for k, v in sorted(gm["store_ops_per_request"].items()))
            bits.append(f"store operations per request (gateway metrics): {ops or 'none'}")
            if gm["metrics_scrapes"]:
                bits.append(f"{gm['metrics_scrapes']} /metrics scrapes during the run")
            if gm["access_log_dropped"]:
                bits.append(f"{gm['access_log_dropped']:.0f} access-log lines dropped")
        calls = (r.get("redis") or {}).get("calls")
        if calls:
            bits.append("Redis commandstats: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])))
        if r.get("problems"):
            bits.append("**problems:** " + "; ".join(p.replace("\n", " ") for p in r["problems"]))
        out.append(f"- **{r['id']} {r['name']}**: " + ("; ".join(bits) or "—"))
    if results.get("crashes"):
        out += ["", "## Gateway crashes", ""]
        for c in results["crashes"]:
            out += [f"- {c['what']}", "", "```", c["log"].rstrip(), "```", ""]
    out += ["", "Re-render from the raw figures with `python3 load-tests/report.py`; the raw "
            "figures are in `results.json`.", ""]
    return "\n".join(out)


# === chart ===


def chart_svg(results):
    """Bars: max requests/s (left axis). Markers: p50 and p99 at 50 % load (right axis, log)."""
    rows = [r for r in results["rows"] if measured(r)]
    width, height = 960, 460
    left, right, top, bottom = 80, 80, 50, 90
    plot_w, plot_h = width - left - right, height - top - bottom
    max_rps = max([r["max"]["rps"] for r in rows] + [1])
    step = nice_step(max_rps / 5)
    rps_top = step * math.ceil(max_rps / step)
    lat = [v for r in rows for v in (r["fixed"]["latency_us"]["p50"],
                                     r["fixed"]["latency_us"]["p99"]) if v > 0]
    lo = 10 ** math.floor(math.log10(min(lat))) if lat else 10
    hi = 10 ** math.ceil(math.log10(max(lat))) if lat else 10_000
    hi = max(hi, lo * 10)

    def y_rps(v):
        return top + plot_h - plot_h * v / rps_top

    def y_lat(v):
        v = max(v, lo)
        return top + plot_h - plot_h * (math.log10(v) - math.log10(lo)) / (
            math.log10(hi) - math.log10(lo))

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
         f'Portcullis load test: max requests/s (bars), p50 / p99 latency at 50 % load '
         f'(markers)</text>']
    v = 0.0
    while v <= rps_top + 1e-9:
        y = y_rps(v)
        s.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                 f'stroke="#e4e4e4"/>')
        s.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v / 1000:g}k</text>')
        v += step
    d = lo
    while d <= hi * 1.0001:
        y = y_lat(d)
        label = f"{d / 1000:g} ms" if d >= 1000 else f"{d:g} µs"
        s.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="#b03030">{label}</text>')
        s.append(f'<line x1="{left + plot_w}" y1="{y:.1f}" x2="{left + plot_w + 4}" '
                 f'y2="{y:.1f}" stroke="#b03030"/>')
        d *= 10
    s.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             f'stroke="black"/>')
    s.append(f'<text transform="translate(18 {top + plot_h / 2}) rotate(-90)" '
             f'text-anchor="middle">requests / s (max throughput)</text>')
    s.append(f'<text transform="translate({width - 14} {top + plot_h / 2}) rotate(90)" '
             f'text-anchor="middle" fill="#b03030">latency at 50 % load (log)</text>')
    slot = plot_w / max(1, len(rows))
    for i, r in enumerate(rows):
        x = left + slot * i
        bar_w = slot * 0.6
        y = y_rps(r["max"]["rps"])
        colour = {"gateway": "#3b6ea5", "cluster": "#2d4f78", "nginx": "#6aa84f",
                  "floor": "#c27c0e",
                  "direct": "#999999"}.get(r["kind"], "#3b6ea5")
        s.append(f'<rect x="{x + slot * 0.2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                 f'height="{top + plot_h - y:.1f}" fill="{colour}"><title>{escape(r["name"])}: '
                 f'{r["max"]["rps"]:,.0f} req/s</title></rect>')
        s.append(f'<text x="{x + slot / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                 f'font-size="11">{r["max"]["rps"] / 1000:.1f}k</text>')
        cx = x + slot / 2
        p50, p99 = r["fixed"]["latency_us"]["p50"], r["fixed"]["latency_us"]["p99"]
        s.append(f'<line x1="{cx:.1f}" y1="{y_lat(p50):.1f}" x2="{cx:.1f}" y2="{y_lat(p99):.1f}" '
                 f'stroke="#b03030" stroke-width="1.5"/>')
        s.append(f'<circle cx="{cx:.1f}" cy="{y_lat(p50):.1f}" r="4.5" fill="white" '
                 f'stroke="#b03030" stroke-width="2"><title>p50 {p50} µs</title></circle>')
        py = y_lat(p99)
        s.append(f'<path d="M{cx - 5:.1f} {py:.1f} L{cx:.1f} {py - 5:.1f} L{cx + 5:.1f} {py:.1f} '
                 f'L{cx:.1f} {py + 5:.1f} Z" fill="#b03030"><title>p99 {p99} µs</title></path>')
        s.append(f'<text x="{cx:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
                 f'font-weight="bold">{escape(r["id"])}</text>')
        s.append(f'<text x="{cx:.1f}" y="{top + plot_h + 34}" text-anchor="middle">'
                 f'{escape(SHORT.get(r["id"], r["name"]))}</text>')
    ly = height - 22
    s.append(f'<rect x="{left}" y="{ly - 10}" width="12" height="12" fill="#3b6ea5"/>'
             f'<text x="{left + 18}" y="{ly}">gateway</text>'
             f'<rect x="{left + 90}" y="{ly - 10}" width="12" height="12" fill="#6aa84f"/>'
             f'<text x="{left + 108}" y="{ly}">nginx</text>'
             f'<rect x="{left + 170}" y="{ly - 10}" width="12" height="12" fill="#999999"/>'
             f'<text x="{left + 188}" y="{ly}">direct</text>'
             f'<circle cx="{left + 270}" cy="{ly - 4}" r="4.5" fill="white" stroke="#b03030" '
             f'stroke-width="2"/><text x="{left + 280}" y="{ly}">p50 at 50 % load</text>'
             f'<path d="M{left + 405} {ly - 4} L{left + 410} {ly - 9} L{left + 415} {ly - 4} '
             f'L{left + 410} {ly + 1} Z" fill="#b03030"/>'
             f'<text x="{left + 420}" y="{ly}">p99 at 50 % load</text>')
    skipped = [r for r in results["rows"] if not measured(r)]
    if skipped:
        s.append(f'<text x="{left + plot_w}" y="{ly}" text-anchor="end" fill="#666">not shown: '
                 + escape(", ".join(f"{r['id']} ({'skipped' if r.get('skipped') else 'failed'})"
                                    for r in skipped)) + '</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def nice_step(raw):
    if raw <= 0:
        return 1
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def write_all(results, outdir):
    with open(os.path.join(outdir, "REPORT.md"), "w") as f:
        f.write(markdown(results))
    with open(os.path.join(outdir, "chart.svg"), "w") as f:
        f.write(chart_svg(results))


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "report")
    with open(os.path.join(outdir, "results.json")) as f:
        results = json.load(f)
    write_all(results, outdir)
    print(text_table(results))
    print(targets_text(results))


if __name__ == "__main__":
    main()
