"""Cold start as shipped: each handler's init, from the artifacts ``make build`` writes.

A Lambda cold start's init imports the handler module in a fresh interpreter, with the function
root (``/var/task``) and the layer (``/opt/python``) on ``sys.path``, both read-only, and
boto3 from the runtime, which ships it with its bytecode. This bench does the same on this
machine:

- **as shipped (3.12)**: the artifacts under ``.aws-sam/build`` (built first if missing),
  copied to a temporary directory made read-only, each handler imported by Python 3.12 (the
  template's runtime; ``make lambda-python`` finds it) with ``PYTHONDONTWRITEBYTECODE=1``, so
  nothing is compiled once and reused: what the artifacts carry is all there is;
- **without bytecode (3.12)**: the same copy with every ``__pycache__`` removed, which is what
  the build shipped before it compiled bytecode;
- **source tree (3.11)**: the repository's own ``layers/`` and ``functions/`` under the
  development interpreter with a warm bytecode cache: the best case, for comparison with the
  figures this bench reported before it measured the artifacts.

The baseline of each interpreter is ``import boto3`` (boto3/botocore at the pins of
``requirements/dev.txt``, with their bytecode), measured in the same run: the 3.12 one in a venv
kept under ``.bench-cache/``. Cases alternate round by round, so drift on a shared machine
affects all alike. The figure is the whole process's CPU time (user + sys, from
``resource.getrusage(RUSAGE_CHILDREN)``), interpreter start-up included, so that work moved to
another thread or deferred to exit is not missed; peak memory is the process's ``VmHWM``.

``python -m bench.coldstart`` prints the table; ``--importtime HANDLER`` prints what that
handler's init imports and what each costs (``python -X importtime`` on the shipped artifacts).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local.sam import load_template

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "kisi_gateway"
BUILD = ROOT / ".aws-sam" / "build"
CACHE = ROOT / ".bench-cache"
REPEATS = 9
TIMEOUT_S = 60.0  # one measured process
BUILD_TIMEOUT_S = 900.0  # make build, or the baseline venv (pip)
BASELINE = "import boto3"
SHIPPED = "as shipped (3.12)"
NO_BYTECODE = "without bytecode (3.12)"
SOURCE = "source tree (3.11)"
# boto3 and what it needs, installed at requirements/dev.txt's pins into the 3.12 baseline venv:
# the Lambda runtime provides these, so the layer does not ship them.
BOTO3_CLOSURE = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six",
                 "urllib3")

# The probe runs the measured import, then prints the process's peak resident memory and
# whether boto3 was imported. VmHWM rather than ru_maxrss: Linux carries ru_maxrss across fork
# and exec, so every child would report at least the bench's own size.
PROBE = """\
{code}
import sys
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(peak, "boto3.session" in sys.modules)
"""

# Values for the variables template.yaml sets on every function (Globals), as deployed with
# the parameter defaults; resource references become plausible names and URLs.
TEMPLATE_VALUES = {
    "POWERTOOLS_SERVICE_NAME": "kisi-gateway",
    "POWERTOOLS_METRICS_NAMESPACE": "KisiGateway",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "KISI_BASE_URL": "https://api.kisi.io",
    "KISI_INTEGRATION_IDENTIFIER": "kisi-gateway-bench",
    "KISI_INTEGRATION_CONTACT": "bench@example.com",
    "RECORD_TTL_DAYS": "7",
    "SEND_RATE": "5",
    "ROUTE_POLICIES": "",
    "ROUTE_RATES": "",
    "KISI_API_KEY_SECRET": "arn:aws:secretsmanager:us-east-1:123456789012:secret:kisi-key",
    "REQUESTS_TABLE": "kisi-gateway-requests",
    "BUDGET_TABLE": "kisi-gateway-budget",
    "GUARD_TABLE": "kisi-gateway-guard",
    "TENANTS_TABLE": "kisi-gateway-tenants",
    "IDENTITY_SECRET": "arn:aws:secretsmanager:us-east-1:123456789012:secret:kisi-identity",
    "CREDENTIAL_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "CALLER_CREDENTIALS": "allow",
    "CLIENT_WAIT_S": "4",
    "RETRY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kisi-gateway-retry",
    "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kisi-gateway-retry-dlq",
    "ALARM_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:kisi-gateway-alarms",
    "NOTIFY_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:kisi-gateway-notify",
    "ALARM_PREFIX": "kisi-gateway",
    "BAD_RATE_MIN_VOLUME": "20",
    "ROUTE_BAD_VOLUME_THRESHOLD": "50",
}


@dataclass(frozen=True, slots=True)
class Case:
    """One thing to import in a fresh process: which interpreter, which ``sys.path``."""

    group: str
    name: str  # a handler module, or BASELINE
    python: Path
    paths: tuple[Path, ...]  # PYTHONPATH: function root first, then the layer, as on Lambda
    pycache_prefix: Path | None = None  # the source-tree group's warm cache

    @property
    def code(self) -> str:
        return BASELINE if self.name == BASELINE else f"import {self.name}"


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Medians over the repeats of one case; ratios to its group's ``import boto3``."""

    group: str
    case: str
    cpu_s: float  # user + sys of the whole process
    wall_s: float
    rss_mb: float
    cpu_ratio: float
    rss_ratio: float
    loads_boto3: bool  # was boto3 imported by the time init ended?
    compiled_from_source: int  # modules compiled at import for want of bytecode (-v)


