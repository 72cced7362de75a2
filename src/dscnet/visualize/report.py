"""An HTML report of a training run: curves, per-class IoU, confusion matrices, examples.

The report reads what the trainer writes into a run directory::

    RUN_DIR/config.yaml
    RUN_DIR/scalars.jsonl              one JSON object per logged step: {"step": 10, "loss/total": ...}
    RUN_DIR/eval/<name>/metrics.json   (dscnet.evaluation.write_metrics) + confusion.png
    RUN_DIR/examples/index.json        [{"id": ..., "image": "examples/<id>_strip.png", "miou": ...}]

A box at the top lists the training-health warnings (``{"warnings": [...]}`` lines of
``scalars.jsonl``, see :mod:`dscnet.evaluation.health`) and every evaluation whose
``metrics.json`` predicts (nearly) only background.

It writes ``RUN_DIR/report.html`` plus the curve plots in ``RUN_DIR/report_files/``. Every link
is relative and stays inside the run directory, so the folder can be copied or zipped as is.
Any missing or unreadable part is shown as "not available" rather than failing the report.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dscnet.errors import DscnetError
from dscnet.evaluation.health import background_message, read_warnings
from dscnet.utils.io import atomic_write, atomic_write_text

REPORT_NAME = "report.html"
FILES_DIR = "report_files"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1240px; padding: 0 16px 40px; color: #222; line-height: 1.4; }
h1 { margin: 18px 0 4px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
.meta, .note { color: #666; font-size: 0.9em; }
.na { color: #a33; font-style: italic; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; font-size: 0.88em; margin: 8px 0 16px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; white-space: nowrap; }
td:first-child, th:first-child, .left { text-align: left; }
td.bar { width: 160px; padding: 3px 6px; }
td.bar div { background: #4a7fc1; height: 10px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.evalgrid { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.evalgrid > div { flex: 1 1 420px; min-width: 0; }
figure { margin: 0 0 18px; } figcaption { font-size: 0.88em; color: #444; }
.warn { background: #fff4e0; border: 2px solid #e0962b; border-radius: 4px; padding: 4px 16px; margin: 16px 0; }
.warn h2 { border: none; margin: 8px 0; color: #8a4b00; } .warn li { margin: 4px 0; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 0.82em; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(rel: str | Path) -> str:
    """A relative URL for a path inside the run dir (spaces and '#' escaped)."""
    return _e(quote(Path(rel).as_posix()))


def _pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "&ndash;"
    return f"{100.0 * value:.2f}"


def _na(what: str) -> str:
    return f'<p class="na">{_e(what)}: not available.</p>'


def _inside(run_dir: Path, rel: str) -> Path | None:
    """``run_dir / rel`` if it exists and stays inside ``run_dir`` (no ``..`` escapes)."""
    try:
        path = (run_dir / rel).resolve()
        path.relative_to(run_dir.resolve())
    except (ValueError, OSError):
        return None
    return path if path.is_file() else None


# --------------------------------------------------------------------------- curves
def read_scalars(path: Path) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """Parse ``scalars.jsonl`` into ``{key: [(step, value), ...]}``; also count bad lines.

    Lines that are not JSON objects are skipped (a run killed mid-write leaves a partial last
    line); non-numeric values are ignored; a record without ``step`` uses its line number.
    """
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    bad = 0
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            step = rec.get("step", lineno)
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                step = lineno
            for key, value in rec.items():
                if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                series[str(key)].append(
                    (float(step), float(value) if math.isfinite(value) else math.nan)
                )
    return dict(series), bad


def _group_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else "other"


def _group_order(group: str) -> tuple[int, str]:
    return ({"loss": 0, "val": 1}.get(group, 2 if group != "other" else 3), group)


def _plot_group(keys: list[str], series: dict[str, list[tuple[float, float]]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.8 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax, key in zip(axes, keys):
        pts = sorted(series[key])
        steps = [p[0] for p in pts]
        values = [p[1] for p in pts]
        ax.plot(steps, values, marker="o" if len(pts) <= 20 else None, markersize=3, linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _curves_section(run_dir: Path, files_dir: Path) -> str:
    path = run_dir / "scalars.jsonl"
    if not path.is_file():
        return _na("Training curves (no scalars.jsonl)")
    try:
        series, bad = read_scalars(path)
    except OSError as exc:
        return _na(f"Training curves (scalars.jsonl unreadable: {exc})")
    if not series:
        return _na("Training curves (scalars.jsonl holds no numeric values)")
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(series):
        groups[_group_of(key)].append(key)
    out = []
    if bad:
        out.append(f'<p class="note">{bad} unreadable line(s) in scalars.jsonl were skipped.</p>')
    for group in sorted(groups, key=_group_order):
        png = _plot_group(groups[group], series, files_dir / f"curves_{group}.png")
        rel = png.relative_to(run_dir)
        out.append(f'<h3>{_e(group)}</h3><img src="{_href(rel)}" alt="{_e(group)} curves">')
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{int(series[k][-1][0])}</td><td>{series[k][-1][1]:.5g}</td></tr>"
        for k in sorted(series, key=lambda k: (_group_order(_group_of(k)), k))
    )
    out.append(
        "<h3>last logged values</h3><table><tr><th>key</th><th>step</th><th>value</th></tr>"
        f"{rows}</table>"
    )
    return "\n".join(out)


# --------------------------------------------------------------------------- evaluation
def _eval_order(name: str) -> tuple[int, int, str]:
    """``final/...`` first, then periodic ``step_N/...`` newest first, then the rest."""
    head = name.split("/", 1)[0]
    if head == "final":
        return (0, 0, name)
    if head.startswith("step_") and head[5:].isdigit():
        return (1, -int(head[5:]), name)
    return (2, 0, name)


def _read_eval(
    run_dir: Path, max_evals: int = 8
) -> list[tuple[str, Path, dict[str, Any] | None, str]]:
    """``[(name, dir, metrics or None, error)]`` for the ``eval/**/metrics.json`` files.

    The trainer writes ``eval/step_<N>/<what>/`` periodically and ``eval/final/<what>/`` at
    the end; the final ones and the newest periodic ones are shown first (``max_evals``).
    """
    paths = sorted(
        (run_dir / "eval").rglob("metrics.json"),
        key=lambda p: _eval_order(p.parent.relative_to(run_dir / "eval").as_posix()),
    )
    found = []
    for path in paths[:max_evals]:
        name = path.parent.relative_to(run_dir / "eval").as_posix()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            found.append((name, path.parent, doc, ""))
        except (OSError, ValueError) as exc:
            found.append((name, path.parent, None, str(exc)))
    return found


def _per_class_table(doc: dict[str, Any]) -> str:
    names = doc.get("class_names")
    iou = doc.get("iou")
    if not isinstance(names, list) or not isinstance(iou, list) or len(names) != len(iou):
        return _na("Per-class table (class_names / iou missing in metrics.json)")
    k = len(names)

    def col(key: str) -> list[Any]:
        v = doc.get(key)
        return v if isinstance(v, list) and len(v) == k else [None] * k

    precision, recall, pixels = col("precision"), col("recall"), col("gt_pixels")
    rows = []
    for i, name in enumerate(names):
        v = iou[i]
        width = (
            max(0.0, min(100.0, 100.0 * v))
            if isinstance(v, (int, float)) and math.isfinite(v)
            else 0.0
        )
        px = "&ndash;" if not isinstance(pixels[i], int) else f"{pixels[i]:,}"
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{_pct(v)}</td>"
            f'<td class="bar"><div style="width:{width:.1f}%"></div></td>'
            f"<td>{_pct(precision[i])}</td><td>{_pct(recall[i])}</td><td>{px}</td></tr>"
        )
    return (
        "<table><tr><th>class</th><th>IoU %</th><th></th><th>precision %</th><th>recall %</th>"
        f"<th>GT pixels</th></tr>{''.join(rows)}</table>"
        '<p class="note">&ndash; = undefined (class absent from ground truth and/or '
        "prediction); mIoU averages the defined IoUs.</p>"
    )


def _eval_section(run_dir: Path, evals: list) -> str:
    if not evals:
        return _na("Evaluation results (no eval/*/metrics.json)")
    summary = []
    body = []
    for name, folder, doc, err in evals:
        anchor = f"eval-{quote(name, safe='')}"
        if doc is None:
            summary.append(
                f'<tr><td><a href="#{_e(anchor)}">{_e(name)}</a></td>'
                f'<td colspan="4" class="na">unreadable</td></tr>'
            )
            body.append(
                f'<h3 id="{_e(anchor)}">{_e(name)}</h3>'
                + _na(f"metrics.json could not be read ({err})")
            )
            continue
        extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
        protocol = doc.get("title") or ", ".join(f"{k}={v}" for k, v in extra.items())
        summary.append(
            f'<tr><td><a href="#{_e(anchor)}">{_e(name)}</a></td><td>{_pct(doc.get("miou"))}</td>'
            f"<td>{_pct(doc.get('pixel_accuracy'))}</td><td>{_pct(doc.get('mean_accuracy'))}</td>"
            f'<td class="left">{_e(protocol)}</td></tr>'
        )
        extra_html = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in extra.items())
        cm = _inside(run_dir, (folder / "confusion.png").relative_to(run_dir).as_posix())
        if cm:
            # Linked to the full-size PNG: an 81-class matrix needs zooming.
            src = _href(cm.relative_to(run_dir.resolve()))
            cm_html = f'<a href="{src}"><img src="{src}" alt="confusion matrix {_e(name)}"></a>'
        else:
            cm_html = _na("Confusion matrix image")
        names = doc.get("class_names")
        # Side by side for VOC-sized class lists; stacked (full width) for COCO-sized ones.
        layout = "evalgrid" if not isinstance(names, list) or len(names) <= 30 else "evalstack"
        body.append(
            f'<h3 id="{_e(anchor)}">{_e(name)}</h3>'
            f"<p>{_e(doc.get('title', ''))} &mdash; mIoU <b>{_pct(doc.get('miou'))}</b>, "
            f"fwIoU {_pct(doc.get('fw_iou'))}</p>"
            + (f'<ul class="note">{extra_html}</ul>' if extra_html else "")
            + f'<div class="{layout}"><div>{_per_class_table(doc)}</div><div>{cm_html}</div></div>'
        )
    head = (
        "<table><tr><th>evaluation</th><th>mIoU %</th><th>pixel acc %</th><th>mean acc %</th>"
        '<th class="left">protocol</th></tr>' + "".join(summary) + "</table>"
    )
    return head + "\n".join(body)


def _health_box(run_dir: Path, evals: list) -> str:
    """A warning box: the training's health warnings and the all-background evaluations."""
    items = [
        f"<li><b>{_e(w.condition)}</b> (step {w.step}): {_e(w.message)}</li>"
        for w in read_warnings(run_dir / "scalars.jsonl")
        # Evaluations are judged below from their metrics.json, which also covers `dscnet eval`.
        if not w.condition.startswith("eval_")
    ]
    for name, _folder, doc, _err in evals:
        text = background_message(doc, f"evaluation {name}") if doc is not None else None
        if text:
            items.append(f"<li><b>all background</b>: {_e(text)}</li>")
    if not items:
        return ""
    return (
        f'<div class="warn" id="health"><h2>Training health: {len(items)} warning(s)</h2>'
        f"<ul>{''.join(items)}</ul></div>"
    )


