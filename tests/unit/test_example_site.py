"""Fast checks of ``tests/site_repo.py``: git only, no Django, no network, no database."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest
from site_repo import (
    BAD_TAGS,
    CELERY_REQUIREMENT,
    EXTRA_REQUIREMENT,
    GOOD_TAGS,
    HEADINGS,
    SITE_SOURCE,
    TAGS,
    build_site_repo,
)

MIGRATION = re.compile(r"^notes/migrations/\d{4}_\w+\.py$")
CELERY_IMPORT = re.compile(r"^\s*(import|from)\s+celery\b", re.MULTILINE)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def show(repo: Path, tag: str, path: str) -> str:
    return git(repo, "show", f"{tag}:{path}")


def files(repo: Path, tag: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", tag).splitlines()


def migrations(repo: Path, tag: str) -> list[str]:
    return sorted(f for f in files(repo, tag) if MIGRATION.match(f))


def changed(repo: Path, old: str, new: str) -> set[str]:
    return set(git(repo, "diff", "--name-only", old, new).split())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("site") / "repo"
    return repo, build_site_repo(repo)


def test_every_tag_exists_and_resolves_to_a_distinct_commit(built):
    repo, shas = built
    assert list(shas) == list(TAGS)
    assert len(set(shas.values())) == len(TAGS)
    assert set(git(repo, "tag", "--list").split()) == set(TAGS)
    for tag, sha in shas.items():
        assert re.fullmatch(r"[0-9a-f]{40}", sha)
        assert git(repo, "rev-parse", f"{tag}^{{commit}}").strip() == sha


def test_work_tree_is_clean_on_main_at_v3_reqs(built):
    repo, shas = built
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "rev-parse", "HEAD").strip() == shas["v3-reqs"]


def test_good_tags_form_one_line_and_bad_tags_fork_from_v2(built):
    repo, shas = built
    for parent, child in itertools.pairwise(GOOD_TAGS):
        assert git(repo, "rev-parse", f"{child}^").strip() == shas[parent]
    for tag in BAD_TAGS:
        assert git(repo, "rev-parse", f"{tag}^").strip() == shas["v2"]


def test_requirements_identical_where_stated(built):
    repo, _ = built
    v1 = show(repo, "v1", "requirements.txt")
    for tag in ("v1.2", "v2", *BAD_TAGS):
        assert show(repo, tag, "requirements.txt") == v1, tag


def test_v3_reqs_changes_requirements_by_one_pinned_package(built):
    repo, _ = built
    v2 = show(repo, "v2", "requirements.txt").splitlines()
    v3 = show(repo, "v3-reqs", "requirements.txt").splitlines()
    assert v3 != v2
    assert sorted(set(v3) - set(v2)) == [EXTRA_REQUIREMENT]
    assert set(v2) <= set(v3)


def test_requirements_are_pinned_and_small(built):
    repo, _ = built
    lines = [line for line in show(repo, "v1", "requirements.txt").splitlines() if line.strip() and not line.startswith("#")]
    names = {re.split(r"[\[=]", line)[0].lower() for line in lines}
    assert names == {"django", "gunicorn", "psycopg", "redis"}
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+(\[\w+\])?==[\w.]+", line) for line in lines)
    assert any(re.fullmatch(r"Django==5\.\d+\.\d+", line) for line in lines)
    assert "psycopg[binary]==" in show(repo, "v1", "requirements.txt")


def test_migration_counts(built):
    repo, _ = built
    v1 = migrations(repo, "v1")
    assert v1 == ["notes/migrations/0001_initial.py"]
    assert migrations(repo, "v1.2") == v1
    v2 = migrations(repo, "v2")
    assert len(v2) == len(v1) + 1 and set(v1) < set(v2)
    for tag in ("v3-reqs", "bad-import", "bad-health", "bad-urls"):
        assert migrations(repo, tag) == v2, tag
    assert len(migrations(repo, "bad-migration")) == len(v2) + 1


def test_bad_tags_change_only_what_they_break(built):
    repo, _ = built
    assert changed(repo, "v2", "bad-migration") == {"notes/migrations/0003_deliberately_broken.py"}
    assert changed(repo, "v2", "bad-import") == {"examplesite/wsgi.py"}
    assert changed(repo, "v2", "bad-health") == {"examplesite/health.py"}
    assert changed(repo, "v2", "bad-urls") == {"examplesite/urls.py"}
    assert "raise RuntimeError" in show(repo, "bad-migration", "notes/migrations/0003_deliberately_broken.py")
    assert "missing_module" in show(repo, "bad-import", "examplesite/wsgi.py")
    assert '("release", check_release, True)' in show(repo, "bad-health", "examplesite/health.py")
    assert "raise RuntimeError" in show(repo, "bad-urls", "examplesite/urls.py")


def test_page_heading_per_tag(built):
    repo, _ = built
    for tag in TAGS:
        page = show(repo, tag, "notes/templates/notes/index.html")
        assert f'<h1 id="heading">{HEADINGS[tag]}</h1>' in page, tag
    assert HEADINGS["v1"] != HEADINGS["v1.2"]


def test_python_compiles_at_every_tag_and_only_the_celery_tag_imports_celery(built):
    repo, _ = built
    for tag in TAGS:
        importing = []
        for path in files(repo, tag):
            if path.endswith(".py"):
                source = show(repo, tag, path)
                compile(source, f"{tag}:{path}", "exec")
                if CELERY_IMPORT.search(source):
                    importing.append(path)
        requirements = show(repo, tag, "requirements.txt").lower()
        if tag == "celery":
            assert sorted(importing) == ["examplesite/queue/__init__.py", "notes/tasks.py"] and CELERY_REQUIREMENT in requirements
        else:
            assert not importing and "celery" not in requirements, tag


def test_build_is_reproducible(built, tmp_path):
    _, shas = built
    assert build_site_repo(tmp_path / "again") == shas


def test_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_site_repo(tmp_path)


def test_source_tree_has_the_layout_gunicorn_needs():
    for rel in (
        "manage.py",
        "requirements.txt",
        "examplesite/__init__.py",
        "examplesite/settings/__init__.py",
        "examplesite/settings/base.py",
        "examplesite/settings/production.py",
        "examplesite/urls.py",
        "examplesite/wsgi.py",
        "static/site.css",
    ):
        assert (SITE_SOURCE / rel).is_file(), rel


def test_source_is_the_complete_example_client_repo():
    assert SITE_SOURCE.parts[-2:] == ("examples", "client")
    for rel in ("fabfile.py", "fabric.yaml", "ssh_config.example", ".gitignore", "README.md"):
        assert (SITE_SOURCE / rel).is_file(), rel
    assert "/ssh_config" in (SITE_SOURCE / ".gitignore").read_text().splitlines()


def test_the_client_files_are_committed_but_ssh_config_is_not(built):
    repo, _ = built
    assert {"fabfile.py", "fabric.yaml", "ssh_config.example"} <= set(files(repo, "v1"))
    (repo / "ssh_config").write_text("Host vps\n")
    try:
        assert git(repo, "status", "--porcelain") == ""
    finally:
        (repo / "ssh_config").unlink()


def test_the_wagtail_example_validates_and_builds_its_two_tags(tmp_path):
    import yaml
    from site_repo import STUDIO_SOURCE, STUDIO_V2_MARK, build_studio_repo

    from sum_tasks.configuration import load_site

    site = load_site(yaml.safe_load((STUDIO_SOURCE / "fabric.yaml").read_text())["sum"])
    assert site.celery and site.celery_app == "studio.workers.celery" and site.apt_packages
    assert {entry.command[0] for entry in site.schedule.values()} == {"publish_scheduled", "clearsessions"}
    requirements = (STUDIO_SOURCE / "requirements.txt").read_text()
    wheel = re.search(r"^\./(wheels/\S+\.whl)$", requirements, re.MULTILINE)
    assert wheel and (STUDIO_SOURCE / wheel.group(1)).is_file(), "the private package must be a committed local wheel"
    shas = build_studio_repo(tmp_path / "studio")
    assert set(shas) == {"v1", "v2"}
    assert STUDIO_V2_MARK in show(tmp_path / "studio", "v2", "home/templates/home/home_page.html")
    assert STUDIO_V2_MARK not in show(tmp_path / "studio", "v1", "home/templates/home/home_page.html")
    assert "ssh_config" not in git(tmp_path / "studio", "ls-files").split()
