from tests.services import ROOT


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_runs_web_worker_beat_flower_and_the_smtp_sink():
    procs = _procfile()
    assert set(procs) == {"web", "worker", "beat", "flower", "smtp", "hooks"}
    assert procs["web"].startswith("gunicorn -c gunicorn.conf.py wsgi:app")
    assert procs["worker"].startswith("celery -A tasks worker")
    assert "-n worker@%h" in procs["worker"]
    assert procs["flower"].startswith("celery -A tasks flower")
    assert procs["beat"].startswith("celery -A tasks beat")


def test_no_pickle_or_eager_mode_anywhere_in_the_code():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part in {".venv", "tests"} for part in path.relative_to(ROOT).parts):
            continue
        if path.relative_to(ROOT).as_posix() == "config/checks.py":
            continue  # the module that refuses it has to name it
        text = path.read_text()
        if "pickle" in text or "always_eager" in text:
            offenders.append(str(path))
    assert offenders == []
