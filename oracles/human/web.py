"""The labelling page: a small Flask application served from a thread of the run.

Routes (every one needs the run's token, without it: 403, but ``/favicon.ico``, which browsers ask for without
it: 204, no icon; and a Host header that names the page's own address, otherwise: 400, see
address.accepted_hosts):

- ``GET /?token=T``: the page (server-rendered; its script polls ``/state`` and draws ``/view``, the open
  batch's cards updated in place so that focus stays);
- ``GET /view?token=T``: the page's main part (progress, learning curve, the open batch);
- ``GET /state?token=T``: ``{"version", "phase", ...}``: the page refreshes when the version changes; the
  open batch's round (``batch``, else null), the round's step and how many labels its model learns from; also
  each finished round's ``stop_kappa`` (``kappa``; null where NaN), what the page says about it
  (``stability``, see ``stability``) and why the run ended early (``stopped_because``, else null);
- ``GET /image/<pool position>.png?token=T``: an image of the open batch, PNG-encoded from memory;
- ``GET /original/<pool position>?token=T``: with --dataset folder, the file that image was read from (the
  oracle maps the position to the file the run was given; a browser never names a path);
- ``GET /review?token=T``: every answer the person gave in the recorded rounds, to correct one;
- ``POST /answer``, ``POST /undo`` (the open batch's last answer), ``POST /correct`` (an earlier round's
  answer), ``POST /submit``: JSON bodies, the token in the ``X-Token`` header (a cross-site form cannot set
  it, nor send JSON without a preflight), refused ones as ``{"error": ...}``.

The server listens on --human_host (127.0.0.1 by default: this machine only) at --human_port (0: any
free port). Responses are not cached and send no referrer (the token is in the address). A request body
nested too deeply for json's decoder is refused like any malformed one (400), not a crash (500).
"""
from __future__ import annotations

import hmac
import logging
import math
import secrets
import threading
import time

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.serving import WSGIRequestHandler, make_server

from config import STABLE_KAPPA
from oracles.human.address import LOOPBACK_NAMES, accepted_hosts, host_name, listen
from results import OutputError
from stopping import reached

# The right: kappa's 0..1 labels (the grid is both axes'); the bottom: ticks, title, legend
# (the top: the latest value's line, above the plot, not over the lines)
CURVE_W, CURVE_H, PAD_L, PAD_R, PAD_T, PAD_B = 420, 220, 44, 32, 26, 50
TICK_MIN_PX = 34  # the least room between two labels of the x axis
LEGEND_CHAR_PX, LEGEND_GAP = 6, 16  # about a character of the legend's 11 px text; between two entries


class Refused(Exception):
    """An answer or submission the oracle does not take; nothing changed. ``status``: HTTP code.

    The oracle raises it; it lives with the page, which turns it into the HTTP answer, so that the page
    need not import the oracle that starts it.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the project log at DEBUG (--debug), not to the console."""

    def log_request(self, code="-", size="-"):
        logging.getLogger("ProjectLogger").debug("labelling page: %s %s", self.requestline.split("?")[0], code)


