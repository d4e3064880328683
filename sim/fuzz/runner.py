"""The fuzz campaign (find, confirm, shrink, reduce, write) and the `socksim fuzz` command."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .world import MAX_STEPS, MIN_STEPS, UNSTABLE_RETRIES
from .steps import interpret, load_document, raw_scenarios, to_yaml
from .verdict import Verdict, _size, evaluate, reduce



# ----------------------------------------------------------------------------- the campaign


class _Found(Exception):
    """Raised inside the hypothesis test to make it shrink (never escapes the campaign)."""


def _fail(sig: str) -> None:
    # One raise site: hypothesis tells failures apart by where they were raised, and shrinks
    # only towards the same one.
    raise _Found(sig)


@dataclass
class Divergence:
    signature: str
    count: int = 1
    stable: bool = True
    path: str | None = None
    steps: int | None = None
    details: list[str] = field(default_factory=list)
    first_seen: int = 0


@dataclass
class CampaignResult:
    examples: int = 0
    agreed: int = 0
    diverged: int = 0
    divergences: dict[str, Divergence] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    exit_code: int = 130  # 128 + the stop signal's number, when interrupted


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s.replace("simulator-", "sim-")
    return s[:limit].strip("-") or "divergence"


def describe(verdict: Verdict, sig: str, seed: int | None, index: int | None) -> str:
    where = f" (seed {seed}, example {index})" if index is not None else ""
    lines = [f"Divergence found by socksim fuzz{where}: {sig}."]
    for i in verdict.steps_with(sig):
        lines += verdict.details.get(i, [])
    return "\n".join(lines)


def write_scenario(doc: dict[str, Any], path: Path, verdict: Verdict | None = None,
                   sig: str | None = None) -> Path:
    """Write a document as a scenario file. With a verdict, the steps that diverge (with signature
    ``sig``, or all of them) get ``expect:`` set to what the real kernel did. The text is
    validated by the scenario loader before it is written."""
    from ..scenario.loader import load_text

    doc = dict(doc)
    doc["steps"] = [dict(s) for s in doc["steps"]]
    if verdict is not None:
        for i, value in verdict.real_outcomes.items():
            if sig is not None and verdict.signatures.get(i) != sig:
                continue
            if i < len(doc["steps"]) and value is not None and not (
                    isinstance(value, str) and value.startswith("PROCESS_")):
                doc["steps"][i]["expect"] = value
    from ..outfile import OutputError, write_file

    text = to_yaml(doc)
    load_text(text, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):  # an existing file is never replaced: the next free name is taken
        target = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        if target.exists() or target.is_symlink():
            continue
        try:
            write_file(target, text, "the divergent scenario")
            return target
        except OutputError:
            if not target.exists():
                raise
    raise OutputError(f"{path}: already exists, and so do 998 numbered variants")


def campaign(examples: int, seed: int, out: Path | None, *, shrink_seconds: float = 240.0,
             evaluator: Callable[[Any], Verdict] = evaluate, confirm: int = 2,
             log: Callable[[str], None] | None = None, progress_every: int = 10,
             min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS) -> CampaignResult:
    """Run ``examples`` generated scenarios; shrink and write each new kind of divergence.

    An example diverges when any step disagrees; it is counted under its :attr:`Verdict.primary`
    signature. A signature not seen before must reproduce in ``confirm`` runs (else it is recorded
    as unstable, its full scenario written as is, and a later example with it gets another try),
    then hypothesis shrinks the example -- a candidate fails while its primary signature is the
    same -- for at most ``shrink_seconds``, :func:`reduce` removes what is left to remove, and the
    result is confirmed again and written to ``out``. ``evaluator`` runs one validated Scenario
    (by default on both backends); the generation is reproducible from ``seed``.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    say = log or (lambda s: None)
    res = CampaignResult()
    t0 = time.monotonic()
    run_no = 0
    strategy = raw_scenarios(min_steps, max_steps)

    def reproduces(sc: Any, sig: str, times: int) -> Verdict | None:
        last = None
        for _ in range(times):
            w = evaluator(sc)
            if not w.has(sig):
                return None
            last = w
        return last

    while res.examples < examples:
        run_no += 1
        state: dict[str, Any] = {"target": None, "best": None, "generated": 0, "deadline": 0.0,
                                 "index": None}

        def check(raw: Any) -> None:
            doc = interpret(raw, name="fuzz")
            sc = load_document(doc)
            target = state["target"]
            if target is not None:  # shrinking: fail while the same kind of divergence remains
                if time.monotonic() > state["deadline"]:
                    return
                v = evaluator(sc)
                if v.has(target):
                    if _size(doc) < _size(state["best"][0]):
                        state["best"] = (doc, v)
                    _fail(target)
                return
            state["generated"] += 1
            n = res.examples + 1
            v = evaluator(sc)
            res.examples = n  # counted once both runs are done (an interrupt leaves it out)
            if v.agree:
                res.agreed += 1
            else:
                res.diverged += 1
                sig = v.primary
                div = res.divergences.get(sig)
                if div is not None:
                    div.count += 1
                if div is None or (not div.stable and div.count <= UNSTABLE_RETRIES):
                    again = reproduces(sc, sig, max(0, confirm - 1)) if confirm > 1 else v
                    if div is None:
                        div = res.divergences[sig] = Divergence(
                            sig, 1, again is not None, first_seen=n,
                            details=[x for i in v.steps_with(sig) for x in v.details[i]])
                    div.stable = again is not None
                    if again is None:
                        say(f"example {n}: divergence {sig} (did not reproduce: unstable, not shrunk)")
                        if out is not None and div.path is None:
                            p = out / f"unstable-seed{seed}-{n}-{_slug(sig)}.yaml"
                            d = {**doc, "name": f"unstable-{_slug(sig, 40)}",
                                 "description": describe(v, sig, seed, n)}
                            div.path = str(write_scenario(d, p))
                    else:
                        say(f"example {n}: divergence {sig}")
                        state.update(target=sig, best=(doc, v), index=n, found=time.monotonic(),
                                     deadline=time.monotonic() + shrink_seconds)
                        _fail(sig)
            if progress_every and n % progress_every == 0:
                say(f"[{n}/{examples}] {res.agreed} agreed, {res.diverged} diverged "
                    f"({len(res.divergences)} distinct), {time.monotonic() - t0:.0f} s")

        prop = settings(
            max_examples=examples - res.examples, deadline=None, database=None,
            phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False,
        )(hseed(seed * 1000 + run_no)(given(strategy)(check)))
        try:
            try:
                prop()
            except KeyboardInterrupt:
                raise
            except BaseException:  # _Found, or hypothesis' report about it (e.g. a flaky replay)
                if state["target"] is None:
                    raise
            if state["target"] is not None:
                _finish(state, res, out, seed, evaluator, reproduces, confirm, say)
            elif state["generated"] == 0:
                break  # hypothesis generated nothing more (should not happen)
        except KeyboardInterrupt as e:
            from .. import interrupt

            res.interrupted, res.exit_code = True, interrupt.exit_code(e)
            break
    res.seconds = time.monotonic() - t0
    return res


