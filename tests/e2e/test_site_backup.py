"""Site backups on one booted Debian 13 host: the dump, media/ and the release ledger in one snapshot of the site's restic
repository under the dump's name, listed and verified together; a site restore brings database and media back as they
were together, switched in while the app is stopped (no answer ever pairs the backup's rows with today's files or the
reverse), health-gated, what they replaced kept until the next site backup."""

import json
import re
import shlex
import threading
import time
from typing import Self

import pytest
from e2e_support import as_app, live_colour, site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client
from sum_tasks.testing.load import Load, https_pool

pytestmark = pytest.mark.e2e

ROOT = "/srv/sum/acme"
REPO = f"{ROOT}/backups/site.restic"
NOTES = "INSERT INTO notes_note (title, body, created_at) SELECT 'note ' || g, md5(g::text), '2026-01-01' FROM generate_series(1, {n}) g"
FINGERPRINT = "runuser -u postgres -- psql -d acme -tAc \"SELECT count(*) || ' ' || md5(string_agg(n::text, ',' ORDER BY n.id)) FROM notes_note n\""
# Every file's bytes, and every entry's type, owner and group (a link's target too); the restore's own area aside.
MEDIA = (f"cd {ROOT}/media && find . -path ./.sum-restore -prune -o -type f -print | sort | xargs sha256sum && "
         "find . -path ./.sum-restore -prune -o -printf '%y %u %g %p %l\\n' | sort")
AS_APP = f"cd {ROOT}/media && runuser -u sum-acme -- sh -c "


