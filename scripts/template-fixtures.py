#!/usr/bin/env python3
"""Renders every chat template in llama.cpp's models/templates/ with Python's jinja2, the engine
Hugging Face's transformers uses, and writes the results as the fixtures of the template fidelity
test (test/unit/template-fidelity.test.ts).

The environment follows transformers' chat template rendering: a sandboxed environment with
trim_blocks and lstrip_blocks, the loopcontrols extension, the {% generation %} block (rendered
as its body), a tojson filter that keeps non-ASCII text, and the raise_exception and
strftime_now globals. Lists may be appended to (Kimi's templates do), and tojson writes a
filtered sequence as a list, as JavaScript and C++ Jinja engines do. The clock is fixed so that fixtures do
not change from day to day; the test passes the same date to llamem.

Usage: python3 scripts/template-fixtures.py [templates-dir] [out-dir]
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import SandboxedEnvironment

NOW = datetime(2026, 3, 14, 9, 26, 53)
BOS = "<BOS>"
EOS = "<EOS>"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city's name."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

# Each case: a conversation and the variables passed with it. Names are stable: the test reports them.
CASES = {
    "plain": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
        ]
    },
    "multi-turn": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another, with ü and 日本."},
        ]
    },
    "no-generation-prompt": {
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
        "add_generation_prompt": False,
    },
    "tools": {
        "messages": [
            {"role": "system", "content": "You help with the weather."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21}"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": TOOLS,
    },
    "tools-offered": {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": TOOLS,
    },
    "reasoning": {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4.", "reasoning_content": "Two plus two is four."},
            {"role": "user", "content": "And 3+3?"},
        ],
        "enable_thinking": True,
    },
    "reasoning-off": {
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "enable_thinking": False,
    },
}


class GenerationBlock(Extension):
    """{% generation %}...{% endgeneration %}: marks the assistant's text for training; renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def as_list(x):
    if hasattr(x, "__iter__") and not isinstance(x, (str, bytes, dict)):
        return list(x)
    raise TypeError(f"Object of type {type(x).__name__} is not JSON serializable")


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys, default=as_list)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def environment():
    env = SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, GenerationBlock])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "vendor", "llama.cpp", "models", "templates")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "test", "fixtures", "templates")
    os.makedirs(out, exist_ok=True)
    env = environment()
    names = sorted(n for n in os.listdir(src) if n.endswith(".jinja"))
    summary = {"rendered": 0, "raised": 0}
    for name in names:
        with open(os.path.join(src, name), encoding="utf-8") as f:
            source = f.read()
        cases = []
        try:
            template = env.from_string(source)
            compile_error = None
        except jinja2.exceptions.TemplateError as e:
            template = None
            compile_error = f"{type(e).__name__}: {e}"
        for case, spec in CASES.items():
            variables = {"add_generation_prompt": True, "bos_token": BOS, "eos_token": EOS}
            variables.update(spec)
            entry = {"case": case, "variables": variables}
            if template is None:
                entry["error"] = compile_error
            else:
                try:
                    entry["output"] = template.render(**variables)
                    summary["rendered"] += 1
                except Exception as e:  # the template's own raise_exception, or a runtime error
                    entry["error"] = f"{type(e).__name__}: {e}"
                    summary["raised"] += 1
            cases.append(entry)
        doc = {
            "template": name,
            "engine": f"jinja2 {jinja2.__version__}",
            "now": NOW.isoformat(),
            "cases": cases,
        }
        with open(os.path.join(out, name[: -len(".jinja")] + ".json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
    print(f"{len(names)} templates, {summary['rendered']} renderings, {summary['raised']} raised -> {out}")


if __name__ == "__main__":
    main()
