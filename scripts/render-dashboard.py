#!/usr/bin/env python3
"""Render the Grafana dashboard's panels from a live Prometheus into an SVG.

usage: scripts/render-dashboard.py DASHBOARD.json PROM_URL START END OUT.svg [CAPTION]
       rsvg-convert -o OUT.png OUT.svg   (Debian: librsvg2-bin)

START and END are Unix seconds. Standard library only; used once to make
docs/dashboard.png (not part of the tests). Grafana variables are filled in:
$tenant = all, $__rate_interval = 30s, $__range = END - START.
"""
import json, sys, time, urllib.parse, urllib.request, html, math, re

dash_path, prom, start, end, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
caption = sys.argv[6] if len(sys.argv) > 6 else ""
dash = json.load(open(dash_path))
rng = end - start
SUB = {"$__rate_interval": "30s", "$__range": f"{rng}s", "$tenant": ".*"}
STEP = max(2, rng // 240)

def sub(e):
    for k, v in SUB.items():
        e = e.replace(k, v)
    return e

def q(path, params):
    url = prom + path + "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url) as r:
        d = json.load(r)
    if d["status"] != "success":
        raise SystemExit(f"{path} {params}: {d}")
    return d["data"]["result"]

def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("__name__", "job")) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)

def fmt_val(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if unit == "s":
        if a >= 3600: return f"{v/3600:.1f} h"
        if a >= 60: return f"{v/60:.1f} min"
        if a >= 1: return f"{v:.1f} s"
        if a == 0: return "0 s"
        return f"{v*1000:.0f} ms"
    suffix = "/s" if unit == "ops" else ""
    if a >= 1e6: return f"{v/1e6:.1f}M{suffix}"
    if a >= 1e3: return f"{v/1e3:.1f}K{suffix}"
    if a >= 10 or v == int(v): return f"{v:.0f}{suffix}"
    return f"{v:.2f}{suffix}"

W, UNIT_H, PAD = 1800, 30, 6
COL = W / 24
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300"]
BG, PANEL, TEXT, GRID, DIM = "#111217", "#181b1f", "#d8d9da", "#2c3235", "#8e8e8e"

svg = []
max_y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
H = int(max_y * UNIT_H + 60)
svg.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="DejaVu Sans, sans-serif">')
svg.append(f'<rect width="{W}" height="{H}" fill="{BG}"/>')
t0 = time.strftime("%H:%M", time.gmtime(start)); t1 = time.strftime("%H:%M", time.gmtime(end))
svg.append(f'<text x="12" y="30" fill="{TEXT}" font-size="20" font-weight="bold">{html.escape(dash["title"])}</text>')
svg.append(f'<text x="{W-12}" y="30" fill="{DIM}" font-size="13" text-anchor="end">tenant: All · {t0}–{t1} UTC {html.escape(caption)}</text>')
OFF = 44

def box(p):
    g = p["gridPos"]
    x, y = g["x"] * COL + PAD / 2, OFF + g["y"] * UNIT_H + PAD / 2
    return x, y, g["w"] * COL - PAD, g["h"] * UNIT_H - PAD

def thresh_color(p, v):
    steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    c = "#73BF69"
    for s in steps:
        if s["value"] is None or (v is not None and v >= s["value"]):
            c = {"green": "#37872D", "yellow": "#E0B400", "red": "#C4162A"}.get(s["color"], s["color"])
    return c

for p in dash["panels"]:
    x, y, w, h = box(p)
    if p["type"] == "row":
        svg.append(f'<text x="{x+4}" y="{y+20}" fill="{TEXT}" font-size="15" font-weight="bold">{html.escape(p["title"])}</text>')
        continue
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    if p["type"] == "stat":
        res = q("/api/v1/query", {"query": sub(p["targets"][0]["expr"]), "time": end})
        v = float(res[0]["value"][1]) if res else None
        svg.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="{thresh_color(p, v)}"/>')
        svg.append(f'<text x="{x+8}" y="{y+18}" fill="#fff" font-size="13">{html.escape(p["title"])}</text>')
        svg.append(f'<text x="{x+w/2}" y="{y+h/2+22}" fill="#fff" font-size="34" font-weight="bold" text-anchor="middle">{fmt_val(v, unit)}</text>')
        continue
    svg.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="{PANEL}" stroke="{GRID}"/>')
    svg.append(f'<text x="{x+8}" y="{y+18}" fill="{TEXT}" font-size="13" font-weight="bold">{html.escape(p["title"])}</text>')
    if p["type"] == "table":
        res = q("/api/v1/query", {"query": sub(p["targets"][0]["expr"]), "time": end})
        cols = ["instance", "version", "goversion"]
        for i, c in enumerate(cols):
            svg.append(f'<text x="{x+12+i*300}" y="{y+44}" fill="{DIM}" font-size="12" font-weight="bold">{c}</text>')
        for j, r in enumerate(res):
            for i, c in enumerate(cols):
                svg.append(f'<text x="{x+12+i*300}" y="{y+64+j*18}" fill="{TEXT}" font-size="12">{html.escape(r["metric"].get(c, ""))}</text>')
        continue
    series = []
    for t in p["targets"]:
        for r in q("/api/v1/query_range", {"query": sub(t["expr"]), "start": start, "end": end, "step": STEP}):
            pts = [(float(a), float(b)) for a, b in r["values"] if b not in ("NaN", "+Inf", "-Inf")]
            if pts:
                series.append((legend(t.get("legendFormat"), r["metric"]), pts))
    nleg = min(len(series), 4)
    px, py, pw, ph = x + 58, y + 28, w - 70, h - 58 - nleg * 14
    vals = [v for _, pts in series for _, v in pts]
    vmax = max(vals) if vals else 1
    vmax = vmax * 1.1 if vmax > 0 else 1
    for i in range(4):
        gy = py + ph - ph * i / 3
        svg.append(f'<line x1="{px}" y1="{gy:.1f}" x2="{px+pw}" y2="{gy:.1f}" stroke="{GRID}"/>')
        svg.append(f'<text x="{px-6}" y="{gy+4:.1f}" fill="{DIM}" font-size="10" text-anchor="end">{fmt_val(vmax*i/3, unit)}</text>')
    for i in range(5):
        tt = start + rng * i / 4
        gx = px + pw * i / 4
        svg.append(f'<text x="{gx:.1f}" y="{py+ph+13:.1f}" fill="{DIM}" font-size="10" text-anchor="middle">{time.strftime("%H:%M", time.gmtime(tt))}</text>')
    for k, (name, pts) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        path = " ".join(f"{px + pw*(t-start)/rng:.1f},{py + ph - ph*min(v, vmax)/vmax:.1f}" for t, v in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if k < nleg:
            last = pts[-1][1]; peak = max(v for _, v in pts)
            ly = py + ph + 28 + k * 14
            svg.append(f'<rect x="{px}" y="{ly-8}" width="10" height="3" fill="{color}"/>')
            label = name if len(name) < 60 else name[:57] + "..."
            svg.append(f'<text x="{px+16}" y="{ly-3}" fill="{TEXT}" font-size="10">{html.escape(label)}  last {fmt_val(last, unit)}  max {fmt_val(peak, unit)}</text>')
    if len(series) > nleg:
        svg.append(f'<text x="{px+pw}" y="{y+18}" fill="{DIM}" font-size="10" text-anchor="end">+{len(series)-nleg} more series</text>')
    if not series:
        svg.append(f'<text x="{x+w/2}" y="{y+h/2}" fill="{DIM}" font-size="12" text-anchor="middle">no data</text>')

svg.append("</svg>")
open(out, "w").write("\n".join(svg))
print("wrote", out)
