"""Bad scenario files: every one is reported as one ScenarioError with the file, the line and the
column of the problem and a message saying what was expected and what was found -- never a Python
traceback, whatever the input. The same holds on the command line (``python -m sim.cli run``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("sim") is None:  # running from elsewhere without an install
    sys.path.insert(0, str(ROOT))

from sim.scenario.loader import MAX_BYTES, MAX_DEPTH, MAX_VALUES, ScenarioError, load_file, load_text  # noqa: E402
from sim.scenario.model import Scenario  # noqa: E402

# Pydantic's own wording must never reach the user.
JARGON = ("Input should", "Value error", "validation error", "pydantic", "Field required",
          "Extra inputs", "Traceback", "NoneType", "dict_type", "union_tag")

HEAD = "name: t\nprocesses:\n  server: {}\n  client: {}\nsteps:\n"  # steps start on line 6
SRV = "  - call: socket\n    proc: server\n    as: srv\n"  # lines 6-8


def scenario(*steps: str) -> str:
    return HEAD + "".join(steps)


@dataclass
class Bad:
    id: str
    content: str | bytes
    line: int
    column: int
    says: tuple[str, ...]  # fragments the message must contain (besides 'expected' and 'found')


CASES = [
    # ---- YAML syntax
    Bad("indent-too-deep",
        scenario("  - call: socket\n    proc: server\n      as: srv\n"),
        8, 7, ("YAML syntax error", "bad indentation", "column 5, 3 or 1", "found column 7")),
    Bad("indent-between-levels",
        "name: t\nprocesses:\n  server: {}\n steps: []\n",
        4, 2, ("bad indentation", "column 3 or 1", "found column 2")),
    Bad("list-item-misaligned",
        scenario("  - sleep: 1\n   - sleep: 2\n"),
        7, 4, ("bad indentation", "found column 4")),
    Bad("unclosed-brace",
        "name: t\nprocesses: {server: {}\nsteps: []\n",
        2, 12, ("this '{' is never closed", "expected ',' or '}'", "line 3 column 1")),
    Bad("unclosed-bracket",
        scenario("  - call: socket\n    proc: server\n    as: srv\n  - call: listen\n    proc: server\n"
                 "    sock: [srv\n"),
        11, 11, ("this '[' is never closed", "expected ',' or ']'", "the end of the file")),
    Bad("tab-indent",
        "name: t\nprocesses:\n\tserver: {}\nsteps:\n  - sleep: 1\n",
        3, 1, ("expected spaces", "found a tab character")),
    Bad("unclosed-quote",
        scenario("  - sleep: 1\n    note: 'never closed\n"),
        7, 11, ("quoted text is never closed", "expected a closing quote", "end of the file")),
    Bad("two-documents",
        scenario("  - sleep: 1\n") + "---\nname: other\n",
        7, 1, ("expected one YAML document", "found a second one")),
    Bad("undefined-alias",
        scenario("  - sleep: *pause\n"),
        6, 12, ("expected an anchor &pause", "found the alias *pause")),
    Bad("control-character",
        scenario("  - sleep: 1\n    note: bell\x07\n"),
        7, 15, ("expected printable text", "U+0007")),
    Bad("value-with-colon",
        scenario("  - sleep: 1\n    note: server: restarted\n"),
        7, 17, ("expected a single value", "put text that contains ': ' in quotes")),
    # ---- steps and calls
    Bad("unknown-call",
        scenario(SRV, "  - call: lisen\n    proc: server\n    sock: srv\n"),
        9, 11, ("steps[1]", "expected a call among:", "listen", "unknown call 'lisen'",
                "did you mean 'listen'?")),
    Bad("unknown-option-key",
        scenario(SRV, "  - call: listen\n    proc: server\n    sock: srv\n    backlg: 5\n"),
        12, 5, ("steps[1] (call listen)", "expected a known key", "backlog",
                "found unknown key 'backlg'", "did you mean 'backlog'?")),
    Bad("option-of-another-call",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    backlog: 5\n"),
        12, 5, ("steps[1] (call bind)", "unknown key 'backlog'", "'backlog' belongs to listen")),
    Bad("port-not-a-number",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    port: \"abc\"\n"),
        12, 11, ("steps[1].port", "expected a port number from 0 to 65535", "found the text 'abc'")),
    Bad("backlog-fraction",
        scenario(SRV, "  - call: listen\n    proc: server\n    sock: srv\n    backlog: 1.5\n"),
        12, 14, ("steps[1].backlog", "expected a whole number", "found 1.5")),
    Bad("bytes-negative",
        scenario(SRV, "  - call: send\n    proc: server\n    sock: srv\n    bytes: -3\n"),
        12, 12, ("steps[1].bytes", "expected a byte count from 0 to 1073741824", "found -3")),
    Bad("port-out-of-range",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    port: 70000\n"),
        12, 11, ("steps[1].port", "expected a port number from 0 to 65535", "found 70000")),
    Bad("fd-negative",
        scenario("  - call: close\n    proc: server\n    sock: -1\n"),
        8, 11, ("steps[0].sock", "expected a socket name", "or an fd number", "found -1")),
    Bad("undefined-socket-name",
        scenario(SRV, "  - call: listen\n    proc: server\n    sock: sevr\n"),
        11, 11, ("steps[1] (call listen)", "expected a socket name bound earlier in process 'server'",
                 "found 'sevr'", "did you mean 'srv'?", "bound so far: srv")),
    Bad("name-bound-in-other-process",
        scenario(SRV, "  - call: close\n    proc: client\n    sock: srv\n"),
        11, 11, ("process 'client'", "found 'srv'", "bound so far: none")),
    Bad("process-not-declared",
        scenario("  - call: socket\n    proc: srever\n    as: srv\n"),
        7, 11, ("steps[0] (call socket)", "expected a process declared under processes:",
                "found 'srever'", "did you mean 'server'?", "known: client, server")),
    Bad("step-before-fork",
        scenario("  - call: socket\n    proc: child\n", "  - call: fork\n    proc: server\n    as: child\n"),
        7, 11, ("expected a process declared", "or created by an earlier fork", "found 'child'")),
    Bad("fork-existing-process",
        scenario("  - call: fork\n    proc: server\n    as: client\n"),
        8, 9, ("expected a new process name for the child", "found 'client'", "already exists")),
    Bad("sleep-negative",
        scenario("  - sleep: -2\n"),
        6, 12, ("steps[0].sleep", "expected a number of seconds from 0 to 864000", "found -2")),
    Bad("sleep-nan",
        scenario("  - sleep: .nan\n"),
        6, 12, ("expected a number of seconds", "found .nan (not a number)")),
    Bad("step-without-kind",
        scenario("  - proc: server\n    note: forgot the call\n"),
        6, 5, ("steps[0]", "expected one of the keys call:, sleep:, observe:", "found only proc, note")),
    Bad("step-with-two-kinds",
        scenario("  - call: socket\n    proc: server\n    sleep: 1\n"),
        8, 5, ("steps[0]", "expected exactly one of call:, sleep:, observe:", "found both 'call:' and 'sleep:'")),
    Bad("step-not-a-mapping",
        scenario("  - socket\n"),
        6, 5, ("steps[0]", "expected a step (a mapping", "found the text 'socket'")),
    Bad("connect-without-port",
        scenario(SRV, "  - call: connect\n    proc: server\n    sock: srv\n"),
        9, 5, ("steps[1] (call connect)", "expected key 'port:'", "required by call connect",
               "found no such key")),
    Bad("fork-without-as",
        scenario("  - call: fork\n    proc: server\n"),
        6, 5, ("steps[0] (call fork)", "expected key 'as:'", "found no such key")),
    Bad("bad-sockopt",
        scenario(SRV, "  - call: setsockopt\n    proc: server\n    sock: srv\n    opt: SO_REUSEADR\n"),
        12, 10, ("steps[1].opt", "expected one of: SO_REUSEADDR", "found the text 'SO_REUSEADR'",
                 "did you mean 'SO_REUSEADDR'?")),
    Bad("linger-wrong-shape",
        scenario(SRV, "  - call: setsockopt\n    proc: server\n    sock: srv\n    opt: SO_LINGER\n"
                      "    value: [1, 5, 9]\n"),
        13, 12, ("steps[1].value", "expected a whole number, or [onoff, seconds]", "found a list of 3 items")),
    Bad("flags-not-a-list",
        scenario(SRV, "  - call: send\n    proc: server\n    sock: srv\n    bytes: 10\n    flags: MSG_PEEK\n"),
        13, 12, ("steps[1].flags", "expected a list of flags", "found the text 'MSG_PEEK'", "write [MSG_PEEK]")),
    Bad("name-is-a-boolean",
        scenario("  - call: socket\n    proc: server\n    as: no\n"),
        8, 9, ("steps[0].as", "expected a name", "found the boolean false", "put the text in quotes")),
    # ---- expectations
    Bad("expect-misspelt",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    port: 80\n    expect: EADDRINUS\n"),
        13, 13, ("steps[1].expect", "expected ok, BLOCKED", "an errno name such as EADDRINUSE",
                 "found the text 'EADDRINUS'", "did you mean 'EADDRINUSE'?")),
    Bad("expect-errno-lower-case",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    expect: eaddrinuse\n"),
        12, 13, ("found the text 'eaddrinuse'", "did you mean 'EADDRINUSE'?")),
    Bad("expect-unknown-errno",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    expect: EFOOBAR\n"),
        12, 13, ("an errno name", "found the text 'EFOOBAR'")),
    Bad("tolerate-bad-field",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n"
                      "    tolerate: [{field: rett, reason: kernel differs}]\n"),
        12, 24, ("steps[1].tolerate[0].field", "expected one of: ret, err", "found the text 'rett'",
                 "did you mean 'ret'?")),
    Bad("tolerate-without-reason",
        scenario("  - sleep: 1\n    tolerate:\n      - field: ret\n"),
        8, 9, ("steps[0].tolerate[0]", "expected key 'reason:'", "found no such key")),
    # ---- addresses, observations, load
    Bad("invalid-ip-address",
        scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    addr: 300.1.2.3\n"),
        12, 11, ("steps[1].addr", "expected an IPv4 or IPv6 address", "found the text '300.1.2.3'")),
    Bad("observe-unknown-what",
        scenario("  - observe: {what: tcp_state, port: 80}\n"),
        6, 21, ("steps[0].observe.what", "expected one of: tcp_states, fds, sockstat, queues",
                "found the text 'tcp_state'", "did you mean 'tcp_states'?")),
    Bad("observe-missing-port",
        scenario("  - observe:\n      what: tcp_states\n"),
        7, 7, ("steps[0].observe", "expected key 'port:'", "required by observe tcp_states")),
    Bad("observe-undeclared-process",
        scenario("  - observe: {what: fds, proc: nobody}\n"),
        6, 32, ("expected a process declared", "found 'nobody'")),
    Bad("load-accept-proc-without-listener",
        scenario("  - load:\n      proc: client\n      port: 8080\n      rate: 10\n      duration: 1\n"
                 "      accept_proc: server\n"),
        11, 7, ("steps[0].load", "expected accept_proc and listener together",
                "found accept_proc without listener")),
    # ---- timers and their slots
    Bad("timer-unknown-op",
        scenario("  - timer: {proc: server, name: tick, op: begin}\n"),
        6, 43, ("steps[0].timer.op", "expected one of: start, stop", "found the text 'begin'")),
    Bad("timer-undeclared-process",
        scenario("  - timer: {proc: nobody, name: tick, op: start, interval: 10}\n"),
        6, 19, ("steps[0] (timer)", "expected a process declared", "found 'nobody'")),
    Bad("timer-slot-call-bad-port",
        scenario("  - timer:\n      proc: server\n      name: tick\n      op: start\n      interval: 10\n"
                 "      on_timeout:\n        - {call: bind, sock: 3, port: 99999}\n"),
        12, 39, ("steps[0].timer.on_timeout[0].port", "expected a port number from 0 to 65535", "found 99999")),
    # ---- Qt steps
    Bad("qt-unknown-method",
        scenario("  - qt: {proc: server, object: srv, call: QTcpServer.lisen, port: 1}\n"),
        6, 43, ("steps[0].qt.call", "QTcpServer.listen", "did you mean 'QTcpServer.listen'?")),
    Bad("qt-listen-needs-port",
        scenario("  - qt: {proc: server, object: srv, call: QTcpServer.listen}\n"),
        6, 9, ("steps[0].qt", "expected port: for QTcpServer.listen")),
    Bad("qt-object-keeps-its-class",
        scenario("  - qt: {proc: server, object: srv, call: QTcpServer.listen, port: 1}\n"
                 "  - qt: {proc: server, object: srv, call: QTcpSocket.abort}\n"),
        7, 43, ("steps[1] (qt)", "expected a QTcpServer call for object 'srv'", "found QTcpSocket.abort")),
    Bad("qt-slot-call-bad-port",
        scenario("  - timer:\n      proc: server\n      name: tick\n      op: start\n      interval: 10\n"
                 "      on_timeout:\n        - {object: srv, call: QTcpServer.listen, port: 99999}\n"),
        12, 56, ("steps[0].timer.on_timeout[0].port", "expected a port number", "found 99999")),
    Bad("qt-ipv6-address",
        scenario("  - qt: {proc: server, object: srv, call: QTcpServer.listen, addr: '::1', port: 1}\n"),
        6, 68, ("steps[0].qt.addr", "expected an IPv4 literal", "found the text '::1'")),
    # ---- host and top level
    Bad("port-range-reversed",
        "name: t\nhost:\n  sysctls:\n    ip_local_port_range: [61000, 32768]\n"
        "processes:\n  server: {}\nsteps:\n  - sleep: 1\n",
        4, 26, ("host.sysctls.ip_local_port_range", "expected [low, high] with low <= high",
                "found low 61000 above high 32768")),
    Bad("port-range-one-value",
        "name: t\nhost:\n  sysctls:\n    ip_local_port_range: [1024]\n"
        "processes:\n  server: {}\nsteps:\n  - sleep: 1\n",
        4, 26, ("expected a list [low, high]", "found a list of 1 item")),
    Bad("unknown-sysctl",
        "name: t\nhost:\n  sysctls:\n    tcp_fin_timeot: 30\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        4, 5, ("host.sysctls", "expected a known sysctl", "found unknown sysctl 'tcp_fin_timeot'",
               "did you mean 'tcp_fin_timeout'?")),
    Bad("sysctl-with-prefix",
        "name: t\nhost:\n  sysctls:\n    net.ipv4.tcp_tw_reuse: 1\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        4, 5, ("found unknown sysctl 'net.ipv4.tcp_tw_reuse'", "'tcp_tw_reuse'")),
    Bad("unknown-personality",
        "name: t\nhost:\n  personality: freebsd\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        3, 16, ("host.personality", "expected one of: linux, windows", "found the text 'freebsd'")),
    Bad("unknown-top-level-key",
        scenario("  - sleep: 1\n") + "sed: 4\n",
        7, 1, ("top level", "expected a known key", "found unknown key 'sed'", "did you mean 'seed'?")),
    Bad("missing-name",
        "processes:\n  server: {}\nsteps:\n  - sleep: 1\n",
        1, 1, ("top level", "expected key 'name:'", "found no such key")),
    Bad("bad-scenario-name",
        "name: my scenario\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        1, 7, ("name", "expected a name (letters, digits", "found the text 'my scenario'")),
    Bad("no-processes",
        "name: t\nprocesses: {}\nsteps:\n  - sleep: 1\n",
        2, 12, ("processes", "expected at least one process", "found an empty mapping")),
    Bad("process-settings-null",
        "name: t\nprocesses:\n  server:\nsteps:\n  - sleep: 1\n",
        3, 3, ("processes.server", "expected a mapping of process settings", "or {} for the defaults",
               "found nothing")),
    Bad("nofile-too-small",
        "name: t\nprocesses:\n  server: {nofile: 2}\nsteps:\n  - sleep: 1\n",
        3, 20, ("processes.server.nofile", "expected a whole number from 3 to 1048576", "found 2")),
    Bad("no-steps",
        "name: t\nprocesses:\n  server: {}\nsteps: []\n",
        4, 8, ("steps", "expected a list of at least one step", "found an empty list")),
    Bad("empty-file", "", 1, 1, ("expected a mapping with name, processes and steps", "found an empty file")),
    Bad("only-comments", "# a scenario\n\n   # nothing here yet\n", 1, 1,
        ("expected a mapping with name, processes and steps", "found an empty file")),
    Bad("top-level-list", "- name: t\n- processes: {}\n", 1, 1,
        ("expected a mapping with name, processes and steps at the top", "found a list of 2 items")),
    Bad("top-level-text", "just some words\n", 1, 1, ("at the top", "found the text 'just some words'")),
    Bad("duplicate-key",
        scenario(SRV, "  - call: listen\n    proc: server\n    sock: srv\n    backlog: 5\n    backlog: 6\n"),
        13, 5, ("expected each key once", "found 'backlog' again", "first at line 12 column 5")),
    Bad("list-as-key",
        "name: t\n? [a, b]\n: 1\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        2, 3, ("expected a plain key", "found a list as a key")),
    Bad("merge-key",
        scenario("  - &pause {sleep: 1}\n  - <<: *pause\n"),
        7, 5, ("expected a key", "found a YAML merge key (<<)")),
    # ---- tags that would construct Python objects (refused, never run)
    Bad("python-apply-os-system",
        scenario("  - sleep: !!python/object/apply:os.system ['echo hacked']\n"),
        6, 12, ("expected plain YAML data", "'!!python/object/apply:os.system'", "safe loader",
                "refuses")),
    Bad("python-object-at-top",
        "!!python/object:sim.scenario.model.Scenario {name: t}\n",
        1, 1, ("expected plain YAML data", "'!!python/object:sim.scenario.model.Scenario'")),
    Bad("python-name-scalar",
        "name: !!python/name:os.system\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        1, 7, ("expected plain YAML data", "'!!python/name:os.system'")),
    Bad("custom-tag",
        "name: !secret t\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        1, 7, ("expected plain YAML data", "found the YAML tag '!secret'")),
    Bad("binary-tag",
        "name: t\ndescription: !!binary aGVsbG8=\nprocesses:\n  server: {}\nsteps:\n  - sleep: 1\n",
        2, 14, ("expected plain YAML data", "'!!binary'")),
    # ---- bytes that are not UTF-8 YAML text
    Bad("nul-bytes", b"name: t\nproc\x00esses:\n", 2, 5, ("expected a YAML text file", "found binary data (a NUL byte)")),
    Bad("binary-garbage", bytes(range(256)), 1, 1, ("expected a YAML text file", "found binary data")),
    Bad("latin-1", "name: t\ndescription: caf\xe9 cr\xe8me\n".encode("latin-1"), 2, 17,
        ("expected UTF-8 text", "found the byte 0xe9")),
    Bad("latin-1-after-utf8", "name: t\nnote: é \xe9\n".encode("utf-8").replace(b"\xc3\xa9 \xc3\xa9", b"\xc3\xa9 \xe9"),
        2, 9, ("expected UTF-8 text", "found the byte 0xe9")),
    Bad("utf-16", "name: t\n".encode("utf-16"), 1, 1, ("expected UTF-8 text", "found UTF-16 text")),
    # ---- resource bombs
    Bad("deep-nesting-lists", "name: " + "[" * 100_000 + "]" * 100_000 + "\n", 1, 7 + MAX_DEPTH - 1,
        (f"expected at most {MAX_DEPTH} levels of nested lists and mappings", "found deeper nesting")),
    Bad("deep-nesting-mappings", "name: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", 1, 7 + 4 * (MAX_DEPTH - 1),
        (f"expected at most {MAX_DEPTH} levels", "found deeper nesting")),
    Bad("deep-nesting-block",
        "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b: 1\n",
        MAX_DEPTH + 1, MAX_DEPTH + 1, (f"expected at most {MAX_DEPTH} levels", "found deeper nesting")),
    Bad("huge-integer", scenario("  - sleep: 1\n") + "seed: " + "9" * 100_000 + "\n", 7, 7,
        ("expected a number of at most 4300 digits", "found one with 100000 digits")),
    Bad("big-integer-in-range-check", scenario("  - sleep: " + "9" * 4000 + "\n"), 6, 12,
        ("expected a number of seconds from 0 to 864000", "found a 4000-digit number")),
    Bad("recursive-alias", scenario("  - &loop [*loop]\n"), 6, 12,
        ("expected an alias (*name) to refer to a complete value", "(a loop)", "the alias *loop")),
]


def _billion_laughs() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for n in "bcdefghij":
        text += f"{n}: &{n} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = n
    return text


def _alias_depth_chain() -> str:
    # each anchor nests the previous one 10 levels deeper: the file is shallow, the data is not
    text = ""
    prev = None
    for n in range(20):
        inner = f"*a{prev}" if prev is not None else "1"
        text += f"k{n}: &a{n} " + "[" * 10 + inner + "]" * 10 + "\n"
        prev = n
    return text


CASES += [
    # a..e expand to 74732 values, the first *e of f to 66430 more: the second *e is too much
    Bad("billion-laughs", _billion_laughs(), 6, 12,
        (f"expected at most {MAX_VALUES} values", "too much data", "through the alias *e")),
    # k6 nests 10 lists, then *a5 .. *a0 ten each: a0's lists pass level 64 inside *a5 of line 7
    Bad("alias-depth-chain", _alias_depth_chain(), 7, 19,
        (f"expected at most {MAX_DEPTH} levels", "found deeper nesting", "through the alias *a5")),
]


def write(tmp_path: Path, content: str | bytes, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_bytes(content.encode("utf-8"))
    return p


def load_error(path: Path | str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    return info.value


def check_message(e: ScenarioError, says: tuple[str, ...] = ()) -> None:
    assert "expected" in e.message and "found" in e.message, e.message
    for bit in says:
        assert bit in e.message, f"{bit!r} not in {e.message!r}"
    for word in JARGON:
        assert word not in e.message, f"jargon {word!r} in {e.message!r}"
    assert "\n" not in e.message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_file(tmp_path: Path, case: Bad) -> None:
    p = write(tmp_path, case.content)
    t0 = time.monotonic()
    e = load_error(p)
    assert time.monotonic() - t0 < 20, "a bad file must be refused quickly"
    assert (e.path, e.line, e.column) == (str(p), case.line, case.column), str(e)
    check_message(e, case.says)
    assert str(e) == f"{p}:{case.line}:{case.column}: {e.message}"


def test_at_least_twenty_kinds() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 20


def test_python_tag_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = scenario("  - sleep: 1\n") + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    e = load_error(write(tmp_path, text))
    assert (e.line, e.column) == (7, 14)
    check_message(e, ("!!python/object/apply:os.system",))
    assert not marker.exists()


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "scenarios.yaml"
    d.mkdir()
    e = load_error(d)
    assert (e.path, e.line, e.column) == (str(d), 0, 0)
    check_message(e, ("expected a scenario .yaml file", "found a directory"))
    assert str(e) == f"{d}:0:0: {e.message}"


def test_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "nope" / "missing.yaml"
    e = load_error(p)
    assert (e.path, e.line, e.column) == (str(p), 0, 0)
    check_message(e, ("expected a scenario .yaml file", "found no such file"))


def test_path_through_a_file(tmp_path: Path) -> None:
    f = write(tmp_path, scenario("  - sleep: 1\n"), "plain.yaml")
    e = load_error(f / "inner.yaml")
    assert (e.line, e.column) == (0, 0)
    check_message(e, ("found no such file",))


def test_path_with_nul_character(tmp_path: Path) -> None:
    e = load_error(str(tmp_path / "a\x00b.yaml"))
    assert (e.line, e.column) == (0, 0)
    check_message(e, ("NUL character",))


def test_special_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would block forever: it must be refused before any read
    e = load_error(fifo)
    assert (e.line, e.column) == (0, 0)
    check_message(e, ("found a special file",))


def test_file_too_large(tmp_path: Path) -> None:
    p = tmp_path / "huge.yaml"
    with open(p, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: no need to write 8 MiB
    e = load_error(p)
    assert (e.line, e.column) == (0, 0)
    check_message(e, (f"at most {MAX_BYTES} bytes", "found a larger file"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    p = write(tmp_path, scenario("  - sleep: 1\n"))
    p.chmod(0)
    try:
        e = load_error(p)
    finally:
        p.chmod(0o644)
    assert (e.line, e.column) == (0, 0)
    check_message(e, ("permission denied",))


def test_first_problem_in_file_order_and_count(tmp_path: Path) -> None:
    text = scenario(
        "  - {call: listen, proc: server, sock: 3, backlog: lots}\n",  # line 6
        "  - {sleep: -1}\n",  # line 7
        "  - {call: bind, proc: server, sock: 3, port: 99999}\n",  # line 8
    )
    e = load_error(write(tmp_path, text))
    assert (e.line, e.column) == (6, 52)
    check_message(e, ("steps[0].backlog", "found the text 'lots'"))
    assert e.message.endswith("(and 2 more problems)")


def test_one_more_problem_is_singular(tmp_path: Path) -> None:
    e = load_error(write(tmp_path, scenario("  - {sleep: -1}\n  - {sleep: -2}\n")))
    assert (e.line, e.column) == (6, 13)
    assert e.message.endswith("(and 1 more problem)")


def test_union_failure_is_one_problem(tmp_path: Path) -> None:
    # 'sock' is a name or an fd number: failing both is one problem, not two
    e = load_error(write(tmp_path, scenario("  - {call: close, proc: server, sock: 'no spaces'}\n")))
    assert "more problem" not in e.message
    check_message(e, ("steps[0].sock", "found the text 'no spaces'"))


def test_columns_count_characters_not_bytes(tmp_path: Path) -> None:
    e = load_error(write(tmp_path, scenario("  - {note: héllo wörld, sleep: -1}\n")))
    assert (e.line, e.column) == (6, 32)  # 34 if bytes were counted


def test_crlf_line_endings(tmp_path: Path) -> None:
    text = scenario(SRV, "  - call: bind\n    proc: server\n    sock: srv\n    port: 70000\n")
    e = load_error(write(tmp_path, text.replace("\n", "\r\n")))
    assert (e.line, e.column) == (12, 11)


def test_utf8_byte_order_mark(tmp_path: Path) -> None:
    e = load_error(write(tmp_path, b"\xef\xbb\xbf" + scenario("  - {sleep: -1}\n").encode()))
    assert (e.line, e.column) == (6, 13)
    ok = write(tmp_path, b"\xef\xbb\xbf" + scenario("  - sleep: 1\n").encode(), "ok.yaml")
    assert load_file(ok).name == "t"


def test_load_text_reports_the_given_name() -> None:
    with pytest.raises(ScenarioError) as info:
        load_text(scenario("  - sleep: -1\n"), "inline.yaml")
    e = info.value
    assert (e.path, e.line, e.column) == ("inline.yaml", 6, 12)
    assert ScenarioError("a.yaml", 1, 2, "msg") == ScenarioError("a.yaml", 1, 2, "msg")
    assert str(ScenarioError("a.yaml", 1, 2, "msg")) == "a.yaml:1:2: msg"


# ------------------------------------------------------------------ what must keep working


def test_valid_scenario_still_loads(tmp_path: Path) -> None:
    text = scenario(
        SRV,
        "  - {call: bind, proc: server, sock: srv, addr: '::1', port: 8080, expect: ok}\n",
        "  - {call: listen, proc: server, sock: srv, backlog: 5}\n",
        "  - {call: set_nonblocking, proc: server, sock: srv, on: false}\n",  # 'on' is a key, not true
        "  - {call: fork, proc: server, as: child}\n",
        "  - {call: close, proc: child, sock: srv}\n",  # the child inherits the parent's names
        "  - &pause {sleep: 0.5}\n",
        "  - *pause\n",  # aliases are fine
        "  - observe: {what: queues, proc: server, sock: srv}\n",
    ) + "description: 2024-01-01\n"  # a date-looking value stays text
    sc = load_file(write(tmp_path, text, "good.yaml"))
    assert isinstance(sc, Scenario)
    assert sc.description == "2024-01-01"
    assert sc.steps[3].on is False
    assert sc.step_lines[:3] == (6, 9, 10)
    assert sc.source == str(tmp_path / "good.yaml")


def test_bundled_scenarios_load() -> None:
    files = sorted((ROOT / "scenarios").rglob("*.yaml"))
    for f in files:
        load_file(f)


DOCS = ROOT / "docs" / "scenarios.md"
DOC_PREAMBLE = ("name: doc\nprocesses:\n  server: {}\n  client: {}\nsteps:\n"
                "  - {call: socket, proc: server, as: srv}\n  - {call: socket, proc: client, as: c}\n"
                "  - {call: accept, proc: server, sock: srv, as: conn}\n")


@pytest.mark.skipif(not DOCS.exists(), reason="docs/scenarios.md not present")
def test_docs_examples_load() -> None:
    """Every YAML example of the format reference is valid: a whole scenario as it stands, a list
    of steps after a preamble that binds srv/conn (server) and c (client), a top-level fragment
    completed with the keys it lacks."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 20
    for block in blocks:
        if re.search(r"^name:", block, re.M):
            text = block
        elif block.lstrip().startswith("- "):
            text = DOC_PREAMBLE + "".join("  " + ln + "\n" for ln in block.splitlines())
        else:
            text = "name: doc\n" + block
            if not re.search(r"^processes:", block, re.M):
                text += "processes:\n  server: {}\n  client: {}\n"
            if not re.search(r"^steps:", block, re.M):
                text += "steps:\n  - sleep: 1\n"
        try:
            load_text(text, "docs/scenarios.md")
        except ScenarioError as e:  # pragma: no cover - the message says which example
            pytest.fail(f"example in docs/scenarios.md does not load: {e}\n{block}")


