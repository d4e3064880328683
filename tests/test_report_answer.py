"""Reports that state the answer, with honest figures, checked in headless Chromium.

The expected values come from the run file (the sweep's own metrics and closed forms), never from
the report code: the page must state each point's first failure and the sustainable rate the
closed form gives, and every curve a figure promises must be visible in its image (its colour
found at the pixels of its data points, read back from the decoded PNG in the browser).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main
from tests.test_report import _chromium_or_skip, open_in_chromium

# With a one-way wire delay, connections are seen in SYN_SENT, ESTABLISHED, FIN_WAIT... at the
# sample times, not only in TIME_WAIT.
SLOW_WIRE = """
name: slow-wire-ports
description: |
  Two hundred ports at 100 connections per second over a 5 ms wire, the client closing first.
host:
  latency: 0.005
  sysctls: {ip_local_port_range: [40000, 40199], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9999, rate: 100, duration: 4, accept_proc: server, listener: srv}
"""

# For every figure: draw its image on a canvas and look, around each promised curve's data
# points, for a pixel of the curve's colour.
PROBE = r"""
(async () => {
  const near = (d, i, rgb) => Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) <= 60;
  const hex = h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16));
  const figures = [];
  for (const fig of document.querySelectorAll('figure')) {
    const img = fig.querySelector('img');
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const curves = JSON.parse(fig.dataset.curves || '[]').map(cv => {
      const rgb = hex(cv.color);
      const seen = cv.pixels.some(([x, y]) => {
        for (let dy = -7; dy <= 7; dy++) for (let dx = -7; dx <= 7; dx++) {
          const px = x + dx, py = y + dy;
          if (px >= 0 && py >= 0 && px < c.width && py < c.height && near(d, (py * c.width + px) * 4, rgb)) return true;
        }
        return false;
      });
      return {label: cv.label, kind: cv.kind, seen, pixels: cv.pixels.length};
    });
    figures.push({id: fig.id, caption: fig.querySelector('figcaption').textContent, curves});
  }
  const answer = document.querySelector('#answer');
  const first = document.querySelector('main > :nth-child(3)');
  return JSON.stringify({figures, answer: answer ? answer.textContent : null,
                         answer_first: first === answer});
})()
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, Path]:
    d = tmp_path_factory.mktemp("answer")
    sc = d / "slow.yaml"
    sc.write_text(SLOW_WIRE)
    run = d / "runs" / "sweep.json"
    assert main(["sweep", str(sc), "--param", "tcp_tw_reuse=0,1", "--param", "rate=25,100", "--jobs", "1",
                 "--no-progress", "-q", "-o", str(run)]) == 0
    assert main(["report", str(run), "-o", str(d / "reports" / "slow"), "-q"]) == 0
    return json.loads(run.read_text()), d / "reports" / "slow" / "index.html"


def _states_in(series: dict) -> set[str]:
    from sim.report.plots import STATE_ORDER

    return {s for s in STATE_ORDER if any(series.get(s) or [])}


def probe_page(page: Path) -> tuple[str, list[dict]]:
    """The page in headless Chromium, loaded without error, its headline answer first (after the
    title and subtitle): the answer's text and the figures with their promised curves."""
    probed: dict = {}
    [(_, errors)] = open_in_chromium(page, probe=PROBE, probed=probed)
    assert errors == []
    got = probed[page]
    assert got["answer_first"] and got["answer"]
    return " ".join(got["answer"].split()), got["figures"]


def assert_first_failures_stated(answer: str, run: dict) -> None:
    """Each point's first failure (or none) from the run file is stated in the answer."""
    for pt in run["points"]:
        m = pt["metrics"]
        where = ", ".join(f"{k}={v}" for k, v in pt["params"].items())
        if m["first_error"]:
            assert f"at {where}: the first connection fails after {m['first_error_at']:.3f} s with {m['first_error']}" in answer
        else:
            assert f"at {where}: no connection fails" in answer


def assert_curves_seen(figures: list[dict]) -> None:
    """Every promised curve is seen in its image, at pixels it promised."""
    for f in figures:
        missing = [c["label"] for c in f["curves"] if not c["seen"] or not c["pixels"]]
        assert missing == [], (f["id"], missing)


