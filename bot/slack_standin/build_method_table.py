"""Generate ``web_api_methods.json`` from Slack's published OpenAPI description.

The Slack stand-in must know which Web API methods exist and which arguments
each one requires, so that it refuses what slack.com refuses.  Rather than
typing that list by hand we derive it from Slack's own OpenAPI 2.0 file
(slackapi/slack-api-specs, MIT), which lives outside the repository in
``../shared``.  The result is committed so the stand-in works on machines
without that file; a test regenerates it and compares.

Usage::

    python -m bot.slack_standin.build_method_table [--spec PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "slack-specs" / "web-api" / "slack_web_openapi_v2.json"
DEFAULT_OUT = HERE / "web_api_methods.json"

# The token travels in the Authorization header; the stand-in checks it for
# every method, so listing it per method would only add noise.
_IMPLICIT_ARGS = {"token"}


def build_table(spec: dict) -> dict[str, list[str]]:
    """Map every method in ``spec`` to its sorted required argument names."""
    table: dict[str, list[str]] = {}
    for path, operations in spec["paths"].items():
        required: set[str] = set()
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("required") and parameter["name"] not in _IMPLICIT_ARGS:
                    required.add(parameter["name"])
        table[path.lstrip("/")] = sorted(required)
    return dict(sorted(table.items()))


def render_table(table: dict[str, list[str]]) -> str:
    """One method per line: compact, yet a change shows up as a one-line diff."""
    lines = [f"  {json.dumps(name)}: {json.dumps(args)}" for name, args in sorted(table.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def generate(spec_path: Path = DEFAULT_SPEC) -> str:
    """Read the spec file and return the rendered table text."""
    with open(spec_path, encoding="utf-8") as spec_file:
        return render_table(build_table(json.load(spec_file)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="Slack OpenAPI v2 JSON file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the table")
    options = parser.parse_args(argv)
    options.out.write_text(generate(options.spec), encoding="utf-8")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