# ------------------------------------------------------------------ no input makes a traceback


def _only_scenario_errors(text: str | bytes) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except ScenarioError as e:
        assert e.path == "fuzz.yaml"
        assert "internal error" not in e.message, e.message
        for word in JARGON:
            assert word not in e.message, e.message


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    st = None

if st is not None:
    YAMLISH = st.lists(st.sampled_from(list(" \n\t:-[]{},'\"&*!#|>?%@`019az_.\x01é")
                                       + ["call", "proc", "sock", "steps", "name", "processes",
                                          "&a", "*a", "!!python/name:os.system", "<<", "---"]),
                       max_size=80).map("".join)
    SEED = scenario(SRV, "  - {call: bind, proc: server, sock: srv, port: 80, expect: ok}\n",
                    "  - observe: {what: tcp_states, port: 80}\n")

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(YAMLISH)
    def test_fuzz_yamlish_text(text: str) -> None:
        _only_scenario_errors(text)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(SEED)), st.integers(0, 20), YAMLISH)
    def test_fuzz_mutated_scenario(pos: int, cut: int, insert: str) -> None:
        _only_scenario_errors(SEED[:pos] + insert + SEED[pos + cut:])

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300))
    def test_fuzz_bytes(raw: bytes) -> None:
        _only_scenario_errors(raw)


