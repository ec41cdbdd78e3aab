"""`sum.offsite.repository`: off-site copies into a restic repository other than the SSH backup machine, with its
credentials from `sum.offsite.env_file`. Here a REST server (`rclone serve restic --append-only` over HTTP, htpasswd) on a
second host: copy, a second copy adding only what changed, snapshots, a rehearsal, and a VPS that cannot delete."""

import base64
import hashlib
import re
import secrets
import shlex

import pytest
from e2e_support import as_app, live_colour, site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

SAMPLER = ("nohup sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo; sleep 0.02; done' "
           ">/root/argv.log 2>&1 & echo $! > /root/sampler.pid")
OFFSITE = "/srv/sum/acme/backups/.offsite"
CREDENTIALS = "/etc/sum/sum-acme-offsite.env"


def released_with_photos(client, site) -> None:
    """Release v1, give the app 10 MB of photos, take a site backup, and start sampling argv for secrets."""
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    site.ssh("cd /srv/sum/acme/media && runuser -u sum-acme -- sh -c 'mkdir -p photos; "
             "for i in $(seq 100); do head -c 100000 /dev/urandom > photos/$i.bin; done'")
    client.fab("-H", "deploy@vps", "db.backup")
    site.ssh(SAMPLER)


def status_field(line: str, name: str) -> str:
    return re.search(rf"\b{name}=(\S*)", line).group(1)


