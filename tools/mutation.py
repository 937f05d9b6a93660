"""Mutation testing of the decision core and the runners (``make mutation``).

mutmut changes one thing at a time in the code (a ``>=`` into ``>``, a value into ``None``, an
argument dropped, ...) and runs the tests that cover the changed function: a mutant the tests
notice is killed, one they do not notice survived. What is mutated and which tests run is
``[tool.mutmut]`` in pyproject.toml.

Why a staged tree: mutmut 3 names a mutant after its file's path (relative to where it runs) and
switches it on only in the module of that name, while the tests import the layer as
``kisi_gateway.…`` (the layer root is on ``sys.path``, as on Lambda), from
``layers/kisi_gateway/kisi_gateway/…``. So mutmut runs in ``.mutation/``, where each package to
mutate sits at the root: symlinks to it, to the tests, to what ``also_copy`` names and to
pyproject.toml. mutmut copies that tree into ``.mutation/mutants/`` and mutates the copy; the
repository itself is never changed. Each run starts afresh (mutmut would otherwise keep stale
copies of the modules it does not mutate).

Afterwards: the score, and every mutant that was not killed with its diff, printed and written
to ``.mutation/report.md``. Survivors judged equivalent (no behaviour anyone could notice) are
listed with the reason in ``tools/mutation_equivalent.toml``; the run fails only if a mutant
survives that is not listed there, or if mutmut itself fails.

Re-test one mutant after changing a test (from ``.mutation/``):
``../.venv-mutation/bin/mutmut run 'kisi_gateway.core.decisions.x_on_delivery__mutmut_7'``.

A run stopped part-way (Ctrl-C: mutmut keeps every result so far) goes on with ``--resume``:
the stage and its results are kept, and mutmut tests only the mutants not yet tested, or with
``--first PATTERN`` (fnmatch over mutant names, repeatable) those matching first, in that order.
``--report`` only writes the report of the results so far; mutants never tested count as
``not checked``.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".mutation"
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.toml"
# mutmut's statuses, in the order the summary gives them.
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped",
            "caught by type check", "check was interrupted by user", "not checked")


@dataclass(frozen=True, slots=True)
class Mutant:
    """One mutant: its name (``module.function__mutmut_n``), status and diff."""

    name: str
    status: str
    diff: str = ""

    @property
    def function(self) -> str:
        """The mutated function, as mutmut names it (without the mutant's number)."""
        return self.name.partition("__mutmut_")[0]

    @property
    def change(self) -> str:
        """The changed lines of the diff (``-``/``+``, stripped): what the mutant does, in a
        form that survives renumbering when the function changes elsewhere."""
        lines = []
        for line in self.diff.splitlines():
            if line.startswith(("---", "+++")):
                continue
            if line.startswith(("-", "+")):
                lines.append(line[0] + " " + line[1:].strip())
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Equivalent:
    """A surviving mutant judged harmless, and why."""

    function: str
    change: str
    why: str

    def matches(self, mutant: Mutant) -> bool:
        """Same function, same change (whatever number mutmut gave the mutant this time)."""
        return mutant.function == self.function and mutant.change == self.change.strip()


def load_settings(root: Path) -> tuple[dict[str, object], list[str]]:
    """``[tool.mutmut]`` and pytest's ``pythonpath`` from ``root``'s pyproject.toml."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    tool = pyproject["tool"]
    return tool["mutmut"], list(tool["pytest"]["ini_options"]["pythonpath"])


def load_equivalents(path: Path) -> list[Equivalent]:
    """The survivors judged equivalent, from ``path`` (``[[equivalent]]`` tables)."""
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text())
    return [Equivalent(e["function"], e["change"], e["why"]) for e in data.get("equivalent", [])]


def locate(name: str, root: Path, pythonpath: list[str]) -> Path:
    """Where the tests import ``name`` from: the first pytest ``pythonpath`` root holding it."""
    for entry in pythonpath:
        candidate = root / entry / name
        if candidate.exists():
            return candidate
    raise SystemExit(f"error: {name} (tool.mutmut source_paths) is in no pytest pythonpath root")


def stage(root: Path, stage_dir: Path, settings: dict[str, object], pythonpath: list[str]) -> None:
    """A fresh ``stage_dir`` of symlinks: the packages to mutate at its root, plus the tests,
    ``also_copy`` and pyproject.toml."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir()
    links: dict[str, Path] = {"pyproject.toml": root / "pyproject.toml", "tests": root / "tests"}
    for name in _strings(settings, "source_paths"):
        links[name.rstrip("/")] = locate(name.rstrip("/"), root, pythonpath)
    for name in _strings(settings, "also_copy"):
        links[name.rstrip("/")] = root / name.rstrip("/")
    for name, target in links.items():
        if not target.exists():
            raise SystemExit(f"error: {target} does not exist (named in tool.mutmut)")
        link = stage_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))


