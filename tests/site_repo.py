"""Build the example client site's git repository for the end-to-end tests.

``build_site_repo(dest)`` copies ``examples/client/`` (the example client repo:
the Django site plus its fabfile.py and fabric.yaml) to ``dest``, makes it a
git repository and commits one variant per release the tests deploy, each
tagged with an annotated tag. It returns ``{tag: commit_sha}``.

Tags (the first line of each is the contract the tests rely on):

``v1``
    The good site. Migrations: ``notes.0001_initial`` only.
``v1.2``
    A later good commit: the page heading changes (see ``HEADINGS``).
    Same requirements as v1 and no new migration.
``v2``
    Good; adds migration ``notes.0002_note_pinned`` (a field with a default), so
    releasing it has pending migrations, and rolling back from it to v1 leaves
    the database with a migration v1 does not know.
``v3-reqs``
    Like v2 but requirements.txt changes: adds ``humanize`` (``EXTRA_REQUIREMENT``).
    The page imports it, so a venv not rebuilt from the new requirements fails
    every request with 500.
``bad-migration``
    v2 plus ``notes.0003_deliberately_broken``, which raises when applied:
    ``manage.py migrate`` fails (and, being atomic on PostgreSQL, rolls back).
    Requirements identical to v2.
``bad-import``
    v2 where ``examplesite/wsgi.py`` raises ImportError when imported: gunicorn's
    workers cannot boot. ``manage.py`` commands (migrate, collectstatic) still work.
    Requirements identical to v2.
``bad-health``
    v2 where ``/health/`` always reports ``unhealthy`` with 503 (an extra critical
    check, ``release``, fails on purpose). Every other page works.
    Requirements identical to v2.
``bad-urls``
    v2 where ``urls.py`` raises when a gunicorn worker loads it on the first
    request: every request, ``/health/`` included, answers 500. Workers boot and
    ``manage.py`` commands (migrate, check) still work, because the URLconf only
    raises when gunicorn is loaded. Requirements identical to v2.

``secure``
    v2 with Django's deployment checklist on: ``SECURE_SSL_REDIRECT``, HSTS (with subdomains and
    preload), secure cookies. A request that does not say it came over HTTPS (``X-Forwarded-Proto``)
    is redirected, so a probe without Caddy's headers gets a 301. Requirements identical to v2.

``celery``
    v2 plus Celery (``CELERY_REQUIREMENT``), its app in a sub-package (``examplesite.queue``) reading
    ``CELERY_*`` settings from the environment, and tasks in ``notes/tasks.py`` (``add``, ``nap``, ``whoami``).

``main`` points at v3-reqs (v1 -> v1.2 -> v2 -> v3-reqs); each bad tag sits on
its own branch ``variants/<tag>`` forked from v2, so a plain clone fetches
every tag. Author, committer, tagger and dates are fixed, and git runs without
the user's or the system's configuration, so the commit ids are the same on
every run with the same site sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "BAD_TAGS",
    "CELERY_REQUIREMENT",
    "EXTRA_REQUIREMENT",
    "GOOD_TAGS",
    "HEADINGS",
    "SITE_SOURCE",
    "STUDIO_SOURCE",
    "STUDIO_V2_MARK",
    "TAGS",
    "build_site_repo",
    "build_studio_repo",
]

SITE_SOURCE = Path(__file__).resolve().parents[1] / "examples" / "client"

GOOD_TAGS = ("v1", "v1.2", "v2", "v3-reqs")
BAD_TAGS = ("bad-migration", "bad-import", "bad-health", "bad-urls")
TAGS = GOOD_TAGS + BAD_TAGS + ("secure", "celery")

# The text of the page's <h1 id="heading"> at each tag.
HEADINGS = {
    "v1": "Example notes",
    **{tag: "Example notes, revised" for tag in TAGS if tag != "v1"},
}

# The requirement line v3-reqs adds to requirements.txt.
EXTRA_REQUIREMENT = "humanize==4.17.0"
# The one the celery tag adds.
CELERY_REQUIREMENT = "celery==5.5.3"

_AUTHOR_NAME = "SUM Example Site"
_AUTHOR_EMAIL = "example-site@sum.invalid"
_FIRST_COMMIT_EPOCH = 1704110400  # 2024-01-01T12:00:00Z; each commit is one hour later

_IGNORE_NAMES = ("__pycache__", "*.pyc", "staticfiles", "media", ".env", ".venv")
_IGNORE = shutil.ignore_patterns(*_IGNORE_NAMES)


class _Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._commits = 0

    def git(self, *args: str) -> str:
        when = f"@{_FIRST_COMMIT_EPOCH + 3600 * self._commits} +0000"
        env = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": _AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": _AUTHOR_EMAIL,
            "GIT_AUTHOR_DATE": when,
            "GIT_COMMITTER_NAME": _AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": _AUTHOR_EMAIL,
            "GIT_COMMITTER_DATE": when,
            "LC_ALL": "C",
        }
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            env.pop(name, None)
        result = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "core.autocrlf=false", *args],
            check=False,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def replace(self, rel: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in ``rel``; ``old`` must occur exactly once."""
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        count = text.count(old)
        if count != 1:
            raise RuntimeError(f"{rel}: expected {old!r} once, found it {count} times")
        path.write_text(text.replace(old, new), encoding="utf-8")

    def commit(self, tag: str, message: str) -> str:
        self.git("add", "--all")
        self.git("commit", "--quiet", "--message", message)
        self.git("tag", "--annotate", tag, "--message", f"Example site {tag}")
        self._commits += 1
        return self.git("rev-parse", f"{tag}^{{commit}}")


