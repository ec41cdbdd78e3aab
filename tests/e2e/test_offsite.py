"""`sum.offsite`: the newest verified dump and media/ go, encrypted, into an append-only restic repository on a second
host reached over SSH (`rclone serve restic --stdio --append-only` forced by `authorized_keys`, set up as the runbook
says). The VPS can add snapshots and never delete them; the backup machine sees no plaintext; the operator's password
file alone restores the data there. The host rehearses a restore from them on a timer, and a failed rehearsal alerts."""

import json
import re
import shlex
import time

import pytest
from e2e_support import as_app, live_colour, site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client

pytestmark = pytest.mark.e2e

MARKER = "plain-media-marker-5f1c"
NOTES = "INSERT INTO notes_note (title, body, created_at) SELECT 'note ' || g, md5(g::text), '2026-01-01' FROM generate_series(1, 500) g"
FINGERPRINT = "runuser -u postgres -- psql -d acme -tAc \"SELECT count(*) || ' ' || md5(string_agg(n::text, ',' ORDER BY n.id)) FROM notes_note n\""
MEDIA = "cd /srv/sum/acme/media && find . -type f | sort | xargs sha256sum && find . -printf '%y %u %g %p\\n' | sort"
REHEARSAL = "/srv/sum/acme/backups/.rehearsal"
SAMPLER = ("nohup sh -c 'while :; do cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"; echo; sleep 0.02; done' "
           ">/root/argv.log 2>&1 & echo $! > /root/sampler.pid")


def status_field(line: str, name: str) -> str:
    return re.search(rf"\b{name}=(\S*)", line).group(1)


def repository_bytes(backup) -> int:
    """What the off-site repository holds on the backup machine, in bytes."""
    return int(backup.ssh("du -sb /srv/restic/acme").stdout.split()[0])


