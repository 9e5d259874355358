"""``agentspec up``: the YAML a user would ``kubectl apply``, run locally, one process per agent.

Each AgentSpec runs as its own ``agentspec runtime`` process (the same engine as in a cluster)
on a fixed local port; partners find each other through an embedded registry (name -> local
URL); conversation memory is in each process unless ``--redis-url`` (or
``AGENTSPEC_REDIS_URL``) names a Redis, whatever the specs say; Secrets in the YAML are
handed to the processes as local secret variables; an McpServer annotated with
``agentspec.io/local-command`` is started here too and its URL pointed at it — only with
``--run-local-commands`` (a YAML file must not be able to run a command on this machine just
by being run), and each command is printed before it runs. The files are
watched: an edit is live in about a second (the runtimes hot-reload), a broken edit is printed
and the previous version keeps serving, a new AgentSpec starts a process, a removed one stops
it. Logs are prefixed with the agent's name; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from agentspec_runtime.adapters.config_sources import LOCAL_URL_ANNOTATION
from agentspec_runtime.adapters.urls import redis_location
from agentspec_runtime.chat import REGISTRY
from agentspec_runtime.engine.memory import IN_PROCESS
from agentspec_runtime.specfiles import read, yaml_files

LOCAL_COMMAND = "agentspec.io/local-command"
HOST = "127.0.0.1"


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `agentspec up` dies, even by SIGKILL (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _free() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class UpError(Exception):
    """The files cannot be run; the message says which file, document and field."""


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every document; any problem (YAML, schema, a dangling reference) is an ``UpError``."""
    documents, bundle, problems = read(paths)
    problems = problems or bundle.problems()
    if problems:
        raise UpError("\n  ".join(["the files have problems:", *problems]))
    return [d.body for d in documents]


def secret_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Secrets in the YAML, as the runtime's local secret variables."""
    from agentspec_runtime.adapters.secrets import env_name
    from agentspec_runtime.spec import SecretKeySelector

    env: dict[str, str] = {}
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        name = doc["metadata"]["name"]
        values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
        values.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
        for key, value in values.items():
            env[env_name(SecretKeySelector(name=name, key=key))] = value
    return env