@dataclass(frozen=True, slots=True)
class Handler:
    """A function of the template: its logical id, its handler module, its source directory."""

    function: str
    module: str
    code_uri: str


# --- what is measured ---------------------------------------------------------------------


def handlers() -> list[Handler]:
    """Every function of template.yaml, with the module its ``Handler`` names."""
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return [Handler(name, str(resource["Properties"]["Handler"]).rsplit(".", 1)[0],
                    str(resource["Properties"]["CodeUri"]))
            for name, resource in resources.items()
            if resource["Type"] == "AWS::Serverless::Function"]


def layer_ids() -> list[str]:
    """The template's layers (their build directories hold ``python/``)."""
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return [name for name, resource in resources.items()
            if resource["Type"] == "AWS::Serverless::LayerVersion"]


def template_variables() -> list[str]:
    """The environment variable names template.yaml gives every function."""
    template = load_template(ROOT / "template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return sorted(variables)


def lambda_environment() -> dict[str, str]:
    """A minimal environment shaped like a Lambda's: region, the template's variables."""
    missing = set(template_variables()) - set(TEMPLATE_VALUES)
    if missing:
        raise RuntimeError(f"coldstart.TEMPLATE_VALUES lacks {sorted(missing)}")
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {**base, **TEMPLATE_VALUES, "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1"}


def boto3_importers() -> list[str]:
    """Library modules that import boto3 at module level (so at every handler's init)."""
    found = []
    for path in sorted((LAYER / "kisi_gateway").rglob("*.py")):
        lines = path.read_text().splitlines()
        if any(line.startswith(("import boto3", "from boto3")) for line in lines):
            relative = path.relative_to(LAYER).with_suffix("")
            found.append(".".join(relative.parts).removesuffix(".__init__"))
    return found


# --- what it runs on ------------------------------------------------------------------------


def _run(command: list[str], timeout: float, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - our own tools, arguments built here
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def lambda_python() -> Path:
    """The Python 3.12 that ``make build`` compiles with (the template's runtime)."""
    found = _run(["make", "--no-print-directory", "-s", "lambda-python"], 60.0, cwd=ROOT)
    return Path(found.strip().splitlines()[-1])


def boto3_pins() -> list[str]:
    """boto3 and its dependencies at the exact versions requirements/dev.txt pins."""
    pins: dict[str, str] = {}
    for name in ("requirements/dev.txt", "requirements/local.txt",
                 "layers/kisi_gateway/requirements.txt"):
        path = ROOT / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if match:
                pins[match.group(1).lower().replace("_", "-")] = line.strip()
    missing = [name for name in BOTO3_CLOSURE if name not in pins]
    if missing:
        raise RuntimeError(f"requirements pin no version of {missing}")
    return [pins[name] for name in BOTO3_CLOSURE]


def runtime_venv(python: Path) -> Path:
    """A Python 3.12 venv with boto3 at the dev pins and its bytecode: the runtime's boto3.

    Kept under ``.bench-cache/`` and rebuilt when the pins or the interpreter change.
    """
    venv = CACHE / "lambda-runtime-py312"
    pins = boto3_pins()
    stamp = venv / "bench-stamp.txt"
    wanted = "\n".join([str(python), *pins]) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    _run([str(python), "-m", "venv", str(venv)], BUILD_TIMEOUT_S)
    venv_python = venv / "bin" / "python"
    _run([str(venv_python), "-m", "pip", "install", "--quiet", "--no-deps", *pins],
         BUILD_TIMEOUT_S)
    # The runtime image carries boto3's bytecode; pip may not have written it (this
    # machine sets PYTHONDONTWRITEBYTECODE), so compile it explicitly.
    site = _run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                TIMEOUT_S).strip()
    _run([str(venv_python), "-m", "compileall", "-q", "-j", "0", site], BUILD_TIMEOUT_S)
    stamp.write_text(wanted)
    return venv_python


def ensure_artifacts(artifacts: Path) -> Path:
    """The build output to measure; ``make build`` writes it first when it is missing."""
    if not (artifacts / "template.yaml").exists():
        if artifacts.resolve() != BUILD.resolve():
            raise FileNotFoundError(f"no build output at {artifacts} (no template.yaml)")
        print("no build output: running make build", flush=True)
        _run(["make", "--no-print-directory", "build"], BUILD_TIMEOUT_S, cwd=ROOT)
    return artifacts


@contextmanager
def read_only_copies(artifacts: Path) -> Iterator[tuple[Path, Path]]:
    """Two read-only copies of the artifacts: as built, and with every ``__pycache__`` removed.

    Read-only as on Lambda. The bench may run as root, whom file modes do not stop, so
    ``PYTHONDONTWRITEBYTECODE`` is what keeps Python from caching anything; :func:`measure`
    checks afterwards that nothing was written.
    """
    with tempfile.TemporaryDirectory(prefix="kisi-coldstart-") as scratch:
        shipped, bare = Path(scratch) / "shipped", Path(scratch) / "no-bytecode"
        shutil.copytree(artifacts, shipped, symlinks=True)
        shutil.copytree(artifacts, bare, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        for tree in (shipped, bare):
            _set_writable(tree, writable=False)
        try:
            yield shipped, bare
        finally:
            for tree in (shipped, bare):
                _set_writable(tree, writable=True)  # so the temporary directory can go


def _set_writable(tree: Path, *, writable: bool) -> None:
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~write_bits)


def file_count(tree: Path) -> int:
    return sum(1 for _ in tree.rglob("*"))


def cases(python312: Path, shipped: Path, bare: Path, warm_cache: Path) -> list[Case]:
    """Every case of one run, in the order each round runs them.

    ``python312`` is the runtime venv's interpreter (boto3 in its site-packages, as on Lambda).
    """
    layer = layer_ids()[0]
    found = [Case(SHIPPED, BASELINE, python312, ())]
    for tree, group in ((shipped, SHIPPED), (bare, NO_BYTECODE)):
        found += [Case(group, h.module, python312, (tree / h.function, tree / layer / "python"))
                  for h in handlers()]
    found.append(Case(SOURCE, BASELINE, Path(sys.executable), (), warm_cache))
    found += [Case(SOURCE, h.module, Path(sys.executable),
                   (ROOT / h.code_uri, LAYER), warm_cache) for h in handlers()]
    return found


def _environment(case: Case) -> dict[str, str]:
    env = {**lambda_environment(), "PYTHONDONTWRITEBYTECODE": "1"}
    if case.paths:
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in case.paths)
    if case.pycache_prefix is not None:
        env["PYTHONPYCACHEPREFIX"] = str(case.pycache_prefix)
        del env["PYTHONDONTWRITEBYTECODE"]  # the source tree's cache is warmed once, then kept
    return env


