"""The evaluation's report: results.md (markdown tables) and report.html (the tables, ROC curves,
predicted-vs-true plots, intervals and t-SNE maps, as inline SVG).

No plotting library: every figure is a small hand-written SVG (matplotlib is not a dependency), so
the report is one self-contained file that any browser opens. Curves use the first probe seed's test
predictions (pooled over folds for leave-one-out and per-database protocols); multi-class ROC curves
are the macro average of the one-vs-rest curves (mean TPR on a common FPR grid).
"""
import hashlib
import html

import numpy as np
import threadpoolctl

from acula_jax.evaluators import probe
from acula_jax.evaluators import scoring


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f")
SIZE = 260          # side of one plot panel, px
MARGIN = 36
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; background: #eef6ee; }
section { margin-top: 2em; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption, .note { font-size: 12px; color: #555; max-width: 60em; }
svg text { font-size: 10px; font-family: system-ui, sans-serif; }
"""


def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def _colour(i: int) -> str:
  return PALETTE[i % len(PALETTE)]


# ----------------------------------------------------------------------------------------------------
# SVG primitives.
# ----------------------------------------------------------------------------------------------------

def _svg(width, height, body: list, label: str) -> str:
  return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}">' + "".join(body) + "</svg>")


def _axes(x0, y0, xlabel, ylabel, lo=(0.0, 0.0), hi=(1.0, 1.0)) -> list:
  """Frame, ticks at both ends and axis labels of one panel whose top-left corner is (x0, y0)."""
  right, bottom = x0 + SIZE, y0 + SIZE
  return [f'<rect x="{x0}" y="{y0}" width="{SIZE}" height="{SIZE}" fill="none" stroke="#999"/>',
          f'<text x="{x0}" y="{bottom + 12}">{lo[0]:.3g}</text>',
          f'<text x="{right}" y="{bottom + 12}" text-anchor="end">{hi[0]:.3g}</text>',
          f'<text x="{x0 - 3}" y="{bottom}" text-anchor="end">{lo[1]:.3g}</text>',
          f'<text x="{x0 - 3}" y="{y0 + 8}" text-anchor="end">{hi[1]:.3g}</text>',
          f'<text x="{x0 + SIZE / 2}" y="{bottom + 24}" text-anchor="middle">{_esc(xlabel)}</text>',
          f'<text x="{x0 - 26}" y="{y0 + SIZE / 2}" text-anchor="middle" '
          f'transform="rotate(-90 {x0 - 26} {y0 + SIZE / 2})">{_esc(ylabel)}</text>']


def _scale(values, lo, hi, start, flip=False):
  span = hi - lo if hi > lo else 1.0
  unit = (np.asarray(values, np.float64) - lo) / span
  return start + SIZE * ((1.0 - unit) if flip else unit)


def _polyline(xs, ys, colour, width=1.5, dash="") -> str:
  points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
  dash = f' stroke-dasharray="{dash}"' if dash else ""
  return f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}"{dash}/>'


def _legend(x, y, entries) -> list:
  out = []
  for i, (text, colour) in enumerate(entries):
    out.append(f'<rect x="{x}" y="{y + 14 * i}" width="10" height="10" fill="{colour}"/>')
    out.append(f'<text x="{x + 14}" y="{y + 14 * i + 9}">{_esc(text)}</text>')
  return out


# ----------------------------------------------------------------------------------------------------
# Figures.
# ----------------------------------------------------------------------------------------------------

def macro_roc(proba, y, num_classes: int, grid=101):
  """(fpr, tpr): class 1's ROC for binary tasks, else the macro average of one-vs-rest curves."""
  proba, y = np.asarray(proba), np.asarray(y)
  classes = [1] if num_classes == 2 else [c for c in range(num_classes) if 0 < (y == c).sum() < y.size]
  fpr_grid = np.linspace(0.0, 1.0, grid)
  curves = []
  for c in classes:
    fpr, tpr = probe.roc_curve(proba[:, c], y == c)
    curves.append(np.interp(fpr_grid, fpr, tpr))
  if not curves:
    return fpr_grid, fpr_grid
  return fpr_grid, np.mean(curves, axis=0)


def roc_svg(task: str, by_encoder: dict, outcomes: dict, num_classes: int) -> str:
  """One panel: an ROC curve per encoder, the chance diagonal and a legend with test AUROCs."""
  x0, y0 = MARGIN + 10, 10
  body = _axes(x0, y0, "false positive rate", "true positive rate")
  body.append(_polyline(_scale([0, 1], 0, 1, x0), _scale([0, 1], 0, 1, y0, flip=True), "#bbb", 1, "4 3"))
  legend = []
  for i, (name, detail) in enumerate(by_encoder.items()):
    fpr, tpr = macro_roc(detail["proba"], detail["y"], num_classes)
    body.append(_polyline(_scale(fpr, 0, 1, x0), _scale(tpr, 0, 1, y0, flip=True), _colour(i)))
    legend.append((f"{name}: {outcomes[name]['mean']:.3f}", _colour(i)))
  width = x0 + SIZE + 20 + 8 * max((len(t) for t, _ in legend), default=0)
  body += _legend(x0 + SIZE + 12, y0, legend)
  return _svg(max(width, x0 + SIZE + 40), y0 + SIZE + 36, body, f"ROC curves of {task}")


def scatter_svg(task: str, by_encoder: dict, outcomes: dict) -> str:
  """Predicted vs true, one panel per encoder, with the identity line."""
  values = np.concatenate([np.r_[d["y"], d["pred"]] for d in by_encoder.values()])
  lo, hi = float(np.min(values)), float(np.max(values))
  body, step = [], SIZE + MARGIN + 30
  for i, (name, detail) in enumerate(by_encoder.items()):
    x0, y0 = MARGIN + 10 + i * step, 24
    body += _axes(x0, y0, "true", "predicted", (lo, lo), (hi, hi))
    body.append(_polyline(_scale([lo, hi], lo, hi, x0), _scale([lo, hi], lo, hi, y0, flip=True), "#bbb", 1, "4 3"))
    xs, ys = _scale(detail["y"], lo, hi, x0), _scale(detail["pred"], lo, hi, y0, flip=True)
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_colour(i)}" fill-opacity="0.7"/>'
             for x, y in zip(xs, ys)]
    o = outcomes[name]
    body.append(f'<text x="{x0}" y="{y0 - 8}">{_esc(name)}: MAE {o["mean"]:.3g}</text>')
  return _svg(len(by_encoder) * step + MARGIN, SIZE + 70, body, f"predicted vs true for {task}")