class Up:
    def __init__(
        self,
        paths: list[Path],
        *,
        port_base: int,
        watch: bool,
        redis_url: str | None = None,
        run_commands: bool = False,
    ) -> None:
        self.paths = paths
        self.run_commands = run_commands
        self.refused: set[str] = set()
        self.memory = redis_url or IN_PROCESS
        self.port_base = port_base
        self.watch = watch
        self.state = Path(tempfile.mkdtemp(prefix="agentspec-up-"))
        self.combined = self.state / "specs.yaml"
        self.ports: dict[str, int] = {}
        self.agents: dict[str, asyncio.subprocess.Process] = {}
        self.tools: dict[str, asyncio.subprocess.Process] = {}
        self.pumps: set[asyncio.Task[None]] = set()
        self.stop = asyncio.Event()

    def spec_folders(self) -> list[str]:
        """The folders holding the spec files, in the order given."""
        files, _ = yaml_files(self.paths)
        return list(dict.fromkeys(str(f.resolve().parent) for f in files))

    def url(self, agent: str) -> str:
        return f"http://{HOST}:{self.ports[agent]}"

    def _port(self, agent: str) -> int:
        if agent not in self.ports:
            self.ports[agent] = (self.port_base + len(self.ports)) if self.port_base else _free()
        return self.ports[agent]

    def _write(self, docs: list[dict[str, Any]]) -> list[str]:
        """Rewrite the combined file the runtimes watch; return the AgentSpec names."""
        agents: list[str] = []
        out: list[dict[str, Any]] = []
        for original in docs:
            doc = original
            if doc.get("kind") == "McpServer" and LOCAL_COMMAND in (
                doc.get("metadata", {}).get("annotations") or {}
            ):
                # started here: reach it on this machine, at the port its URL names
                doc = json.loads(json.dumps(doc))
                parts = urlsplit(doc["spec"]["url"])
                doc["spec"]["url"] = urlunsplit(parts._replace(netloc=f"{HOST}:{parts.port}"))
            if doc.get("kind") == "AgentSpec":
                name = doc["metadata"]["name"]
                agents.append(name)
                self._port(name)
                doc = json.loads(json.dumps(doc))
                annotations = doc["metadata"].setdefault("annotations", {})
                annotations[LOCAL_URL_ANNOTATION] = self.url(name)  # the embedded registry
            out.append(doc)
        tmp = self.combined.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump_all(out, sort_keys=False))
        tmp.replace(self.combined)
        return agents

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Any:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        pump = asyncio.get_running_loop().create_task(self._pump(name, process))
        self.pumps.add(pump)
        pump.add_done_callback(self.pumps.discard)
        return process

    @staticmethod
    async def _pump(name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
            sys.stdout.flush()

    async def _start_tools(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            command = (doc.get("metadata", {}).get("annotations") or {}).get(LOCAL_COMMAND)
            name = doc.get("metadata", {}).get("name")
            if doc.get("kind") != "McpServer" or not command or name in self.tools:
                continue
            if not self.run_commands:
                if name not in self.refused:
                    self.refused.add(name)
                    print(
                        f"  not starting MCP server {name}: its {LOCAL_COMMAND} annotation "
                        f"asks to run `{command}` on this machine; pass --run-local-commands "
                        "to allow the commands in these files"
                    )
                continue
            print(f"  running the local command of MCP server {name}: {command}")
            port = urlsplit(doc["spec"]["url"]).port
            argv = shlex.split(command)
            if argv[0] == "python":
                argv[0] = sys.executable  # the interpreter that runs agentspec
            self.tools[name] = await self._spawn(f"mcp:{name}", argv, {"PORT": str(port)})
            print(f"  started MCP server {name} on {HOST}:{port}: {command}")

    async def _start_agent(self, agent: str, secrets: dict[str, str]) -> None:
        port = self._port(agent)
        env = {
            **secrets,
            "AGENTSPEC_PARTNER_URLS": json.dumps({a: self.url(a) for a in self.ports}),
            "AGENTSPEC_PUBLIC_URL": self.url(agent),
            "AGENTSPEC_LOG_LEVEL": os.environ.get("AGENTSPEC_LOG_LEVEL", "WARNING"),
            "AGENTSPEC_MEMORY": self.memory,
            # durable A2A tasks in an SQLite file of this session (unless the spec names a
            # PostgreSQL store): they survive the agent restarting, not the session
            "AGENTSPEC_STATE_DIR": str(self.state / "agents" / agent),
            # a documents knowledge source's folder is looked for beside the spec files
            "AGENTSPEC_DOCUMENTS_DIR": os.pathsep.join(self.spec_folders()),
        }
        argv = [
            sys.executable,
            "-m",
            "agentspec_runtime.cli",
            "runtime",
            "--config",
            str(self.combined),
            "--agent",
            agent,
            "--host",
            HOST,
            "--port",
            str(port),
            "--metrics-port",
            str(port + 1000 if self.port_base else _free()),
        ]
        self.agents[agent] = await self._spawn(agent, argv, env)

    async def _wait_ready(self, agents: list[str], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            for agent in agents:
                while True:
                    process = self.agents[agent]
                    if process.returncode is not None:
                        raise UpError(f"agent {agent} exited with status {process.returncode}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.url(agent)}/readyz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise UpError(f"agent {agent} did not become ready in {within:.0f}s")
                    await asyncio.sleep(0.1)

    async def start(self) -> list[str]:
        docs = load(self.paths)
        agents = self._write(docs)
        if not agents:
            raise UpError("no AgentSpec in " + ", ".join(map(str, self.paths)))
        await self._start_tools(docs)
        secrets = secret_env(docs)
        for agent in agents:
            await self._start_agent(agent, secrets)
        await self._wait_ready(agents)
        self._record()
        for agent in agents:
            print(
                f"  {agent:<12} {self.url(agent)}  (OpenAI API: {self.url(agent)}/v1, "
                f"A2A card: {self.url(agent)}/.well-known/agent-card.json)"
            )
        where = (
            "in each agent's process" if self.memory == IN_PROCESS else redis_location(self.memory)
        )
        print(f"  conversation memory: {where}")
        return agents

    def _record(self) -> None:
        """Where `agentspec chat <agent>` finds the agents."""
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        REGISTRY.write_text(json.dumps({a: self.url(a) for a in self.agents}))

    async def follow(self) -> None:
        """Apply file edits until stopped."""
        import watchfiles

        async for _ in watchfiles.awatch(*self.paths, stop_event=self.stop, debounce=100, step=20):
            try:
                docs = load(self.paths)
            except UpError as e:
                print(f"agentspec up: edit rejected, the previous version keeps serving: {e}")
                continue
            agents = self._write(docs)
            await self._start_tools(docs)
            secrets = secret_env(docs)
            for agent in [a for a in agents if a not in self.agents]:
                await self._start_agent(agent, secrets)
                await self._wait_ready([agent])
                self._record()
                print(f"  {agent:<12} {self.url(agent)}  (new)")
            for agent in [a for a in self.agents if a not in agents]:
                self._terminate(self.agents.pop(agent))
                print(f"  {agent:<12} stopped (removed from the files)")
            print("agentspec up: changes applied")

    @staticmethod
    def _terminate(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    async def shutdown(self) -> None:
        for process in [*self.agents.values(), *self.tools.values()]:
            self._terminate(process)
        for process in [*self.agents.values(), *self.tools.values()]:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


async def ask(url: str, agent: str, question: str, *, context_id: str) -> str:
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{url}/v1/chat/completions",
            json={
                "model": agent,
                "context_id": context_id,
                "messages": [{"role": "user", "content": question}],
            },
        )
        body = response.json()
        if response.status_code != 200:
            return f"error {response.status_code}: {body.get('error', {}).get('message')}"
        answer: str = body["choices"][0]["message"]["content"]
        return answer


async def run(args: argparse.Namespace) -> int:
    up = Up(
        [Path(p) for p in args.paths],
        port_base=args.port_base,
        watch=not args.no_watch,
        redis_url=args.redis_url,
        run_commands=args.run_local_commands,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, up.stop.set)
    try:
        print(f"agentspec up: starting {', '.join(map(str, args.paths))}")
        starting = loop.create_task(up.start())
        stopped = loop.create_task(up.stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():  # Ctrl-C while the agents start: stop now, not once ready
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 130
        agents = starting.result()
        target = args.agent or agents[0]
        context_id = f"up-{uuid.uuid4().hex}"  # the --ask questions are one conversation
        for question in args.ask:
            started = time.monotonic()
            answer = await ask(up.url(target), target, question, context_id=context_id)
            print(f"\n> {question}\n{answer}\n({target}, {time.monotonic() - started:.2f}s)")
        if args.exit:
            return 0
        print("agentspec up: ready — edit the files to hot-reload; Ctrl-C stops everything")
        follower = loop.create_task(up.follow()) if up.watch else None
        await up.stop.wait()
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        return 0
    except UpError as e:
        print(f"agentspec up: {e}", file=sys.stderr)
        return 2
    finally:
        await up.shutdown()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentspec up", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="YAML files or folders")
    parser.add_argument(
        "--port-base",
        type=int,
        default=8100,
        help="first agent's port (then +1 each; metrics +1000); 0: free ports",
    )
    parser.add_argument(
        "--ask",
        action="append",
        default=[],
        help="ask this question once everything is up (repeatable)",
    )
    parser.add_argument("--agent", help="which agent --ask talks to (default: the first)")
    parser.add_argument("--exit", action="store_true", help="stop after the --ask questions")
    parser.add_argument("--no-watch", action="store_true", help="do not watch the files")
    parser.add_argument(
        "--run-local-commands",
        action="store_true",
        help="start the McpServers whose agentspec.io/local-command annotation names a command "
        "(each command is printed first); off by default: a spec file must not run commands",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AGENTSPEC_REDIS_URL") or None,
        help="keep every agent's conversation memory in this Redis (default: in each process)",
    )
    args = parser.parse_args(argv)
    if args.redis_url and not args.redis_url.startswith(("redis://", "rediss://")):
        parser.error("--redis-url must be a redis:// or rediss:// URL")
    return asyncio.run(run(args))
