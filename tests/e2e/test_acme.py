"""`tls: auto` obtains real certificates through ACME: a second test host runs Debian's Pebble (an RFC 8555 test
server) and the site points Caddy at it with `sum.acme_ca` and `sum.acme_ca_root`. Everything is checked from
the Pebble host, outside the site's host, trusting only Pebble's own root."""

import re
import time

import pytest
from e2e_support import served, site_config, start_pebble
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

def test_tls_auto_obtains_certificates_from_pebble_and_www_redirects(host_factory, tmp_path):
    site, pebble = host_factory.many({"suite": "trixie"}, {"suite": "bookworm"})
    ca_root = start_pebble(pebble, site.ip, "acme.test www.acme.test")
    build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(
        site, tls="auto", tls_email="ops@acme.test", domains=["acme.test"], redirects={"www.acme.test": "acme.test"},
        acme_ca=f"https://{pebble.ip}:14000/dir", acme_ca_root=ca_root), {"vps": (site, "root")})
    client.fab("provision")
    assert site.ssh("stat -c '%a %U' /etc/sum/sum-acme-acme-root.pem").stdout.split() == ["644", "root"]
    client.fab("release", "--ref", "v1")

    # Pebble makes a new root each start; its issued chains verify against that root and nothing else.
    pebble.ssh("curl -sk https://127.0.0.1:15000/roots/0 > /root/pebble-root.pem")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not served(pebble, site.ip, "acme.test").startswith("200"):
        time.sleep(2)
    assert served(pebble, site.ip, "acme.test") == "200 "
    assert served(pebble, site.ip, "acme.test", "/health/").startswith("200")
    # The redirect domain has its own Pebble certificate and sends every path, query kept, to the primary domain for good.
    assert served(pebble, site.ip, "www.acme.test", "/notes/?page=2") == "301 https://acme.test/notes/?page=2"
    plain = pebble.ssh(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' --resolve www.acme.test:80:{site.ip} "
                       "http://www.acme.test/x", check=False).stdout
    assert plain == "308 https://www.acme.test/x", plain  # Caddy's own HTTP-to-HTTPS redirect, before the permanent one
    issuer = site.ssh("echo | openssl s_client -connect 127.0.0.1:443 -servername acme.test 2>/dev/null | openssl x509 -noout -issuer").stdout
    assert "Pebble Intermediate CA" in issuer, issuer

    # check reads the certificate actually served: Pebble's, with its days left.
    check = client.fab("check")
    line = next(line for line in check.stdout.splitlines() if line.split()[:1] and line.split()[1:2] == ["tls"])
    assert line.split()[0] == "ok" and "Pebble Intermediate CA" in line, line
    days = re.search(r"(\d+) days left, until \d{4}-\d\d-\d\d", line)
    assert days and int(days.group(1)) > 14, line

    # A second provision changes nothing; the certificate stays.
    again = client.fab("provision")
    assert "provision: 0 changed" in again.stdout, again.stdout