def interval_svg(label: str, rows: list, *, zero: float | None = None) -> str:
  """Dot-and-whisker rows [(name, value, (low, high) or None)] on one shared axis; `zero` draws a
  dashed reference line (the forest plot of differences)."""
  values = [v for _, v, ci in rows for v in ((v,) + tuple(ci or ()))] + ([zero] if zero is not None else [])
  lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
  pad = 0.05 * (hi - lo or 1.0)
  lo, hi = lo - pad, hi + pad
  name_width = 8 * max(len(n) for n, _, _ in rows) + 10
  x0, row_height = name_width, 16
  to_x = lambda v: x0 + float(_scale([v], lo, hi, 0)[0])
  body = [f'<text x="{x0}" y="{12 + row_height * len(rows) + 12}">{lo:.3g}</text>',
          f'<text x="{x0 + SIZE}" y="{12 + row_height * len(rows) + 12}" text-anchor="end">{hi:.3g}</text>']
  if zero is not None:
    body.append(f'<line x1="{to_x(zero):.1f}" y1="4" x2="{to_x(zero):.1f}" y2="{12 + row_height * len(rows)}" '
                'stroke="#999" stroke-dasharray="4 3"/>')
  for i, (name, value, ci) in enumerate(rows):
    y = 12 + row_height * i
    body.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{_esc(name)}</text>')
    if ci is not None:
      body.append(f'<line x1="{to_x(ci[0]):.1f}" y1="{y}" x2="{to_x(ci[1]):.1f}" y2="{y}" stroke="{_colour(i)}" '
                  'stroke-width="2"/>')
    body.append(f'<circle cx="{to_x(value):.1f}" cy="{y}" r="3.5" fill="{_colour(i)}"/>')
  return _svg(x0 + SIZE + 20, 12 + row_height * len(rows) + 20, body, label)