def test_deep_nesting_inside_a_step(tmp_path: Path) -> None:
    e = load_error(write(tmp_path, scenario("  - sleep: 1\n    expect: " + "[" * 5000 + "]" * 5000 + "\n")))
    assert e.line == 7
    check_message(e, ("levels of nested",))


# ------------------------------------------------------------------ the command line

CLI_MISSING = importlib.util.find_spec("sim.cli") is None
needs_cli = pytest.mark.skipif(CLI_MISSING, reason="sim.cli not present yet")

CLI_CASES = [c for c in CASES if c.id in {
    "indent-too-deep", "unclosed-bracket", "tab-indent", "unknown-call", "port-not-a-number",
    "undefined-socket-name", "expect-misspelt", "empty-file", "python-apply-os-system",
    "nul-bytes", "latin-1", "deep-nesting-lists", "huge-integer", "billion-laughs",
    "duplicate-key", "connect-without-port",
}]
LINE = re.compile(r"^error: (?P<path>.+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def run_cli(path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "sim.cli", "run", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def check_cli(path: Path, line: int, col: int, message: str | None = None) -> None:
    before = (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else None
    proc = run_cli(path)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert (m["path"], int(m["line"]), int(m["col"])) == (str(path), line, col)
    if message is not None:
        assert m["msg"] == message
    if before is not None:
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before, "the input file was changed"


@needs_cli
@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_file(tmp_path: Path, case: Bad) -> None:
    p = write(tmp_path, case.content)
    expected = load_error(p)
    check_cli(p, case.line, case.column, expected.message)
    assert not list(tmp_path.glob("*.tmp")) and [x.name for x in tmp_path.iterdir()] == [p.name]


@needs_cli
def test_cli_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.yaml"
    d.mkdir()
    check_cli(d, 0, 0)
    assert list(d.iterdir()) == []


@needs_cli
def test_cli_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "missing.yaml"
    check_cli(p, 0, 0)
    assert not p.exists()


def test_cases_used_by_cli_exist() -> None:
    assert len(CLI_CASES) == 16
