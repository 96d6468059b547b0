"""A chapter run the way a reader runs it: through a Jupyter server and the project's kernel.

JupyterLab is a browser page talking to a Jupyter server: it reads a notebook through the
server's contents API, asks the server for a kernel, and sends each cell to that kernel
over a websocket. This test plays the browser's part. It starts the server headless on a
free local port with a token, opens chapter 2, runs it cell by cell in the kernel
"Python (fastervit)" (registered by `make setup`), and compares every output with the
stored one under nbval's rules and sanitising patterns (tests/nbval_sanitize.cfg). Then
it shuts the server down and checks that no process of it is left.
"""

import ast
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import nbformat
import psutil
import pytest
import websocket
from jupyter_core.paths import jupyter_config_path
from jupyter_server.extension.config import ExtensionConfigManager
from nbval.plugin import coalesce_streams, find_comment_markers, find_metadata_tags, get_sanitize_patterns

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTER = "02_stem.ipynb"
KERNEL_NAME = "fastervit"
KERNEL_DISPLAY_NAME = "Python (fastervit)"
SANITIZE_FILE = ROOT / "tests" / "nbval_sanitize.cfg"
# What nbval leaves out when it compares outputs: bookkeeping keys, tracebacks (the error's
# name and value are compared), widget ids, and images (compared only with nbdime).
UNCOMPARED_KEYS = frozenset(
    {
        "metadata",
        "traceback",
        "prompt_number",
        "output_type",
        "name",
        "execution_count",
        "application/vnd.jupyter.widget-view+json",
        "image/png",
        "image/jpeg",
    }
)
STARTUP_TIMEOUT_S = 120
CELL_TIMEOUT_S = 300
SHUTDOWN_TIMEOUT_S = 30
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def notebook_env() -> dict[str, str]:
    """The environment the notebooks' stored outputs were made with (scripts/run_notebooks.py)."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NOTEBOOK_ENV


def sanitize(value, patterns: list[tuple[str, str]]):
    """`value` with every pattern replaced in order, as nbval does; non-text stays as it is."""
    if not isinstance(value, str):
        return value
    for regex, replace in patterns:
        value = re.sub(regex, replace, value)
    return value


def comparable(outputs: list[dict], patterns: list[tuple[str, str]]) -> dict[str, list]:
    """What nbval compares of one cell's outputs.

    Streams of one name are joined (and carriage returns resolved) by nbval's own
    `coalesce_streams`; each stream is keyed by its name (stdout, stderr), each rich output
    by its MIME types, each error by `ename` and `evalue`.

    Args:
        outputs: the cell's outputs in nbformat's form.
        patterns: (regex, replacement) pairs from the sanitize file.

    Returns:
        Sanitised values per key, in output order.
    """
    found = defaultdict(list)
    for output in coalesce_streams([nbformat.from_dict(o) for o in outputs]):
        if output.output_type == "stream":
            fields = {output.name: output.text}
        else:
            fields = {key: value for key, value in output.items() if key != "data"}
            fields.update(output.get("data", {}))
        for key, value in fields.items():
            if key not in UNCOMPARED_KEYS:
                found[key].append(sanitize(value, patterns))
    return dict(found)


def output_differences(stored: list[dict], fresh: list[dict], patterns: list[tuple[str, str]]) -> list[str]:
    """Every key on which a cell's fresh outputs differ from its stored ones, described."""
    before, after = comparable(stored, patterns), comparable(fresh, patterns)
    return [
        f"{key}: stored {before.get(key)!r}, now {after.get(key)!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def cell_options(cell: dict) -> dict[str, bool]:
    """nbval's options for a cell (skip, check, check_exception) from its tags and comments."""
    options = {"skip": False, "check": True, "check_exception": False}
    options.update(find_metadata_tags(cell.get("metadata", {})))
    options.update(find_comment_markers(cell["source"]))
    return options


class JupyterServer:
    """A headless Jupyter server of this environment, driven over HTTP and websockets.

    Args:
        root_dir: the folder the server serves (its contents API sees only this).
        state_dir: where its settings, runtime files, kernel connection files and IPython
            history go, instead of the home folder.
        env: variables added to the server's environment; the kernels inherit them.
    """

    def __init__(self, root_dir: Path, state_dir: Path, env: dict[str, str]):
        self.token = secrets.token_hex(16)
        self.kernel_processes: list[psutil.Process] = []
        runtime_dir = state_dir / "runtime"
        self.log_path = state_dir / "server.log"
        full_env = {
            **os.environ,
            **env,
            "JUPYTER_CONFIG_DIR": str(state_dir / "config"),
            "JUPYTER_DATA_DIR": str(state_dir / "data"),
            "JUPYTER_RUNTIME_DIR": str(runtime_dir),
            "IPYTHONDIR": str(state_dir / "ipython"),
        }
        # A bare server: the extensions installed for JupyterLab (its pages, terminals, language
        # servers) play no part in contents, sessions and kernels, and take seconds to load.
        extensions = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
        # Port 0: the server takes a free port and writes it into its info file, the way
        # `jupyter server list` finds running servers.
        command = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",  # containers and CI often run as root; the server refuses it otherwise
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            f"--ServerApp.root_dir={root_dir}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.jpserver_extensions={ {name: False for name in extensions}!r}",
        ]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.port = self._wait_for_info_file(runtime_dir / f"jpserver-{self.process.pid}.json")
            self._wait_until_ready()
        except BaseException:  # pytest.fail's exception included: leave nothing running
            self.kill_leftovers()
            raise

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _fail(self, problem: str):
        pytest.fail(f"{problem}\n--- server log (last lines) ---\n{self.log_tail()}")

    def _wait_for_info_file(self, path: Path) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"the Jupyter server exited with status {self.process.returncode} on startup")
            if path.is_file():
                try:
                    return json.loads(path.read_text())["port"]
                except (json.JSONDecodeError, KeyError):
                    pass  # written but not complete yet
            time.sleep(0.1)
        self._fail(f"the Jupyter server wrote no {path.name} within {STARTUP_TIMEOUT_S} s")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.request("GET", "api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self._fail(f"the Jupyter server did not answer on port {self.port} within {STARTUP_TIMEOUT_S} s")

    def request(self, method: str, path: str, body: dict | None = None):
        """One call to the server's REST API; returns the decoded JSON answer (None if empty)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=STARTUP_TIMEOUT_S) as answer:
            data = answer.read()
        return json.loads(data) if data else None

    def start_session(self, path: str, kernel_name: str) -> tuple[dict, websocket.WebSocket]:
        """Open `path` with a new kernel, as JupyterLab does; returns the session and its channels."""
        session = self.request(
            "POST",
            "api/sessions",
            {"path": path, "name": path, "type": "notebook", "kernel": {"name": kernel_name}},
        )
        self.kernel_processes = self.children()
        channels = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{session['kernel']['id']}/channels"
            f"?session_id={session['id']}",
            header=[f"Authorization: token {self.token}"],
            timeout=CELL_TIMEOUT_S,
        )
        return session, channels

    def children(self) -> list[psutil.Process]:
        """Every process the server started (its kernels and theirs), now."""
        return psutil.Process(self.process.pid).children(recursive=True)

    def shutdown(self) -> int:
        """Ask the server to stop (it shuts its kernels down first); returns its exit status."""
        self.request("POST", "api/shutdown")
        return self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)

    def kill_leftovers(self) -> None:
        """Kill whatever is still running of the server and its kernels (the safety net)."""
        if self.process.poll() is None:
            self.kernel_processes += self.children()
            self.process.kill()
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        for process in self.kernel_processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def execute(channels: websocket.WebSocket, session_id: str, code: str, **content) -> tuple[list[dict], dict]:
    """Run `code` in the kernel behind `channels`, as a notebook frontend does.

    Args:
        channels: the kernel's websocket (the server's legacy JSON protocol).
        session_id: the client session, sent in every message header.
        code: the cell's source.
        content: more fields of the execute_request (e.g. `silent`, `user_expressions`).

    Returns:
        The cell's outputs in nbformat's form, and the kernel's execute_reply content.
    """
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": session_id, "username": "reader"}
    request = {
        "code": code,
        "silent": False,
        "store_history": True,
        "allow_stdin": False,
        "stop_on_error": True,
    }
    request.update(content)
    message = {
        "header": {**header, "version": "5.3"},
        "parent_header": {},
        "metadata": {},
        "content": request,
    }
    channels.send(json.dumps({**message, "channel": "shell", "buffers": []}))
    outputs, reply, idle = [], None, False
    while reply is None or not idle:
        message = json.loads(channels.recv())
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, body = message["msg_type"], message["content"]
        if kind == "execute_reply":
            reply = body
        elif kind == "status":
            idle = body["execution_state"] == "idle"
        elif kind == "stream":
            outputs.append(nbformat.v4.new_output(kind, name=body["name"], text=body["text"]))
        elif kind in ("display_data", "execute_result"):
            fields = {"execution_count": body["execution_count"]} if kind == "execute_result" else {}
            outputs.append(
                nbformat.v4.new_output(kind, data=body["data"], metadata=body["metadata"], **fields)
            )
        elif kind == "error":
            outputs.append(
                nbformat.v4.new_output(
                    kind, ename=body["ename"], evalue=body["evalue"], traceback=body["traceback"]
                )
            )
    return outputs, reply


def user_expression(reply: dict, name: str):
    """The Python value of a user expression in an execute_reply (sent as its repr)."""
    result = reply["user_expressions"][name]
    assert result["status"] == "ok", f"the kernel could not evaluate {name}: {result}"
    return ast.literal_eval(result["data"]["text/plain"])


def test_comparison_masks_volatile_text_and_catches_real_changes():
    patterns = get_sanitize_patterns(SANITIZE_FILE.read_text())
    assert patterns, f"{SANITIZE_FILE.name} holds no regex/replace pairs"
    stored = [nbformat.v4.new_output("stream", name="stdout", text="took 12.5 ms, shape (1, 64, 56, 56)\n")]
    rerun = [nbformat.v4.new_output("stream", name="stdout", text="took 9.1 ms, shape (1, 64, 56, 56)\n")]
    changed = [nbformat.v4.new_output("stream", name="stdout", text="took 9.1 ms, shape (1, 64, 28, 28)\n")]
    assert output_differences(stored, rerun, patterns) == []
    assert output_differences(stored, changed, patterns)
    # Streams printed in pieces compare like one print; an image alone is not compared.
    pieces = [
        nbformat.v4.new_output("stream", name="stdout", text=t)
        for t in ("took 3 ms, ", "shape (1, 64, 56, 56)\n")
    ]
    assert output_differences(stored, pieces, patterns) == []
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})
    assert output_differences([*stored, image], rerun, patterns) == []
    assert output_differences(
        stored, [*rerun, nbformat.v4.new_output("error", ename="ValueError", evalue="x")], patterns
    )


def test_chapter_runs_through_a_jupyter_server(tmp_path):
    patterns = get_sanitize_patterns(SANITIZE_FILE.read_text())
    env = notebook_env()
    server = JupyterServer(NOTEBOOKS, tmp_path, env)
    try:
        specs = server.request("GET", "api/kernelspecs")["kernelspecs"]
        assert KERNEL_NAME in specs, (
            f"the server knows no kernel {KERNEL_NAME!r} (it has {sorted(specs)}); "
            "`make setup` registers it into the environment"
        )
        assert specs[KERNEL_NAME]["spec"]["display_name"] == KERNEL_DISPLAY_NAME

        model = server.request("GET", f"api/contents/{CHAPTER}?type=notebook&content=1")
        cells = [cell for cell in model["content"]["cells"] if cell["cell_type"] == "code"]
        session, channels = server.start_session(CHAPTER, KERNEL_NAME)
        assert session["kernel"]["name"] == KERNEL_NAME
        assert server.kernel_processes, "the server started the kernel, yet it has no child process"
        try:
            problems = []
            for i, cell in enumerate(cells):
                options = cell_options(cell)
                if options["skip"]:
                    continue
                outputs, reply = execute(channels, session["id"], cell["source"])
                if reply["status"] == "error" and not options["check_exception"]:
                    traceback = ANSI_ESCAPE.sub("", "\n".join(reply.get("traceback", [])))
                    pytest.fail(
                        f"{CHAPTER}: code cell {i} raised {reply['ename']}: {reply['evalue']}\n{traceback}"
                    )
                if options["check"] and cell["execution_count"] is not None:
                    problems += [
                        f"code cell {i}: {d}" for d in output_differences(cell["outputs"], outputs, patterns)
                    ]
            # Ask what the kernel runs in: a silent request counts no execution and keeps no history.
            _, reply = execute(
                channels,
                session["id"],
                "",
                silent=True,
                store_history=False,
                user_expressions={
                    "prefix": "__import__('sys').prefix",
                    "env": f"{{k: __import__('os').environ.get(k) for k in {sorted(env)!r}}}",
                },
            )
        finally:
            channels.close()
        assert not problems, f"{CHAPTER}: outputs differ from the stored ones:\n" + "\n".join(problems)
        assert user_expression(reply, "prefix") == sys.prefix, (
            "the kernel runs outside the project's environment"
        )
        assert user_expression(reply, "env") == env, (
            "the kernel did not get the notebooks' environment variables"
        )

        started = server.children()
        assert server.shutdown() == 0, f"the server exited with an error:\n{server.log_tail()}"
        _, alive = psutil.wait_procs(started, timeout=SHUTDOWN_TIMEOUT_S)
        assert not alive, f"processes left behind by the server: {[p.pid for p in alive]}"
    finally:
        server.kill_leftovers()