def map_svg(entry: dict) -> str:
  """t-SNE panels (one per encoder) of one task, points coloured by class, others grey."""
  classes = entry["classes"]
  body, step = [], SIZE + 30
  for i, (name, panel) in enumerate(entry["encoders"].items()):
    x0, y0 = 10 + i * step, 24
    xy = np.asarray(panel["xy"], np.float64)
    lo, hi = xy.min(0), xy.max(0)
    body.append(f'<rect x="{x0}" y="{y0}" width="{SIZE}" height="{SIZE}" fill="none" stroke="#999"/>')
    body.append(f'<text x="{x0}" y="{y0 - 8}">{_esc(name)}</text>')
    xs, ys = _scale(xy[:, 0], lo[0], hi[0], x0), _scale(xy[:, 1], lo[1], hi[1], y0, flip=True)
    for x, y, label in sorted(zip(xs, ys, panel["label"]), key=lambda p: p[2] >= 0):
      colour = _colour(label) if label >= 0 else "#ddd"
      body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{colour}"/>')
  legend_x = 10 + len(entry["encoders"]) * step
  body += _legend(legend_x, 24, [(c, _colour(i)) for i, c in enumerate(classes)])
  width = legend_x + 20 + 7 * max((len(str(c)) for c in classes), default=0)
  return _svg(width, SIZE + 40, body, f"t-SNE map for {entry['task']}")


# ----------------------------------------------------------------------------------------------------
# t-SNE maps.
# ----------------------------------------------------------------------------------------------------

def tsne_2d(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
  """2-D t-SNE (sklearn) of standardised features, PCA-reduced to at most 50 dimensions first."""
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  x = np.asarray(features, np.float64)
  x = (x - x.mean(0)) / (x.std(0) + 1e-6)
  components = min(50, x.shape[0] - 1, x.shape[1])
  if components < x.shape[1]:
    x = PCA(n_components=components, random_state=seed).fit_transform(x)
  perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3.0)))
  # One BLAS/OpenMP thread: on a shared 2-core machine more threads make t-SNE several times slower.
  with threadpoolctl.threadpool_limits(1):
    return TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500,
                random_state=seed).fit_transform(x)


def embedding_maps(task, index: list, features_by_encoder: dict, *, max_points: int = 600,
                   cache=None, seed: int = 0) -> list:
  """[map entry] for a classification task: one t-SNE per encoder of a seeded subsample of the records.

  The map of a records folder is shared by every task on it (memoised on `cache`, e.g. the
  RecordsStore); each task colours the points it has labels for.
  """
  if task.is_regression or max_points <= 0 or not features_by_encoder or len(index) < 5:
    return []
  rng = np.random.default_rng(seed)
  rows = np.sort(rng.choice(len(index), size=min(max_points, len(index)), replace=False))
  memo = getattr(cache, "tsne_maps", None) if cache is not None else None
  if memo is None:
    memo = {}
    if cache is not None:
      cache.tsne_maps = memo
  # Tasks that differ only in protocol (PhysioNet's four) would draw the same map: draw it once.
  signature = ("task", task.label_key, task.filters, task.classes)
  if signature in memo:
    return []
  memo[signature] = task.name
  labels = [task.target(index[r]["labels"]) if task.applies_to(index[r]) else -1 for r in rows]
  entry = {"task": task.name, "classes": [str(c) for c in task.classes], "encoders": {}}
  for name, features in features_by_encoder.items():
    key = hashlib.sha1(np.ascontiguousarray(features[rows]).tobytes()).hexdigest()
    if key not in memo:
      memo[key] = tsne_2d(features[rows], seed=seed)
    entry["encoders"][name] = {"xy": memo[key], "label": labels}
  return [entry]


# ----------------------------------------------------------------------------------------------------
# The page.
# ----------------------------------------------------------------------------------------------------

