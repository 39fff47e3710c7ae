"""Turn collected run facts into one self-contained HTML page and a Markdown summary.

Both are built from the same section functions, which return plain rows; the HTML adds
inline-SVG charts. Nothing is fetched at view time: styles are inline, charts are SVG text.
"""

from __future__ import annotations

import math
from html import escape, unescape
from typing import Any, Optional

from ..metrics import is_relative, per_type_f1
from . import svg

STATE_COLORS = {"complete": "#1f77b4", "pruned": "#ff7f0e", "fail": "#d62728", "running": "#7f7f7f"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:24px auto;
padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
svg{display:block;margin:8px 0;font-size:11px;background:#fff}svg text{fill:#333}
svg .axis{stroke:#555}svg .grid{stroke:#eee}svg .trend{fill:none;stroke:#2ca02c;stroke-width:1.5}
svg .series{fill:none;stroke-width:1.5}svg .point{fill-opacity:.8;stroke:#fff}svg .label{font-size:10px}
.note{color:#666}.bad{color:#b00}
"""


def fmt(v: Any, digits: int = 4) -> str:
    """A table cell: numbers rounded, None as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def _seconds(s: Optional[float]) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# ----------------------------------------------------------------------------- sections as rows


def asked_rows(facts: dict) -> list[tuple[str, str]]:
    """What was asked: model, data, method, budget, plan."""
    run, cfg = facts.get("run") or {}, facts.get("config") or {}
    asked, plan = run.get("asked") or {}, run.get("plan") or {}
    data = cfg.get("data") or {}
    rows = [("run folder", facts["run_dir"]), ("note", asked.get("note")),
            ("model", asked.get("model") or (cfg.get("model") or {}).get("path")),
            ("training data", asked.get("train") or data.get("train")),
            ("evaluation data", asked.get("eval") or data.get("eval") or "split of the training data"),
            ("budget", _seconds(asked.get("budget_s")) if asked.get("budget_s") else "none (trial count only)")]
    if plan:
        n_fit = plan.get("n_trials_fit", plan.get("n_trials"))
        rows += [("plan: search", f"{_seconds(plan.get('search_s'))}, about {n_fit} unpruned trials of "
                  f"{_seconds(plan.get('trial_s'))} each (estimate +/- {fmt(plan.get('trial_error_pct'), 2)}%)"),
                 ("plan: compress + bench", f"{_seconds(plan.get('compress_s'))}; methods "
                  f"{', '.join(plan.get('methods') or [])}")]
        fidelity = plan.get("fidelity")
        if fidelity:
            rows.append(("plan: fidelity lowered", f"to fit {fidelity.get('trials')} trials in the budget: "
                         + "; ".join(fidelity.get("lowered") or [])))
    for name, stage in (run.get("stages") or {}).items():
        rows.append((f"stage {name}", f"{stage.get('status')}, {_seconds(stage.get('seconds'))}"
                     f"{', ' + str(stage['attempts']) + ' attempts' if stage.get('attempts', 1) > 1 else ''}"))
    return [(k, fmt(v)) for k, v in rows if v is not None]


def search_summary(search: dict) -> list[tuple[str, str]]:
    res = search["results"]
    counts = res.get("counts") or {}
    best = res.get("best_values")
    rows = [("objectives", ", ".join(f"{m} ({d})" for m, d in search["objectives"])),
            ("trials", ", ".join(f"{v} {k}" for k, v in counts.items()) or str(len(search["trials"]))),
            ("best trial", fmt(res.get("best_trial"))),
            ("best value", fmt(best[0]) if best else "-"),
            ("best parameters", ", ".join(f"{k}={fmt(v)}" for k, v in (res.get("best_params") or {}).items())),
            ("training samples used", f"{res.get('train_samples', 0):,}"),
            ("stopped by", fmt(res.get("stopped_by")))]
    if res.get("warning"):  # the best trial's eval metrics are at chance level
        rows.insert(4, ("warning", res["warning"]))
    return rows


def trial_table(search: dict, limit: int = 15) -> tuple[list[str], list[list[str]]]:
    """The best ``limit`` complete trials, then every failed one with its reason."""
    metric, direction = search["metric"], search["direction"]
    params = sorted({k for t in search["trials"] for k in t if k.startswith("params.")})
    head = ["trial", "state", "from", metric, "seconds", "samples", *[p[7:] for p in params], "note"]
    done = [t for t in search["trials"] if t.get("state") == "complete" and t.get(metric) is not None]
    done.sort(key=lambda t: t[metric], reverse=direction == "maximize")
    rest = [t for t in search["trials"] if t not in done]
    rows = [[fmt(t.get("number")), t.get("state", "-"), t.get("source", "sampler"), fmt(t.get(metric)),
             fmt(t.get("duration_s"), 3),
             fmt(t.get("train_samples")), *[fmt(t.get(p)) for p in params], fmt(t.get("fail_reason") or "")]
            for t in done[:limit] + rest]
    return head, rows


def variant_table(variants: dict) -> tuple[list[str], list[list[str]]]:
    """Source and every variant: metric, loss in points, latency, throughput, size, status."""
    metric = variants.get("metric", "accuracy")
    lost = "% worse" if is_relative(metric) else "points lost"
    head = ["variant", "status", metric, lost, "p50 ms", "p95 ms", "samples/s", "size MiB",
            "parameters", "Pareto", "note"]
    src = variants["source_bench"]
    front = set(variants.get("pareto_front") or [])
    rows = [_bench_row("source (PyTorch fp32)", "baseline", src, metric, 0.0, "source" in front, "")]
    for v in variants.get("variants") or []:
        note = v.get("reason") or v.get("error") or ""
        name = " → ".join(v["chain"]) if v.get("chain") else v["name"]  # a chain: its steps in order
        rows.append(_bench_row(name, v.get("status", "-"), v.get("bench"), metric, v.get("points_lost"),
                               v.get("pareto", False), note))
    return head, rows


def _bench_row(name, status, b, metric, lost, pareto, note) -> list[str]:
    if not b:
        return [name, status, "-", "-", "-", "-", "-", "-", "-", "-", note]
    return [name, status, fmt(b["eval"]["metrics"].get(metric)), fmt(lost, 3), fmt(b["latency_ms"]["p50"], 3),
            fmt(b["latency_ms"]["p95"], 3), fmt(b["throughput"]["samples_per_s"], 4), fmt(b["size_mb"], 3),
            f"{b['parameters']:,}", fmt(pareto), note]


def generation_table(variants: dict) -> Optional[tuple[list[str], list[list[str]]]]:
    """Prefill and decode speed and time to first token of the source and each variant that has them."""
    benches = [("source", variants.get("source_bench"))] + [(v["name"], v.get("bench"))
                                                             for v in variants.get("variants", [])]
    rows = [[name, fmt(g.get("prompt_tokens_per_s"), 5), fmt(g.get("generated_tokens_per_s"), 5),
             fmt((g.get("ttft_ms") or {}).get("p50"), 3)]
            for name, b in benches if b and (g := b.get("generation"))]
    return (["model", "prompt tokens/s", "generated tokens/s", "time to first token ms"], rows) if rows else None


def per_type_table(facts: dict) -> Optional[tuple[list[str], list[list[str]]]]:
    """F1 per entity type of the best trial's model and of the source and each variant on the bench's eval file;
    None when the metrics have no types (any task but token classification)."""
    models = []
    search, variants = facts.get("search") or {}, facts.get("variants") or {}
    if search.get("best_eval"):
        models.append((f"best trial {search['results'].get('best_trial')} (search's eval)", search["best_eval"]))
    if variants.get("source_bench"):
        models.append(("source (PyTorch fp32)", variants["source_bench"]["eval"]["metrics"]))
    models += [(v["name"], v["bench"]["eval"]["metrics"]) for v in variants.get("variants") or [] if v.get("bench")]
    kinds = sorted({k for _, m in models for k in per_type_f1(m)})
    if not kinds:
        return None
    head = ["model", "F1 (all types)", *kinds]
    return head, [[name, fmt(m.get("f1")), *[fmt(per_type_f1(m).get(k)) for k in kinds]] for name, m in models]


def importance_items(search: dict) -> tuple[list[tuple[str, float]], Optional[str]]:
    imp = (search.get("importances") or {}).get(search["metric"]) or {}
    if "error" in imp:
        return [], imp["error"]
    return [(k, float(v)) for k, v in imp.items()], None if imp else "no importances saved"


# ----------------------------------------------------------------------------- charts


def history_chart(search: dict) -> Optional[str]:
    metric, maximize = search["metric"], search["direction"] == "maximize"
    pts, best, line = [], None, []
    for t in sorted(search["trials"], key=lambda t: t["number"]):
        y = t.get(metric)
        if y is None:
            continue
        state = t.get("state", "complete")
        source = t.get("source", "sampler")
        pts.append({"x": t["number"], "y": y, "color": STATE_COLORS.get(state, "#7f7f7f"), "r": 5,
                    "label": SOURCE_MARKS.get(source.split(":")[0]),
                    "tip": f"trial {t['number']} ({state}, from {source}): {metric} {fmt(y)}"})
        if state == "complete":
            best = y if best is None or (y > best if maximize else y < best) else best
            line.append((t["number"], best))
    if not pts:
        return None
    legend = [(s, c) for s, c in STATE_COLORS.items() if any(t.get("state") == s for t in search["trials"])]
    legend.append(("best so far", "#2ca02c"))
    title = f"{metric} per trial" + (" (D: the default, P: the portfolio; the rest: the sampler)"
                                     if any(p["label"] for p in pts) else "")
    return svg.scatter("search-history", title, pts, "trial", metric, line=line, legend=legend)


SOURCE_MARKS = {"default": "D", "portfolio": "P"}  # where a trial's configuration came from


def best_by_samples_chart(search: dict) -> Optional[str]:
    """The best value so far against the training samples spent, every trial's (pruned and failed ones too)."""
    metric, maximize = search["metric"], search["direction"] == "maximize"
    spent, best, line = 0, None, []
    for t in sorted(search["trials"], key=lambda t: t["number"]):
        spent += t.get("train_samples") or 0
        y = t.get(metric)
        if t.get("state", "complete") == "complete" and y is not None:
            best = y if best is None or (y > best if maximize else y < best) else best
        if best is not None:
            line.append((spent, best))
    if len(line) < 2:
        return None
    return svg.lines("search-by-samples", f"best {metric} so far against training samples",
                     [{"label": "best so far", "points": line}], "training samples (all trials)", metric)


def curve_charts(search: dict) -> list[str]:
    curves = search.get("curves") or []
    out = []
    if any(c["eval"] for c in curves):
        out.append(svg.lines("learning-curves", f"eval {search['metric']} of the best trials",
                             [{"label": f"trial {c['trial']}", "points": c["eval"]} for c in curves],
                             "training samples", search["metric"]))
    if any(c["loss"] for c in curves):
        out.append(svg.lines("training-loss", "training loss of the best trials",
                             [{"label": f"trial {c['trial']}", "points": c["loss"]} for c in curves],
                             curves[0]["x"], "loss"))
    return out


def pareto_chart(variants: dict) -> Optional[str]:
    """Metric against batch-1 p50 latency; marker area proportional to size on disk."""
    metric = variants.get("metric", "accuracy")
    entries = [("source", variants["source_bench"], "accepted")]
    entries += [(v["name"], v["bench"], v.get("status")) for v in variants.get("variants") or [] if v.get("bench")]
    if not entries:
        return None
    biggest = max(b["size_mb"] for _, b, _ in entries) or 1.0
    front = set(variants.get("pareto_front") or [])
    colors = {"front": "#2ca02c", "accepted": "#1f77b4", "rejected": "#d62728"}
    pts, front_pts = [], []
    for name, b, status in entries:
        kind = "front" if name in front else ("rejected" if status == "rejected" else "accepted")
        x, y = b["latency_ms"]["p50"], b["eval"]["metrics"].get(metric)
        r = 4 + 14 * math.sqrt(b["size_mb"] / biggest)  # area ~ size
        pts.append({"x": x, "y": y, "r": r, "color": colors[kind], "label": name,
                    "tip": f"{name}: {metric} {fmt(y)}, p50 {fmt(x, 3)} ms, {fmt(b['size_mb'], 3)} MiB ({kind})"})
        if kind == "front":
            front_pts.append((x, y))
    pts.sort(key=lambda p: -p["r"])  # big markers first, so small ones stay visible on top
    legend = [("Pareto front", colors["front"]), ("accepted", colors["accepted"]), ("rejected", colors["rejected"])]
    return svg.scatter("pareto", f"{metric} vs batch-1 latency (marker area: size on disk)", pts,
                       "p50 latency at batch 1 (ms)", metric, line=sorted(front_pts) or None, legend=legend)


# ----------------------------------------------------------------------------- pages


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(v: str) -> str:
        numeric = v.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()
        return f'<td class="n">{escape(v)}</td>' if numeric else f"<td>{escape(v)}</td>"
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows) + "</table>")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(v: str) -> str:
        return v.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sections(facts: dict) -> list[tuple[str, list[tuple[str, Any]]]]:
    """(title, [(kind, payload)]) with kind in text, table, kv, chart; shared by HTML and Markdown."""
    out = [("What was asked", [("kv", asked_rows(facts))])]
    search = facts.get("search")
    if search:
        items = [("kv", search_summary(search))]
        for chart in (history_chart(search), best_by_samples_chart(search)):
            if chart:
                items.append(("chart", chart))
        imp, why = importance_items(search)
        items.append(("text", "Parameter importances (fANOVA):" + (f" not available: {why}" if why else "")))
        if imp:
            items += [("chart", svg.bars("importances", "parameter importances", imp, "importance")),
                      ("table", (["parameter", "importance"], [[k, fmt(v, 3)] for k, v in imp]))]
        items.append(("table", trial_table(search)))
        out.append(("Search", items))
        charts = curve_charts(search)
        out.append(("Learning curves of the best trials", [("chart", c) for c in charts]
                    or [("text", "no metrics.jsonl saved for the best trials")]))
    variants = facts.get("variants")
    if variants:
        metric = variants.get("metric") or ""
        loses = (f"is at most {fmt(variants.get('tolerance_points'))}% worse than the source's {metric}"
                 if is_relative(metric) else
                 f"loses at most {fmt(variants.get('tolerance_points'))} points of {metric}")
        items = [("text", f"Every variant measured with the same harness on {variants.get('data')}; "
                  f"accepted when it {loses}.")]
        chart = pareto_chart(variants)
        if chart:
            items.append(("chart", chart))
        items.append(("table", variant_table(variants)))
        speed = generation_table(variants)
        if speed:
            items += [("text", "Generation at batch 1: prompt tokens/s (prefill), generated tokens/s (decode) and "
                               "time to first token."), ("table", speed)]
        out.append(("Variants and the Pareto front", items))
    generations = facts.get("generations")
    if generations:
        out.append(("Generations: base and tuned model", [
            ("text", "Greedy continuations of the first eval prompts by the base model and the tuned one."),
            ("table", (["prompt", "base model", "tuned model"],
                       [[str(g.get("prompt")), str(g.get("base")), str(g.get("tuned"))] for g in generations]))]))
    per_type = per_type_table(facts)
    if per_type:
        out.append(("F1 per entity type", [("text", "Entity-level F1 (seqeval, default mode) of each type, and over "
                                                    "all types."), ("table", per_type)]))
    env = facts.get("environment") or {}
    out.append(("Environment", [("kv", [(k, fmt(v)) for k, v in env.items()] or [("environment", "not recorded")])]))
    return out


def to_html(facts: dict, title: str) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external references."""
    body = [f"<h1>{escape(title)}</h1>"]
    for name, items in sections(facts):
        body.append(f"<h2>{escape(name)}</h2>")
        for kind, payload in items:
            if kind == "kv":
                table = _html_table(["", ""], [[k, v] for k, v in payload])
                body.append(table.replace("<tr><th></th><th></th></tr>", ""))  # key-value: no header
            elif kind == "table":
                body.append(_html_table(*payload))
            elif kind == "chart":
                body.append(payload)
            else:
                body.append(f'<p class="note">{escape(payload)}</p>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{''.join(body)}</body></html>\n")


def to_markdown(facts: dict, title: str, html_name: Optional[str]) -> str:
    """The same sections as text; charts are left to the HTML page."""
    lines = [f"# {title}", ""]
    if html_name:
        lines += [f"Charts: open `{html_name}` (self-contained).", ""]
    for name, items in sections(facts):
        lines += [f"## {name}", ""]
        for kind, payload in items:
            if kind == "kv":
                lines += [_md_table(["", ""], [[k, v] for k, v in payload]), ""]
            elif kind == "table":
                lines += [_md_table(*payload), ""]
            elif kind == "text":
                lines += [payload, ""]
            elif kind == "chart":
                title = unescape(payload.split("<title>", 1)[1].split("</title>", 1)[0])
                lines += [f"Chart in the HTML page: {title}.", ""]
    return "\n".join(lines)
