"""MAS's admin API contract: routes and schemas straight from MAS's published
OpenAPI file (tests/contract/mas-admin-api-1.22.0.openapi.json), and the
checks of requests and responses against it that the contract server
(mas.py) makes. Violations never quote the offending value."""

import json
import os
import re
import urllib.parse
from datetime import datetime

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "contract",
                         "mas-admin-api-1.22.0.openapi.json")
SPEC_URI = "https://contract.invalid/mas-admin-api-1.22.0.json"


def describe(error) -> str:
    """A violation without the offending value, so that no secret reaches the log."""
    where = error.json_path[1:] or " (whole value)"
    if error.validator in ("required", "additionalProperties"):
        return f"{where}: {error.message}"
    if error.validator in ("oneOf", "anyOf", "allOf"):
        return f"{where}: matches none of the allowed forms"
    return f"{where}: must satisfy {error.validator}={json.dumps(error.validator_value)}"


class Contract:
    """Routes and schemas, straight from the OpenAPI file."""

    def __init__(self, path: str):
        with open(path) as f:
            self.spec = json.load(f)
        self.registry = Registry().with_resource(SPEC_URI, Resource(self.spec, specification=DRAFT202012))
        self.formats = FormatChecker()
        self.formats.checks("date-time", raises=ValueError)(self._date_time)
        self.routes = []
        for template, methods in self.spec["paths"].items():
            names = re.findall(r"{(\w+)}", template)
            pattern = re.escape(template)
            for name in names:
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
            literal = len([s for s in template.split("/") if s and "{" not in s])
            self.routes.append((-literal, template, re.compile(pattern + r"\Z"), methods))
        self.routes.sort(key=lambda r: r[0])

    @staticmethod
    def _date_time(value):
        if not isinstance(value, str):
            return True
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
            raise ValueError("not RFC 3339")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    def match(self, method: str, path: str):
        """(template, operation, path params), ("405", allowed methods) or None."""
        for _, template, regex, methods in self.routes:
            found = regex.match(path)
            if found:
                params = {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
                if method.lower() in methods:
                    return template, methods[method.lower()], params
                return "405", sorted(m.upper() for m in methods), None
        return None

    def validator(self, *pointer, formats=False):
        escaped = "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
        ref = SPEC_URI + "#/" + urllib.parse.quote(escaped, safe="/~")
        return Draft202012Validator({"$ref": ref}, registry=self.registry,
                                    format_checker=self.formats if formats else None)

    def deref(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def check_params(self, template, method, operation, location, values: dict):
        """values: name -> list of raw strings. Returns violations (unknown names are ignored, as serde does)."""
        found = []
        for index, param in enumerate(operation.get("parameters", [])):
            if param["in"] != location:
                continue
            raw = values.get(param["name"])
            if raw is None:
                if param.get("required"):
                    found.append(f"{location} parameter {param['name']}: missing")
                continue
            kind = self.deref(param["schema"]).get("type")
            if kind == "array":
                value = raw
            elif len(raw) > 1:
                found.append(f"{location} parameter {param['name']}: given {len(raw)} times")
                continue
            else:
                value = raw[0]
                if kind == "integer" and re.fullmatch(r"-?\d+", value):
                    value = int(value)
                elif kind == "boolean" and value in ("true", "false"):
                    value = value == "true"
            v = self.validator("paths", template, method, "parameters", str(index), "schema")
            found += [f"{location} parameter {param['name']}{describe(e)}" for e in v.iter_errors(value)]
        return found

    def check_body(self, template, method, value):
        v = self.validator("paths", template, method, "requestBody", "content", "application/json", "schema")
        return [f"body{describe(e)}" for e in v.iter_errors(value)]

    def check_response(self, template, method, status: int, body):
        """(valid, violations, note); valid is None when there is nothing to check."""
        response = self.spec["paths"][template][method]["responses"].get(str(status))
        if response is None:
            if not isinstance(body, dict):
                return None, [], f"status {status} is not in the spec"
            v = self.validator("components", "schemas", "ErrorResponse", formats=True)
            note = f"status {status} is not in the spec; body checked against ErrorResponse"
        elif "content" not in response:
            return body is None, [] if body is None else ["a body where the spec has none"], None
        else:
            v = self.validator("paths", template, method, "responses", str(status), "content",
                               "application/json", "schema", formats=True)
            note = None
        found = [describe(e) for e in v.iter_errors(body)]
        return not found, found, note
