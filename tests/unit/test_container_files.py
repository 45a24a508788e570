"""Static checks of the container files: Dockerfile, docker-compose.yml,
.env.example, .dockerignore and the RabbitMQ plugin list.

No Docker engine is needed: the files are parsed, not run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
GITIGNORE = ROOT / ".gitignore"

SERVICES = ("rabbitmq", "redis", "web", "worker", "flower")
APP_SERVICES = ("web", "worker", "flower")
BACKING_SERVICES = ("rabbitmq", "redis")
ROOT_USERS = {"root", "0"}
BUILD_TOOLS = {
    "build-essential",
    "gcc",
    "g++",
    "cc",
    "clang",
    "make",
    "libc6-dev",
    "python3-dev",
    "libpq-dev",
    "libffi-dev",
    "libssl-dev",
}


# -- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), f"{COMPOSE} is missing"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def tokens(command) -> list[str]:
    """A compose command or healthcheck test as a flat list of words."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def parse_duration(value) -> float:
    """Seconds in a compose duration such as '1m30s', '60s' or 90."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def published_ports(service: dict) -> list[tuple[str | None, str]]:
    """(host_ip, container_port) for each published port, short or long syntax."""
    result = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            result.append((port.get("host_ip"), str(port.get("target"))))
            continue
        spec = str(port).split("/")[0]
        if spec.startswith("["):  # [::1]:8000:8000
            host_ip, _, rest = spec[1:].partition("]:")
            result.append((host_ip, rest.split(":")[-1]))
            continue
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else None
        result.append((host_ip, parts[-1]))
    return result


def volume_mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each volume, short or long syntax."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result.append(
                (
                    str(volume.get("source")),
                    str(volume.get("target")),
                    bool(volume.get("read_only")),
                )
            )
            continue
        parts = str(volume).split(":")
        source, target = parts[0], parts[1]
        options = parts[2].split(",") if len(parts) > 2 else []
        result.append((source, target, "ro" in options))
    return result


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if not stages:
            continue  # ARG before the first FROM
        stages[-1].append((keyword, args))
    return stages


def env_pairs(args: str) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if sep:
            pairs[key] = value
    return pairs


def env_example() -> dict[str, str]:
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE} is missing"
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line is not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


# -- docker-compose.yml ------------------------------------------------------


def test_compose_has_no_version_key(compose):
    assert "version" not in compose, "the Compose spec has no `version:` key"


def test_compose_defines_the_five_services(services):
    missing = [name for name in SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yml: {missing}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_has_healthcheck_with_test_command(services, name):
    healthcheck = services[name].get("healthcheck") or {}
    assert not healthcheck.get("disable"), f"{name}: healthcheck disabled"
    test = tokens(healthcheck.get("test"))
    assert test, f"{name}: healthcheck has no test command"
    assert test[0] != "NONE", f"{name}: healthcheck test is NONE"
    if test[0] in ("CMD", "CMD-SHELL"):
        assert len(test) > 1, f"{name}: healthcheck {test[0]} without a command"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rabbitmq", "rabbitmq-diagnostics -q ping"),
        ("redis", "redis-cli ping"),
        ("web", "/health/live"),
        ("worker", "inspect ping"),
        ("flower", "/healthcheck"),
    ],
)
def test_healthcheck_probes_the_right_thing(services, name, expected):
    test = " ".join(tokens(services[name]["healthcheck"]["test"]))
    assert expected in test, f"{name}: healthcheck {test!r} does not contain {expected!r}"


def test_worker_healthcheck_escapes_hostname_for_compose(services):
    # A single $ would be interpolated by compose on the host (usually to "").
    test = " ".join(tokens(services["worker"]["healthcheck"]["test"]))
    assert "worker@$$HOSTNAME" in test, test


@pytest.mark.parametrize("name", SERVICES)
def test_service_has_restart_policy(services, name):
    assert services[name].get("restart") in ("unless-stopped", "always", "on-failure"), (
        f"{name}: restart policy is {services[name].get('restart')!r}"
    )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_runs_as_non_root(services, name):
    user = services[name].get("user")
    assert user is not None, f"{name}: no user set"
    assert str(user).split(":")[0] not in ROOT_USERS, f"{name}: runs as {user!r}"
    group = str(user).partition(":")[2]
    assert group not in ROOT_USERS, f"{name}: runs with group {group!r}"


def test_app_services_share_one_build(services):
    builds = [services[name].get("build") for name in APP_SERVICES]
    assert all(builds), f"web/worker/flower must all build from the Dockerfile: {builds}"
    assert all(b == builds[0] for b in builds), f"builds differ: {builds}"
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1, f"web/worker/flower use different image tags: {images}"
    build = builds[0]
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE.resolve()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_reads_env_file(services, name):
    env_file = services[name].get("env_file")
    files = [env_file] if isinstance(env_file, str | dict) else list(env_file or [])
    paths = [f.get("path") if isinstance(f, dict) else f for f in files]
    assert ".env" in paths or "./.env" in paths, f"{name}: env_file is {env_file!r}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_waits_for_healthy_backing_services(services, name):
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must be the long form"
    for backing in BACKING_SERVICES:
        condition = (depends_on.get(backing) or {}).get("condition")
        assert condition == "service_healthy", f"{name} -> {backing}: condition {condition!r}"


def test_rabbitmq_mounts_taskplane_conf_read_only(services):
    conf = ROOT / "deploy" / "rabbitmq" / "taskplane.conf"
    mounts = [
        (target, read_only)
        for source, target, read_only in volume_mounts(services["rabbitmq"])
        if (ROOT / source).resolve() == conf.resolve()
    ]
    assert mounts, "rabbitmq does not mount deploy/rabbitmq/taskplane.conf"
    assert ("/etc/rabbitmq/conf.d/90-taskplane.conf", True) in mounts, mounts


def test_rabbitmq_enables_management_and_prometheus(services):
    rabbitmq = services["rabbitmq"]
    assert "management" in rabbitmq.get("image", ""), rabbitmq.get("image")
    sources = [
        source
        for source, target, _ in volume_mounts(rabbitmq)
        if target == "/etc/rabbitmq/enabled_plugins"
    ]
    assert sources, "rabbitmq has no /etc/rabbitmq/enabled_plugins mount"
    plugins_file = ROOT / sources[0]
    assert plugins_file.is_file(), f"{plugins_file} is missing"
    text = plugins_file.read_text().strip()
    assert text.startswith("[") and text.endswith("]."), f"not an Erlang list: {text!r}"
    plugins = {p.strip() for p in text[1:-2].split(",")}
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= plugins, plugins


def test_rabbitmq_keeps_data_in_named_volume(compose, services):
    named = compose.get("volumes") or {}
    targets = {t: s for s, t, _ in volume_mounts(services["rabbitmq"])}
    assert targets.get("/var/lib/rabbitmq") in named, targets
    # The data directory is keyed by node name, i.e. by hostname.
    assert services["rabbitmq"].get("hostname"), "rabbitmq needs a fixed hostname"


def test_redis_persists_and_never_evicts(compose, services):
    redis = services["redis"]
    words = tokens(redis.get("command"))
    assert "--appendonly" in words and words[words.index("--appendonly") + 1] == "yes", words
    assert "--maxmemory-policy" in words, words
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction", words
    targets = {t: s for s, t, _ in volume_mounts(redis)}
    assert targets.get("/data") in (compose.get("volumes") or {}), targets


@pytest.mark.parametrize("name", SERVICES)
def test_published_ports_bind_to_localhost(services, name):
    for host_ip, port in published_ports(services[name]):
        assert host_ip == "127.0.0.1", f"{name}: port {port} published on {host_ip or 'all'}"


@pytest.mark.parametrize(
    ("name", "port"), [("web", "8000"), ("flower", "5555"), ("rabbitmq", "15672")]
)
def test_expected_ports_are_published(services, name, port):
    assert ("127.0.0.1", port) in published_ports(services[name]), services[name].get("ports")


def test_worker_is_scalable(services):
    worker = services["worker"]
    assert "container_name" not in worker, "container_name breaks --scale worker=N"
    assert not worker.get("ports"), f"worker publishes ports: {worker.get('ports')}"


def test_worker_gets_a_warm_shutdown(services):
    worker = services["worker"]
    assert worker.get("stop_signal") == "SIGTERM", worker.get("stop_signal")
    grace = parse_duration(worker.get("stop_grace_period", "10s"))
    assert grace >= 45, f"stop_grace_period {grace}s is too short for a warm shutdown"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("web", "gunicorn -c gunicorn.conf.py wsgi:app"),
        ("worker", "celery -A tasks worker --loglevel=INFO -n worker@%h"),
        ("flower", "celery -A tasks flower"),
    ],
)
def test_app_service_command(services, name, command):
    assert tokens(services[name].get("command")) == command.split(), services[name].get("command")


def test_nothing_runs_privileged(services):
    for name, service in services.items():
        assert service.get("privileged") is not True, f"{name} runs privileged"
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        assert not service.get("cap_add"), f"{name} adds capabilities: {service.get('cap_add')}"


def test_compose_interpolations_are_defined_in_env_example():
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    text = text.replace("$$", "")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    names |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    missing = names - set(env_example())
    assert not missing, f"variables compose interpolates but .env.example lacks: {missing}"


# -- Dockerfile ----------------------------------------------------------------


def test_dockerfile_is_multi_stage():
    stages = dockerfile_stages()
    assert len(stages) >= 2, f"expected a builder and a runtime stage, found {len(stages)}"


def test_final_stage_is_python_slim():
    final_from = dockerfile_stages()[-1][0][1].split()[0]
    assert final_from == "python:3.11-slim", final_from


def test_final_stage_runs_as_non_root_user_before_cmd():
    final = dockerfile_stages()[-1]
    keywords = [keyword for keyword, _ in final]
    assert "USER" in keywords, "final stage has no USER"
    assert "CMD" in keywords, "final stage has no CMD"
    last_user = max(i for i, k in enumerate(keywords) if k == "USER")
    assert last_user < keywords.index("CMD"), "USER must come before CMD"
    user = final[last_user][1].split(":")[0].strip()
    assert user not in ROOT_USERS, f"final USER is {user!r}"


def test_final_stage_default_command_is_web():
    final = dict(dockerfile_stages()[-1])
    assert json.loads(final["CMD"]) == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]


def test_final_stage_has_healthcheck_on_health_live():
    final = dict(dockerfile_stages()[-1])
    healthcheck = final.get("HEALTHCHECK", "")
    assert healthcheck and healthcheck.upper() != "NONE", "final stage has no HEALTHCHECK"
    assert "/health/live" in healthcheck and "urllib" in healthcheck, healthcheck
    assert "curl" not in healthcheck, "curl is not in python:3.11-slim"


def test_final_stage_has_no_build_tools():
    for keyword, args in dockerfile_stages()[-1]:
        if keyword != "RUN":
            continue
        words = set(re.split(r"[\s;&|]+", args))
        found = words & BUILD_TOOLS
        assert not found, f"final stage installs build tools: {sorted(found)}"


def test_builder_installs_requirements_lock_into_venv():
    stages = dockerfile_stages()
    runs = [args for stage in stages[:-1] for keyword, args in stage if keyword == "RUN"]
    assert any(
        "pip install" in run and "--no-cache-dir" in run and "-r requirements.lock" in run
        for run in runs
    ), runs
    assert any("venv /opt/venv" in run for run in runs), "builder does not create /opt/venv"
    copies = [args for keyword, args in stages[-1] if keyword == "COPY"]
    assert any("--from=" in c and "/opt/venv" in c for c in copies), copies


def test_final_stage_environment():
    env = {}
    for keyword, args in dockerfile_stages()[-1]:
        if keyword == "ENV":
            env.update(env_pairs(args))
    assert env.get("PATH", "").startswith("/opt/venv/bin:"), env.get("PATH")
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("TASKPLANE_BIND") == "0.0.0.0:8000"
    assert env.get("PYTHONPATH") == "/app"


def test_final_stage_exposes_8000():
    exposed = [args.split() for keyword, args in dockerfile_stages()[-1] if keyword == "EXPOSE"]
    assert any("8000" in ports or "8000/tcp" in ports for ports in exposed), exposed


def test_final_stage_copies_the_source():
    copied = " ".join(args for keyword, args in dockerfile_stages()[-1] if keyword == "COPY")
    for path in (
        "app/",
        "tasks/",
        "config/",
        "scripts/",
        "celeryconfig.py",
        "wsgi.py",
        "gunicorn.conf.py",
        "flowerconfig.py",
        "Procfile",
    ):
        assert path in copied, f"final stage does not copy {path}"


# -- all container files -----------------------------------------------------


@pytest.mark.parametrize("path", [DOCKERFILE, COMPOSE, ENV_EXAMPLE, DOCKERIGNORE])
def test_no_remote_hosts_or_index_overrides(path, services):
    """URLs only point at this machine or at compose services; pip uses defaults."""
    text = path.read_text()
    for flag in ("--index-url", "--extra-index-url", "--trusted-host", "PIP_INDEX_URL"):
        assert flag not in text, f"{path.name} sets {flag}"
    allowed = {"127.0.0.1", "localhost", "0.0.0.0", *services}
    for host in re.findall(r"[a-z][a-z0-9+.-]*://(?:[^@/\s'\"]*@)?([^:/\s'\"]+)", text):
        assert host in allowed, f"{path.name} refers to remote host {host!r}"


# -- .env.example, .gitignore, .dockerignore ------------------------------------


def test_env_example_exists_and_says_to_copy_it():
    assert ENV_EXAMPLE.is_file(), ".env.example is missing"
    comments = " ".join(
        line for line in ENV_EXAMPLE.read_text().splitlines() if line.lstrip().startswith("#")
    ).lower()
    assert ".env" in comments and "cop" in comments and "change" in comments, comments


def test_env_example_lists_every_variable():
    values = env_example()
    required = {
        "TASKPLANE_ENV",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "SMTP_HOST",
        "SMTP_PORT",
        "TASKPLANE_SECRET_KEY",
        "FLOWER_BASIC_AUTH",
        "FLOWER_BROKER_API",
        "RABBITMQ_DEFAULT_USER",
        "RABBITMQ_DEFAULT_PASS",
    }
    missing = required - set(values)
    assert not missing, f".env.example lacks {sorted(missing)}"
    empty = sorted(key for key in required if not values[key])
    assert not empty, f".env.example leaves these empty: {empty}"
    assert values["TASKPLANE_ENV"] in ("development", "testing", "production")
    assert ":" in values["FLOWER_BASIC_AUTH"], "FLOWER_BASIC_AUTH must be user:password"


def test_env_example_secrets_are_placeholders():
    values = env_example()
    for key in ("TASKPLANE_SECRET_KEY", "RABBITMQ_DEFAULT_PASS"):
        assert "change" in values[key].lower(), f"{key} does not look like a placeholder"
    assert "change" in values["FLOWER_BASIC_AUTH"].partition(":")[2].lower()
    assert values["RABBITMQ_DEFAULT_USER"] != "guest", "guest only works from localhost"


def test_env_example_credentials_agree():
    values = env_example()
    creds = f"{values['RABBITMQ_DEFAULT_USER']}:{values['RABBITMQ_DEFAULT_PASS']}@rabbitmq:"
    assert values["CELERY_BROKER_URL"].startswith(f"amqp://{creds}5672/"), "broker URL mismatch"
    assert values["FLOWER_BROKER_API"].startswith(f"http://{creds}15672/api/"), (
        "broker API mismatch"
    )
    assert values["CELERY_RESULT_BACKEND"].startswith("redis://redis:6379/")


def test_gitignore_excludes_env():
    if not GITIGNORE.exists():
        pytest.skip(".gitignore does not exist yet: cannot check that .env is ignored")
    patterns = {line.strip() for line in GITIGNORE.read_text().splitlines()}
    assert patterns & {".env", "/.env", ".env*", "/.env*"}, ".env is not listed in .gitignore"
    assert "!.env" not in patterns and "!/.env" not in patterns, ".gitignore re-includes .env"


def test_dockerignore_keeps_secrets_and_clutter_out():
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing"
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for expected in (".env", ".git", ".venv", ".pytest_cache", "bench/out", "var"):
        assert expected in patterns, f".dockerignore lacks {expected}"
    assert patterns & {"__pycache__", "**/__pycache__"}, ".dockerignore lacks __pycache__"
    assert patterns & {"*.pyc", "**/*.pyc"}, ".dockerignore lacks *.pyc"
    for needed in ("requirements.lock", "app", "tasks", "config", "Procfile", "Dockerfile"):
        assert needed not in patterns, f".dockerignore drops {needed}, which the build needs"


def test_rabbitmq_in_compose_defaults_new_queues_to_quorum(services):
    conf = ROOT / "deploy" / "rabbitmq" / "quorum-default.conf"
    assert "default_queue_type = quorum" in conf.read_text()
    volumes = [str(v) for v in services["rabbitmq"].get("volumes", [])]
    assert any(
        "quorum-default.conf:/etc/rabbitmq/conf.d/" in v and v.endswith(":ro") for v in volumes
    ), volumes
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13")