def test_offsite_copies_are_encrypted_append_only_and_restorable(host_factory, tmp_path, webhook):
    site, backup = host_factory.many({"suite": "bookworm"}, {"suite": "bookworm"})
    receiver, base = webhook(site)
    # The backup machine, as the runbook sets it up: rclone and restic, one user, one directory per site.
    backup.ssh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone restic >/dev/null", timeout=600)
    backup.ssh("useradd -m -s /bin/sh restic && install -d -o restic -g restic -m 0700 /srv/restic ~restic/.ssh")
    host_key = " ".join(backup.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    password_file = tmp_path / "secrets" / "acme.restic-password"

    build_site_repo(tmp_path / "site")
    client = make_client(tmp_path / "site", site_config(site, offsite={"target": f"restic@{backup.ip}", "host_key": host_key,
                                                                       "password_file": str(password_file)},
                                                        alerts={"webhook": f"{base}/hooks/offsite-hook-token"}), {"vps": (site, "root")})
    client.fab("provision")
    assert "provision: 0 changed" in client.fab("provision").stdout
    assert site.ssh("systemctl is-enabled sum-acme-offsite-rehearse.timer && systemctl is-active sum-acme-offsite-rehearse.timer "
                    "&& systemctl show -p NextElapseUSecRealtime --value sum-acme-offsite-rehearse.timer").stdout.strip()
    password = password_file.read_text()
    assert len(password) >= 32 and oct(password_file.stat().st_mode & 0o777) == "0o600"
    assert site.ssh("stat -c '%a %U %G' /etc/sum/sum-acme-restic.password /etc/sum/sum-acme-offsite.key").stdout.split() == \
        ["640", "root", "deploy"] * 2
    line = client.fab("-H", "deploy@vps", "offsite.key").stdout.strip().splitlines()[-1]
    assert line.startswith('restrict,command="rclone serve restic --stdio --append-only /srv/restic/acme" ssh-ed25519 '), line
    backup.ssh(f"echo '{line}' > ~restic/.ssh/authorized_keys && chown restic:restic ~restic/.ssh/authorized_keys")

    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    site.ssh(f"cd /srv/sum/acme/media && runuser -u sum-acme -- sh -c 'echo {MARKER} > note.txt; mkdir -p photos; "
             "for i in $(seq 100); do head -c 100000 /dev/urandom > photos/$i.bin; done'")
    site.ssh(f"runuser -u postgres -- psql -q -d acme -c {shlex.quote(NOTES)}")
    client.fab("-H", "deploy@vps", "db.backup")
    site.ssh(SAMPLER)
    first = client.fab("-H", "deploy@vps", "offsite.copy").stdout
    status = site.ssh("cat /srv/sum/acme/backups/.offsite").stdout
    first_added = repository_bytes(backup)
    # Both site backups so far (the release's before it migrated, db.backup's) go; the latest off-site is db.backup's.
    assert first_added > 9_000_000 and "snapshot " in first and status_field(status, "copied") == "2", (status, first)
    newest = site.ssh("cd /srv/sum/acme/backups && ls *.media | sort | tail -n 1").stdout.strip().removesuffix(".media")
    assert status_field(status, "dump") == newest, (status, newest)

    # The backup machine holds only ciphertext: neither the media marker nor a readable dump.
    assert backup.ssh(f"grep -rl {MARKER} /srv/restic", check=False).stdout == ""
    assert backup.ssh("find /srv/restic/acme -name '*.sql.gz' | wc -l").stdout.strip() == "0"

    # 1% of the media changes: the next site backup's copy adds about that much (and its dump), not the whole tree.
    site.ssh("cd /srv/sum/acme/media && runuser -u sum-acme -- sh -c 'head -c 100000 /dev/urandom > photos/1.bin'")
    client.fab("-H", "deploy@vps", "db.backup")
    client.fab("-H", "deploy@vps", "offsite.copy")
    second_added = repository_bytes(backup) - first_added
    print(f"off-site copy: first {first_added} bytes, second (1% of media changed) {second_added} more")
    assert 0 < second_added < first_added / 20, (first_added, second_added)

    # The nightly backup starts the copy after it succeeds.
    before = site.ssh("cat /srv/sum/acme/backups/.offsite").stdout
    site.ssh("systemctl start sum-acme-backup.service")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and site.ssh("cat /srv/sum/acme/backups/.offsite").stdout == before:
        time.sleep(1)
    listing = client.fab("-H", "deploy@vps", "offsite.snapshots").stdout
    assert "4 snapshots" in listing, listing

    # A rehearsal from the off-site copy: its dump restores into the scratch database and passes migrate --check.
    rehearsed = client.fab("-H", "deploy@vps", "offsite.rehearse").stdout
    assert re.search(r"rehearsed acme_db_\S+ from the off-site repository", rehearsed) and "migrate --check" in rehearsed, rehearsed
    by_task = site.ssh(f"cat {REHEARSAL}").stdout
    assert "result=passed" in by_task, by_task

    # The monthly timer's run, started as the timer starts it, while a release holds the site lock for 6 s: it waits, then passes,
    # and check shows it.
    site.ssh("(nohup flock -o /srv/sum/acme/.lock sleep 6 </dev/null >/dev/null 2>&1 &); while flock -n /srv/sum/acme/.lock true; do sleep 0.05; done")
    started = time.monotonic()
    site.ssh("systemctl start sum-acme-offsite-rehearse.service", timeout=900)
    took = time.monotonic() - started
    by_timer = site.ssh(f"cat {REHEARSAL}").stdout
    assert by_timer != by_task and "result=passed" in by_timer, by_timer
    waited = took - int(status_field(by_timer, "seconds"))
    assert waited > 4, (took, by_timer)
    assert by_timer.strip() in site.ssh("journalctl -o cat -u sum-acme-offsite-rehearse.service").stdout.splitlines()
    assert site.ssh("ls /srv/sum/acme/recovery/backups", check=False).returncode != 0, "the fetched dump must go"
    assert "rehearse-acme" not in site.ssh("runuser -u postgres -- psql -XAtc 'SELECT datname FROM pg_database'").stdout
    checks = client.fab("check").stdout
    assert re.search(r"^  ok\s+rehearsal\s+passed \d+s ago: acme_db_\S+ of snapshot [0-9a-f]{8}, \d+ tables, [\d,]+ rows, "
                     r"migrate --check ok", checks, re.MULTILINE), checks
    print(f"rehearsal from the off-site copy by its unit: {took:.1f}s, {waited:.1f}s of them waiting for the lock")
    # The same pass 63 days old (two monthly runs missed: the timer has stopped): check warns, naming the timer.
    at = int(status_field(by_timer, "at"))
    site.ssh(f"cat > {REHEARSAL}", user="deploy", input=by_timer.replace(f"at={at} ", f"at={at - 63 * 86400} "))
    stale = client.fab("check", check=False).stdout
    assert re.search(r"^  warn\s+rehearsal\s+passed 63d .*: none in 62 days, is sum-acme-offsite-rehearse.timer running\?", stale,
                     re.MULTILINE), stale
    site.ssh(f"cat > {REHEARSAL}", user="deploy", input=by_timer)

    # Broken for real: for one run the deploy user cannot read the repository's password, so not the repository. The unit
    # fails, the webhook hears which, and check fails naming the step and the reason.
    site.ssh("chmod 600 /etc/sum/sum-acme-restic.password")
    assert site.ssh("systemctl start sum-acme-offsite-rehearse.service", check=False, timeout=900).returncode != 0
    site.ssh("chmod 640 /etc/sum/sum-acme-restic.password")
    seen = receiver.wait(1)
    assert [(m, p) for m, p, _ in seen] == [("POST", "/hooks/offsite-hook-token")], seen
    alert = json.loads(seen[0][2])
    assert alert["event"] == "failure" and alert["unit"] == "sum-acme-offsite-rehearse.service" and alert["site"] == "acme", alert
    failed = client.fab("check", check=False)
    assert failed.returncode != 0 and re.search(r"^  fail\s+rehearsal\s+FAILED \d+s ago at fetch: \S", failed.stdout, re.MULTILINE), \
        failed.stdout
    assert "rehearsal" in failed.stderr, failed.stderr
    # Readable again, the next run passes and check with it.
    site.ssh("systemctl start sum-acme-offsite-rehearse.service", timeout=900)
    assert "result=passed" in site.ssh(f"cat {REHEARSAL}").stdout and len(receiver.seen) == 1

    # Append-only: with the VPS's own key and password, forgetting a snapshot fails and every snapshot stays;
    # a shell command through that key runs nothing but the forced rclone.
    snapshot = status_field(site.ssh("cat /srv/sum/acme/backups/.offsite").stdout, "snapshot")
    forget = site.ssh(
        "cd /srv/sum/acme && runuser -u deploy -- env RESTIC_REPOSITORY=rclone: RESTIC_PASSWORD_FILE=/etc/sum/sum-acme-restic.password "
        "restic --no-cache -o rclone.program=\"ssh -F none -i /etc/sum/sum-acme-offsite.key -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile=/etc/sum/sum-acme-offsite.known_hosts restic@{backup.ip}\" forget {snapshot}", check=False)
    assert forget.returncode != 0, forget.stdout
    site.ssh(f"runuser -u deploy -- ssh -F none -i /etc/sum/sum-acme-offsite.key -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o UserKnownHostsFile=/etc/sum/sum-acme-offsite.known_hosts restic@{backup.ip} 'rm -rf /srv/restic/acme' </dev/null >/dev/null 2>&1",
             check=False)
    assert "4 snapshots" in client.fab("-H", "deploy@vps", "offsite.snapshots").stdout

    # The app reads neither the password nor the key; nothing printed or logged holds the password.
    for path in ("/etc/sum/sum-acme-restic.password", "/etc/sum/sum-acme-offsite.key"):
        assert as_app(site, f"sum-acme-gunicorn@{live_colour(site)}.service", f"cat {path}").returncode != 0, path
    site.ssh("kill $(cat /root/sampler.pid)")
    assert password not in site.ssh("cat /root/argv.log").stdout
    journal = site.ssh("journalctl -o cat --no-pager").stdout
    assert password not in journal and password not in first and "offsite-hook-token" not in journal
    checks = client.fab("check").stdout
    assert re.search(r"^  ok\s+off-site\s+snapshot \w{8} of acme_db_", checks, re.MULTILINE), checks

    # The operator's password file and the repository are enough: restore on the backup machine and compare.
    backup.ssh(f"cat > /root/pw <<'EOF'\n{password}\nEOF")
    backup.ssh("restic --no-cache -r /srv/restic/acme --password-file /root/pw restore latest --target /root/r >/dev/null")
    want = site.ssh("cd /srv/sum/acme/media && find . -type f | sort | xargs sha256sum").stdout
    got = backup.ssh("cd /root/r/media && find . -type f | sort | xargs sha256sum").stdout
    assert want == got and MARKER in backup.ssh("cat /root/r/media/note.txt").stdout
    dump = status_field(site.ssh("cat /srv/sum/acme/backups/.offsite").stdout, "dump")
    assert backup.ssh(f"cd /root/r/backups && sha256sum -c {dump}.sha256").returncode == 0
    # The release ledger travels with it: recovery knows which release was live.
    ledger = site.ssh("cat /srv/sum/acme/releases.jsonl").stdout
    assert ledger and backup.ssh("cat /root/r/releases.jsonl").stdout == ledger

    # The VPS is gone. A bare new host, provision, one command: the release that was live, the media and the database.
    notes, media = site.ssh(FINGERPRINT).stdout, site.ssh(MEDIA).stdout
    live_sha = site.ssh("sed -n 's/^GIT_SHA=//p' /srv/sum/acme/current/.release.env").stdout.strip()
    site.shutdown()
    new = host_factory(suite="bookworm")
    client = make_client(tmp_path / "site", site_config(new, offsite={"target": f"restic@{backup.ip}", "host_key": host_key,
                                                                      "password_file": str(password_file)}), {"vps": (new, "root")})
    client.fab("provision")
    line = client.fab("-H", "deploy@vps", "offsite.key").stdout.strip().splitlines()[-1]
    backup.ssh(f"echo '{line}' >> ~restic/.ssh/authorized_keys")
    started, stored = time.monotonic(), repository_bytes(backup)
    out = client.fab("-H", "deploy@vps", "offsite.recover", "--i-know-this-will-overwrite").stdout
    print(f"recovery onto a provisioned host took {time.monotonic() - started:.1f}s")
    assert new.ssh("sed -n 's/^GIT_SHA=//p' /srv/sum/acme/current/.release.env").stdout.strip() == live_sha, out
    assert new.ssh(FINGERPRINT).stdout == notes and int(notes.split()[0]) > 500
    assert new.ssh(MEDIA).stdout == media, (media, new.ssh(MEDIA).stdout)  # bytes, owner and group
    # As the app would have written them: every directory keeps handing group caddy on, every file is Caddy's to read.
    assert new.ssh("stat -c %a /srv/sum/acme/media").stdout.strip() == "2750"
    assert new.ssh("cd /srv/sum/acme/media && find . -type d ! -perm -2000; find . -type f ! -perm -040").stdout == ""
    assert MARKER in new.ssh("curl -sk --resolve acme.test:443:127.0.0.1 https://acme.test/media/note.txt").stdout
    # The new host's first off-site copy is of the recovered database, never the safety dump of what it replaced.
    copied = status_field(new.ssh("cat /srv/sum/acme/backups/.offsite").stdout, "dump")
    # The new host's site repository chunks as the off-site one does: its first copy sends dumps, not the media again.
    sent = repository_bytes(backup) - stored
    assert sent < first_added / 5, (sent, first_added)
    assert "pre-restore" not in copied and copied == new.ssh("cd /srv/sum/acme/backups && ls *.media | sort | tail -n 1").stdout.strip()[:-6]
    count = re.search(r"(\d+) snapshots", client.fab("-H", "deploy@vps", "offsite.snapshots").stdout)
    assert count and int(count.group(1)) > 4, count
    assert client.fab("check").returncode == 0
