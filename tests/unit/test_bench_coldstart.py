"""The cold-start bench's bookkeeping: what it measures and how it reads the results.

The measurement itself (fresh Python 3.12 processes on the built artifacts) runs in
``make bench``; these tests pin the parts that decide *what* is measured.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench import coldstart

ROOT = Path(__file__).resolve().parents[2]


def test_every_function_of_the_template_is_measured_by_its_handler_module() -> None:
    found = {(h.function, h.module) for h in coldstart.handlers()}
    assert found == {("ApiCallFunction", "api_call"), ("RetryWorkerFunction", "retry_worker"),
                     ("MetricsFunction", "metrics")}
    for handler in coldstart.handlers():
        assert (ROOT / handler.code_uri / f"{handler.module}.py").is_file()


def test_the_runtime_boto3_is_installed_at_the_exact_dev_pins() -> None:
    files = [ROOT / "requirements" / "dev.txt", ROOT / "requirements" / "local.txt",
             ROOT / "layers" / "kisi_gateway" / "requirements.txt"]
    text = "\n".join(path.read_text() for path in files if path.exists())
    for pin in coldstart.boto3_pins():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.]*", pin), pin
        assert pin in text.splitlines()
    assert {pin.split("==")[0] for pin in coldstart.boto3_pins()} == set(coldstart.BOTO3_CLOSURE)


def test_the_environment_is_the_templates() -> None:
    env = coldstart.lambda_environment()
    assert set(coldstart.template_variables()) <= set(env)
    assert env["AWS_REGION"] == "us-east-1"


def test_importtime_rows_are_read_with_their_own_and_cumulative_time() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       324 |        324 |             jmespath.ast\n"
        "import time:       422 |       7067 |           jmespath\n"
        "some other line\n"
        "import time:      1194 |       1194 |       botocore\n"
    )
    costs = coldstart.parse_importtime(stderr)
    assert costs == [coldstart.ImportCost("jmespath.ast", 324, 324),
                     coldstart.ImportCost("jmespath", 422, 7067),
                     coldstart.ImportCost("botocore", 1194, 1194)]
    assert coldstart.by_package(costs) == {"botocore": 1194, "jmespath": 746}
