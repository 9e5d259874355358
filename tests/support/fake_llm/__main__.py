"""``python -m tests.support.fake_llm --port N``: the fake LLM as a process (uvicorn)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from .app import FakeLLMApp, ScriptState
from .servers import uvicorn_config
from .turns import DEFAULT_MODEL, RESPONDERS, Step, Turn


def _load_script(path: Path) -> tuple[list[Turn], str | None]:
    """A JSON list of turns, or ``{"turns": [...], "responder": "echo"}``."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return [Turn.from_json(t) for t in data], None
    return [Turn.from_json(t) for t in data.get("turns", [])], data.get("responder")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--script", type=Path, help="JSON file of turns (see _load_script)")
    parser.add_argument(
        "--responder",
        default=None,
        help=f"one of {sorted(RESPONDERS)}, or 'text:<answer>' for a constant answer "
        "(default: none, every request must be scripted)",
    )
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)

    turns: list[Turn] = []
    responder_name: str | None = args.responder
    if args.script is not None:
        turns, scripted = _load_script(args.script)
        responder_name = responder_name or scripted
    responder: Step | None = None
    if responder_name:
        if responder_name.startswith("text:"):
            responder = Turn.text(responder_name.removeprefix("text:"))
        else:
            responder = RESPONDERS[responder_name]
    state = ScriptState(responder)
    state.script(turns)
    app = FakeLLMApp(state, models=(DEFAULT_MODEL,), strict_models=False, api_key=args.api_key)
    print(f"fake LLM listening on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port, log_level="warning")).run()


if __name__ == "__main__":
    main()
