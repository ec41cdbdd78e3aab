"""The exact operator commands, run by the real `fab` from client repos that vendor or pip-install the library."""

import re
import subprocess
import sys
import venv

import pytest
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import LIBRARY_ROOT, make_client

pytestmark = pytest.mark.e2e


def live_sha(host):
    return host.ssh("sed -n 's/^GIT_SHA=//p' /srv/sum/acme/current/.release.env").stdout.strip()


def notes(host):
    return host.ssh("runuser -u postgres -- psql -d acme -tAc 'SELECT count(*) FROM notes_note'").stdout.strip()


def exercise(client, host, tags, ref):
    """provision, the exact release command, a backup, a change, and the exact restore command."""
    client.fab("provision")
    client.fab("-H", "deploy@vps", "release", "--ref", ref)
    assert live_sha(host) == tags[ref]
    backup = client.fab("db.backup")
    name = re.search(r"/srv/sum/acme/backups/(acme_db_\S+\.sql\.gz)", backup.stdout).group(1)
    before = notes(host)
    host.ssh("runuser -u postgres -- psql -d acme -c \"DELETE FROM notes_note\"")
    assert notes(host) == "0"
    restored = client.fab("db.restore", "--file", name, "--i-know-this-will-overwrite")
    assert notes(host) == before != "0"
    assert "/health/ HTTP 200" in restored.stdout


def test_vendored_copy(host_factory, tmp_path):
    host = host_factory(suite="bookworm")
    tags = build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(host), {"vps": (host, "root")}, vendored=True)
    listing = client.fab("--list").stdout
    assert "release" in listing and "db.restore" in listing
    probe = subprocess.run([sys.executable, "-c", "import sum_tasks; print(sum_tasks.__file__)"], cwd=client.path,
                           capture_output=True, text=True, check=True)
    assert probe.stdout.startswith(str(client.path)), "the vendored copy must be the one imported"
    exercise(client, host, tags, "v1.2")


def test_installed_wheel(host_factory, tmp_path):
    host = host_factory(suite="trixie")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(LIBRARY_ROOT)], check=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(next(wheels.glob("sum_tasks-*.whl")))], check=True)
    tags = build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(host), {"vps": (host, "root")})
    client.python = python
    where = subprocess.run([python, "-c", "import sum_tasks.commands.templating as t; print(t.LIBRARY_TEMPLATES)"], cwd=client.path,
                           capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where, "templates must come from the installed wheel"
    exercise(client, host, tags, "v2")
