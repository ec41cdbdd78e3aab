import pytest

from sum_tasks import hooks
from sum_tasks.commands.envfile import hook_script
from sum_tasks.configuration import ConfigError, load_site

GOOD = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme"}


def test_hook_config_is_validated():
    site = load_site({**GOOD, "hooks": {"before_migrate": ["./manage.py check --deploy"], "after_switch": "echo done, really"}})
    assert site.hooks["before_migrate"] == ("./manage.py check --deploy",)
    assert site.hooks["after_switch"] == ("echo done, really",)
    assert site.hooks["after_failure"] == ()
    with pytest.raises(ConfigError, match="did you mean 'hooks.before_migrate'"):
        load_site({**GOOD, "hooks": {"before_migrat": ["x"]}})
    with pytest.raises(ConfigError, match="one-line shell command"):
        load_site({**GOOD, "hooks": {"after_switch": ["a\nb"]}})


def test_hook_commands_get_the_site_environment():
    site = load_site(GOOD)
    script = hook_script(site, "/srv/sum/acme/releases/r1", "before_migrate", "./manage.py check").text
    assert script.startswith("cd /srv/sum/acme/releases/r1 && set -a && . /srv/sum/acme/.env")
    assert script.endswith("set +a && ./manage.py check")


def test_registering_callables():
    with pytest.raises(ValueError, match="unknown hook point"):
        hooks.on("after_lunch")

    @hooks.on("after_restore")
    def noted(c, site, info):
        return None

    try:
        assert noted in hooks.registered("after_restore")
    finally:
        hooks._registered["after_restore"].remove(noted)