def _strings(settings: dict[str, object], key: str) -> list[str]:
    value = settings.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SystemExit(f"error: tool.mutmut {key} must be a list of strings")
    return value


def mutmut(stage_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run this environment's mutmut in ``stage_dir``, without a ``PYTHONPATH`` that could let
    the tests import the unmutated layer."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    executable = Path(sys.executable).parent / "mutmut"
    return subprocess.run(  # noqa: S603 (our own venv's mutmut, fixed arguments)
        [str(executable), *args], cwd=stage_dir, env=env, check=False
    )


def collect(stage_dir: Path) -> list[Mutant]:
    """Every mutant's status, and the diff of each one not killed.

    Read with mutmut's own functions (what ``mutmut results`` and ``mutmut show`` use; the
    version is pinned), in this process: ``mutmut show`` per mutant would start mutmut once for
    each survivor.
    """
    from mutmut.mutation.data import SourceFileMutationData  # noqa: PLC0415
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # noqa: PLC0415
    from mutmut.stats import status_by_exit_code  # noqa: PLC0415
    from mutmut.utils.file_utils import walk_mutatable_files  # noqa: PLC0415

    here = Path.cwd()
    os.chdir(stage_dir)  # mutmut reads its configuration and mutants/ from the working directory
    try:
        mutants = []
        for path in walk_mutatable_files():
            data = SourceFileMutationData(path=path)
            data.load()
            for name, exit_code in data.exit_code_by_key.items():
                status = status_by_exit_code[exit_code]
                shown = status not in ("killed", "not checked")
                diff = get_diff_for_mutant(name, path=path) if shown else ""
                mutants.append(Mutant(name, status, _diff_body(diff)))
        return mutants
    finally:
        os.chdir(here)


def _diff_body(diff: str) -> str:
    """The diff without its ``---``/``+++`` file header."""
    return "\n".join(
        line for line in diff.splitlines() if not line.startswith(("--- ", "+++ "))
    )


def score_line(counts: Counter[str]) -> str:
    """``killed K / total T (P %)``, then survived, timeout, no tests and any other status."""
    total = sum(counts.values())
    killed = counts["killed"]
    pct = 100.0 * killed / total if total else 0.0
    shown = [s for s in STATUSES[1:] if counts[s] or s in ("survived", "timeout", "no tests")]
    return f"killed {killed} / total {total} ({pct:.1f} %); " + ", ".join(
        f"{s} {counts[s]}" for s in shown
    )


def unexplained(mutants: list[Mutant], equivalents: list[Equivalent]) -> list[Mutant]:
    """Mutants the tests did not notice and nobody judged equivalent.

    A timeout counts as noticed: the mutant made a test hang until mutmut stopped it.
    """
    return [m for m in mutants if m.status not in ("killed", "timeout", "not checked")
            and not any(e.matches(m) for e in equivalents)]


def report(mutants: list[Mutant], equivalents: list[Equivalent], elapsed_s: float) -> str:
    """The report as Markdown: the score, per module, then every mutant not killed."""
    lines = ["# Mutation testing", "",
             f"Score: {score_line(Counter(m.status for m in mutants))}.", "",
             f"mutmut ran {elapsed_s / 60:.1f} min.", "",
             "| module | mutants | killed | survived | other |", "|---|---|---|---|---|"]
    by_module: dict[str, Counter[str]] = {}
    for m in mutants:
        by_module.setdefault(m.function.rsplit(".", 1)[0], Counter())[m.status] += 1
    for module, c in sorted(by_module.items()):
        total = sum(c.values())
        other = total - c["killed"] - c["survived"]
        lines.append(f"| `{module}` | {total} | {c['killed']} | {c['survived']} | {other} |")
    open_ = unexplained(mutants, equivalents)
    lines += ["", f"## Not killed, not judged equivalent: {len(open_)}", ""]
    lines += [_section(m) for m in open_]
    judged = [(m, e) for m in mutants for e in equivalents
              if m.status == "survived" and e.matches(m)]
    lines += ["", f"## Survivors judged equivalent ({EQUIVALENT_FILE.name}): {len(judged)}", ""]
    lines += [_section(m, e.why) for m, e in judged]
    timeouts = [m for m in mutants if m.status == "timeout"]
    if timeouts:
        lines += ["", f"## Timeouts (noticed: a test hung): {len(timeouts)}", ""]
        lines += [_section(m) for m in timeouts]
    unchecked = Counter(m.function for m in mutants if m.status == "not checked")
    if unchecked:
        lines += ["", f"## Not checked (the run stopped first): {sum(unchecked.values())}", ""]
        lines += [f"- `{function}`: {n}" for function, n in sorted(unchecked.items())]
    return "\n".join(lines) + "\n"


def _section(mutant: Mutant, why: str | None = None) -> str:
    text = f"### `{mutant.name}`: {mutant.status}\n\n"
    if why:
        text += f"{why.strip()}\n\n"
    return text + f"```diff\n{mutant.diff}\n```\n"


def untested_first(mutants: list[Mutant], patterns: list[str]) -> list[list[str]]:
    """The names of the mutants not yet tested, one batch per pattern (in the order given),
    then the rest."""
    left = [m.name for m in mutants if m.status == "not checked"]
    batches = []
    for pattern in patterns:
        batch = [name for name in left if fnmatch.fnmatchcase(name, pattern)]
        left = [name for name in left if name not in batch]
        batches.append(batch)
    return [batch for batch in [*batches, left] if batch]


def main(argv: list[str] | None = None) -> int:
    """Stage, run mutmut, report; 1 if a mutant survived unexplained or mutmut failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested at once (default: the number of CPUs)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the last run's stage and results; test what it did not")
    parser.add_argument("--first", action="append", default=[], metavar="PATTERN",
                        help="with --resume: untested mutants matching PATTERN first")
    parser.add_argument("--report", action="store_true",
                        help="only write the report of the results so far")
    args = parser.parse_args(argv)
    settings, pythonpath = load_settings(ROOT)
    equivalents = load_equivalents(EQUIVALENT_FILE)
    started = time.monotonic()
    if args.resume or args.report:
        if not (STAGE / "mutants").exists():
            raise SystemExit("error: no earlier run to resume or report on")
    else:
        stage(ROOT, STAGE, settings, pythonpath)
    children = ("--max-children", str(args.max_children))
    if args.resume:
        # mutmut re-tests a mutant it is given by name: name only those never tested.
        try:
            for batch in untested_first(collect(STAGE), args.first):
                run = mutmut(STAGE, "run", *children, *batch)
                if run.returncode != 0:
                    print(f"error: mutmut run failed (exit {run.returncode})", file=sys.stderr)
                    return run.returncode
        except KeyboardInterrupt:  # mutmut saved every result it had: report those
            print("stopped: the rest stays not checked", file=sys.stderr)
    elif not args.report:
        run = mutmut(STAGE, "run", *children)
        if run.returncode != 0:
            print(f"error: mutmut run failed (exit {run.returncode})", file=sys.stderr)
            return run.returncode
    elapsed = time.monotonic() - started
    mutants = collect(STAGE)
    if not mutants:
        print("error: mutmut reported no mutants", file=sys.stderr)
        return 1
    report_path = STAGE / "report.md"
    report_path.write_text(report(mutants, equivalents, elapsed))
    open_ = unexplained(mutants, equivalents)
    print()
    print(f"mutation score: {score_line(Counter(m.status for m in mutants))}")
    print(f"mutmut ran {elapsed / 60:.1f} min; report: {report_path.relative_to(ROOT)}")
    for m in open_:
        print(f"  not killed, not judged equivalent: {m.name} ({m.status})")
    return 1 if open_ else 0


if __name__ == "__main__":
    sys.exit(main())