def _finish(state: dict[str, Any], res: CampaignResult, out: Path | None, seed: int,
            evaluator: Callable[[Any], Verdict], reproduces: Callable[..., Verdict | None],
            confirm: int, say: Callable[[str], None]) -> None:
    """After hypothesis has shrunk a new divergence: reduce, confirm and write it."""
    sig = state["target"]
    div = res.divergences[sig]
    doc, v = state["best"]
    t = time.monotonic()
    say(f"  shrunk by hypothesis to {len(doc['steps'])} steps in {t - state['found']:.0f} s; "
        "reducing further")
    doc = reduce(doc, lambda d: evaluator(load_document(d)).has(sig), t + 120.0)
    final = reproduces(load_document(doc), sig, max(1, confirm))
    if final is None:
        doc, _ = state["best"]
        final = reproduces(load_document(doc), sig, 1) or v
        say("  the reduced scenario did not reproduce every time; keeping hypothesis' result")
    div.steps = len(doc["steps"])
    div.details = [x for i in final.steps_with(sig) for x in final.details[i]]
    if out is not None:
        d = {**doc, "name": f"fuzz-{_slug(sig, 50)}",
             "description": describe(final, sig, seed, state["index"])}
        div.path = str(write_scenario(d, out / f"seed{seed}-{_slug(sig)}.yaml", final, sig))
        say(f"  minimal scenario ({div.steps} steps, {time.monotonic() - t:.0f} s more): {div.path}")


