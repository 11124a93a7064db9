"""The HTML report: every figure and the trials table in one self-contained file.

:func:`build_report` writes one HTML file with plotly.js inlined once (so it opens with no network),
the figures of :mod:`dashboards.figures`, a table of the paper presets against the front and a sortable,
filterable table of every trial. :func:`render_report` returns the same page as a string; the live
server (:mod:`dashboards.serve`) uses it with plotly.js served separately and an auto-refresh script.

The page records JavaScript errors: ``<html data-js-errors="...">`` collects ``window.onerror``,
unhandled promise rejections and ``console.error`` messages, and after load ``data-plots`` counts the
rendered plotly figures (``.main-svg`` roots) and ``data-ready="1"`` is set. Headless checks read them
from the DOM.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nas import objectives
from nas.study import display_url, hypervolume

from .data import StudyData, load_data, preset_comparison
from .figures import (
    attention_breakdown_figure,
    curves_figure,
    hypervolume_figure,
    importance_figure,
    parallel_coordinates_figure,
    pareto_2d_figures,
    pareto_figure,
)

__all__ = ["build_report", "render_report", "is_report", "trials_table_html", "presets_table_html", "report_figures"]

#: Written in the ``<head>`` of every report: how ``build_report`` recognises a file it may replace.
GENERATOR_META = '<meta name="generator" content="vitnas">'

_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "scale": 2}}

_ERROR_HOOK = """<script>
(function(){var d=document.documentElement, errs=[];
function rec(m){errs.push(String(m).slice(0,300)); d.setAttribute('data-js-errors', errs.join(' | '));}
window.addEventListener('error', function(e){rec('error: '+(e.message||e.type)+\
(e.filename?' @'+e.filename+':'+e.lineno:''));});
window.addEventListener('unhandledrejection', function(e){rec('unhandled rejection: '+(e.reason&&e.reason.message||e.reason));});
var ce=console.error; console.error=function(){rec('console.error: '+Array.prototype.join.call(arguments,' ')); \
return ce.apply(console, arguments);};
d.setAttribute('data-js-errors','');})();
</script>"""

_READY = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  var d=document.documentElement;
  d.setAttribute('data-plots', String(document.querySelectorAll('.js-plotly-plot').length));
  d.setAttribute('data-main-svg', String(document.querySelectorAll('.main-svg').length));
  d.setAttribute('data-gl', String(document.querySelectorAll('.js-plotly-plot canvas').length));
  d.setAttribute('data-ready','1');}, 500); });
</script>"""

_TABLE_JS = """<script>
(function(){
  var table=document.getElementById('trials'); if(!table) return;
  var body=table.tBodies[0], heads=table.tHead.rows[0].cells, dir={};
  function key(td){var v=td.getAttribute('data-s'); if(v===null) v=td.textContent;
    var f=parseFloat(v); return (v!=='' && !isNaN(f) && isFinite(v)) ? f : v.toLowerCase();}
  Array.prototype.forEach.call(heads, function(th, c){ th.addEventListener('click', function(){
    var rows=Array.prototype.slice.call(body.rows), s=dir[c]=-(dir[c]||-1);
    rows.sort(function(a,b){var x=key(a.cells[c]), y=key(b.cells[c]);
      if(x==='' || x===undefined) return 1; if(y==='' || y===undefined) return -1;
      if(typeof x!==typeof y){x=String(x); y=String(y);} return x<y?-s:x>y?s:0;});
    var frag=document.createDocumentFragment(); rows.forEach(function(r){frag.appendChild(r);}); body.appendChild(frag);
    Array.prototype.forEach.call(heads, function(h){h.classList.remove('asc','desc');});
    th.classList.add(s>0?'asc':'desc'); }); });
  var box=document.getElementById('trial-filter');
  if(box) box.addEventListener('input', function(){ var q=box.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function(r){ \
r.style.display = (!q || r.textContent.toLowerCase().indexOf(q)>=0) ? '' : 'none'; }); });
})();
</script>"""