# --------------------------------------------------------------------------- examples
def _examples_section(run_dir: Path, max_examples: int) -> str:
    index = run_dir / "examples" / "index.json"
    if not index.is_file():
        return _na("Examples (no examples/index.json)")
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _na(f"Examples (examples/index.json unreadable: {exc})")
    if not isinstance(entries, list):
        return _na("Examples (examples/index.json is not a list)")
    entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("image"), str)]
    if not entries:
        return _na("Examples (examples/index.json lists none)")

    def worst_first(e: dict[str, Any]) -> float:
        v = e.get("miou")
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else math.inf  # unknown scores go last

    entries.sort(key=worst_first)
    shown = entries[:max_examples]
    figs = []
    for e in shown:
        path = _inside(run_dir, e["image"])
        caption = f"{_e(e.get('id', Path(e['image']).stem))} &mdash; mIoU {_pct(e.get('miou'))} %"
        if path is None:
            figs.append(
                f'<figure><p class="na">image {_e(e["image"])} missing or outside the run directory</p>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        else:
            rel = path.relative_to(run_dir.resolve())
            figs.append(
                f'<figure><img src="{_href(rel)}" alt="example {_e(e.get("id", ""))}" '
                f'loading="lazy"><figcaption>{caption}</figcaption></figure>'
            )
    note = (
        f'<p class="note">Worst {len(shown)} of {len(entries)} images by per-image mIoU; '
        "columns: image | CAMs of the tagged classes | pseudo label | prediction | truth.</p>"
    )
    return note + "\n".join(figs)


def _config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return _na("Config (no config.yaml)")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return _na(f"Config (config.yaml unreadable: {exc})")
    return f"<details><summary>config.yaml</summary><pre>{_e(text)}</pre></details>"


def write_report(run_dir: str | Path, max_examples: int = 48) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/report_files/``); return its path.

    Args:
        run_dir: a training run directory (see the module docstring for what it may hold).
        max_examples: how many of the worst examples to show.

    Raises:
        DscnetError: ``run_dir`` is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DscnetError(f"run directory '{run_dir}' does not exist or is not a directory")
    files_dir = run_dir / FILES_DIR
    files_dir.mkdir(exist_ok=True)
    sections = [
        ("curves", "Training curves", _curves_section(run_dir, files_dir)),
        ("evaluation", "Evaluation", _eval_section(run_dir, _read_eval(run_dir))),
        ("examples", "Examples, worst first", _examples_section(run_dir, max_examples)),
        ("config", "Config", _config_section(run_dir)),
    ]
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(t)}</h2>\n{s}</section>' for sid, t, s in sections
    )
    name = run_dir.resolve().name
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dscnet report: {_e(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>dscnet run report: {_e(name)}</h1>"
        f'<p class="meta">generated {_e(time.strftime("%Y-%m-%d %H:%M:%S"))} from '
        f"<code>{_e(run_dir.resolve())}</code></p><nav>{nav}</nav>\n"
        f"{_health_box(run_dir, _read_eval(run_dir, max_evals=10**6))}{body}\n</body></html>\n"
    )
    return atomic_write_text(run_dir / REPORT_NAME, page)
