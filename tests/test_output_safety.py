"""Every output file: never replaced without --force, checked before the work, written atomically.

A missing folder, a folder in place of the file, a read-only place and a full disk each give one
line and exit 2, and leave nothing behind (no temporary file). The read-only place and the full
disk are real: a tmpfs mounted read-only, and a tmpfs of a few kilobytes (root ignores permission
bits, so a chmod would prove nothing).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from sim.cli import main

SCENARIO = """
name: tiny
processes: {a: {}}
steps:
  - {proc: a, call: socket, as: s}
  - {proc: a, call: bind, sock: s, addr: 127.0.0.1, port: 7001}
"""

SWEEP = """
name: tiny-ports
host:
  sysctls: {ip_local_port_range: [40000, 40009], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9999, rate: 20, duration: 0.5, accept_proc: server, listener: srv}
"""


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO)
    return p


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, err


def _one_line_error(rc: int, err: str, words: str) -> None:
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert words in err, err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "socksim-test", str(where)],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


OUTPUTS = [
    ("run", "--json"),
    ("run", "--html"),
    ("explain", "--json"),
    ("explain", "--graph"),
    ("explain", "--states"),
]


@pytest.mark.parametrize("cmd,flag", OUTPUTS)
def test_an_existing_file_is_kept_without_force(capsys, scenario, tmp_path, cmd, flag):
    target = tmp_path / "out"
    target.write_text("what the user had\n")
    rc, err = _run(capsys, cmd, str(scenario), flag, str(target), "-q")
    _one_line_error(rc, err, "already exists; pass --force")
    assert target.read_text() == "what the user had\n"
    rc, err = _run(capsys, cmd, str(scenario), flag, str(target), "-q", "--force")
    assert rc == 0, err
    assert target.read_text() != "what the user had\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("cmd,flag", OUTPUTS)
def test_a_folder_missing_folder_and_folder_in_the_way(capsys, scenario, tmp_path, cmd, flag):
    rc, err = _run(capsys, cmd, str(scenario), flag, str(tmp_path), "-q", "--force")
    _one_line_error(rc, err, "is a directory")
    rc, err = _run(capsys, cmd, str(scenario), flag, str(tmp_path / "no" / "out"), "-q")
    _one_line_error(rc, err, "does not exist")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("cmd,flag", OUTPUTS)
def test_a_read_only_place(capsys, scenario, tmp_path, cmd, flag):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        rc, err = _run(capsys, cmd, str(scenario), flag, str(ro / "out"), "-q")
        _one_line_error(rc, err, "Read-only file system")
        assert list(ro.iterdir()) == []


def test_a_full_disk_before_and_during_the_write(capsys, scenario, tmp_path):
    with _tmpfs(tmp_path / "full", "size=64k") as full:
        # room for the probe but not for the page: found while writing, temporary file removed
        (full / "filler").write_bytes(b"\0" * (56 * 1024))
        rc, err = _run(capsys, "run", str(scenario), "--html", str(full / "page.html"), "-q")
        _one_line_error(rc, err, "No space left on device")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
        # nothing left at all: found before the run
        fd = os.open(full / "filler", os.O_WRONLY | os.O_APPEND)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 512)
        finally:
            os.close(fd)
        rc, err = _run(capsys, "run", str(scenario), "--json", str(full / "t.json"), "-q")
        _one_line_error(rc, err, "No space left on device")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_sweep_outputs_are_checked_before_any_point_runs(capsys, tmp_path, monkeypatch):
    import sim.sweep.command as command

    def never(task):
        raise AssertionError("a point ran although the output cannot be written")

    monkeypatch.setattr(command, "run_point", never)
    sc = tmp_path / "sweep.yaml"
    sc.write_text(SWEEP)
    existing = tmp_path / "had.json"
    existing.write_text("{}\n")
    for flag in ("-o", "--jsonl"):
        rc, err = _run(capsys, "sweep", str(sc), "--param", "rate=10,20", "--jobs", "1", flag, str(existing))
        _one_line_error(rc, err, "already exists")
        rc, err = _run(capsys, "sweep", str(sc), "--param", "rate=10,20", "--jobs", "1", flag,
                       str(existing / "x"))  # a folder that cannot be made: a file is in the way
        _one_line_error(rc, err, "cannot create the folder")
    assert existing.read_text() == "{}\n"
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        rc, err = _run(capsys, "sweep", str(sc), "--param", "rate=10,20", "--jobs", "1", "-o", str(ro / "run.json"))
        _one_line_error(rc, err, "Read-only file system")


def test_sweep_force_replaces_and_leaves_no_temporary(capsys, tmp_path):
    sc = tmp_path / "sweep.yaml"
    sc.write_text(SWEEP)
    out, lines = tmp_path / "run.json", tmp_path / "p.jsonl"
    out.write_text("old\n")
    lines.write_text("old\n")
    rc, err = _run(capsys, "sweep", str(sc), "--param", "rate=10,20", "--jobs", "1", "--no-progress", "-q",
                   "-o", str(out), "--jsonl", str(lines), "--force")
    assert rc == 0, err
    assert out.read_text().startswith("{") and len(lines.read_text().splitlines()) == 2
    assert _leftovers(tmp_path) == []


def test_crosscheck_json_is_checked_before_the_real_run(capsys, scenario, tmp_path):
    existing = tmp_path / "v.json"
    existing.write_text("kept\n")
    rc, err = _run(capsys, "crosscheck", str(scenario), "--json", str(existing), "-q")
    assert rc == 2 and ("already exists" in err or "cannot run on the real kernel" in err), err
    assert existing.read_text() == "kept\n"


def test_report_folder_read_only(capsys, scenario, tmp_path):
    trace = tmp_path / "t.json"
    assert main(["run", str(scenario), "--json", str(trace), "-q"]) == 0
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        rc, err = _run(capsys, "report", str(trace), "-o", str(ro / "rep"))
        _one_line_error(rc, err, "Read-only file system")