def test_a_rest_repository_with_credentials_from_the_env_file(host_factory, tmp_path):
    site, backup = host_factory.many({"suite": "bookworm"}, {"suite": "bookworm"})
    # The backup machine: rclone's REST server, append-only, one private repository per login (the site's slug).
    rest_password = f"Rest-{secrets.token_urlsafe(12)}@:/%"
    digest = base64.b64encode(hashlib.sha1(rest_password.encode()).digest()).decode()
    backup.ssh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone restic >/dev/null", timeout=600)
    backup.ssh("useradd -m -s /bin/sh restic && install -d -o restic -g restic -m 0700 /srv/restic")
    backup.ssh(f"echo {shlex.quote(f'acme:{{SHA}}{digest}')} > /etc/restic.htpasswd && chmod 0644 /etc/restic.htpasswd")
    backup.ssh(f"systemd-run --unit restic-rest -p User=restic rclone serve restic --addr {backup.ip}:8000 "
               "--htpasswd /etc/restic.htpasswd --append-only --private-repos /srv/restic")
    backup.ssh(f"for i in $(seq 50); do curl -s -o /dev/null http://{backup.ip}:8000/ && exit 0; sleep 0.2; done; exit 1")

    env_file = tmp_path / "secrets" / "acme.restic.env"
    env_file.parent.mkdir()
    env_file.write_text(f"# the REST server's login for this site\nRESTIC_REST_USERNAME=acme\nRESTIC_REST_PASSWORD={rest_password}\n")
    password_file = tmp_path / "secrets" / "acme.restic-password"
    build_site_repo(tmp_path / "site")
    offsite = {"repository": f"rest:http://{backup.ip}:8000/acme/", "env_file": str(env_file), "password_file": str(password_file)}
    client = make_client(tmp_path / "site", site_config(site, offsite=offsite), {"vps": (site, "root")})

    # A name restic does not document stops provision before it connects, naming the line, never the value.
    bad = tmp_path / "secrets" / "bad.env"
    bad.write_text(f"RESTIC_REST_USERNAME=acme\nRESTIC_REST_PASSWORD={rest_password}\nLD_PRELOAD=/tmp/x.so\n")
    refused = make_client(tmp_path / "bad", site_config(site, offsite={**offsite, "env_file": str(bad)}), {"vps": (site, "root")})
    out = refused.fab("provision", check=False)
    assert out.returncode == 2 and "sum.offsite.env_file: line 3: LD_PRELOAD" in out.stderr, out
    assert rest_password not in out.stdout + out.stderr

    provisioned = client.fab("provision")
    assert "provision: 0 changed" in client.fab("provision").stdout
    assert site.ssh(f"stat -c '%a %U %G' {CREDENTIALS} /etc/sum/sum-acme-restic.password").stdout.split() == ["640", "root", "deploy"] * 2
    assert site.ssh("ls /etc/sum/sum-acme-offsite.key", check=False).returncode != 0, "no SSH key for a REST repository"
    assert site.ssh("systemctl is-enabled sum-acme-offsite-rehearse.timer").stdout.strip() == "enabled"
    refused_key = client.fab("-H", "deploy@vps", "offsite.key", check=False)
    assert refused_key.returncode == 2 and "not reached over SSH" in refused_key.stderr, refused_key

    released_with_photos(client, site)
    first = client.fab("-H", "deploy@vps", "offsite.copy").stdout
    first_added = int(backup.ssh("du -sb /srv/restic/acme").stdout.split()[0])
    assert first_added > 9_000_000 and "snapshot " in first, first
    assert backup.ssh("ls /srv/restic/acme").stdout.split() == ["config", "data", "index", "keys", "locks", "snapshots"]

    site.ssh("cd /srv/sum/acme/media && runuser -u sum-acme -- sh -c 'head -c 100000 /dev/urandom > photos/1.bin'")
    client.fab("-H", "deploy@vps", "db.backup")
    second = client.fab("-H", "deploy@vps", "offsite.copy").stdout
    second_added = int(backup.ssh("du -sb /srv/restic/acme").stdout.split()[0]) - first_added
    print(f"REST repository: first copy added {first_added} bytes, the second (1% of media changed) {second_added}")
    assert 0 < second_added < first_added / 20, (first_added, second_added)
    # The release's site backup (before it migrated) and both of db.backup's.
    listing = client.fab("-H", "deploy@vps", "offsite.snapshots").stdout
    assert "3 snapshots" in listing, listing

    rehearsed = client.fab("-H", "deploy@vps", "offsite.rehearse").stdout
    assert re.search(r"rehearsed acme_db_\S+ from the off-site repository", rehearsed), rehearsed
    assert "result=passed" in site.ssh("cat /srv/sum/acme/backups/.rehearsal").stdout
    # The monthly timer's own run, as the timer starts it.
    site.ssh("systemctl start sum-acme-offsite-rehearse.service", timeout=900)
    assert "result=passed" in site.ssh("cat /srv/sum/acme/backups/.rehearsal").stdout

    # Append-only: with the VPS's own credentials and password, forgetting a snapshot fails; every snapshot stays.
    snapshot = status_field(site.ssh(f"cat {OFFSITE}").stdout, "snapshot")
    forget = site.ssh("cd /srv/sum/acme && runuser -u deploy -- bash -c " + shlex.quote(
        f"mapfile -t C < {CREDENTIALS}; export \"${{C[@]}}\"; RESTIC_PASSWORD_FILE=/etc/sum/sum-acme-restic.password "
        f"exec restic --no-cache forget {snapshot}"), check=False)
    print("restic forget from the VPS:", (forget.stdout + forget.stderr).strip().splitlines()[:3])
    assert forget.returncode != 0, forget.stdout
    assert "3 snapshots" in client.fab("-H", "deploy@vps", "offsite.snapshots").stdout

    # The credentials reach restic alone: not argv, the journal, the task's output, the app (its files or its environment).
    site.ssh("kill $(cat /root/sampler.pid)")
    encoded = site.ssh(f"sed -n 's/^RESTIC_REPOSITORY=//p' {CREDENTIALS}").stdout.strip()
    assert encoded.startswith("rest:http://acme:") and rest_password not in encoded
    leaked = (rest_password, encoded.split("://", 1)[1].split("@")[0].split(":", 1)[1])
    argv = site.ssh("cat /root/argv.log").stdout
    journal = site.ssh("journalctl -o cat --no-pager").stdout
    told = provisioned.stdout + provisioned.stderr + first + second + listing + rehearsed + forget.stdout + forget.stderr
    for secret in leaked:
        assert secret not in argv and secret not in journal and secret not in told, secret
    unit = f"sum-acme-gunicorn@{live_colour(site)}.service"
    for path in (CREDENTIALS, "/etc/sum/sum-acme-restic.password"):
        assert as_app(site, unit, f"cat {path}").returncode != 0, path
    app_env = site.ssh(f"cat /proc/$(systemctl show -p MainPID --value {unit})/environ | tr '\\0' '\\n'").stdout
    assert "RESTIC" not in app_env and rest_password not in app_env
    checks = client.fab("check").stdout
    assert re.search(r"^  ok\s+off-site\s+snapshot \w{8} of acme_db_", checks, re.MULTILINE), checks
    assert re.search(r"^  ok\s+rehearsal\s+passed", checks, re.MULTILINE), checks

    # The operator's password alone reads the repository on the backup machine.
    backup.ssh(f"cat > /root/pw <<'EOF'\n{password_file.read_text()}\nEOF")
    assert backup.ssh("restic --no-cache -r /srv/restic/acme --password-file /root/pw snapshots --json").stdout.count('"id"') == 3