# ----------------------------------------------------------------------------- the command


def cmd_fuzz(args: argparse.Namespace) -> int:
    def bad(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.examples < 1:
        return bad(f"--examples must be at least 1, got {args.examples}")
    if args.shrink_seconds < 0:
        return bad(f"--shrink-seconds must not be negative, got {args.shrink_seconds}")
    from ..outfile import OutputError, check_folder

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return bad(f"--out {args.out}: exists and is not a directory")
    if not out.exists() and not out.parent.exists():
        return bad(f"--out {args.out}: the folder {out.parent} does not exist")
    try:
        check_folder(out, "the divergent scenarios")
    except OutputError as e:
        return bad(f"--out {e}")
    from ..real.backend import RealBackend, RealBackendError

    ok, why = RealBackend.available()
    if not ok:
        return bad(f"cannot run on the real kernel here: {why}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big") % 1_000_000
    quiet = args.quiet

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"fuzzing {args.examples} examples, seed {seed} (replay with --seed {seed}); "
        f"divergences go to {out}/")
    try:
        res = campaign(args.examples, seed, out, shrink_seconds=args.shrink_seconds, log=log)
    except RealBackendError as exc:
        return bad(f"the real backend failed: {exc}")
    except OSError as exc:
        return bad(f"{exc.filename or args.out}: cannot write: {exc.strerror}")
    except OutputError as exc:
        return bad(str(exc))
    for div in res.divergences.values():
        tag = "" if div.stable else " [unstable]"
        where = f" -> {div.path}" if div.path else ""
        print(f"diverged x{div.count}{tag}: {div.signature}{where}")
    if res.interrupted:
        print("interrupted: the figures cover the examples run so far", file=sys.stderr)
    print(f"{res.examples} examples, {res.agreed} agreed, {res.diverged} diverged")
    if res.interrupted:
        return res.exit_code
    return 1 if res.diverged else 0


def register(sub: Any) -> None:
    f = sub.add_parser(
        "fuzz", help="run random scenarios on the simulator and the real kernel, compare",
        description="Differential fuzzing: draw random valid scenarios (2-3 processes, 5-40 calls "
                    "over a tiny port space, random options and sysctls), run each on the simulator "
                    "and on this host's kernel, and compare the call results and the segments on the wire "
                    "(a difference in either is a divergence). Each new kind of divergence is shrunk "
                    "to a minimal scenario and written as YAML (an existing file is never replaced: "
                    "the next free name NAME-2.yaml, ... is taken). Exit 0 when every example agreed, "
                    "1 when one diverged, 2 for bad input, 128+N when stopped by signal N.")
    f.add_argument("--examples", type=int, default=100, metavar="N",
                   help="how many scenarios to generate (default 100)")
    f.add_argument("--seed", type=int, help="seed of the generator (default: random, printed)")
    f.add_argument("--out", default="fuzz-divergences", metavar="DIR",
                   help="where minimal divergent scenarios are written (default ./fuzz-divergences)")
    f.add_argument("--shrink-seconds", type=float, default=240.0, metavar="S",
                   help="time hypothesis spends shrinking each new divergence (default 240); "
                        "a step-by-step reduction of at most 120 s follows")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    f.set_defaults(func=cmd_fuzz)
