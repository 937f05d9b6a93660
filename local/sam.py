"""Read a SAM template and translate it to plain CloudFormation, offline.

:func:`load_template` reads YAML or JSON with cfn-lint's own decoder, which turns short-form
tags into their long form (``!GetAtt Queue.Arn`` -> ``{"Fn::GetAtt": ["Queue", "Arn"]}``)
as CloudFormation does before samtranslator sees a template.

:func:`translate` remembers where each function's code lives: samtranslator accepts only S3
locations for code, so each local ``CodeUri``/``ContentUri`` is swapped for a placeholder
``s3://local-code/<token>`` before translation and mapped back after it; the translated
``AWS::Lambda::Function``/``LayerVersion`` then carries the token.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import decode_str
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

__all__ = [
    "LOCAL_CODE_BUCKET",
    "CodeSource",
    "TemplateError",
    "Translation",
    "TranslationError",
    "load_template",
    "translate",
]

LOCAL_CODE_BUCKET = "local-code"
_SAM_TRANSFORM = "AWS::Serverless-2016-10-31"


class TemplateError(ValueError):
    """A template file is not valid YAML/JSON or not a mapping; the message says where."""


class TranslationError(ValueError):
    """samtranslator refused the template; the message lists its reasons."""


def load_template(path: str | Path) -> dict[str, Any]:
    """A template file (YAML or JSON) as plain dicts and lists, intrinsics in long form.

    cfn-lint's decoder also refuses duplicate keys and YAML alias bombs. Its position-tracking
    node types become plain ``dict``/``list``/``str``, and a YAML date (an unquoted
    ``AWSTemplateFormatVersion: 2010-09-09``) its ISO text, as CloudFormation reads it.
    """
    text = Path(path).read_text(encoding="utf-8")
    template, problems = decode_str(text)
    if problems:
        details = "; ".join(f"line {m.linenumber}: {m.message}" for m in problems)
        raise TemplateError(f"{path}: {details}")
    if not isinstance(template, dict):
        raise TemplateError(f"{path}: a template must be a mapping at its top level")
    return dict(_plain(template))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime.date):  # datetime.datetime is a date too
        return value.isoformat()
    return value


@dataclass(frozen=True)
class CodeSource:
    """A local code directory named by a function's CodeUri or a layer's ContentUri."""

    path: Path
    build_method: str | None
    origin: str


@dataclass(frozen=True)
class Translation:
    template: dict[str, Any]
    code: dict[str, CodeSource]


class _AnyManagedPolicy(dict[str, str]):
    """Managed-policy names -> ARNs with no IAM call: AWS managed policies share one pattern."""

    def get(self, name: str, default: Any = None) -> str:
        return f"arn:aws:iam::aws:policy/{name}"


def _is_sam(template: Mapping[str, Any]) -> bool:
    transform = template.get("Transform")
    names = transform if isinstance(transform, list) else [transform]
    return _SAM_TRANSFORM in names


def _placeholder(token: str) -> str:
    return f"s3://{LOCAL_CODE_BUCKET}/{token}"


def _swap_local_code(template: dict[str, Any], base_dir: Path) -> dict[str, CodeSource]:
    """Replace local code paths by placeholders, in place; return token -> source."""
    code: dict[str, CodeSource] = {}
    globals_function = (template.get("Globals") or {}).get("Function") or {}
    global_code_uri = globals_function.get("CodeUri")
    if isinstance(global_code_uri, str) and not global_code_uri.startswith("s3://"):
        globals_function["CodeUri"] = _placeholder("globals")
    for logical_id, resource in (template.get("Resources") or {}).items():
        kind = resource.get("Type")
        properties = resource.setdefault("Properties", {})
        build_method = (resource.get("Metadata") or {}).get("BuildMethod")
        if kind == "AWS::Serverless::Function":
            key, uri = "CodeUri", properties.get("CodeUri", global_code_uri)
        elif kind == "AWS::Serverless::LayerVersion":
            key, uri = "ContentUri", properties.get("ContentUri")
        elif kind == "AWS::Lambda::Function" and isinstance(properties.get("Code"), str):
            key, uri = "Code", properties["Code"]
        elif kind == "AWS::Lambda::LayerVersion" and isinstance(properties.get("Content"), str):
            key, uri = "Content", properties["Content"]
        elif kind == "AWS::Serverless::Api" and isinstance(properties.get("DefinitionUri"), str):
            # A local OpenAPI file is inlined, as `sam build` does before deploying.
            definition = load_template(base_dir / properties.pop("DefinitionUri"))
            properties["DefinitionBody"] = definition
            continue
        else:
            continue
        if not isinstance(uri, str) or uri.startswith("s3://"):
            continue
        token = logical_id
        code[token] = CodeSource((base_dir / uri).resolve(), build_method, logical_id)
        if key in ("Code", "Content"):
            properties[key] = {"S3Bucket": LOCAL_CODE_BUCKET, "S3Key": token}
        else:
            properties[key] = _placeholder(token)
    return code


def translate(
    template: Mapping[str, Any],
    base_dir: Path,
    parameters: Mapping[str, Any],
    region: str,
) -> Translation:
    """Translate a SAM template to plain CloudFormation without any AWS call.

    A template without the SAM transform passes through (local code paths still mapped).
    """
    source = copy.deepcopy(dict(template))
    code = _swap_local_code(source, base_dir)
    if not _is_sam(source):
        return Translation(source, code)

    # samtranslator.translator.transform.transform() would build a default boto3 session to
    # learn the region (and fail without AWS_DEFAULT_REGION); an explicit session needs none.
    session = boto3.session.Session(region_name=region)
    translator = Translator(None, Parser(), boto_session=session)
    try:
        translated = translator.translate(
            source,
            parameter_values=dict(parameters),
            get_managed_policy_map=_AnyManagedPolicy,
        )
    except InvalidDocumentException as error:
        reasons = "; ".join(str(cause) for cause in error.causes) or str(error)
        raise TranslationError(f"SAM translation failed: {reasons}") from error
    return Translation(translated, code)
