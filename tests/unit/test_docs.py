"""The generated reference pages match the code they come from (run `python3 -m sum_tasks.docs` after a change)."""

import dataclasses
import subprocess
import sys

from sum_tasks import docs


def test_generated_pages_are_current():
    result = subprocess.run([sys.executable, "-m", "sum_tasks.docs", "--check"], capture_output=True, text=True, check=False,
                            cwd=docs.DOCS.parent)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}run `python3 -m sum_tasks.docs`"


def test_every_setting_and_task_is_documented():
    from sum_tasks import namespace
    from sum_tasks.configuration import Site, defaults

    configuration, tasks = (docs.DOCS / "configuration.md").read_text(), (docs.DOCS / "tasks.md").read_text()
    for key, value in defaults().items():
        nested = dataclasses.is_dataclass(getattr(Site(), key))
        for name in ([f"{key}.{k}" for k in value] if nested else [key]):
            assert f"| `{name}` |" in configuration, name
    for name in namespace().task_names:
        assert f"\n## {name}\n" in tasks, name


def test_readme_is_the_front_door():
    readme = (docs.DOCS.parent / "README.md").read_text()
    assert 100 <= len(readme.splitlines()) <= 150
    assert "python3 -m pytest -q" in readme
    for page in ("getting-started", "runbook", "configuration", "tasks", "architecture", "testing"):
        assert f"docs/{page}.md" in readme, page


def test_every_documented_fabric_yaml_is_a_valid_configuration():
    import yaml

    from sum_tasks.configuration import load_site

    pages = [docs.DOCS.parent / "README.md", *sorted(docs.DOCS.glob("*.md"))]
    blocks = [(page.name, block.split("\n```", 1)[0]) for page in pages for block in page.read_text().split("```yaml\n")[1:]]
    checked = 0
    for name, block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, dict) and isinstance(data.get("sum"), dict) and "site_slug" in data["sum"]:
            load_site(data["sum"])
            checked += 1
    assert checked >= 2, f"expected the README's and getting-started's fabric.yaml among {[n for n, _ in blocks]}"