_CSS = """
body{font-family:Inter,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2a44;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600} header .sub{opacity:.8;font-size:13px}
main{max-width:1500px;margin:0 auto;padding:16px 24px 40px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);min-width:120px}
.card .v{font-size:20px;font-weight:600} .card .k{font-size:11px;color:#667;text-transform:uppercase;letter-spacing:.04em}
section{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:16px 0;padding:8px 12px 12px}
section h2{font-size:15px;margin:8px 6px 2px} section p.how{font-size:12.5px;color:#556;margin:2px 6px 6px}
.row{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px} \
@media(max-width:1100px){.row{grid-template-columns:1fr}}
table{border-collapse:collapse;font-size:12px;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e6e8ec;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
#trials th{position:sticky;top:0;background:#eef0f4;cursor:pointer;user-select:none}
#trials th.asc::after{content:" \\25B2"} #trials th.desc::after{content:" \\25BC"}
.scroll{max-height:520px;overflow:auto;border:1px solid #e6e8ec;border-radius:6px}
tr.front td{background:#eef6ff} tr.fail td{background:#fff0f0;color:#8a1c1c} tr.running td{color:#946200}
tr.violating td:first-child{border-left:3px solid #e0002a}
.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;background:#e8eaef}
.badge.COMPLETE{background:#e2f3e6} .badge.FAIL{background:#fbdada} .badge.RUNNING{background:#fff1c9}
.badge.PRUNED{background:#ececec} .badge.WAITING{background:#e7ecff}
.pos{color:#127a36;font-weight:600} .neg{color:#a11}
input#trial-filter{margin:4px 6px 8px;padding:5px 8px;width:320px;border:1px solid #ccd;border-radius:5px}
footer{font-size:11px;color:#778;text-align:center;padding:10px}
"""


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return html.escape(str(v))


