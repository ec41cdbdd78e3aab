"""The second example client, `examples/wagtail`: a Wagtail site the way an agency has them (Django's deployment checklist
with SECURE_SSL_REDIRECT, a private package as a local wheel, python-magic on a system library from `apt_packages`,
Celery in a sub-package, scheduled publishing, media uploads), deployed with the README's commands on Debian 13 and 12,
with a certificate from Pebble, and used from outside as an editor would: log in, upload an image, schedule a page."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e_support import served, site_config, start_pebble
from site_repo import STUDIO_SOURCE, STUDIO_V2_MARK, build_studio_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

DOMAIN = "studio.test"
# libmagic's package: renamed in Debian 13's 64-bit time_t transition.
LIBMAGIC = {"trixie": "libmagic1t64", "bookworm": "libmagic1"}
EDITOR_PASSWORD = "Tide-Lantern-Orchard-4417"
# A real 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63f8cfc0f01f0005"
                    "0001ff5ccc49a40000000049454e44ae426082")
SCHEDULE_PAGE = """\
from datetime import timedelta
from django.utils import timezone
from home.models import HomePage, NewsPage
home = HomePage.objects.get()
page = home.add_child(instance=NewsPage(title="Harbour reopens", slug="harbour-reopens", live=False, body="<p>Boats again.</p>"))
revision = page.save_revision()
revision.approved_go_live_at = timezone.now() - timedelta(minutes=1)
revision.save(update_fields=["approved_go_live_at"])
print("scheduled", page.pk, NewsPage.objects.get(pk=page.pk).live)
"""


class Browser:
    """curl from this machine to the site's host, trusting only Pebble's root, with a cookie jar: an editor's browser."""

    def __init__(self, ip: str, root: Path, jar: Path) -> None:
        self.base = ["curl", "-sS", "--resolve", f"{DOMAIN}:443:{ip}", "--cacert", str(root), "-b", str(jar), "-c", str(jar)]

    def request(self, path: str, *args: str) -> tuple[int, str, str]:
        """(status, Location, body) of https://studio.test/path."""
        out = subprocess.run([*self.base, *args, "-w", "\n%{http_code} %{redirect_url}", f"https://{DOMAIN}{path}"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        body, _, last = out.rpartition("\n")
        code, _, location = last.partition(" ")
        return int(code), location, body

    def form(self, path: str, fields: dict[str, str], files: dict[str, Path] | None = None) -> tuple[int, str, str]:
        """GET the form at `path` for its CSRF token, then POST `fields` (and `files`) to it as the admin's page does."""
        _, _, page = self.request(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        args = ["-H", f"Referer: https://{DOMAIN}{path}", "-F", f"csrfmiddlewaretoken={token.group(1)}"]
        for name, value in fields.items():
            args += ["--form-string", f"{name}={value}"]
        for name, file in (files or {}).items():
            args += ["-F", f"{name}=@{file}"]
        return self.request(path, *args)


@pytest.mark.parametrize("suite", ["trixie", "bookworm"])
def test_the_wagtail_client_site_as_an_agency_runs_it(host_factory, tmp_path, suite):
    host, pebble = host_factory.many({"suite": suite}, {"suite": "bookworm"})
    ca_root = start_pebble(pebble, host.ip, f"{DOMAIN} www.{DOMAIN}")
    shas = build_studio_repo(tmp_path / "studio")
    example = yaml.safe_load((STUDIO_SOURCE / "fabric.yaml").read_text())["sum"]
    config = {**example, **site_config(host, site_slug="studio", project_module="studio", tls="auto"),
              "domains": [DOMAIN], "redirects": {f"www.{DOMAIN}": DOMAIN}, "apt_packages": [LIBMAGIC[suite]],
              "tls_email": "ops@studio.test", "acme_ca": f"https://{pebble.ip}:14000/dir", "acme_ca_root": ca_root}
    client = make_client(tmp_path / "studio", config, {"vps": (host, "root")})

    out = client.fab("provision").stdout
    assert re.search(rf"changed\s+site packages \({LIBMAGIC[suite]}\)", out), out
    client.fab("release", "--ref", "v1")
    # The certificate is Pebble's: verified from outside against Pebble's root only.
    pebble.ssh("curl -sk https://127.0.0.1:15000/roots/0 > /root/pebble-root.pem")
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.ssh("cat /root/pebble-root.pem").stdout)
    for _ in range(60):
        if served(pebble, host.ip, DOMAIN, "/health/").startswith("200"):
            break
        subprocess.run(["sleep", "2"], check=True)
    assert served(pebble, host.ip, DOMAIN, "/health/").startswith("200")
    assert served(pebble, host.ip, f"www.{DOMAIN}", "/news/?p=2") == f"301 https://{DOMAIN}/news/?p=2"
    browser = Browser(host.ip, root, tmp_path / "cookies")
    code, _, body = browser.request("/health/")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["version"]["git_sha"] == shas["v1"], body
    # SECURE_SSL_REDIRECT: plain HTTP goes to HTTPS (Caddy first), and the app's own HSTS and frame policy arrive intact.
    headers = subprocess.run([*browser.base, "-D", "-", "-o", "/dev/null", f"https://{DOMAIN}/"], capture_output=True, text=True,
                             check=True).stdout.lower()
    assert "strict-transport-security: max-age=31536000; includesubdomains; preload" in headers, headers
    assert "x-frame-options: deny" in headers, headers

    # An editor account, made the way an operator does it: `fab manage -- createsuperuser` at a terminal.
    status, shown = client.fab_in_terminal("manage", "--", "createsuperuser", answers=[
        (r"Username[^:]*: ", "editor"), (r"Email address: ", "editor@studio.test"),
        (r"Password: ", EDITOR_PASSWORD), (r"Password \(again\): ", EDITOR_PASSWORD)])
    assert status == 0 and "Superuser created successfully." in shown, shown
    assert EDITOR_PASSWORD not in shown

    # Log in through the real admin, upload an image; Caddy serves it from /media/, the app's file.
    code, location, _ = browser.form("/admin/login/", {"username": "editor", "password": EDITOR_PASSWORD, "next": "/admin/"})
    assert (code, location) == (302, f"https://{DOMAIN}/admin/"), (code, location)
    photo = tmp_path / "harbour.png"
    photo.write_bytes(PNG)
    code, location, body = browser.form("/admin/images/add/", {"title": "Harbour"}, {"file": photo})
    assert code == 302 and "/admin/images/" in location, (code, location, body[:2000])
    stored = host.ssh("cd /srv/sum/studio/media && ls original_images/").stdout.split()
    assert len(stored) == 1 and stored[0].startswith("harbour"), stored
    assert host.ssh(f"stat -c '%U %G' /srv/sum/studio/media/original_images/{stored[0]}").stdout.split() == ["sum-studio", "caddy"]
    fetched = tmp_path / "fetched.png"
    code, _, _ = browser.request(f"/media/original_images/{stored[0]}", "-o", str(fetched))
    assert code == 200 and fetched.read_bytes() == PNG
    # python-magic judges by content: text named .png is refused with the site's own message.
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    code, _, body = browser.form("/admin/images/add/", {"title": "Fake"}, {"file": fake})
    assert code == 200 and "contains text/plain, not an image this site accepts" in body.replace("&quot;", '"')

    # Scheduled publishing: a page due a minute ago goes live when the schedule's timer runs publish_scheduled.
    # The timer is held while the page is made, so no run of its own (every five minutes on the clock) publishes it early.
    assert host.ssh("systemctl is-active sum-studio-schedule-publish.timer").stdout.strip() == "active"
    host.ssh("systemctl stop sum-studio-schedule-publish.timer && "
             "while systemctl is-active -q sum-studio-schedule-publish.service; do sleep 0.5; done")
    out = client.fab("manage", "--", "shell", "-c", SCHEDULE_PAGE).stdout
    assert re.search(r"^scheduled \d+ False$", out, re.MULTILINE), out
    assert browser.request("/harbour-reopens/")[0] == 404
    host.ssh("systemctl start sum-studio-schedule-publish.timer")
    host.ssh("systemctl start sum-studio-schedule-publish.service")  # what the timer starts every five minutes
    code, _, body = browser.request("/harbour-reopens/")
    assert code == 200 and "Boats again." in body, body[:2000]
    logs = client.fab("logs", "--service", "schedule", "--lines", "200").stdout
    assert "publish_scheduled" in logs or "Harbour reopens" in logs, logs

    # Celery in a sub-package: a task goes through the site's Redis to the worker and its result comes back.
    out = client.fab("manage", "--", "celery_roundtrip").stdout
    assert re.search(r"^celery roundtrip ok live_pages=[2-9]\d* worker=", out, re.MULTILINE), out

    # A second release, then a rollback to the first: the warm standby takes over.
    client.fab("release", "--ref", "v2")
    assert STUDIO_V2_MARK in browser.request("/")[2]
    client.fab("rollback")
    assert json.loads(browser.request("/health/")[2])["version"]["git_sha"] == shas["v1"]
    assert STUDIO_V2_MARK not in browser.request("/")[2]

    # check: Django's check --deploy clean, the schedules ran, Pebble's certificate with its days left.
    check = client.fab("check").stdout
    assert re.search(r"^\s*ok\s+django deploy\s.*no issues", check, re.MULTILINE), check
    assert re.search(r"^\s*ok\s+schedule publish", check, re.MULTILINE), check
    tls = next(line for line in check.splitlines() if line.split()[1:2] == ["tls"])
    assert tls.split()[0] == "ok" and "Pebble Intermediate CA" in tls, tls
