"""Renders chat-template cases with transformers, as apply_chat_template does (the reference of
types/tests/chat_templates.rs). Reads a JSON list of {template, bos_token, eos_token, messages,
add_generation_prompt} on stdin; writes a JSON list of rendered strings (or {"error": ...}).
A template that refuses the system turn is rendered with the system text folded into the
first user turn, as labelfleet folds it."""
import json
import sys

from transformers.utils.chat_template_utils import render_jinja_template


def render(case, messages):
    out, _ = render_jinja_template(
        conversations=[messages],
        chat_template=case["template"],
        add_generation_prompt=case["add_generation_prompt"],
        bos_token=case["bos_token"],
        eos_token=case["eos_token"],
    )
    return out[0]


def fold(messages):
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            if system:
                m["content"] = "\n\n".join(system) + "\n\n" + m["content"]
            break
    return rest


results = []
for case in json.load(sys.stdin):
    try:
        try:
            results.append(render(case, case["messages"]))
        except Exception:
            if not any(m["role"] == "system" for m in case["messages"]):
                raise
            results.append(render(case, fold(case["messages"])))
    except Exception as e:  # reported per case, compared by the test
        results.append({"error": str(e)})
json.dump(results, sys.stdout)
