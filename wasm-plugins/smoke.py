"""Runs the built components in a real wasmtime, through its component-model API.

    python3 -m pip install wasmtime==50.0.1   # once; a wheel with wasmtime inside
    bash wasm-plugins/build.sh && python3 wasm-plugins/smoke.py

A check for policy authors and for the WIT itself: each component instantiates against only the
two host functions (`log`, `config`), and `name`, `events` and `evaluate` answer as the native
unit tests say. The daemon's own host (Rust, wasmtime `bindgen!`) is tested on its side.
"""

import json
import pathlib
import sys

import wasmtime
import wasmtime.component as wc

DIST = pathlib.Path(__file__).resolve().parent / "dist"
HOST = "tether:guardrail/host@0.1.0"
ENGINE = wasmtime.Engine()


def record(**fields):
    """A WIT record: Python names with `_` become WIT names with `-`."""
    value = wc.Record()
    for name, field in fields.items():
        setattr(value, name.replace("_", "-"), field)
    return value


def event(tag, payload=None, cwd="/w/repo"):
    session = record(id="s1", cwd=cwd, agent="claude-code", permission_mode=None)
    return record(session=session, payload=wc.Variant(tag, payload))


def tool(name, tool_input):
    return event("pre-tool-use", record(tool_name=name, tool_input=json.dumps(tool_input)))


def call(store, instance, name, *args):
    func = instance.get_func(store, name)
    result = func(store, *args)
    func.post_return(store)
    return result


def evaluate(policy, config, ev):
    """Fresh store and instance per event, as the daemon may do; returns (name, events, outcome, logs)."""
    store = wasmtime.Store(ENGINE)
    linker = wc.Linker(ENGINE)
    logs = []
    with linker.root() as root:
        with root.add_instance(HOST) as host:
            host.add_func("log", lambda _store, level, message: logs.append((level, message)))
            host.add_func("config", lambda _store: config)
    component = wc.Component.from_file(ENGINE, str(DIST / f"{policy}.wasm"))
    instance = linker.instantiate(store, component)
    name = call(store, instance, "name")
    events = call(store, instance, "events")
    outcome = call(store, instance, "evaluate", ev)
    return name, events, outcome, logs


CASES = [
    # policy, config, event, expected verdict tag, text the payload must contain
    ("secret-guard", "{}", event("user-prompt-submit", "use AKIAIOSFODNN7EXAMPLE"), "deny", "AWS access key"),
    ("secret-guard", '{"mode":"redact"}', event("user-prompt-submit", "use AKIAIOSFODNN7EXAMPLE"),
     "rewrite", "use [REDACTED:aws-access-key]"),
    ("secret-guard", "{}", event("user-prompt-submit", "call the secretary"), "allow", None),
    ("secret-guard", '{"mode":"bogus"}', event("user-prompt-submit", "hi"), "deny", "unknown mode"),
    ("command-guard", "{}", tool("Bash", {"command": "rm -rf ~"}), "deny", "home directory"),
    ("command-guard", "{}", tool("Bash", {"command": "rm -rf ./build"}), "allow", None),
    ("command-guard", "{}", tool("Bash", {"command": "git push -f origin main"}), "deny", "main"),
    ("command-guard", "{}", tool("Write", {"file_path": "/etc/hosts"}), "deny", "outside"),
    ("command-guard", "{}", event("stop"), "allow", None),
    ("allow-list", '{"commands":["git status"]}', tool("Bash", {"command": "git status && make"}),
     "deny", "`make`"),
    ("allow-list", '{"tools":["Read"],"default":"ask"}', tool("Write", {}), "ask", "`Write`"),
    ("allow-list", '{"tools":["Read"]}', tool("Read", {"file_path": "x"}), "allow", None),
]


def main():
    failures = 0
    for policy, config, ev, tag, text in CASES:
        name, events, outcome, logs = evaluate(policy, config, ev)
        verdict = outcome.verdict
        ok = name == policy and events and verdict.tag == tag
        ok = ok and (text is None or text in (verdict.payload or ""))
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {policy} {config} -> {verdict.tag}: {verdict.payload!r} {logs or ''}")
    print(f"{len(CASES) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
