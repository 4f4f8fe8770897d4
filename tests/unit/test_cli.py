"""The `rollout` command line without a cluster: policy validation, the schema, help, and
clear one-line errors (never a traceback) when the cluster cannot be reached."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from typer.main import get_command
from typer.testing import CliRunner, Result

from rollout.cli import app
from rollout.localcluster.process import free_port

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
GOOD = sorted(POLICIES.glob("*.yaml"))
CHAT = POLICIES / "chat-canary.yaml"
# Settings from the developer's shell must not change what the commands do here.
CLEAN_ENV: dict[str, str | None] = {
    "AIGATEWAY_KUBECONFIG": None,
    "AIGATEWAY_IN_CLUSTER": None,
    "AIGATEWAY_DEFAULT_NAMESPACE": None,
    "KUBECONFIG": None,
    "ROLLOUT_METRICS_PORT": None,
    "ROLLOUT_LEADER_ELECTION": None,
    "COLUMNS": "200",
}


def invoke(*args: str | Path, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(
        app,
        [str(a) for a in args],
        prog_name="rollout",
        env={**CLEAN_ENV, **(env or {})},
    )


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    # `rollout run` configures structlog to write to the (CliRunner-captured) stderr; put the
    # configuration back so later tests do not log to a closed stream.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def one_line_error(result: Result) -> str:
    """The single `error: ...` line a failed command prints to stderr."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def chat_text(**replacements: str) -> str:
    """policies/chat-canary.yaml with exact text replacements (each must match once)."""
    text = CHAT.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# ---- validate -----------------------------------------------------------------------------------


def test_the_repository_has_policies_to_validate() -> None:
    assert {p.name for p in GOOD} >= {"chat-canary.yaml", "embeddings-canary.yaml"}


def test_validate_good_policy_files_lists_each_and_exits_0() -> None:
    result = invoke("validate", *GOOD)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(GOOD)
    for path, line in zip(GOOD, lines, strict=True):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        assert line.startswith(f'✓ {path}: policy "{name}" (')
    assert '"chat-canary" (llm/chat, steps [5, 10, 25, 50, 100])' in result.stdout
    # 100 is appended to the steps: the listing shows what will run.
    assert '"embeddings-canary" (llm/embeddings, steps [10, 30, 60, 100])' in result.stdout


def test_validate_a_folder_lists_its_policies() -> None:
    result = invoke("validate", POLICIES)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("✓ ") == len(GOOD)
    for path in GOOD:
        assert str(path) in result.stdout


def test_validate_a_bad_file_prints_every_error_with_file_policy_and_field(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        chat_text(
            **{
                "steps: [5, 10, 25, 50, 100]": "steps: [50, 10]",
                "max: 0.02": "max: high",
                "maxRatio: 1.25": "maxRatio: -1",
                "onDrift: pause": "onDrift: panic",
            }
        )
    )
    result = invoke("validate", bad)
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4, result.stderr
    expected = [
        ("spec.steps", "strictly increasing"),
        ("spec.analysis.metrics[0].max", "valid number"),
        ("spec.analysis.metrics[2].maxRatio", "greater than 0"),
        ("spec.onDrift", "'pause'"),
    ]
    for (field, message), line in zip(expected, sorted(errors, key=_line_number), strict=True):
        assert re.match(rf'✗ {re.escape(str(bad))}:\d+: policy "chat-canary": ', line), line
        assert f": {field}: " in line and message in line, line
    lines = bad.read_text().splitlines()
    for line in errors:
        # The line number points at the offending key.
        key = line.split(": ")[2].rsplit(".", 1)[-1].split("[")[0]
        assert key in lines[_line_number(line) - 1], (line, lines[_line_number(line) - 1])


def _line_number(error_line: str) -> int:
    match = re.match(r"✗ [^:]+:(\d+):", error_line)
    assert match, error_line
    return int(match.group(1))


def test_validate_reports_bad_files_and_still_lists_good_ones(tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(CHAT.read_text())
    (tmp_path / "b-bad.yaml").write_text(
        chat_text(
            **{"name: chat-canary": "name: chat-canary-2", "name: chat\n": "name: chat-2\n"}
        ).replace("minRequests: 50", "minRequests: many")
    )
    (tmp_path / "notes.txt").write_text("not a policy")
    result = invoke("validate", tmp_path)
    assert result.exit_code == 1
    assert f'✓ {tmp_path / "a-good.yaml"}: policy "chat-canary"' in result.stdout
    assert "notes.txt" not in result.stdout + result.stderr
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"✗ {tmp_path / 'b-bad.yaml'}:")
    assert 'policy "chat-canary-2": spec.analysis.minRequests: ' in error