def test_report_states_the_answer_and_draws_every_promised_curve(report):
    _chromium_or_skip()
    run, page = report
    answer, figure_list = probe_page(page)
    assert_first_failures_stated(answer, run)
    for pt in run["points"]:
        est = pt["estimate"]
        rate = est["ports"] / est["hold_seconds"]
        assert f"{est['ports']:,} free ports / {est['hold_seconds']:g} s" in answer
        assert (f"= {rate:,.0f} connections/s" in answer) or (f"= {rate:,.3g} connections/s" in answer)
    assert "What changed: tcp_tw_reuse 0 → 1" in answer
    assert "Limits: " in answer
    figures = {f["id"]: f for f in figure_list}
    assert_curves_seen(figure_list)
    # what the captions promise is among the figure's curves
    for f in figure_list:
        kinds = {c["kind"] for c in f["curves"]}
        if "Filled circles: simulated" in f["caption"]:
            assert "simulated" in kinds, f["id"]
        if "Hollow diamonds" in f["caption"]:
            assert "estimate" in kinds, f["id"]
        if "Hollow triangles" in f["caption"]:
            assert "bound" in kinds, f["id"]
    # the closed forms of the run file are drawn where they exist
    assert any(c["kind"] == "estimate" for c in figures["fig-ok_fraction"]["curves"])
    # the states figure draws every state present in the run file's series, in every panel
    states = figures["fig-states_over_time"]
    present = set().union(*(_states_in(p["series"]) for p in run["points"]))
    assert {"syn_sent", "time_wait"} <= present  # the wire delay makes more than TIME_WAIT visible
    labels = [c["label"] for c in states["curves"]]
    panels = {lab.rsplit(": ", 1)[0] for lab in labels}
    from sim.report.plots import STATE_LABELS

    for p in panels:
        drawn = {lab.rsplit(": ", 1)[1] for lab in labels if lab.startswith(p + ": ")}
        assert drawn == {STATE_LABELS[s] for s in present}, p


def test_a_switch_is_drawn_as_categories(report):
    """tcp_tw_reuse=0,1 is a category: no line through values between them (the x axis is rate)."""
    run, page = report
    html = page.read_text()
    assert 'id="metrics-against-rate"' in html
    from sim.report.command import _choose_x

    xp, categorical = _choose_x([{"name": "tcp_tw_reuse", "field": "tcp_tw_reuse", "target": "sysctls",
                                  "values": [0, 2]}])
    assert xp["name"] == "tcp_tw_reuse" and categorical


def test_states_at_nearly_equal_counts_are_each_seen():
    """2,000 connections/s over a 10 ms link: SYN_SENT, SYN_RECV, FIN_WAIT1 and LAST_ACK each
    hold about 40 connections (rate x their time), jittering by one, under 28,000 in TIME_WAIT.
    On the symlog axis those four lines lie within a pixel of each other; every one must still
    show its colour near the pixel the figure promises (as the browser check reads it)."""
    import io
    import random

    import matplotlib.image as mi

    from sim.report import charts

    rnd = random.Random(7)
    n = 200
    t = [i * 0.1 for i in range(n)]
    series = {"t": t, "time_wait": [min(28232, 2000 * x) for x in t]}
    for st in ("syn_sent", "syn_recv", "fin_wait1", "last_ack"):
        series[st] = [0] + [40 + rnd.choice((-1, 0, 1)) for _ in range(n - 1)]
    png, curves, shown = charts.states_panels([("", series)])
    assert set(shown) >= {"syn_sent", "syn_recv", "fin_wait1", "last_ack", "time_wait"}
    img = (mi.imread(io.BytesIO(png))[:, :, :3] * 255).astype(int)
    h, w = img.shape[:2]
    for c in curves:
        rgb = [int(c["color"][i:i + 2], 16) for i in (1, 3, 5)]
        (x, y), = c["pixels"]
        seen = any(sum(abs(int(img[py, px, k]) - rgb[k]) for k in range(3)) <= 60
                   for py in range(max(0, y - 7), min(h, y + 8)) for px in range(max(0, x - 7), min(w, x + 8)))
        assert seen, c["label"]