class Inventory:
    """Polls the app's /inventory/ (its notes count and the files it sees, in one answer) every 50 ms while running."""

    def __init__(self, ip: str) -> None:
        self.pool, self.answers = https_pool(ip, "acme.test", timeout=10), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            try:
                response = self.pool.request("GET", "/inventory/", headers={"Host": "acme.test"}, redirect=False)
                self.answers.append((response.status, json.loads(response.data) if response.status == 200 else None))
            except Exception as err:  # noqa: BLE001 - any failure to answer is a non-answer, counted as such
                self.answers.append((0, repr(err)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def inventory(ip: str) -> dict:
    response = https_pool(ip, "acme.test").request("GET", "/inventory/", headers={"Host": "acme.test"})
    assert response.status == 200, response.data[:300]
    return json.loads(response.data)


def test_site_backup_and_restore(host_factory, tmp_path):
    site = host_factory(suite="trixie")
    build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(site), {"vps": (site, "root")})
    client.fab("provision")
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    # Uploads as the app writes them, and a link the app plants to a file only root reads.
    site.ssh(AS_APP + shlex.quote("mkdir -p photos docs && for i in $(seq 40); do head -c 50000 /dev/urandom > photos/$i.jpg; done; "
                                  "echo kept > docs/a.txt && ln -s /etc/shadow docs/shadow.txt"))
    seeded = inventory(site.ip)["notes"]
    site.ssh(f"runuser -u postgres -- psql -q -d acme -c {shlex.quote(NOTES.format(n=500))}")

    # One site backup: the dump as db.backup always wrote it, and its snapshot with media/, under its name.
    out = client.fab("-H", "deploy@vps", "db.backup").stdout
    name = re.search(r"acme_db_\d{8}T\d{6}Z\.sql\.gz", out).group(0)
    assert re.search(r"media: snapshot [0-9a-f]{8} of the dump, media/ and the release ledger, \d+ files, .* site repository checked", out), out
    # The next one reads only what changed: every media file is the last snapshot's (a new dump name each time
    # notwithstanding).
    again = client.fab("-H", "deploy@vps", "db.backup").stdout
    unchanged = int(re.search(r"\((\d+) files unchanged, not read again\)", again).group(1))
    assert unchanged >= 41, again
    state_a, notes_a, media_a = inventory(site.ip), site.ssh(FINGERPRINT).stdout, site.ssh(MEDIA).stdout
    assert state_a["notes"] == seeded + 500 and "docs/a.txt" in state_a["files"] and len(state_a["files"]) == 41, state_a
    listing = client.fab("-H", "deploy@vps", "db.list").stdout
    assert re.search(rf"{re.escape(name)} .* verified  \+ media [0-9a-f]{{8}} \(4[0-9] files, ", listing), listing
    # The repository is the deploy user's alone; the app reaches neither it nor its password.
    assert site.ssh(f"stat -c '%a %U' {REPO} {ROOT}/backups/.site.restic-password").stdout.split() == ["700", "deploy", "600", "deploy"]
    gunicorn = f"sum-acme-gunicorn@{live_colour(site)}.service"
    for path in (f"{REPO}/config", f"{ROOT}/backups/.site.restic-password"):
        assert as_app(site, gunicorn, f"cat {path}").returncode != 0, path
    # The planted link is kept as a link: the snapshot holds no byte of /etc/shadow.
    snapshot = re.search(r"snapshot=([0-9a-f]+)", site.ssh(f"cat {ROOT}/backups/{name}.media").stdout).group(1)
    site.ssh(f"restic -r {REPO} -p {ROOT}/backups/.site.restic-password --no-cache restore {snapshot} --target /root/snap >/dev/null")
    assert site.ssh("readlink /root/snap/media/docs/shadow.txt").stdout.strip() == "/etc/shadow"
    assert site.ssh("grep -rlF \"$(head -c 20 /etc/shadow)\" /root/snap", check=False).stdout == ""
    assert site.ssh(f"cd /root/snap/backups && sha256sum -c {name}.sha256").returncode == 0
    assert site.ssh("cat /root/snap/releases.jsonl").stdout == site.ssh(f"cat {ROOT}/releases.jsonl").stdout

    # Verified together: every dump re-read, and every byte of the repository (these two and the release's before them).
    # Damage one pack file and it says so.
    verified = client.fab("-H", "deploy@vps", "db.list", "--verify").stdout
    assert "site repository: all data re-read, 3 snapshots, matches" in verified, verified
    pack = site.ssh(f"find {REPO}/data -type f -size +100k | head -n 1").stdout.strip()
    site.ssh(f"cp -p {pack} /root/pack && printf 'X' | dd of={pack} bs=1 seek=5000 conv=notrunc status=none")
    damaged = client.fab("-H", "deploy@vps", "db.list", "--verify", check=False)
    assert damaged.returncode != 0 and "the site repository" in damaged.stderr, damaged.stderr
    site.ssh(f"cp -p /root/pack {pack}")

    # The site moves on: new rows, an upload, a deleted file, a changed one.
    site.ssh(f"runuser -u postgres -- psql -q -d acme -c {shlex.quote(NOTES.format(n=100))}")
    site.ssh(AS_APP + shlex.quote("head -c 50000 /dev/urandom > photos/new.jpg && rm docs/a.txt && echo changed > photos/1.jpg"))
    state_b = inventory(site.ip)
    assert state_b["notes"] == seeded + 600 and "photos/new.jpg" in state_b["files"] and "docs/a.txt" not in state_b["files"]

    # Bad input is refused before anything runs on the host; a database-only backup has no media to restore.
    wrong = client.fab("-H", "deploy@vps", "db.restore", "--file", f"{ROOT}/backups/{name}", "--with-media",
                       "--i-know-this-will-overwrite", check=False)
    assert wrong.returncode == 2 and "takes a backup name from `fab db.list`" in wrong.stderr, wrong.stderr
    site.ssh(f"cd {ROOT}/backups && runuser -u deploy -- cp -p {name} {name.replace('Z.sql', 'Z-dbonly.sql')} && "
             f"runuser -u deploy -- sh -c 'sed s/{name}/{name.replace('Z.sql', 'Z-dbonly.sql')}/ {name}.sha256 > "
             f"{name.replace('Z.sql', 'Z-dbonly.sql')}.sha256'")
    no_media = client.fab("-H", "deploy@vps", "db.restore", "--file", name.replace("Z.sql", "Z-dbonly.sql"), "--with-media",
                          "--i-know-this-will-overwrite", check=False)
    assert no_media.returncode != 0 and "has no site snapshot" in no_media.stderr, no_media.stderr
    assert inventory(site.ip) == state_b and "restore-acme" not in site.ssh("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").stdout

    # The site restore, under load, with the app asked all along what rows and files it sees.
    with Inventory(site.ip) as seen, Load(site.ip, "acme.test", rate=20, workers=8) as load:
        time.sleep(1)
        out = client.fab("-H", "deploy@vps", "db.restore", "--file", name, "--with-media", "--i-know-this-will-overwrite").stdout
        time.sleep(2)
    states = [body for status, body in seen.answers if status == 200]
    print(f"site restore: {load.summary()}; {len(states)} inventory answers; {out.splitlines()[-1]}")
    assert states[0] == state_b and states[-1] == state_a, (states[0], states[-1])
    # Never a mix: each answer is the one state or the other, and once the backup's, always the backup's.
    assert all(s in (state_a, state_b) for s in states), [s for s in states if s not in (state_a, state_b)][:2]
    assert all(s == state_a for s in states[states.index(state_a):])
    assert "media switched in" in out and re.search(r"app down \d+\.\d+s", out), out
    assert site.ssh(FINGERPRINT).stdout == notes_a
    assert site.ssh(MEDIA).stdout == media_a  # bytes, owners, groups, the link as a link
    assert site.ssh(f"cd {ROOT}/media && find . -path ./.sum-restore -prune -o -type d ! -perm -2000 -print; "
                    "find . -path ./.sum-restore -prune -o -type f ! -perm -040 -print").stdout == ""
    served = https_pool(site.ip, "acme.test").request("GET", "/media/docs/a.txt", headers={"Host": "acme.test"})
    assert served.status == 200 and served.data == b"kept\n"
    # What it replaced is kept, closed to Caddy (0700; setgid as all of media/): the database beside the live one, the media in the restore's area.
    assert site.ssh(f"stat -c '%a %U' {ROOT}/media/.sum-restore").stdout.split() == ["2700", "sum-acme"]
    assert site.ssh(f"test -f {ROOT}/media/.sum-restore/old/photos/new.jpg").returncode == 0
    hidden = https_pool(site.ip, "acme.test").request("GET", "/media/.sum-restore/old/photos/new.jpg", headers={"Host": "acme.test"})
    assert hidden.status != 200
    assert "acme-before-restore" in site.ssh("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").stdout

    # The next site backup holds what runs now: the database and media the restore replaced go.
    out = client.fab("-H", "deploy@vps", "db.backup").stdout
    assert f"dropped {ROOT}/media/.sum-restore, the media the last restore replaced" in out, out
    assert "dropped acme-before-restore" in out, out
    assert site.ssh(f"test -e {ROOT}/media/.sum-restore", check=False).returncode != 0

    # Unhealthy on the restored database (its Redis held down): database and media both go back.
    site.ssh(f"runuser -u postgres -- psql -q -d acme -c {shlex.quote(NOTES.format(n=7))}")
    site.ssh(AS_APP + shlex.quote("echo later > docs/later.txt"))
    state_c, media_c = inventory(site.ip), site.ssh(MEDIA).stdout
    held = "/run/systemd/system/sum-acme-redis.service.d"
    site.ssh(f"mkdir -p {held} && printf '[Unit]\\nConditionPathExists=/nonexistent\\n' > {held}/held-down.conf && "
             "systemctl daemon-reload && systemctl stop sum-acme-redis.service")
    try:
        failed = client.fab("-H", "deploy@vps", "db.restore", "--file", name, "--with-media", "--i-know-this-will-overwrite",
                            check=False, env={"FABRIC_SUM_HEALTH_TIMEOUT": "5"})
    finally:
        site.ssh(f"rm -r {held} && systemctl daemon-reload && systemctl start sum-acme-redis.service")
    assert failed.returncode != 0 and "put the old media back" in failed.stderr, failed.stderr
    deadline = time.monotonic() + 30
    while True:
        try:
            if inventory(site.ip) == state_c:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, "the app did not come back on its own database and media"
        time.sleep(0.5)
    assert site.ssh(MEDIA).stdout == media_c

    assert site.ssh(f"test -e {ROOT}/media/.sum-restore", check=False).returncode != 0
    assert "provision: 0 changed" in client.fab("provision").stdout