def _table(results: dict) -> str:
  names = results["encoders"]
  head = "".join(f"<th>{_esc(n)}</th>" for n in names)
  rows = []
  for task, by_encoder in results["tasks"].items():
    for level in scoring.levels_of(by_encoder):
      outcomes = {n: scoring.at_level(o, level) for n, o in by_encoder.items()}
      best = scoring.best_encoder(outcomes)
      cells = [("<td>-</td>" if n not in outcomes else
                ('<td class="best">' if n == best else "<td>") + f"{_esc(scoring.cell_text(outcomes[n]))}</td>")
               for n in names]
      metric = "MAE (MAPE)" if next(iter(outcomes.values()))["metric"] == "mae" else "AUROC"
      rows.append(f'<tr><td><a href="#task-{_esc(task)}">{_esc(task)}</a></td><td>{level}</td><td>{metric}</td>'
                  f'{"".join(cells)}</tr>')
  return f"<table><tr><th>task</th><th>level</th><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _sizes_table(results: dict) -> str:
  rows = []
  for task in results["tasks"]:
    sizes = results["task_info"][task]["sizes"]
    cells = "".join(f"<td>{_esc(scoring.side_text(sizes[side]))}</td>" for side in ("train", "valid", "test"))
    rows.append(f"<tr><td>{_esc(task)}</td><td>{sizes['folds']}</td>{cells}</tr>")
  return ("<table><tr><th>task</th><th>folds</th><th>train</th><th>valid</th><th>test</th></tr>"
          f"{''.join(rows)}</table><p class=\"note\">Recordings / subjects (class counts); with several folds, "
          "train and valid are the mean per fold and test is every fold's test set together.</p>")


def _task_section(task: str, results: dict, details: dict) -> str:
  info = results.get("task_info", {}).get(task, {})
  # The figures show recordings; so do their numbers where the recording level was scored.
  outcomes = {n: scoring.at_level(o, "recording") or o for n, o in results["tasks"][task].items()}
  level = next(iter(outcomes.values())).get("level", "recording")
  by_encoder = details.get(task, {})
  if info.get("kind") == "regression":
    figure = scatter_svg(task, by_encoder, outcomes)
    caption = "Predicted vs true (held-out folds pooled, predictions averaged over seeds)."
  else:
    figure = roc_svg(task, by_encoder, outcomes, len(info.get("classes", [])) or 2)
    caption = ("ROC curves of the first probe seed's test predictions per recording (macro average of "
               "one-vs-rest curves for more than two classes); the legend gives the mean test AUROC over seeds "
               f"at the {level} level.")
  for lvl in scoring.levels_of(results["tasks"][task]):
    rows = [(n, o["mean"], o.get("ci95")) for n, o in
            ((n, scoring.at_level(o, lvl)) for n, o in results["tasks"][task].items())]
    figure += interval_svg(f"{task}: {lvl}-level results with 95% intervals", rows)
  caption += " Then, per level: each column's mean with its 95% interval (dot and whisker)."
  facts = ", ".join(f"{k}: {_esc(info[k])}" for k in ("dataset", "label", "protocol", "head") if info.get(k))
  if info.get("note"):
    facts += f"<br>{_esc(info['note'])}"
  return (f'<section id="task-{_esc(task)}"><h3>{_esc(task)}</h3><p class="note">{_esc(info.get("description", ""))}'
          f"<br>{facts}</p><figure>{figure}<figcaption>{caption}</figcaption></figure></section>")


def _comparison_sections(results: dict) -> list:
  """A forest plot per comparison, probe and level: each task's difference and the mean over tasks."""
  out = []
  for pair, by_probe in results.get("comparisons", {}).items():
    for probe_name, by_level in by_probe.items():
      for level, entry in by_level.items():
        rows = [(t, r["diff"], r["ci95"]) for t, r in entry["tasks"].items()]
        if "mean_over_tasks" in entry:
          m = entry["mean_over_tasks"]
          rows.append(("mean over tasks", m["diff"], m["ci95"]))
        title = f"{pair} ({probe_name} probe, {level} level)"
        out.append(f"<figure>{interval_svg(f'paired differences: {title}', rows, zero=0.0)}<figcaption>"
                   f"{_esc(title)}: A - B per task on the same folds and subjects, with paired-bootstrap 95% "
                   "intervals; the dashed line is no difference.</figcaption></figure>")
  return ["<h2>Paired comparisons</h2>", *out] if out else []


