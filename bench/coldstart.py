"""Cold start: what each handler costs to import and initialise, next to ``import boto3``.

Each measurement is a fresh interpreter, as a Lambda cold start is. Inside it,
``time.perf_counter`` brackets the imports and the init; the peak resident memory of the
whole process is read at the end (``VmHWM``; see :data:`PROBE` for why not ``ru_maxrss``).
"Init" is what runs before the first event: module import (Powertools' Logger, the resolver)
plus building ``Settings`` from the environment — no AWS call (the Kisi key, the boto3
clients and the budget are built on first use, by design). ``sys.path`` mirrors Lambda's
(layer root + function root) and the environment is the one ``template.yaml`` gives every
function.

Each case runs ``REPEATS`` times after one warm-up (bytecode caches go to a temporary
directory, never into the repository), the cases interleaved round by round; the median is
reported, with ratios to ``import boto3`` measured in the same run, and so is the minimum:
on a busy machine the least disturbed run is the steadier estimate of the cost itself.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from local.sam import load_template

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "kisi_gateway"
REPEATS = 9
TIMEOUT_S = 60.0

_SETTINGS = "from kisi_gateway.config import Settings\nSettings.from_env(os.environ)"
_WHAT_IF_NO_BOTO3 = (
    "import sys, types\n"
    "for _name in ('boto3', 'boto3.dynamodb', 'boto3.dynamodb.types'):\n"
    "    sys.modules[_name] = types.ModuleType(_name)\n"
    "sys.modules['boto3.dynamodb.types'].TypeSerializer = object\n"
    "sys.modules['boto3.dynamodb.types'].TypeDeserializer = object\n"
    "import api_call\napi_call.settings()"
)
# name -> (function directory or None, code to time)
CASES: dict[str, tuple[str | None, str]] = {
    "python only": (None, "pass"),
    "import boto3": (None, "import boto3"),
    "api_call": ("api_call", "import api_call\napi_call.settings()"),
    "retry_worker": ("retry_worker", f"import os\nimport retry_worker\n{_SETTINGS}"),
    "metrics": ("metrics", f"import os\nimport metrics\n{_SETTINGS}"),
    # What-if, not the product: api_call's init were boto3.dynamodb.types (imported at module
    # level by kisi_gateway.records, see boto3_importers) imported lazily — stand-ins are
    # registered so that the import finds them instead of loading boto3.
    "api_call, what-if: no boto3 at init": ("api_call", _WHAT_IF_NO_BOTO3),
    # Not init: what api_call's first request adds before any AWS call (wiring.build_forwarder
    # builds these clients; Powertools' get_secret builds the Secrets Manager one).
    "api_call + first-call clients": ("api_call", "import api_call\napi_call.settings()\n"
                                      "import boto3\nfor _name in ('dynamodb', 'dynamodb', "
                                      "'sqs', 'secretsmanager'):\n    boto3.client(_name)"),
}
BASELINE = "import boto3"

# Peak memory is the process's VmHWM (/proc/self/status): Linux carries ru_maxrss across
# fork and exec, so a child's ru_maxrss is at least its parent's size at the fork (a child of
# a 110 MB bench reports 110 MB whatever it imports). VmHWM belongs to the exec'd image.
PROBE = """\
import time as _time
_started = _time.perf_counter()
{code}
_elapsed = _time.perf_counter() - _started
import json as _json, resource as _resource
_peak = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as _status:
        _peak = next(int(l.split()[1]) for l in _status if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
import sys as _sys
_boto3 = "boto3.session" in _sys.modules  # the real boto3 always imports it
print(_json.dumps({{"s": _elapsed, "rss_kb": _peak, "boto3": _boto3}}))
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
    "RETRY_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kisi-gateway-retry",
    "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kisi-gateway-retry-dlq",
    "ALARM_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:kisi-gateway-alarms",
    "NOTIFY_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:kisi-gateway-notify",
    "ALARM_PREFIX": "kisi-gateway",
    "BAD_RATE_THRESHOLD_PCT": "10",
    "BAD_RATE_MIN_VOLUME": "20",
    "ROUTE_BAD_VOLUME_THRESHOLD": "50",
}


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Medians over the repeats of one case."""

    case: str
    init_s: float
    init_min_s: float
    process_s: float  # the whole subprocess, interpreter start-up included
    rss_mb: float
    init_ratio: float  # median to median of import boto3
    init_min_ratio: float  # minimum to minimum
    rss_ratio: float
    loads_boto3: bool  # was boto3 imported by the time init ended?


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
    for path in sorted((LAYER / "kisi_gateway").glob("*.py")):
        lines = path.read_text().splitlines()
        if any(line.startswith(("import boto3", "from boto3")) for line in lines):
            found.append(f"kisi_gateway.{path.stem}")
    return found


def _measure_once(case: str, cache_dir: str) -> tuple[float, float, float, bool]:
    function, code = CASES[case]
    paths = [str(LAYER)] + ([str(ROOT / "functions" / function)] if function else [])
    env = {**lambda_environment(), "PYTHONPATH": os.pathsep.join(paths),
           "PYTHONPYCACHEPREFIX": cache_dir}
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter and our own probe code
        [sys.executable, "-c", PROBE.format(code=code)],
        env=env, cwd=cache_dir, capture_output=True, text=True, timeout=TIMEOUT_S, check=True,
    )
    process_s = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["s"]), process_s, float(result["rss_kb"]) / 1024.0, bool(result["boto3"])


def measure(repeats: int = REPEATS) -> list[ColdStart]:
    """Every case, interleaved round by round so drift affects all of them alike."""
    samples: dict[str, list[tuple[float, float, float, bool]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="kisi-bench-pyc-") as cache_dir:
        for case in CASES:  # warm-up: compile bytecode into the temporary cache
            _measure_once(case, cache_dir)
        for _ in range(repeats):
            for case in CASES:
                samples[case].append(_measure_once(case, cache_dir))
    medians = {
        case: tuple(statistics.median(s[i] for s in runs) for i in range(3))
        for case, runs in samples.items()
    }
    minima = {case: min(s[0] for s in runs) for case, runs in samples.items()}
    base_init, _, base_rss = medians[BASELINE]
    return [
        ColdStart(case, init, minima[case], process, rss, init / base_init,
                  minima[case] / minima[BASELINE], rss / base_rss,
                  any(s[3] for s in samples[case]))
        for case, (init, process, rss) in medians.items()
    ]


def main() -> None:
    for row in measure():
        print(f"{row.case:30} init {row.init_s * 1000:7.1f} ms (min {row.init_min_s * 1000:.1f})"
              f"  process {row.process_s * 1000:7.1f} ms  rss {row.rss_mb:6.1f} MB"
              f"  x boto3: init {row.init_ratio:.2f} (min {row.init_min_ratio:.2f})"
              f" rss {row.rss_ratio:.2f}")


if __name__ == "__main__":
    main()
