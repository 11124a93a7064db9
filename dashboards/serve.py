"""The live dashboard: a small ``http.server`` that redraws the report from the storage as trials finish.

``GET /`` returns the report (regenerated when the study changed since the last one, else cached);
``GET /state`` returns a short signature of the study (trial counts by state), which the page polls every
``refresh`` seconds to reload itself when a trial finished; ``GET /plotly.min.js`` serves plotly.js once
(cached by the browser) instead of inlining it in every reload; ``GET /report.html`` is the
self-contained report, for saving. Binds ``127.0.0.1`` unless another ``host`` is given.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import optuna
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from nas.study import load_study

from .data import StudyData, load_data
from .report import render_report

__all__ = ["DashboardServer", "make_server", "serve", "study_signature"]


def study_signature(study: optuna.Study) -> str:
    """Counts of trials per state, e.g. ``"COMPLETE=12,FAIL=1,PRUNED=0,RUNNING=2,WAITING=0,total=15"``.

    Cheap after the first call: Optuna's cached storage re-reads only unfinished and new trials.
    """
    counts = {s: 0 for s in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.RUNNING,
                             TrialState.WAITING)}
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return ",".join(f"{s.name}={n}" for s, n in counts.items()) + f",total={len(trials)}"


class DashboardServer(ThreadingHTTPServer):
    """HTTP server holding one study and the last rendered page."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], study: optuna.Study, source: str, refresh: float,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(address, _Handler)
        self.study = study
        self.source = source  # render_report masks its password in the page header
        self.refresh = refresh
        self.log = log
        self._lock = threading.Lock()
        self._page: bytes | None = None
        self._page_sig: str | None = None
        self._data: StudyData | None = None  # the last snapshot drawn (its parsed genes are reused)
        self._plotlyjs: bytes | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def signature(self) -> str:
        return study_signature(self.study)

    def page(self) -> bytes:
        """The live report, regenerated only when the study signature changed, from the trials that changed:
        the study's storage is read through Optuna's trial cache (only new and unfinished trials) and the
        genes of finished trials are not parsed again (:func:`load_data` with ``previous``)."""
        with self._lock:
            sig = self.signature()
            if self._page is None or sig != self._page_sig:
                self._data = load_data(self.study, previous=self._data)  # only new and unfinished trials are read
                text = render_report(self._data, plotlyjs="plotly.min.js", refresh=self.refresh, state_url="state",
                                     state=sig, source=self.source)
                self._page, self._page_sig = text.encode("utf-8"), sig
                if self.log:
                    self.log(f"redrawn: {sig}")
            return self._page

    def plotlyjs(self) -> bytes:
        if self._plotlyjs is None:
            self._plotlyjs = get_plotlyjs().encode("utf-8")
        return self._plotlyjs


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def _send(self, body: bytes, ctype: str, cache: str = "no-store", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                self._send(self.server.page(), "text/html; charset=utf-8")
            elif path == "/state":
                self._send(self.server.signature().encode(), "text/plain; charset=utf-8")
            elif path == "/plotly.min.js":
                self._send(self.server.plotlyjs(), "application/javascript", cache="public, max-age=86400")
            elif path == "/report.html":
                self._send(render_report(self.server.study, source=self.server.source).encode("utf-8"),
                           "text/html; charset=utf-8")
            else:
                self._send(b"not found", "text/plain", status=404)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # keep serving; show the error instead of a dropped connection
            msg = f"dashboard error: {exc.__class__.__name__}: {exc}".encode()
            try:
                self._send(msg, "text/plain; charset=utf-8", status=500)
            except OSError:
                pass

    def log_message(self, fmt: str, *args) -> None:  # quiet: no per-request lines
        return


def make_server(storage: str, study_name: str, host: str = "127.0.0.1", port: int = 8050, refresh: float = 5.0,
                log: Callable[[str], None] | None = None) -> DashboardServer:
    """A :class:`DashboardServer` for ``study_name`` in ``storage``, bound but not yet serving.

    Raises:
        ValueError: unknown storage or study (:class:`nas.study.StudyError`), a port outside 0..65535,
            ``refresh`` <= 0, or the address cannot be bound (in use, no permission).
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: must be an integer in 0..65535, got {port!r}")
    if not isinstance(refresh, (int, float)) or not math.isfinite(refresh) or refresh <= 0:
        raise ValueError(f"refresh: must be a positive number of seconds, got {refresh!r}")
    study = load_study(storage, study_name)
    try:
        return DashboardServer((host, port), study, storage, refresh, log=log)
    except OSError as exc:
        raise ValueError(f"port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(storage: str, study_name: str, host: str = "127.0.0.1", port: int = 8050, refresh: float = 5.0,
          log: Callable[[str], None] | None = None) -> None:
    """Serve the live dashboard until interrupted (Ctrl-C). See :func:`make_server` for the errors."""
    server = make_server(storage, study_name, host=host, port=port, refresh=refresh, log=log)
    (log or (lambda m: print(m, file=sys.stderr)))(f"serving study {study_name!r} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