def html_page(results: dict, details: dict, maps: list) -> str:
  """The whole page as a string."""
  sections = [_task_section(task, results, details) for task in results["tasks"]]
  map_figures = [f"<figure>{map_svg(m)}<figcaption>{_esc(m['task'])}: t-SNE of the frozen features "
                 "(a seeded subsample of the records; grey = no label for this task).</figcaption></figure>"
                 for m in maps]
  skipped = "".join(f"<li>{_esc(t)}: {_esc(r)}</li>" for t, r in results.get("skipped_tasks", {}).items())
  probe_config = ", ".join(f"{k} {v}" for k, v in results.get("probe", {}).items())
  parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>acula_jax evaluation</title>", f"<style>{STYLE}</style></head><body>",
           "<h1>Frozen-feature evaluation</h1>",
           f'<p class="note">Probe: {_esc(probe_config)}. {_esc(scoring.explanation(results))}</p>',
           "<h2>Results</h2>", _table(results), "<h2>Sizes</h2>", _sizes_table(results)]
  if skipped:
    parts.append(f"<h2>Skipped tasks</h2><ul>{skipped}</ul>")
  parts += _comparison_sections(results)
  parts += ["<h2>Per task</h2>", *sections]
  if map_figures:
    comparison = " (before and after alignment)" if results.get("scoring", {}).get("comparison") == "alignment" else ""
    parts += [f"<h2>Embedding maps{comparison}</h2>", *map_figures]
  parts.append("</body></html>")
  return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# results.md
# --------------------------------------------------------------------------------------------------

def column_name(encoder: str, probe_name: str, probes) -> str:
  """The results column of an encoder under a probe: the encoder's name alone when only OPERA's probe runs."""
  return encoder if tuple(probes) == ("opera",) else f"{encoder} · {probe_name}"


def comparisons_table(results: dict) -> list:
  """Markdown lines: per comparison, probe and level, each task's difference with its interval and p."""
  lines = []
  for pair, by_probe in results.get("comparisons", {}).items():
    for probe_name, by_level in by_probe.items():
      for level, entry in by_level.items():
        lines += ["", f"**{pair}** ({probe_name} probe, {level} level): A - B", "",
                  "| task | difference | 95% interval | p |", "|---|---|---|---|"]
        rows = list(entry["tasks"].items()) + ([("mean over tasks", entry["mean_over_tasks"])]
                                               if "mean_over_tasks" in entry else [])
        for task, r in rows:
          mark = " *" if r["excludes_zero"] else ""
          lines.append(f"| {task} | {r['diff']:+.3f}{mark} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                       f"{r['p_value']:.3f} |")
  if lines:
    lines += ["", "Paired differences on the same folds and subjects; intervals and p-values from "
              f"{results['scoring'].get('bootstrap') or scoring.BOOTSTRAP_SAMPLES} Poisson resamples of the subjects "
              "(one draw per subject shared by both encoders and every task). * : the interval excludes 0."]
  return lines


def results_table(results: dict) -> str:
  """Markdown: one row per task and level, one column per encoder (best mean in bold), then the sizes."""
  names = results["encoders"]
  lines = ["| task | level | metric | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
  for task, by_encoder in results["tasks"].items():
    for level in scoring.levels_of(by_encoder):
      outcomes = {n: scoring.at_level(o, level) for n, o in by_encoder.items()}
      best = scoring.best_encoder(outcomes)
      metric = "MAE (MAPE)" if next(iter(outcomes.values()))["metric"] == "mae" else "AUROC"
      cells = [("**{}**" if n == best else "{}").format(scoring.cell_text(outcomes[n])) if n in outcomes else "-"
               for n in names]
      lines.append(f"| {task} | {level} | {metric} | " + " | ".join(cells) + " |")
  lines.append("\n" + scoring.explanation(results))
  lines += ["", "| task | folds | train | valid | test |", "|---|---|---|---|---|"]
  for task in results["tasks"]:
    sizes = results["task_info"][task]["sizes"]
    sides = " | ".join(scoring.side_text(sizes[side]) for side in ("train", "valid", "test"))
    lines.append(f"| {task} | {sizes['folds']} | {sides} |")
  lines.append("\nSizes: recordings / subjects (class counts); with several folds, train and valid are the "
               "mean per fold and test is every fold's test set together.")
  lines += comparisons_table(results)
  for task, info in results["task_info"].items():
    if info.get("note"):
      lines.append(f"\nNote on {task}: {info['note']}")
  for task, reason in results.get("skipped_tasks", {}).items():
    lines.append(f"\nSkipped {task}: {reason}")
  return "\n".join(lines) + "\n"