def measure_once(case: Case, cwd: Path) -> tuple[float, float, float, bool]:
    """One fresh process: (CPU s, wall s, peak RSS MB, boto3 imported)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = _run([str(case.python), "-c", PROBE.format(code=case.code)], TIMEOUT_S,
               env=_environment(case), cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kb, boto3 = out.split()[-2:]
    return cpu, wall, int(peak_kb) / 1024.0, boto3 == "True"


def compiled_from_source(case: Case, cwd: Path) -> int:
    """How many modules the import compiled from source, for want of bytecode (``python -v``)."""
    env = _environment(case)
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [str(case.python), "-v", "-c", case.code], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=TIMEOUT_S, check=True,
    )
    # "# code object from '<x.pyc>'" is bytecode read; an unquoted .py path is a compile
    return len(re.findall(r"^# code object from /\S+\.py$", done.stderr, flags=re.MULTILINE))


def measure(repeats: int = REPEATS, artifacts: Path = BUILD) -> list[ColdStart]:
    """Every case, interleaved round by round; medians and ratios to each group's boto3."""
    venv_python = runtime_venv(lambda_python())
    built = ensure_artifacts(artifacts)
    with read_only_copies(built) as (shipped, bare), \
            tempfile.TemporaryDirectory(prefix="kisi-coldstart-") as scratch:
        todo = cases(venv_python, shipped, bare, Path(scratch) / "pycache")
        files_before = file_count(shipped) + file_count(bare)
        for case in todo:  # warm-up: the OS page cache, and the source tree's bytecode cache
            measure_once(case, Path(scratch))
        samples: dict[Case, list[tuple[float, float, float, bool]]] = {c: [] for c in todo}
        for _ in range(repeats):
            for case in todo:
                samples[case].append(measure_once(case, Path(scratch)))
        compiles = {case: compiled_from_source(case, Path(scratch)) for case in todo}
        written = file_count(shipped) + file_count(bare) - files_before
    if written:
        raise RuntimeError(f"{written} files appeared in the read-only artifacts during the run")
    medians = {case: tuple(statistics.median(s[i] for s in runs) for i in range(3))
               for case, runs in samples.items()}
    baselines = {case.group: medians[case] for case in todo if case.name == BASELINE}
    baselines[NO_BYTECODE] = baselines[SHIPPED]  # same interpreter, same runtime boto3
    return [
        ColdStart(case.group, case.name, cpu, wall, rss, cpu / baselines[case.group][0],
                  rss / baselines[case.group][2], any(s[3] for s in samples[case]),
                  compiles[case])
        for case, (cpu, wall, rss) in medians.items()
    ]


