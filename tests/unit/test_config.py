"""Every rule of the `sum` config, with the values that must be refused."""

import pytest
from invoke.exceptions import Exit

from sum_tasks.configuration import ConfigError, defaults, load_site

GOOD = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme"}


def refused(**changes):
    with pytest.raises(ConfigError) as err:
        load_site({**GOOD, **changes})
    message = str(err.value.message)
    assert "\n" not in message
    return message


def test_defaults_fill_everything_else():
    site = load_site(GOOD)
    assert site.deploy_user == "deploy" and site.admin_user == "root"
    assert site.tls == "auto" and site.celery is False and site.celery_app == "acme"
    assert site.python == "python3" and site.keep_releases == 5
    assert site.paths.root == "/srv/sum/acme" and site.primary_domain == "acme.example"
    assert site.backups.keep == 14 and site.backups.format == "gzip"


def test_config_error_is_an_exit_with_nonzero_code():
    with pytest.raises(Exit) as err:
        load_site({**GOOD, "site_slug": "Bad"})
    assert err.value.code != 0


@pytest.mark.parametrize("slug", ["../etc", "a b", "a;rm -rf /", "Acme", "-acme", "", "a" * 64, "acme/x", "acme_x", "$(id)", "acme\n"])
def test_bad_slugs(slug):
    assert "sum.site_slug" in refused(site_slug=slug)


@pytest.mark.parametrize("slug", ["a", "acme-kitchens", "0day", "a" * 63])
def test_good_slugs(slug):
    assert load_site({**GOOD, "site_slug": slug}).site_slug == slug


@pytest.mark.parametrize("domain", ["localhost", "Acme.example", "acme..example", "-acme.example", "acme.example.", "acme example.com",
                                    "acme.example;id", "1.2.3.4", "a" * 64 + ".example", "*.acme.example", "acme.example/x"])
def test_bad_domains(domain):
    assert "sum.domains" in refused(domains=[domain])


def test_domains_required_unique_and_listed():
    assert "at least one" in refused(domains=[])
    assert "repeat" in refused(domains=["a.example", "a.example"])
    assert load_site({**GOOD, "domains": "a.example, www.a.example"}).domains == ("a.example", "www.a.example")


def test_unknown_keys_get_did_you_mean():
    assert "did you mean 'site_slug'" in refused(site_slg="x")
    assert "did you mean 'backups.keep'" in refused(backups={"kep": 3})
    assert "unknown setting" in refused(zzz=1)


@pytest.mark.parametrize("key,value", [
    ("project_module", "acme-site"), ("project_module", "class"), ("project_module", "a.b"), ("project_module", ""),
    ("deploy_user", "Deploy"), ("deploy_user", "de ploy"), ("admin_user", "root;id"),
    ("hosts", ["vps; rm -rf /"]), ("hosts", ["-oProxyCommand=x"]),
    ("python", "python3; id"), ("python", "perl"),
    ("celery", "maybe"), ("tls", "on"), ("caddy_source", "ppa"),
    ("authorized_keys", ["not a key"]), ("authorized_keys", ["ssh-ed25519 AAAA\ncommand=x"]),
    ("repo_url", "-uhttps://x"), ("repo_url", "git repo"),
    ("keep_releases", 1), ("keep_releases", "five"), ("gunicorn_workers", 0), ("health_timeout", True),
    ("celery_app", "a-b"), ("tls_email", "me"), ("backups", {"format": "rar"}), ("backups", {"keep": 0}),
    ("backups", {"schedule": "daily; id"}),
    ("acme_ca", "http://acme.example/dir"), ("acme_ca", "https://x/dir; id"), ("acme_ca_root", "not a certificate"),
    ("redirects", ["www.acme.example"]), ("redirects", {"www.acme.example": "elsewhere.example"}),
    ("redirects", {"acme.example": "www.acme.example"}), ("redirects", {"bad domain": "acme.example"}),
])
def test_bad_values_name_their_key(key, value):
    assert f"sum.{key.split('.')[0]}" in refused(**{key: value})