def test_validate_two_policies_on_one_route_are_both_refused(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(CHAT.read_text())
    (tmp_path / "two.yaml").write_text(chat_text(**{"name: chat-canary": "name: other"}))
    result = invoke("validate", tmp_path)
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert all("spec.route: route llm/chat is targeted by another policy" in e for e in errors)


def test_validate_a_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = chat_text(**{"steps: [5, 10, 25, 50, 100]": "steps: [5, 10, 25\n  window: 5m"})
    broken.write_text(text)
    result = invoke("validate", broken)
    assert result.exit_code == 1
    [error] = result.stderr.strip().splitlines()
    line = text.splitlines().index("  window: 5m") + 1
    assert error.startswith(f"✗ {broken}:{line}: invalid YAML: "), error


def test_validate_a_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    text = chat_text(**{"    failureLimit: 2\n": "    failureLimit: 2\n    failureLimit: 9\n"})
    dup.write_text(text)
    result = invoke("validate", dup)
    assert result.exit_code == 1
    line = text.splitlines().index("    failureLimit: 9") + 1
    assert f"{dup}:{line}: " in result.stderr and "duplicate key 'failureLimit'" in result.stderr


def test_validate_a_folder_without_policies_exits_1_with_a_clear_message(
    tmp_path: Path,
) -> None:
    (tmp_path / "README.md").write_text("policies go here")
    line = one_line_error(invoke("validate", tmp_path))
    assert line == f"error: no policies found in {tmp_path}"


def test_validate_an_empty_yaml_file_is_no_policy(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n---\n")
    line = one_line_error(invoke("validate", tmp_path / "empty.yaml"))
    assert "no policies found" in line


def test_validate_a_missing_path(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path / "missing.yaml", CHAT)
    assert result.exit_code == 1
    assert f"✗ {tmp_path / 'missing.yaml'}: no such file or directory" in result.stderr
    assert '"chat-canary"' in result.stdout


def test_validate_needs_a_path() -> None:
    result = invoke("validate")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


# ---- schema -------------------------------------------------------------------------------------


def test_schema_is_a_json_schema_of_rollout_policy() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "RolloutPolicy"
    assert schema["type"] == "object"
    assert set(schema["required"]) >= {"apiVersion", "kind", "metadata", "spec"}
    spec = _resolve(schema, schema["properties"]["spec"])
    assert set(spec["properties"]) >= {
        "route",
        "stable",
        "canary",
        "steps",
        "analysis",
        "onFailure",
        "onDrift",
        "rateLimit",
    }
    analysis = _resolve(schema, spec["properties"]["analysis"])
    assert {"interval", "window", "minRequests", "metrics"} <= set(analysis["properties"])
    for ref in re.findall(r'"\$ref": "([^"]+)"', result.stdout):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"]


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_schema_knows_every_key_of_the_example_policies(path: Path) -> None:
    # additionalProperties is false throughout: an editor using the schema must accept the
    # policies the repository ships.
    schema = json.loads(invoke("schema").stdout)
    _check_keys(schema, schema, yaml.safe_load(path.read_text()), "")


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _check_keys(root: dict[str, Any], node: dict[str, Any], value: Any, where: str) -> None:
    node = _resolve(root, node)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        typed = [_resolve(root, o) for o in options if _resolve(root, o).get("type") != "null"]
        fitting = [o for o in typed if _fits(o, value)] or typed
        _check_keys(root, fitting[0], value, where)
        return
    if isinstance(value, dict) and "properties" in node:
        for key, child in value.items():
            if node.get("additionalProperties") is False:
                assert key in node["properties"], f"{where}.{key} not in the schema"
            if key in node["properties"]:
                _check_keys(root, node["properties"][key], child, f"{where}.{key}")
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            _check_keys(root, node["items"], item, f"{where}[{i}]")


def _fits(node: dict[str, Any], value: Any) -> bool:
    kind = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value))
    return kind is None or node.get("type") in (None, kind)


# ---- help ---------------------------------------------------------------------------------------


def _command_paths() -> Iterator[list[str]]:
    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(get_command(app), [])


COMMANDS = list(_command_paths())


