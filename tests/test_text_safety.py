"""Text from scenario files reaches the terminal as text; a step's note shows in the timeline."""

from __future__ import annotations

import subprocess
import sys

from sim.scenario.loader import ScenarioError, load_text
from sim.text import printable

EVIL = ('name: esc\ndescription: "evil \\e[31mRED\\e[0m \\u202e text"\nprocesses: {a: {}}\nsteps:\n'
        '  - {proc: a, call: socket, note: "the first \\e[2J note"}\n'
        '  - {proc: a, call: socket, note: plain words shown under the call}\n')


def test_printable_escapes_controls_and_bidi():
    assert printable("a\x1b[31mb\u202ec\x00\x9b") == "a\\x1b[31mb\\u202ec\\x00\\x9b"
    assert printable("two\nlines") == "two\\nlines"
    assert printable("two\nlines", newlines=True) == "two\nlines"


def _run(tmp_path, *argv, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_list_shows_escapes_not_control_characters(tmp_path):
    root = tmp_path / "scenarios"
    root.mkdir()
    (root / "esc.yaml").write_text(EVIL)
    r = _run(tmp_path, "list", env={"SOCKSIM_SCENARIOS": str(root)})
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "evil \\x1b[31mRED\\x1b[0m \\u202e text" in r.stdout


def test_notes_show_in_the_timeline_escaped(tmp_path):
    f = tmp_path / "esc.yaml"
    f.write_text(EVIL)
    r = _run(tmp_path, "run", str(f))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    assert "the first \\x1b[2J note" in r.stdout
    assert "plain words shown under the call" in " ".join(r.stdout.split())


def test_a_loader_message_quoting_the_file_is_escaped():
    try:
        load_text('name: x\nprocesses: {a: {}}\nsteps:\n  - {proc: a, call: socket, "\\e[2Jk": 1}\n')
    except ScenarioError as e:
        assert "\x1b" not in str(e) and "\\x1b[2Jk" in str(e)
    else:
        raise AssertionError("an unknown key was accepted")