def start_server(desk, host: str, port: int) -> tuple:
    """(server, url): the page served from a daemon thread; OSError when the address cannot be used."""
    sock = listen(host, port)
    bound, port = sock.getsockname()[:2]  # the address the name resolved to, the free port chosen for port 0
    app = create_app(desk, accepted_hosts(host, bound))
    try:
        server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler, fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the socket
    threading.Thread(target=server.serve_forever, name="labelling-page", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{port}/?token={desk.token}"


def create_app(desk, hosts: frozenset | None = LOOPBACK_NAMES) -> Flask:
    """The Flask application of one HumanOracle (``desk``); ``hosts``: the names a request's Host header may
    carry (None: any), from address.accepted_hosts."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.before_request
    def known_host():  # registered first: runs before the token check
        if hosts is not None and host_name(request.headers.get("Host", "")) not in hosts:
            return Response("400 Bad Request: this page answers only at the address the run printed\n", 400,
                            mimetype="text/plain")

    @app.before_request
    def need_token():
        if request.path == "/favicon.ico":  # asked by every browser, without the token: no icon, no error
            return Response(status=204)
        given = request.headers.get("X-Token", "") if request.method == "POST" else request.args.get("token", "")
        if not hmac.compare_digest(given.encode(), desk.token.encode()):
            return Response("403 Forbidden: this page needs the token of the run (open the address the run "
                            "printed)\n", 403, mimetype="text/plain")
        desk.last_seen = time.monotonic()
        g.nonce = secrets.token_urlsafe(12)

    @app.after_request
    def headers(response):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        nonce = g.get("nonce", "none")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; "
            f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return response

    @app.errorhandler(Refused)
    def refused(err: Refused):
        return jsonify(error=err.message), err.status

    @app.errorhandler(OutputError)
    def not_saved(err: OutputError):  # the answer is only taken once it is on disk
        return jsonify(error=f"the answer could not be saved, so it was not taken: {err}"), 500

    @app.get("/")
    def page():
        v = desk.view()
        return render_template("page.html", nonce=g.nonce, curve=curve(v["rows"]), **v)

    @app.get("/view")
    def view():
        v = desk.view()
        return render_template("view.html", curve=curve(v["rows"]), **v)

    @app.get("/state")
    def state():
        v = desk.view()
        return jsonify(version=v["version"], phase=v["phase"], round=v["round"], n_labeled=v["n_labeled"],
                       step=v["step"], n_training=v["n_training"], batch=v["batch_round"],
                       kappa=v["kappas"], stability=v["stability"],
                       stopped_because=v["stopped_because"])

    @app.get("/image/<int:position>.png")
    def image(position: int):
        png = desk.png(position)
        if png is None:
            return Response("not an image of the open batch\n", 404, mimetype="text/plain")
        return Response(png, mimetype="image/png")

    @app.get("/original/<int:position>")
    def original(position: int):
        # By pool position only: the oracle maps it to the file the run was given, never to a browser's path
        found = desk.original(position)
        if found is None:
            return Response("not an image file of the open batch\n", 404, mimetype="text/plain")
        return Response(found[0], mimetype=found[1])

    @app.post("/answer")
    def answer():
        body = _json_body()
        return jsonify(message=desk.answer(body.get("batch"), body.get("position"), body.get("label"),
                                           body.get("labeller", "")))

    @app.post("/undo")
    def undo():
        position, message = desk.undo(_json_body().get("batch"))
        return jsonify(message=message, position=position)

    @app.get("/review")
    def review():
        return render_template("review.html", **desk.review())

    @app.post("/correct")
    def correct():
        body = _json_body()
        return jsonify(message=desk.correct(body.get("batch"), body.get("position"), body.get("label"),
                                            body.get("labeller", "")))

    @app.post("/submit")
    def submit():
        return jsonify(message=desk.submit(_json_body().get("batch")))

    return app


def _json_body() -> dict:
    # json's decoder raises RecursionError on deep nesting (a few KB of "[" suffice), which silent=True lets
    # through (it catches only ValueError): bad input, refused like any other, not a crash.
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise Refused("the request body is nested too deeply: it must be a flat JSON object; "
                      "nothing was changed") from None
    if not isinstance(body, dict):
        raise Refused("the request must be a JSON object (Content-Type: application/json)")
    return body


def _grid(low: float, step: float) -> list:
    """The y axis's labelled values, ``low`` to 1 every ``step`` (at most 5 lines: every other one beyond)."""
    values = [round(low + i * step, 4) for i in range(int(round((1 - low) / step)) + 1)]
    stride = math.ceil(len(values) / 5)
    return values[::-1][::stride][::-1]


def _ticks(positions: list) -> list:
    """The x axis's labels: the rounds' labelled-set sizes, the last always, the others where they have room."""
    chosen = []
    for px, value in reversed(positions):
        if not chosen or chosen[-1][0] - px >= TICK_MIN_PX:
            chosen.append((px, value))
    return chosen[::-1]


def stability(kappa: float, stop_when_stable: float, n_images: int) -> dict:
    """What the page says about the stopping signal, from the latest finished round's stop_kappa (NaN: none
    yet) on a stop set of ``n_images`` pool images.

    The threshold is --stop_when_stable when the run has one (the run then ends by itself, stopping.reached
    as the loop decides it), else STABLE_KAPPA, the report's stopping point, and the page only suggests.
    ``{"kappa": the value (None: NaN), "shown": it as written, "threshold", "reached", "text"}``.
    """
    threshold = stop_when_stable or STABLE_KAPPA
    known, stable = not math.isnan(kappa), reached(kappa, threshold)
    shown = _kappa_text(kappa, threshold) if known else ""
    agree = f"its predictions on {n_images} pool images agree with the previous round's"
    if n_images == 0:
        text = ("Kappa is off (--stop_set_size 0): there is no stop set to compare rounds' predictions on, so the page "
                "cannot say when the model has stopped changing.")
    elif not known:
        text = (f"Kappa, how well a round's predictions on {n_images} pool images agree with the previous round's, "
                "shows once two rounds have finished: it says when the model has stopped changing.")
    elif stable and stop_when_stable:
        text = (f"The model has stopped changing: {agree} (kappa {shown}, --stop_when_stable {threshold:g}). The run "
                "stops here; every finished round is kept.")
    elif stable:
        text = (f"The model has stopped changing: {agree} (kappa {shown}; from {threshold:g} on it counts as stable). "
                "More labels may not pay off; you can stop now (Ctrl-C where the run was started: every finished "
                "round is kept, and --resume goes on from there).")
    else:
        then = ", and the run stops by itself (--stop_when_stable)" if stop_when_stable else ""
        text = (f"Kappa {shown}: the model is still changing (its predictions on {n_images} pool images against the "
                f"previous round's; from {threshold:g} on it counts as stable{then}).")
    return {"kappa": kappa if known else None, "shown": shown, "threshold": threshold, "reached": stable,
            "text": text}


def _kappa_text(kappa: float, threshold: float) -> str:
    """Kappa to 3 decimals, or more where 3 would put it on the other side of the threshold (0.9896 is not
    0.990 when 0.99 counts as stable)."""
    for digits in (3, 4, 5, 6):
        text = f"{kappa:.{digits}f}"
        if (float(text) >= threshold) == (kappa >= threshold):
            break
    return text


def curve(rows: list) -> dict | None:
    """Where templates/curve.svg draws test (solid) and validation (dashed) accuracy against labelled
    images, and each round's stop_kappa on the same 0..1 axis (no point where it is NaN, no line before a
    round has one), in pixels, and their legend; None before the first round has a row."""
    if not rows:
        return None
    xs = [float(r["n_labeled"]) for r in rows]
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0
    w, h = CURVE_W - PAD_L - PAD_R, CURVE_H - PAD_T - PAD_B
    # The y axis from a round step below the lowest value to 1, so that curves near the top are not squeezed
    shown = [float(r.get(k, math.nan)) for r in rows for k in ("val_acc", "test_acc", "stop_kappa")]
    floor = min([v for v in shown if not math.isnan(v)] + [1.0])
    step = 0.05 if floor >= 0.75 else 0.1 if floor >= 0.5 else 0.25
    y_lo = max(0.0, math.floor((min(floor, 1.0 - step) - 1e-9) / step) * step)

    def x_px(n_labeled: float) -> float:
        return PAD_L + (n_labeled - lo) / span * w

    def y_px(value: float) -> float:
        return PAD_T + (1 - (min(max(value, y_lo), 1.0) - y_lo) / (1 - y_lo)) * h  # below the axis: on it

    def points(key: str) -> list:
        values = [(x, float(r.get(key, math.nan))) for x, r in zip(xs, rows)]
        return [(x_px(x), y_px(v)) for x, v in values if not math.isnan(v)]

    series = [{"key": key, "colour": colour, "dashed": dashed, "name": name, "points": points(key)}
              for key, dashed, colour, name in (("val_acc", True, "#999", "validation accuracy"),
                                                ("test_acc", False, "#1a5fb4", "test accuracy"),
                                                ("stop_kappa", False, "#c64600", "kappa"))]
    series = [s for s in series if s["points"]]
    # The legend in a row under the title, centred: test accuracy first, as the eye reads the chart
    order = sorted(series, key=lambda s: s["key"] != "test_acc")
    widths = [24 + LEGEND_CHAR_PX * len(s["name"]) for s in order]
    x = PAD_L + w / 2 - (sum(widths) + LEGEND_GAP * (len(order) - 1)) / 2
    for s, width in zip(order, widths):
        s["legend_x"], x = x, x + width + LEGEND_GAP
    kappa = any(s["key"] == "stop_kappa" for s in series)
    return {"width": CURVE_W, "height": CURVE_H, "left": PAD_L, "right": CURVE_W - PAD_R, "top": PAD_T,
            "middle": PAD_L + w / 2, "grid": [(y_px(v), v) for v in _grid(y_lo, step)],
            "ticks": _ticks([(x_px(x), x) for x in sorted(set(xs))]), "series": series,
            "kappa": kappa, "test_acc": float(rows[-1]["test_acc"]), "n_labeled": int(rows[-1]["n_labeled"])}
