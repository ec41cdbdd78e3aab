"""Every template renders with strict undefined checks; unit files pass systemd-analyze; clients can override one."""

import shutil
import subprocess

import jinja2
import pytest

from sum_tasks.commands import templating
from sum_tasks.commands.facts import Facts
from sum_tasks.configuration import load_site
from sum_tasks.configuration.hostmap import COLOURS, SYSTEMCTL
from sum_tasks.operations.plan import host_plan

NAMES = sorted(p.name for p in templating.LIBRARY_TEMPLATES.glob("*.j2"))


def test_every_template_is_used_by_a_plan(site_config):
    site = load_site({**site_config, "celery": True, "ssh_hardening": True})
    rendered = {op.name for op in host_plan(site, Facts(user="root"))}
    assert {"gunicorn unit", "celery unit", "socket directory", "caddy site", "sudoers rule", "ssh hardening"} <= rendered
    assert set(NAMES) >= {"gunicorn@.service.j2", "celery.service.j2", "tmpfiles.conf.j2", "site.caddy.j2", "sudoers.j2", "sshd-hardening.conf.j2"}


@pytest.mark.parametrize("name", NAMES)
def test_undefined_variables_are_errors(name):
    with pytest.raises(jinja2.UndefinedError):
        templating.render(name, {})


@pytest.mark.parametrize("tls", ["auto", "internal", "off"])
def test_caddy_site_per_tls_mode(site_config, tls):
    site = load_site({**site_config, "tls": tls, "tls_email": "ops@acme.example"})
    text = templating.render("site.caddy.j2", {"site": site})
    first = text.splitlines()[1]
    if tls == "off":
        assert first.startswith("http://acme.example, http://www.acme.example {") and "Strict-Transport" not in text
    else:
        assert first.startswith("acme.example, www.acme.example {") and "Strict-Transport-Security" in text
    assert ("tls internal" in text) == (tls == "internal")
    assert ("tls ops@acme.example" in text) == (tls == "auto")
    assert "reverse_proxy unix//srv/sum/acme-kitchens/live.sock {" in text and "keepalive off" in text
    assert "root * /srv/sum/acme-kitchens/static" in text


@pytest.mark.parametrize("tls", ["auto", "off"])
def test_caddy_redirects_and_acme_server(site_config, tls):
    extra = {"acme_ca": "https://pebble.test:14000/dir", "acme_ca_root": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----"}
    site = load_site({**site_config, "tls": tls, "domains": ["acme.example"], "redirects": {"www.acme.example": "acme.example"},
                      **(extra if tls == "auto" else {})})
    text = templating.render("site.caddy.j2", {"site": site})
    scheme = "https" if tls == "auto" else "http"
    block = text.split(f"{'' if tls == 'auto' else 'http://'}www.acme.example {{\n", 1)[1].split("\n}\n", 1)[0]
    assert f"redir {scheme}://acme.example{{uri}} permanent" in block
    assert ("ca https://pebble.test:14000/dir" in block) == (tls == "auto")
    main = text.split(f"{'' if tls == 'auto' else 'http://'}acme.example {{\n", 1)[1]
    assert ("ca_root /etc/sum/sum-acme-kitchens-acme-root.pem" in main) == (tls == "auto")
    assert "reverse_proxy" in main and "reverse_proxy" not in block


def test_client_template_overrides_one_file(tmp_path, site):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "sshd-hardening.conf.j2").write_text("# client {{ permit_root_login }}\n")
    assert templating.render("sshd-hardening.conf.j2", {"permit_root_login": "no"}, str(tmp_path)) == "# client no\n"
    assert "gunicorn" in templating.render("gunicorn@.service.j2", {"site": site}, str(tmp_path))


@pytest.mark.parametrize("kind", ["gunicorn", "celery", "standby"])
def test_units_pass_systemd_analyze_verify(tmp_path, site_config, kind):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed (apt-get install systemd)")
    site = load_site({**site_config, "celery": kind == "celery", "standby_minutes": 30})
    units = {"sum-acme-kitchens-gunicorn@.service": "gunicorn@.service.j2", "sum-acme-kitchens-celery.service": "celery.service.j2",
             "sum-acme-kitchens-standby.service": "standby.service.j2", "sum-acme-kitchens-standby.timer": "standby.timer.j2"}
    for unit, template in units.items():
        (tmp_path / unit).write_text(templating.render(template, {"site": site, "colours": COLOURS, "systemctl": SYSTEMCTL}))
    target = {"gunicorn": "sum-acme-kitchens-gunicorn@blue.service", "celery": "sum-acme-kitchens-celery.service",
              "standby": "sum-acme-kitchens-standby.timer"}[kind]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / target)], capture_output=True, text=True, check=False)
    problems = [line for line in result.stderr.splitlines() if "acme-kitchens" in line and "is not executable" not in line
                and "No such file" not in line]
    assert not problems, result.stderr
