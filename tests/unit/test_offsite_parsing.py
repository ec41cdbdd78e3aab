"""The off-site copy's parsers and settings, with the data the host prints."""

import json

import pytest

from sum_tasks.commands import offsite
from sum_tasks.configuration import ConfigError, load_site

GOOD = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme",
        "offsite": {"target": "restic@backup.example:2222", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk"}}


def test_target_host_key_and_forced_command():
    site = load_site(GOOD)
    assert offsite.login(site) == ("restic@backup.example", 2222)
    assert offsite.known_hosts_line(site) == "[backup.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk\n"
    line = offsite.authorized_keys_line(site, "ssh-ed25519 AAAAkey sum-acme off-site\n")
    assert line == 'restrict,command="rclone serve restic --stdio --append-only /srv/restic/acme" ssh-ed25519 AAAAkey sum-acme off-site\n'
    with pytest.raises(ConfigError, match="offsite.host_key"):
        load_site({**GOOD, "offsite": {"target": "restic@backup.example"}})
    with pytest.raises(ConfigError, match="offsite.target"):
        load_site({**GOOD, "offsite": {"target": "backup.example; rm -rf /", "host_key": GOOD["offsite"]["host_key"]}})


def test_status_line_and_snapshots():
    status = offsite.parse_status("OFFSITE at=1000 snapshot=d62263a1ff dump=acme_db_20261201T235642Z.sql.gz copied=2 seconds=1\n")
    assert status.snapshot == "d62263a1ff" and status.dump == "acme_db_20261201T235642Z.sql.gz"
    assert status.describe(1000 + 7200) == "snapshot d62263a1 of acme_db_20261201T235642Z.sql.gz, 2h 00m old; 2 site backups copied, 1s"
    assert offsite.parse_status("") is None and offsite.parse_status("OFFSITE at=x snapshot=") is None
    listed = offsite.parse_snapshots(json.dumps([
        {"time": "2026-12-01T23:56:43.1Z", "id": "aa" * 32, "tags": ["sum", "dump=acme_db_1.sql.gz"], "paths": ["/srv/sum/acme/media"]},
        {"time": "2026-12-02T01:00:00.5Z", "id": "bb" * 32, "tags": ["sum", "dump=acme_db_2.sql.gz"], "paths": []},
    ]))
    assert [(s.id[:2], s.dump, s.time) for s in listed] == [("bb", "acme_db_2.sql.gz", "2026-12-02 01:00:00Z"),
                                                           ("aa", "acme_db_1.sql.gz", "2026-12-01 23:56:43Z")]


def test_restored_dump_and_the_release_live_then():
    ledger = "\n".join(json.dumps(r) for r in (
        {"id": "r1", "sha": "1" * 40, "ref": "v1", "result": "good"},
        {"id": "r2", "sha": "2" * 40, "ref": "v2", "result": "good"},
        {"id": "r3", "sha": "3" * 40, "ref": "bad", "result": "failed: migrate"},
    ))
    dump, live = offsite.parse_restored(f"RESTORED dump=acme_db_x.sql.gz\n@@ledger\n{ledger}\nnot json\n")
    assert dump == "acme_db_x.sql.gz" and live["ref"] == "v2"
    assert offsite.parse_restored("RESTORED dump=a.sql.gz\n@@ledger\n") == ("a.sql.gz", None)


def test_offsite_tasks_refuse_a_site_without_offsite_before_connecting():
    from fabric import Config, Connection
    from invoke.exceptions import Exit

    from sum_tasks.cli import offsite as tasks

    bare = {key: value for key, value in GOOD.items() if key != "offsite"}
    conn = Connection("deploy@vps.invalid", config=Config(overrides={"sum": bare}))
    for task in (tasks.copy, tasks.snapshots, tasks.key, tasks.rehearse):
        with pytest.raises(Exit, match="neither sum.offsite.target nor sum.offsite.repository is set") as err:
            task(conn)
        assert err.value.code == 2
    with pytest.raises(Exit, match="--i-know-this-will-overwrite"):
        tasks.recover(conn)
    with pytest.raises(Exit, match="--snapshot must be"):
        tasks.recover(conn, snapshot="latest; rm -rf /", i_know_this_will_overwrite=True)
    with pytest.raises(Exit, match="--snapshot must be"):
        tasks.rehearse(conn, snapshot="../x")
    with pytest.raises(Exit, match="source"):
        tasks.recover(conn, source="ftp", i_know_this_will_overwrite=True)


def test_the_copy_looks_for_dumps_by_the_names_the_backup_script_gives():
    from sum_tasks.commands.backup import parse_backup_time
    from sum_tasks.commands.templating import render

    site = load_site({**GOOD, "site_slug": "acme-kitchens"})
    script = render("offsite.sh.j2", offsite.script_context(site))
    assert "acme-kitchens_db_*.sql.gz acme-kitchens_db_*.sql.zst" in script and "acme_kitchens_db_" not in script
    assert parse_backup_time(site, "acme-kitchens_db_20261201T235642Z.sql.gz") is not None
    # What goes off-site is the site repository's snapshots (site backups), never a loose dump such as a pre-restore one.
    assert ("from=(--from-repo /srv/sum/acme-kitchens/backups/site.restic --from-password-file "
            "/srv/sum/acme-kitchens/backups/.site.restic-password)") in script
    assert 'restic_ copy "${from[@]}"' in script and "restic_ backup" not in script


def test_with_offsite_the_success_ping_waits_for_the_copy():
    from sum_tasks.commands.templating import render

    both = load_site({**GOOD, "alerts": {"webhook": "https://hooks.example/x", "success_url": "https://ping.example/y"}})
    ctx = {"site": both, "script": both.paths.backup_script, "login": "restic@backup.example", "port": 2222}
    backup, copy = render("backup.service.j2", ctx), render("offsite.service.j2", ctx)
    assert "OnSuccess=sum-acme-offsite.service" in backup and "ping.curl" not in backup
    assert "-K /etc/sum/sum-acme-ping.curl" in copy and "OnFailure=sum-acme-alert@%n.service" in copy
    alone = load_site({**GOOD, "offsite": {}, "alerts": {"success_url": "https://ping.example/y"}})
    assert "-K /etc/sum/sum-acme-ping.curl" in render("backup.service.j2", {"site": alone, "script": "x"})


def test_provision_installs_the_rehearsal_timer_with_offsite_and_removes_it_without():
    from sum_tasks.commands.facts import Facts
    from sum_tasks.operations.plan import host_plan

    site = load_site({**GOOD, "alerts": {"webhook": "https://hooks.example/x", "success_url": "https://ping.example/y"}})
    ops = {op.name: op for op in host_plan(site, Facts(user="root"))}
    service, timer = ops["off-site rehearsal unit"].stdin.decode(), ops["off-site rehearsal timer"].stdin.decode()
    assert "/etc/systemd/system/sum-acme-offsite-rehearse.service.sum-new" in ops["off-site rehearsal unit"].apply
    assert "User=deploy" in service and "Type=oneshot" in service and "CacheDirectory=sum-acme-restic" in service
    assert "ExecStart=/usr/local/bin/sum-acme-offsite rehearse latest --wait 3600 --by sum-acme-offsite-rehearse.timer" in service
    assert "OnFailure=sum-acme-alert@%n.service" in service and "TimeoutStartSec=4h" in service
    # It starts the scratch database's units through sudo, which NoNewPrivileges= would forbid; no success ping.
    assert "NoNewPrivileges=yes" not in service and "ping.curl" not in service
    assert "OnCalendar=monthly" in timer and "RandomizedDelaySec=1h" in timer and "Persistent=true" in timer
    assert "Unit=sum-acme-offsite-rehearse.service" in timer and "WantedBy=timers.target" in timer
    assert "systemctl try-restart sum-acme-offsite-rehearse.timer" in ops["off-site rehearsal timer"].apply
    enabled = ops["off-site rehearsal timer enabled and running"]
    assert "is-active -q sum-acme-offsite-rehearse.timer" in enabled.check and "enable --now sum-acme-offsite-rehearse.timer" in enabled.apply
    names = list(ops)
    assert names.index("alert unit") < names.index("off-site rehearsal unit") < names.index("off-site rehearsal timer enabled and running")

    quiet = load_site({**GOOD, "offsite": {**GOOD["offsite"], "rehearse": "*-*-01 05:00:00"}})
    ops = {op.name: op for op in host_plan(quiet, Facts(user="root"))}
    assert b"OnCalendar=*-*-01 05:00:00" in ops["off-site rehearsal timer"].stdin
    assert b"OnFailure" not in ops["off-site rehearsal unit"].stdin
    with pytest.raises(ConfigError, match="offsite.rehearse"):
        load_site({**GOOD, "offsite": {**GOOD["offsite"], "rehearse": "monthly\nExecStart=/bin/sh"}})

    bare = {op.name: op for op in host_plan(load_site({**GOOD, "offsite": {}}), Facts(user="root"))}
    assert not {"off-site rehearsal unit", "off-site rehearsal timer", "off-site rehearsal timer enabled and running"} & set(bare)
    gone = bare["no off-site copy"]
    assert "[ ! -e /etc/systemd/system/sum-acme-offsite-rehearse.service ]" in gone.check
    assert "[ ! -e /etc/systemd/system/sum-acme-offsite-rehearse.timer ]" in gone.check
    assert gone.apply.index("systemctl disable --now sum-acme-offsite-rehearse.timer") < gone.apply.index("rm -f")


def test_the_deploy_user_may_start_the_rehearsal_and_its_logs_are_the_offsite_ones():
    from sum_tasks.commands.journal import units

    site = load_site(GOOD)
    assert "/usr/bin/systemctl start sum-acme-offsite-rehearse.service" in site.paths.sudo_commands()
    assert not any("rehearse" in c for c in load_site({**GOOD, "offsite": {}}).paths.sudo_commands())
    assert units(site, "offsite") == ["sum-acme-offsite.service", "sum-acme-offsite-rehearse.service"]


def test_rehearsal_units_pass_systemd_analyze_verify(tmp_path):
    import shutil
    import subprocess

    from sum_tasks.commands.templating import render

    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed (apt-get install systemd)")
    site = load_site({**GOOD, "alerts": {"webhook": "https://hooks.example/x"}})
    ctx = offsite.script_context(site)
    for unit, template in (("sum-acme-offsite-rehearse.service", "offsite-rehearse.service.j2"),
                           ("sum-acme-offsite-rehearse.timer", "offsite-rehearse.timer.j2"),
                           ("sum-acme-alert@.service", "alert@.service.j2")):
        (tmp_path / unit).write_text(render(template, ctx))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "sum-acme-offsite-rehearse.timer")],
                            capture_output=True, text=True, check=False)
    problems = [line for line in result.stderr.splitlines() if "sum-acme" in line and "is not executable" not in line
                and "No such file" not in line]
    assert not problems, result.stderr


def test_rehearsal_status_lines():
    passed = offsite.parse_rehearsal("REHEARSAL at=1000 result=passed snapshot=1a2b3c4d5e dump=acme_db_x.sql.gz seconds=14 "
                                     "tables=12 rows=5012 differing=0 migrations=pending pending=2\n")
    assert passed.passed and passed.describe(1000 + 86400 * 3) == (
        "passed 3d 0h ago: acme_db_x.sql.gz of snapshot 1a2b3c4d, 12 tables, 5,012 rows, 2 migrations not applied in it, 14s")
    failed = offsite.parse_rehearsal("REHEARSAL at=1000 result=failed snapshot=? dump=- seconds=3 step=fetch "
                                     "reason=Fatal: unable to open config file: <config/> does not exist\n")
    assert not failed.passed and failed.reason == "Fatal: unable to open config file: <config/> does not exist"
    assert failed.describe(1060) == "FAILED 1m ago at fetch: Fatal: unable to open config file: <config/> does not exist (- of snapshot ?)"
    assert offsite.parse_rehearsal("") is None and offsite.parse_rehearsal("REHEARSAL at=1 result=maybe\n") is None