def free_port(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def test_an_s3_repository_served_by_moto(host_factory, tmp_path):
    """A real S3 protocol server (moto's, on this machine's side of the host's link) as the repository: the same copy,
    snapshots and rehearsal, with the keys from the env file."""
    import boto3
    from moto.server import ThreadedMotoServer

    site = host_factory(suite="bookworm")
    address = site.ip.rsplit(".", 1)[0] + ".1"
    port = free_port(address)
    server = ThreadedMotoServer(ip_address=address, port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://{address}:{port}"
        secret_key = f"S3-{secrets.token_urlsafe(24)}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="operator", aws_secret_access_key="operator",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="offsite")

        def bucket_bytes() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="offsite")
            return sum(o["Size"] for page in pages for o in page.get("Contents", []))

        env_file = tmp_path / "acme.s3.env"
        env_file.write_text(f"AWS_ACCESS_KEY_ID=AKIAACMEEXAMPLE\nAWS_SECRET_ACCESS_KEY='{secret_key}'\nAWS_DEFAULT_REGION=us-east-1\n")
        build_site_repo(tmp_path / "site")
        offsite = {"repository": f"s3:{endpoint}/offsite/acme", "env_file": str(env_file),
                   "password_file": str(tmp_path / "acme.restic-password")}
        client = make_client(tmp_path / "site", site_config(site, offsite=offsite), {"vps": (site, "root")})
        provisioned = client.fab("provision")
        assert site.ssh(f"cat {CREDENTIALS}").stdout == \
            f"AWS_ACCESS_KEY_ID=AKIAACMEEXAMPLE\nAWS_SECRET_ACCESS_KEY={secret_key}\nAWS_DEFAULT_REGION=us-east-1\n"
        released_with_photos(client, site)
        first = client.fab("-H", "deploy@vps", "offsite.copy").stdout
        first_added = bucket_bytes()
        site.ssh("cd /srv/sum/acme/media && runuser -u sum-acme -- sh -c 'head -c 100000 /dev/urandom > photos/1.bin'")
        client.fab("-H", "deploy@vps", "db.backup")
        second = client.fab("-H", "deploy@vps", "offsite.copy").stdout
        second_added = bucket_bytes() - first_added
        print(f"S3 repository: first copy added {first_added} bytes, the second (1% of media changed) {second_added}")
        assert first_added > 9_000_000 and 0 < second_added < first_added / 20, (first_added, second_added)
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="offsite") for o in page.get("Contents", [])]
        assert "acme/config" in keys and sum(k.startswith("acme/snapshots/") for k in keys) == 3, keys
        listing = client.fab("-H", "deploy@vps", "offsite.snapshots").stdout
        assert "3 snapshots" in listing, listing
        rehearsed = client.fab("-H", "deploy@vps", "offsite.rehearse").stdout
        assert re.search(r"rehearsed acme_db_\S+ from the off-site repository", rehearsed), rehearsed
        site.ssh("kill $(cat /root/sampler.pid)")
        told = provisioned.stdout + provisioned.stderr + first + second + listing + rehearsed
        assert secret_key not in site.ssh("cat /root/argv.log").stdout + site.ssh("journalctl -o cat --no-pager").stdout + told
        checks = client.fab("check").stdout
        assert re.search(r"^  ok\s+off-site\s+snapshot \w{8} of acme_db_", checks, re.MULTILINE), checks
    finally:
        server.stop()