def test_every_documented_command_exists() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert names >= {
        "validate",
        "schema",
        "pause",
        "resume",
        "abort",
        "promote",
        "status",
        "run",
        "cluster",
        "cluster start",
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "rollout")
def test_help_of_every_command(path: list[str]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.stderr
    assert f"Usage: {' '.join(['rollout', *path])} " in result.stdout
    assert "--help" in result.stdout


def test_top_level_help_lists_the_commands() -> None:
    result = invoke("--help")
    for name in ("validate", "schema", "pause", "resume", "abort", "promote", "status", "run"):
        assert re.search(rf"│ {name} +\S", result.stdout), name


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage: rollout " in result.stdout
    assert result.exit_code in (0, 2)


def test_an_unknown_command_is_a_usage_error() -> None:
    result = invoke("launch")
    assert result.exit_code == 2
    assert "No such command" in result.stderr


# ---- cluster commands without a cluster ---------------------------------------------------------

CONTROL_COMMANDS = [
    ["pause", "chat"],
    ["resume", "chat"],
    ["abort", "chat"],
    ["abort", "chat", "--clear"],
    ["promote", "chat"],
    ["status", "chat"],
    ["status"],
]


@pytest.mark.parametrize("command", CONTROL_COMMANDS, ids=" ".join)
def test_a_missing_kubeconfig_is_a_clear_one_line_error(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "kubeconfig"
    line = one_line_error(invoke(*command, "-n", "llm", "--kubeconfig", missing))
    assert line == (
        f"error: kubeconfig {missing} does not exist (pass --kubeconfig, or set "
        "AIGATEWAY_KUBECONFIG or KUBECONFIG)"
    )


def test_the_kubeconfig_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    missing = tmp_path / "kubeconfig"
    line = one_line_error(invoke("pause", "chat", env={"KUBECONFIG": str(missing)}))
    assert f"kubeconfig {missing} does not exist" in line
    line = one_line_error(invoke("pause", "chat", env={"AIGATEWAY_KUBECONFIG": str(missing)}))
    assert f"kubeconfig {missing} does not exist" in line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this: [is not\n", ":2 is not valid YAML: expected ',' or ']'"),
        ("just a string\n", " is not a kubeconfig: expected a mapping, got str"),
        ("- a\n- list\n", " is not a kubeconfig: expected a mapping, got list"),
        ("{}\n", ": Invalid kube-config file"),
    ],
)
def test_an_unusable_kubeconfig_is_a_one_line_error(
    content: str, message: str, tmp_path: Path
) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text(content)
    for command in (["pause", "chat"], ["status"], ["run", "-p", str(CHAT)]):
        line = one_line_error(invoke(*command, "--kubeconfig", bad))
        assert str(bad) in line and message in line, line


def test_a_folder_as_kubeconfig_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_line_error(invoke("pause", "chat", "--kubeconfig", tmp_path))
    assert line.startswith(f"error: cannot read the kubeconfig {tmp_path}: ")


def test_an_api_server_that_does_not_answer_is_a_one_line_error(tmp_path: Path) -> None:
    line = one_line_error(
        invoke("pause", "chat", "-n", "llm", "--kubeconfig", dead_cluster(tmp_path))
    )
    assert "did not answer" in line or "refused" in line.lower(), line


def test_in_cluster_and_a_kubeconfig_are_exclusive(tmp_path: Path) -> None:
    result = invoke(
        "run",
        "-p",
        CHAT,
        "--in-cluster",
        "--kubeconfig",
        dead_cluster(tmp_path),
        "--log-format",
        "console",
    )
    assert result.exit_code == 1
    assert "mutually exclusive" in result.stderr
    assert "Traceback" not in result.stderr


def dead_cluster(tmp_path: Path) -> Path:
    """A valid kubeconfig for an API server that is not there (a closed local port)."""
    port = free_port()
    path = tmp_path / "dead-kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dead", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "current-context": "dead",
            }
        )
    )
    return path


# ---- run without a cluster ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_run_with_an_unreachable_cluster_fails_and_frees_the_metrics_port(
    tmp_path: Path,
) -> None:
    port = free_port()
    args = ["run", "-p", CHAT, "--kubeconfig", dead_cluster(tmp_path), "--no-leader-election"]
    line = one_line_error(invoke(*args, "--metrics-port", str(port), "--log-format", "console"))
    assert "the Kubernetes API does not answer or does not serve the AI Gateway CRDs" in line
    with socket.socket() as sock:  # released: a second run could bind it
        sock.bind(("0.0.0.0", port))


def test_run_with_a_busy_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(
            invoke(
                "run",
                "-p",
                CHAT,
                "--kubeconfig",
                dead_cluster(tmp_path),
                "--metrics-port",
                str(port),
                "--no-leader-election",
            )
        )
    assert line.startswith(f"error: cannot serve /metrics on 0.0.0.0:{port}: ")


def test_run_with_a_missing_policy_path_or_kubeconfig(tmp_path: Path) -> None:
    line = one_line_error(
        invoke("run", "-p", tmp_path / "none", "--kubeconfig", dead_cluster(tmp_path))
    )
    assert line == f"error: policy path(s) not found: {tmp_path / 'none'}"
    line = one_line_error(invoke("run", "-p", CHAT, "--kubeconfig", tmp_path / "kc"))
    assert f"kubeconfig {tmp_path / 'kc'} does not exist" in line


def test_run_needs_policies() -> None:
    result = invoke("run")
    assert result.exit_code == 2
    assert "--policies" in result.stderr


def test_rollout_run_runs_the_cyclic_collector_less_often() -> None:
    import gc

    from rollout.cli import GC_THRESHOLDS, tune_garbage_collector

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults (another test may have run `run`)
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700  # fewer young collections than CPython's default
    finally:
        gc.set_threshold(*saved)
