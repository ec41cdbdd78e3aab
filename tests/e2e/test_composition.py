"""Composition: the example client repo's fabfile with a vendored copy of the library and with an installed wheel.

The real `fab` runs in a subprocess from a client directory in both cases. (The same commands against
real hosts are in the release and db tests.)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from sum_tasks.configuration import defaults, load_site
from sum_tasks.testing.client import LIBRARY_ROOT, make_client

EXAMPLE = LIBRARY_ROOT / "examples" / "client"
TASKS = ("provision", "release", "rollback", "releases", "db.backup", "db.restore", "site.check-deploy")
# What a source distribution of the library holds: the wheel is built from a copy, never in the checkout.
SOURCES = ("sum_tasks", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def example_config() -> dict:
    return yaml.safe_load((EXAMPLE / "fabric.yaml").read_text())


def clean_env() -> dict[str, str]:
    """This environment without anything that would put the checkout on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def fab_list(fab: list[str], cwd: Path) -> str:
    result = subprocess.run([*fab, "--list"], cwd=cwd, capture_output=True, text=True, timeout=120, env=clean_env(),
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed(output: str) -> dict[str, str]:
    """{task: first line of its help} from `fab --list`."""
    return dict(re.findall(r"^  (\S+)\s+(\S.*)$", output, re.MULTILINE))


def assert_every_task_with_help(output: str) -> None:
    tasks = listed(output)
    for name in TASKS:
        assert len(tasks.get(name, "")) > 10, f"{name} missing or without help in:\n{output}"


def test_example_fabric_yaml_sets_and_validates_every_setting():
    config = example_config()
    DEFAULTS = defaults()
    assert set(config["sum"]) == set(DEFAULTS), "examples/client/fabric.yaml must show every sum setting"
    for key in ("backups", "hooks", "alerts", "offsite"):
        assert set(config["sum"][key]) == set(DEFAULTS[key]), key
    site = load_site(config["sum"])
    assert site.hosts == ("vps",) and any(site.hooks.values())
    assert config["ssh_config_path"] == "ssh_config"
    text = (EXAMPLE / "fabric.yaml").read_text()
    for key in DEFAULTS:
        assert re.search(rf"^  {key}:.*#|^  {key}:\n(?:    .*\n)*", text, re.MULTILINE), f"sum.{key} has no comment"


@pytest.mark.e2e
def test_vendored_copy_lists_the_namespaced_tasks_with_help(tmp_path):
    client = make_client(tmp_path / "client", example_config()["sum"], {}, vendored=True,
                         fabfile=(EXAMPLE / "fabfile.py").read_text())
    assert (client.path / "sum_tasks" / "__init__.py").is_file() and (client.path / "sum_tasks" / "templates" / "site.caddy.j2").is_file()
    # Mark the vendored copy, so the listing proves it (not the checkout or an installed package) was imported.
    provision = client.path / "sum_tasks" / "cli" / "provision.py"
    provision.write_text(provision.read_text().replace('"""Converge the host', '"""[vendored] Converge the host', 1))
    output = fab_list([sys.executable, "-m", "fabric"], client.path)
    assert_every_task_with_help(output)
    assert listed(output)["provision"].startswith("[vendored] ")


@pytest.mark.e2e
def test_wheel_in_a_clean_venv_lists_the_tasks_and_ships_the_templates(tmp_path):
    source = tmp_path / "src"
    for name in SOURCES:
        path = LIBRARY_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)],
                   check=True, timeout=600, env=clean_env())
    (wheel,) = dist.glob("sum_tasks-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {Path(n).name for n in archive.namelist() if n.startswith("sum_tasks/templates/")}
    assert shipped >= {p.name for p in (LIBRARY_ROOT / "sum_tasks" / "templates").glob("*.j2")}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=clean_env())
    python = venv / "bin" / "python"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=900, env=clean_env())

    client = make_client(tmp_path / "client", example_config()["sum"], {}, fabfile=(EXAMPLE / "fabfile.py").read_text())
    assert not (client.path / "sum_tasks").exists()
    assert_every_task_with_help(fab_list([str(venv / "bin" / "fab")], client.path))

    probe = (
        "import json, sys, sum_tasks\n"
        "from sum_tasks.configuration import load_site\n"
        "from sum_tasks.commands.templating import LIBRARY_TEMPLATES, render\n"
        "site = load_site(json.loads(sys.argv[1]))\n"
        "print(sum_tasks.__file__)\n"
        "print(LIBRARY_TEMPLATES)\n"
        "print(render('site.caddy.j2', {'site': site}))\n"
    )
    out = subprocess.run([str(python), "-c", probe, json.dumps(example_config()["sum"])], cwd=client.path, capture_output=True, text=True, timeout=60,
                         env=clean_env(), check=True).stdout.splitlines()
    site_packages = str(venv / "lib")
    assert out[0].startswith(site_packages) and out[1].startswith(site_packages), out[:2]
    assert out[1].endswith("sum_tasks/templates")
    caddy = "\n".join(out[2:])
    assert "acme.example.com" in caddy and "unix//srv/sum/acme/live.sock" in caddy