def test_required_keys():
    for key in ("site_slug", "project_module"):
        assert "is required" in refused(**{key: ""})


def test_strings_from_env_vars_are_cast():
    site = load_site({**GOOD, "celery": "true", "keep_releases": "7", "hosts": "a.example,deploy@b.example:2222"})
    assert site.celery is True and site.keep_releases == 7
    assert site.hosts == ("a.example", "deploy@b.example:2222")


def test_every_default_is_typed():
    assert all(value is not None for value in defaults().values())


@pytest.mark.parametrize("slug", ["postgres", "template1", "template0", "pg-monitor"])
def test_slugs_that_would_take_over_postgresql_system_names(slug):
    assert "PostgreSQL system role or database" in refused(site_slug=slug)


@pytest.mark.parametrize("user", ["root", "postgres", "caddy", "www-data"])
def test_deploy_user_is_not_a_system_account(user):
    assert "system account" in refused(deploy_user=user)


def test_repo_url_without_credentials():
    assert "deploy key" in refused(repo_url="https://ci:s3cret-token@git.example/acme.git")
    assert load_site({**GOOD, "repo_url": "https://git.example/acme.git"}).repo_url
    assert load_site({**GOOD, "repo_url": "git@git.example:agency/acme.git"}).repo_url


def test_schedule_entries_are_validated_names_commands_and_calendars(site_config):
    site = load_site({**site_config, "schedule": {"publish": {"command": "publish_scheduled", "when": "*:0/10"},
                                                  "sessions": {"command": "clearsessions --verbosity 0", "when": "daily"}}})
    assert site.schedule["sessions"].command == ("clearsessions", "--verbosity", "0")
    assert site.paths.schedule("publish") == ("sum-acme-kitchens-schedule-publish.service", "sum-acme-kitchens-schedule-publish.timer")
    for bad, key in (({"Pub lish": {"command": "x", "when": "daily"}}, "schedule.Pub lish"),
                     ({"p": {"command": "x; rm -rf /", "when": "daily"}}, "schedule.p.command"),
                     ({"p": {"command": "shell -c '%h'", "when": "daily"}}, "schedule.p.command"),
                     ({"p": {"command": "", "when": "daily"}}, "schedule.p.command"),
                     ({"p": {"command": "x", "when": "$(id)"}}, "schedule.p.when"),
                     ({"p": {"command": "x", "when": "daily", "user": "root"}}, "schedule.p.user"),
                     ({"p": "publish_scheduled"}, "schedule.p")):
        with pytest.raises(ConfigError) as err:
            load_site({**site_config, "schedule": bad})
        assert str(err.value.message).startswith(f"sum.{key}: "), (bad, err.value.message)


PEM = "-----BEGIN CERTIFICATE-----\nMIIBAAAA+/=\n-----END CERTIFICATE-----"


def test_acme_ca_root_needs_the_ca_and_tls_auto():
    assert "needs sum.acme_ca" in refused(acme_ca_root=PEM)
    assert "only applies to tls: auto" in refused(tls="internal", acme_ca="https://pebble.test:14000/dir")
    site = load_site({**GOOD, "acme_ca": "https://pebble.test:14000/dir", "acme_ca_root": PEM + "\n\n"})
    assert site.acme_ca_root == PEM + "\n"


def test_redirects_go_to_one_of_the_domains():
    site = load_site({**GOOD, "redirects": {"acme.example.org": "acme.example"}})
    assert site.redirects == {"acme.example.org": "acme.example"}
    assert "must redirect to one of sum.domains" in refused(redirects={"acme.example.org": "other.example"})
    assert "either serves the site or redirects" in refused(domains=["acme.example", "www.acme.example"], redirects={"www.acme.example": "acme.example"})
