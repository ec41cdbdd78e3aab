import subprocess

from sum_tasks.commands import envfile
from sum_tasks.configuration import load_site

SITE = load_site({"site_slug": "acme", "domains": ["acme.example", "www.acme.example"], "project_module": "acme"})


def counter():
    n = iter(range(1000))
    return lambda: f"secret{next(n):04d}"


def test_fresh_env_has_every_runbook_key():
    values = envfile.parse(envfile.merge("", SITE, counter()))
    for key in ("DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_DB_NAME", "DJANGO_DB_USER",
                "DJANGO_DB_PASSWORD", "DJANGO_DB_HOST", "DJANGO_DB_PORT", "DJANGO_STATIC_ROOT", "DJANGO_MEDIA_ROOT",
                "SITE_DOMAIN", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "WAGTAILADMIN_BASE_URL"):
        assert values[key], key
    assert values["DJANGO_SETTINGS_MODULE"] == "acme.settings.production"
    assert values["ALLOWED_HOSTS"] == "acme.example,www.acme.example"
    assert values["WAGTAILADMIN_BASE_URL"] == "https://acme.example"
    assert values["DJANGO_SECRET_KEY"] != values["DJANGO_DB_PASSWORD"]


def test_merge_keeps_secrets_and_operator_lines_and_is_stable():
    first = envfile.merge("", SITE, counter())
    edited = first + "# mine\nSENTRY_DSN='https://k@x/1 y'\nREDIS_URL=redis://cache.internal:6379/3\n"
    second = envfile.merge(edited, SITE, counter())
    values = envfile.parse(second)
    assert values["DJANGO_SECRET_KEY"] == envfile.parse(first)["DJANGO_SECRET_KEY"]
    assert values["SENTRY_DSN"] == "https://k@x/1 y" and "# mine" in second
    assert values["REDIS_URL"] == "redis://cache.internal:6379/3"
    assert envfile.merge(second, SITE, counter()) == second


def test_config_keys_follow_fabric_yaml():
    old = envfile.merge("", SITE, counter()).replace("acme.example,www.acme.example", "old.example")
    assert envfile.parse(envfile.merge(old, SITE, counter()))["ALLOWED_HOSTS"] == "acme.example,www.acme.example"


def test_a_shell_can_source_it(tmp_path):
    text = envfile.merge("X_SPACED='a b $HOME'\n", SITE, counter())
    path = tmp_path / ".env"
    path.write_text(text)
    out = subprocess.run(["sh", "-c", f'set -a; . {path}; printf "%s|%s" "$X_SPACED" "$DJANGO_DB_PASSWORD"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "a b $HOME|" + envfile.parse(text)["DJANGO_DB_PASSWORD"]


def test_each_site_gets_its_own_redis_and_leaves_the_host_wide_one():
    first = envfile.parse(envfile.merge("", SITE, counter()))
    socket = SITE.paths.redis_socket
    assert socket == "/run/sum-acme-redis/redis.sock"
    assert first["REDIS_URL"] == f"unix://{socket}?db=0"
    assert first["CELERY_BROKER_URL"] == f"redis+socket://{socket}?virtual_host=1"
    assert first["CELERY_RESULT_BACKEND"] == f"redis+socket://{socket}?virtual_host=2"
    moved = envfile.parse(envfile.merge("REDIS_URL=redis://localhost:6379/7\nCELERY_BROKER_URL='redis://127.0.0.1:6379/3'\n", SITE, counter()))
    assert moved["REDIS_URL"] == first["REDIS_URL"] and moved["CELERY_BROKER_URL"] == first["CELERY_BROKER_URL"]
    own = envfile.parse(envfile.merge("REDIS_URL=redis://cache.internal:6379/0\n", SITE, counter()))
    assert own["REDIS_URL"] == "redis://cache.internal:6379/0"
    assert envfile.uses_shared_redis("redis://localhost:6379/12") and not envfile.uses_shared_redis("unix:///x?db=0")
