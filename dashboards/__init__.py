"""What a person looks at: plotly figures and the HTML report of a vitnas study, read from its storage.

Works on a finished search and on one still running (every call reads the storage afresh). From Python
(e.g. in a notebook)::

    from nas.study import load_study
    import dashboards

    study = load_study("sqlite:///runs/vitnas.db", "digits")
    dashboards.pareto_figure(study).show()          # 3-D front
    dashboards.pareto_2d_figures(study).show()      # the three pairwise projections
    dashboards.build_report(study, "report.html")   # everything, one offline HTML file

Figures: :func:`pareto_figure`, :func:`pareto_2d_figures`, :func:`hypervolume_figure`,
:func:`parallel_coordinates_figure`, :func:`importance_figure`, :func:`curves_figure`,
:func:`attention_breakdown_figure`; HTML: :func:`trials_table_html`, :func:`presets_table_html`,
:func:`build_report`, :func:`render_report`; live view: :func:`serve`. Each accepts an ``optuna.Study``
or a :class:`StudyData` snapshot (:func:`load_data`), so several figures can share one storage read.

Marks used everywhere: the Pareto front is Optuna's ``best_trials``; paper presets are the trials with a
``preset`` user attribute; a trial violates a constraint when its user attribute ``constraint`` is > 0
(vitnas sets none yet; a search with budgets would record the excess there) or when Optuna's
``constraints`` system attribute has a value > 0; failed trials show their ``fail_reason`` in the table.
:mod:`dashboards.demo` makes a synthetic study with realistic values for trying all of this.
"""

from .data import (
                   ATTENTION_COLORS,
                   StudyData,
                   describe_genes,
                   gene_features,
                   hypervolume_series,
                   is_violating,
                   load_data,
                   preset_comparison,
)
from .figures import (
                   attention_breakdown_figure,
                   curves_figure,
                   gene_importances,
                   hypervolume_figure,
                   importance_figure,
                   parallel_coordinates_figure,
                   pareto_2d_figures,
                   pareto_figure,
)
from .report import build_report, presets_table_html, render_report, report_figures, trials_table_html
from .serve import make_server, serve, study_signature

__all__ = [
    "ATTENTION_COLORS", "StudyData", "load_data", "describe_genes", "gene_features", "is_violating",
    "hypervolume_series", "preset_comparison", "pareto_figure", "pareto_2d_figures", "hypervolume_figure",
    "parallel_coordinates_figure", "importance_figure", "gene_importances", "curves_figure",
    "attention_breakdown_figure", "trials_table_html", "presets_table_html", "report_figures", "render_report",
    "build_report", "serve", "make_server", "study_signature",
]