# --- the changes each tag makes ----------------------------------------------


def _v1_2(repo: _Repo) -> None:
    repo.replace(
        "notes/templates/notes/index.html",
        f'<h1 id="heading">{HEADINGS["v1"]}</h1>',
        f'<h1 id="heading">{HEADINGS["v1.2"]}</h1>',
    )


_MIGRATION_0002 = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = (("notes", "0001_initial"),)

    operations = (
        migrations.AddField(
            model_name="note",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
    )
"""


def _v2(repo: _Repo) -> None:
    repo.replace(
        "notes/models.py",
        "    created_at = models.DateTimeField(auto_now_add=True)\n",
        "    created_at = models.DateTimeField(auto_now_add=True)\n    pinned = models.BooleanField(default=False)\n",
    )
    repo.write("notes/migrations/0002_note_pinned.py", _MIGRATION_0002)
    repo.replace(
        "notes/templates/notes/index.html",
        "<li>{{ note.title }}</li>",
        "<li>{{ note.title }}{% if note.pinned %} (pinned){% endif %}</li>",
    )


def _v3_reqs(repo: _Repo) -> None:
    repo.replace("requirements.txt", "redis==", f"{EXTRA_REQUIREMENT}\nredis==")
    repo.replace("notes/views.py", "from django.shortcuts", "import humanize\nfrom django.shortcuts")
    repo.replace(
        "notes/views.py",
        '        "note_count": Note.objects.count(),\n',
        '        "note_count": Note.objects.count(),\n        "note_count_words": humanize.apnumber(len(notes)),\n',
    )


_MIGRATION_BROKEN = """\
from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("bad-migration: this migration fails on purpose")


class Migration(migrations.Migration):
    dependencies = (("notes", "0002_note_pinned"),)

    operations = (migrations.RunPython(fail, migrations.RunPython.noop),)
"""


def _bad_migration(repo: _Repo) -> None:
    repo.write("notes/migrations/0003_deliberately_broken.py", _MIGRATION_BROKEN)


def _bad_import(repo: _Repo) -> None:
    repo.replace(
        "examplesite/wsgi.py",
        "from django.core.wsgi import get_wsgi_application\n",
        "from django.core.wsgi import get_wsgi_application\n\n"
        "# bad-import: a module that does not exist, so workers cannot boot.\n"
        "from examplesite import missing_module  # noqa: F401\n",
    )


def _bad_health(repo: _Repo) -> None:
    repo.replace(
        "examplesite/health.py",
        "# (name, check, critical).",
        "def check_release() -> None:\n"
        '    raise RuntimeError("bad-health: this release is unhealthy on purpose")\n'
        "\n\n"
        "# (name, check, critical).",
    )
    repo.replace(
        "examplesite/health.py",
        '    ("media", check_media, False),\n]',
        '    ("media", check_media, False),\n    ("release", check_release, True),\n]',
    )


def _bad_urls(repo: _Repo) -> None:
    repo.replace(
        "examplesite/urls.py",
        "from django.contrib.sitemaps.views import sitemap\n",
        "import sys\n\nfrom django.contrib.sitemaps.views import sitemap\n",
    )
    repo.replace(
        "examplesite/urls.py",
        "\nurlpatterns = [",
        "\n# bad-urls: fails when a gunicorn worker loads the URLconf (the first\n"
        "# request), so every request is a 500; manage.py commands are unaffected.\n"
        'if "gunicorn" in sys.modules:\n'
        '    raise RuntimeError("bad-urls: this URLconf fails on purpose")\n'
        "\nurlpatterns = [",
    )


def _secure(repo: _Repo) -> None:
    repo.replace(
        "examplesite/settings/production.py",
        'SILENCED_SYSTEM_CHECKS = ["security.W004", "security.W008"]\n',
        "SECURE_SSL_REDIRECT = True\nSECURE_HSTS_SECONDS = 31536000\nSECURE_HSTS_INCLUDE_SUBDOMAINS = True\n"
        "SECURE_HSTS_PRELOAD = True\nSECURE_CONTENT_TYPE_NOSNIFF = True\nX_FRAME_OPTIONS = \"DENY\"\n",
    )


_CELERY_APP = """\
\"\"\"The site's Celery app, in a sub-package: `celery --app examplesite.queue`.\"\"\"

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examplesite.settings.production")
app = Celery("examplesite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["notes"])
"""

_CELERY_TASKS = """\
\"\"\"Tasks the end-to-end tests send through the site's own Redis.\"\"\"

import os
import time

from celery import shared_task


@shared_task
def add(a, b):
    return a + b


@shared_task
def nap(seconds):
    time.sleep(seconds)
    return seconds


@shared_task
def whoami():
    return [os.getuid(), os.path.realpath(os.getcwd())]
"""


def _celery(repo: _Repo) -> None:
    repo.replace("requirements.txt", "redis==", f"{CELERY_REQUIREMENT}\nredis==")
    repo.write("examplesite/queue/__init__.py", _CELERY_APP)
    repo.write("notes/tasks.py", _CELERY_TASKS)
    repo.replace(
        "examplesite/settings/production.py",
        'REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")\n',
        'REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")\n'
        'CELERY_BROKER_URL = _env("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")\n'
        'CELERY_RESULT_BACKEND = _env("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/2")\n',
    )


_LINE = [
    ("v1.2", _v1_2, "Revise the page heading"),
    ("v2", _v2, "Add Note.pinned (migration 0002)"),
    ("v3-reqs", _v3_reqs, "Require humanize"),
]
_VARIANTS = [
    ("bad-migration", _bad_migration, "Add a migration that fails"),
    ("bad-import", _bad_import, "Break the WSGI module's imports"),
    ("bad-health", _bad_health, "Make /health/ report unhealthy"),
    ("bad-urls", _bad_urls, "Break the URLconf under gunicorn"),
    ("secure", _secure, "Django's deployment checklist: SSL redirect, HSTS, secure cookies"),
    ("celery", _celery, "Celery in a sub-package, with tasks"),
]


def build_site_repo(dest: Path) -> dict[str, str]:
    """Create the example site's git repository at ``dest`` and return ``{tag: commit_sha}``.

    ``dest`` must not exist or be an empty directory. The work tree is left on
    ``main`` (at v3-reqs). See the module docstring for what each tag holds.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    shutil.copytree(SITE_SOURCE, dest, ignore=_IGNORE, dirs_exist_ok=True)

    repo = _Repo(dest)
    repo.git("init", "--quiet", "--initial-branch=main")
    shas = {"v1": repo.commit("v1", "Example site v1")}
    for tag, change, message in _LINE:
        change(repo)
        shas[tag] = repo.commit(tag, message)
    for tag, change, message in _VARIANTS:
        repo.git("checkout", "--quiet", "-b", f"variants/{tag}", "v2")
        change(repo)
        shas[tag] = repo.commit(tag, message)
    repo.git("checkout", "--quiet", "main")
    return {tag: shas[tag] for tag in TAGS}


STUDIO_SOURCE = Path(__file__).resolve().parents[1] / "examples" / "wagtail"
# What v2 of the Wagtail example adds to its home page.
STUDIO_V2_MARK = '<p id="release">second release</p>'


def build_studio_repo(dest: Path) -> dict[str, str]:
    """The Wagtail example (``examples/wagtail``) as a git repository at ``dest``: ``v1`` as committed, ``v2`` with
    `STUDIO_V2_MARK` on the home page. Returns ``{tag: commit_sha}``."""
    dest = Path(dest)
    shutil.copytree(STUDIO_SOURCE, dest, ignore=shutil.ignore_patterns("ssh_config", *_IGNORE_NAMES), dirs_exist_ok=True)
    repo = _Repo(dest)
    repo.git("init", "--quiet", "--initial-branch=main")
    shas = {"v1": repo.commit("v1", "Studio site v1")}
    repo.replace("home/templates/home/home_page.html", "</main>", f"{STUDIO_V2_MARK}</main>")
    shas["v2"] = repo.commit("v2", "Studio site v2: the home page says so")
    return shas