def trials_table_html(study: optuna.Study | StudyData, max_rows: int | None = None) -> str:
    """An HTML fragment: a sortable (click a header), filterable table of every trial.

    Columns: trial, state, preset, front, each objective (accuracy, params, throughput), FLOPs, peak memory,
    wall seconds, constraint, genes, failure reason. Rows of front members, failed, running and violating trials are
    styled apart (classes ``front``, ``fail``, ``running``, ``violating``). ``max_rows`` keeps the newest
    rows only (default: all).
    """
    from .data import describe_genes, is_violating

    data = load_data(study)
    spec = objectives.spec()
    trials = data.trials if max_rows is None else data.trials[-max_rows:]
    genes = dict(zip(data.numbers.tolist(), data.genes))  # complete trials' genes, described once in load_data
    cols = [("trial", True), ("state", False), ("preset", False), ("front", False), *((o.header, True) for o in spec),
            ("FLOPs", True), ("peak memory MB", True), ("wall s", True), ("constraint", True), ("genes", False),
            ("failure reason", False)]
    head = "".join(f'<th class="num">{c}</th>' if num else f"<th>{c}</th>" for c, num in cols)
    rows = []
    for t in trials:
        a = t.user_attrs
        vals = t.values if (t.values and len(t.values) == len(spec)) else [None] * len(spec)
        on_front = t.number in data.front
        viol = is_violating(t)
        cls = [c for c, ok in (("front", on_front), ("fail", t.state.name == "FAIL"),
                               ("running", t.state.name == "RUNNING"), ("violating", viol)) if ok]
        peak = a.get("peak_memory")
        cons = a.get("constraint")
        cells = [
            f'<td class="num">{t.number}</td>',
            f'<td><span class="badge {t.state.name}">{t.state.name.lower()}</span></td>',
            f"<td>{html.escape(str(a.get('preset') or ''))}</td>",
            f"<td>{'★' if on_front else ''}</td>",
            *(f'<td class="num" data-s="{_fmt(v)}">{o.format(v, "web", missing="")}</td>'
              for o, v in zip(spec, vals, strict=True)),
            f'<td class="num" data-s="{_fmt(a.get("flops"), "")}">{_fmt(a.get("flops"), ",")}</td>',
            f'<td class="num">{_fmt(peak / 2**20 if isinstance(peak, (int, float)) else None, ".1f")}</td>',
            f'<td class="num">{_fmt(a.get("wall_seconds"), ".1f")}</td>',
            f'<td class="num">{_fmt(cons, "g") if isinstance(cons, (int, float)) else ""}</td>',
            f"<td>{html.escape(genes[t.number] if t.number in genes else describe_genes(t, data))}</td>",
            f"<td>{html.escape(str(a.get('fail_reason') or ''))}</td>",
        ]
        rows.append(f'<tr class="{" ".join(cls)}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>")
    return ('<input id="trial-filter" type="search" placeholder="filter rows (e.g. mhsa, fail, deit)…">'
            f'<div class="scroll"><table id="trials"><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(rows) + "</tbody></table></div>" + _TABLE_JS)


def presets_table_html(study: optuna.Study | StudyData) -> str:
    """An HTML table: each paper preset against the best front member at equal or lower params."""
    rows = preset_comparison(study)
    if not rows:
        return "<p class='how'>No paper presets in this study (a search enqueues them unless --no-presets).</p>"
    spec = objectives.spec()

    def heads(prefix: str = "") -> str:  # a column per objective, headed by its unit where it has one
        return "".join(f"<th class='num'>{prefix}{o.unit or o.name}</th>" for o in spec)

    def cells(r: dict[str, Any], prefix: str = "") -> str:
        return "".join(f"<td class='num'>{o.format(r[prefix + o.name], 'web')}</td>" for o in spec)

    out = ["<table><thead><tr><th>preset</th><th class='num'>trial</th>" + heads()
           + "<th class='num'>best front trial at ≤ params</th>" + heads("its ")
           + "<th class='num'>accuracy gain</th><th class='num'>speed-up</th></tr></thead><tbody>"]
    for r in rows:
        if "accuracy" not in r:
            out.append(f"<tr><td>{html.escape(r['preset'])}</td><td class='num'>{r['trial']}</td>"
                       f"<td colspan='{2 * len(spec) + 3}'>{r['state'].lower()}: no objectives</td></tr>")
            continue
        gain = 100 * r["delta_accuracy"]
        cls = "pos" if gain > 0 else ""
        out.append(
            f"<tr><td><b>{html.escape(r['preset'])}</b>{' (on the front)' if r['on_front'] else ''}</td>"
            f"<td class='num'>{r['trial']}</td>{cells(r)}<td class='num'>{r['best_trial']}</td>{cells(r, 'best_')}"
            f"<td class='num {cls}'>{gain:+.2f} pts</td>"
            f"<td class='num'>{'' if r['speedup'] is None else format(r['speedup'], '.2f') + '×'}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def report_figures(study: optuna.Study | StudyData, *, importance_trials: int = 400,
                   curve_trials: int | None = None) -> dict[str, go.Figure]:
    """Every figure of the report, by section key, from one snapshot of the study."""
    data = load_data(study)
    return {
        "pareto3d": pareto_figure(data),
        "pareto2d": pareto_2d_figures(data),
        "hypervolume": hypervolume_figure(data),
        "parcoords": parallel_coordinates_figure(data),
        "importance": importance_figure(data, max_trials=importance_trials),
        "curves": curves_figure(data, max_trials=curve_trials),
        "attention": attention_breakdown_figure(data),
    }


_SECTIONS = (
    ("pareto2d", "Pareto front, pairwise",
     "Each panel is one pair of objectives. Strong dots: the Pareto front (no other trial is at least as good in all "
     "three objectives and better in one), coloured by attention type; faded grey: dominated trials; red ×: trials that "
     "violate a constraint; black diamonds: the papers' own designs, labelled with how many accuracy points the best "
     "front member with equal or fewer parameters gains. Up and left is better for accuracy vs params; up and right "
     "for accuracy vs throughput; down and right for throughput vs params."),
    ("pareto3d", "Pareto front in 3-D", "Drag to rotate, scroll to zoom; hover a point for its trial number and genes."),
    ("hypervolume", "Progress: hypervolume",
     "The volume of objective space dominated by the front (bigger is better). Flat steps: trials that did not improve "
     "the front."),
    ("importance", "Which genes matter",
     "Importance of each gene for each objective (Optuna's importance evaluator, on a sample of complete trials)."),
    ("parcoords", "Genes → objectives", "One line per complete trial; drag along any axis to keep a range."),
    ("curves", "Learning curves", "Validation accuracy after each proxy-training epoch; front members drawn bold, "
     "failed or running trials dotted grey."),
    ("attention", "By attention type", "Spread of each objective per attention mechanism."),
)


def _fig_div(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config=_PLOT_CONFIG, div_id=div_id,
                       default_width="100%")


def render_report(study: optuna.Study | StudyData, *, plotlyjs: str = "inline", refresh: float | None = None,
                  state_url: str | None = None, state: str | None = None, source: str | None = None, importance_trials: int = 400,
                  curve_trials: int | None = None) -> str:
    """The report page as a string.

    ``plotlyjs``: ``"inline"`` (plotly.js embedded once, the page works offline) or a URL for a
    ``<script src>``. ``refresh`` (seconds): add a script that polls ``state_url`` and reloads the page
    when the study changed (falls back to a plain reload every ``refresh`` seconds without it).
    ``state``: the study signature the page was drawn at (``data-state`` on ``<html>``; the polling
    script reloads when ``state_url`` answers something else). ``source``: storage URL shown in the header
    (any password masked, :func:`nas.study.display_url`).
    """
    data = load_data(study)
    figs = report_figures(data, importance_trials=importance_trials, curve_trials=curve_trials)
    counts = data.counts()
    front_trials = [t for t in data.complete if t.number in data.front]
    hv = hypervolume(front_trials, data.bounds)
    first = objectives.primary()
    best = max((first.sign * t.values[0] for t in data.complete), default=None)
    cards = [("trials", counts["total"]), ("complete", counts.get("complete", 0)), ("failed", counts.get("fail", 0)),
             ("running", counts.get("running", 0)), ("front members", len(data.front)),
             ("hypervolume (fraction of the cube)", f"{hv:.4f}"),
             ("shapes", html.escape(_shapes(data.user_attrs))),
             (f"best {first.name}", first.format(None if best is None else first.sign * best)),
             ("violating", int(data.violating.sum()))]
    if counts.get("pruned"):
        cards.insert(4, ("pruned", counts["pruned"]))
    cards_html = "".join(f"<div class='card'><div class='v'>{v}</div><div class='k'>{k}</div></div>" for k, v in cards)
    divs = {key: _fig_div(fig, f"fig-{key}") for key, fig in figs.items()}
    titles = {k: (t, h) for k, t, h in _SECTIONS}

    def sec(key: str) -> str:
        return f"<section><h2>{titles[key][0]}</h2><p class='how'>{titles[key][1]}</p>{divs[key]}</section>"

    presets_sec = ("<section><h2>Paper presets against the front</h2><p class='how'>For each paper's design, the "
                   "front member with the highest accuracy among those with at most as many parameters.</p>"
                   + presets_table_html(data) + "</section>")
    sections = [sec("pareto2d"), presets_sec,
                f"<div class='row'><div>{sec('pareto3d')}</div><div>{sec('hypervolume')}{sec('curves')}</div></div>",
                sec("importance"), sec("parcoords"), sec("attention")]
    sections.append("<section><h2>All trials</h2><p class='how'>Click a column header to sort; type to filter. "
                    "Blue rows: front members (★); red: failed (with the reason); amber: running; red left edge: "
                    "violates a constraint (user attribute <code>constraint</code> &gt; 0).</p>"
                    + trials_table_html(data) + "</section>")
    if plotlyjs == "inline":
        js = f"<script type=\"text/javascript\">{get_plotlyjs()}</script>"
    else:
        js = f'<script src="{html.escape(plotlyjs)}"></script>'
    live = ""
    if refresh:
        ms = int(max(refresh, 0.5) * 1000)
        if state_url:
            live = (f"<script>(function(){{var sig=document.documentElement.getAttribute('data-state');"
                    f"setInterval(function(){{fetch('{html.escape(state_url)}',{{cache:'no-store'}})"
                    f".then(function(r){{return r.text();}})"
                    f".then(function(s){{if(s && s!==sig) location.reload();}}).catch(function(){{}});}}, {ms});}})();</script>")
        else:
            live = f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">'
    state_attr = f" data-state='{html.escape(state, quote=True)}'" if state else ""
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    sub = f"{counts['total']} trials · generated {when}" + (f" · {html.escape(display_url(source))}" if source else "")
    if refresh:
        sub += f" · live: redraws as trials finish (checks every {refresh:g} s)"
    dataset = data.user_attrs.get("dataset")
    title = f"vitnas — study {html.escape(data.study_name)}" + (f" on {html.escape(str(dataset))}" if dataset else "")
    footer = ("</main><footer>objectives: " + ", ".join(f"{o.name} ({o.mode})" for o in objectives.spec()) + " · "
              "front = Optuna best_trials · made by vitnas dashboards</footer>" + _READY + live + "</body></html>")
    return "".join([  # one join: the page is megabytes (plotly.js, the figures' data, the table)
        f"<!DOCTYPE html>\n<html lang='en'{state_attr}><head><meta charset='utf-8'>{GENERATOR_META}"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
        f"{_ERROR_HOOK}<style>{_CSS}</style>", js, f"</head><body><header><h1>{title}</h1>"
        f"<div class='sub'>{sub}</div></header><main><div class='cards'>{cards_html}</div>",
        "\n".join(sections), footer])


def is_report(path: str | Path) -> bool:
    """Whether the file at ``path`` is a vitnas report (the ``generator`` marker near its start, or the
    footer of a report written before the marker existed near its end)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read()
    except OSError:
        return False
    return GENERATOR_META.encode() in head or (head.startswith(b"<!DOCTYPE html>")
                                                and b"made by vitnas dashboards</footer>" in tail)


def _check_target(out: Path, study: Any, source: str | None, force: bool) -> None:
    """Refuse to write over the study's storage, any SQLite database, or (unless ``force``) an existing
    file that is not a vitnas report."""
    if out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a folder; give an HTML file name")
    if not out.exists():
        return
    try:
        with open(out, "rb") as f:
            magic = f.read(16)
    except OSError as exc:
        raise ValueError(f"out: cannot read {str(out)!r} ({exc.strerror or exc})") from None
    if magic.startswith(b"SQLite format 3"):
        raise ValueError(f"out: {str(out)!r} is an SQLite database (a study storage); choose another --out")
    if not force and not is_report(out):
        raise ValueError(f"out: {str(out)!r} exists and is not a vitnas report; choose another --out "
                         "or pass --force to overwrite it")


def _shapes(attrs: dict[str, Any]) -> str:
    """``accuracy @16 px · efficiency @112 px, batch 8``: which shape each figure belongs to."""
    from nas.study import describe_shape

    target = attrs.get("target") or {"img_size": attrs.get("img_size"), "batch": 64, "dtype": "auto"}
    return f"accuracy @{attrs.get('img_size')} px · efficiency @{describe_shape(target)}"


def build_report(study: optuna.Study | StudyData, out_path: str | Path, *, force: bool = False, **kwargs: Any) -> Path:
    """Write the self-contained HTML report of ``study`` to ``out_path`` (parents created); returns the path.

    Keyword arguments go to :func:`render_report` (``importance_trials``, ``curve_trials``, ``source``).
    The page is written to a temporary file in the same folder, then renamed over ``out_path``. An existing
    ``out_path`` is replaced only when it is a vitnas report (:func:`is_report`) or with ``force``; the
    study's storage and any SQLite database are never replaced.

    Raises:
        ValueError: the file cannot be written, ``out_path`` is refused (see above), or the study lacks
            vitnas' three objectives.
    """
    out = Path(out_path).expanduser()
    _check_target(out, study, kwargs.get("source"), force)
    page = render_report(study, **kwargs)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        # Created with 0666 so the kernel applies the umask, as for any new file; a replaced file keeps its mode.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        if out.exists():
            shutil.copymode(out, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise ValueError(f"out: cannot write {str(out)!r} ({exc.strerror or exc})") from None
    return out
