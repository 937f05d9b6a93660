"""cfn-lint on the template *after* SAM translation (``make lint`` runs it).

cfn-lint and ``sam validate --lint`` read the SAM template as written, so they miss errors
inside ``AWS::Serverless::*`` resources (a bad runtime, a ``!Ref`` to nothing, a policy
statement SAM generates). Translating first, with the same samtranslator the local stack
uses, lets cfn-lint see the CloudFormation that would really be deployed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cfnlint.api import ManualArgs, lint

from local.sam import load_template, translate

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# W3005 (a DependsOn already implied by a Ref): SAM itself writes those for the usage plan
# and API key it generates; nothing in template.yaml can change it.
IGNORED = ["W3005"]


def translated_matches(path: Path) -> list[str]:
    template = load_template(path)
    translation = translate(template, path.parent, {}, REGION)
    document = json.dumps(translation.template, default=str)
    matches = lint(document, config=ManualArgs(regions=[REGION], ignore_checks=IGNORED))
    return [f"{m.rule.id} {m.message} ({m.path_string})" for m in matches]


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or [str(ROOT / "template.yaml")])[0])
    problems = translated_matches(path)
    for line in problems:
        print(line)
    print(f"cfn-lint on translated {path.name}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