# --- where the time goes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportCost:
    """One module of ``-X importtime``: its own time and with what it imported."""

    module: str
    self_us: int
    cumulative_us: int


def import_costs(module: str, artifacts: Path = BUILD) -> list[ImportCost]:
    """``python3.12 -X importtime -c 'import <module>'`` on the shipped, read-only artifacts."""
    python312 = runtime_venv(lambda_python())
    handler = next(h for h in handlers() if h.module == module)
    with read_only_copies(ensure_artifacts(artifacts)) as (shipped, _), \
            tempfile.TemporaryDirectory(prefix="kisi-coldstart-") as scratch:
        case = Case(SHIPPED, module, python312,
                    (shipped / handler.function, shipped / layer_ids()[0] / "python"))
        done = subprocess.run(  # noqa: S603 - our own interpreter
            [str(python312), "-X", "importtime", "-c", case.code], env=_environment(case),
            cwd=scratch, capture_output=True, text=True, timeout=TIMEOUT_S, check=True,
        )
    return parse_importtime(done.stderr)


def parse_importtime(stderr: str) -> list[ImportCost]:
    """The rows of ``-X importtime`` output (``import time: self | cumulative | name``)."""
    costs = []
    for line in stderr.splitlines():
        match = re.fullmatch(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
        if match:
            costs.append(ImportCost(match.group(3), int(match.group(1)), int(match.group(2))))
    return costs


def by_package(costs: list[ImportCost]) -> dict[str, int]:
    """Self time summed per top-level package, largest first (µs)."""
    totals: dict[str, int] = {}
    for cost in costs:
        top = cost.module.split(".")[0]
        totals[top] = totals.get(top, 0) + cost.self_us
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def print_import_costs(module: str, artifacts: Path, top: int) -> None:
    costs = import_costs(module, artifacts)
    total = sum(cost.self_us for cost in costs)
    print(f"{module}: {len(costs)} modules, {total / 1000:.1f} ms of import (one run)")
    print("\nper top-level package (self time):")
    for package, micros in list(by_package(costs).items())[:top]:
        print(f"  {package:40} {micros / 1000:7.1f} ms  {100 * micros / total:5.1f} %")
    print("\nlargest cumulative (a module with everything it imported first):")
    for cost in sorted(costs, key=lambda c: -c.cumulative_us)[:top]:
        print(f"  {cost.module:60} {cost.cumulative_us / 1000:7.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=BUILD,
                        help="sam build output to measure (default: .aws-sam/build, built "
                             "first if missing)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--importtime", metavar="HANDLER",
                        help="print what this handler module's init imports, and the cost")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.importtime:
        print_import_costs(args.importtime, args.artifacts, args.top)
        return 0
    for row in measure(args.repeats, args.artifacts):
        print(f"{row.group:24} {row.case:14} cpu {row.cpu_s * 1000:6.1f} ms "
              f"(x boto3 {row.cpu_ratio:4.2f})  wall {row.wall_s * 1000:6.1f} ms  "
              f"rss {row.rss_mb:5.1f} MB (x {row.rss_ratio:4.2f})  "
              f"boto3 loaded {row.loads_boto3!s:5}  compiled at import {row.compiled_from_source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
