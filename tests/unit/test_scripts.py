"""Every shell script the tasks send, rendered with sample config and checked by shellcheck: a quoting mistake fails here,
in seconds, without a host. Every function in sum_tasks.commands that returns a Script must be sampled below."""

import importlib
import inspect
import pkgutil
import shutil
import subprocess

import pytest

import sum_tasks.cli
import sum_tasks.commands
import sum_tasks.operations
from sum_tasks.commands import backup, check, colours, envfile, facts, health, journal, lock, manage, offsite, releases, schedules, state
from sum_tasks.commands.facts import Facts
from sum_tasks.commands.script import Script
from sum_tasks.configuration import load_site
from sum_tasks.host.converge import apply_script, check_script
from sum_tasks.operations.plan import host_plan

BASE = {"site_slug": "acme-kitchens", "domains": ["acme.example", "www.acme.example"], "project_module": "acme",
        "repo_url": "git@git.example:agency/acme.git"}
PLAIN = load_site(BASE)
FULL = load_site({**BASE, "celery": True, "celery_beat": True, "ssh_hardening": True, "deploy_user_sudo": True, "tls": "internal",
                  "schedule": {"publish": {"command": "publish_scheduled", "when": "*:0/10"},
                               "sessions": {"command": "clearsessions --verbosity 0", "when": "daily"}},
                  "authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm op@laptop"],
                  "alerts": {"webhook": "https://hooks.example/T0", "success_url": "https://ping.example/x"},
                  "offsite": {"target": "restic@backup.example:2222", "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk"}})
# An off-site repository other than the SSH target: a REST server with its credentials, and SFTP with the site's key.
REST = load_site({**BASE, "offsite": {"repository": "rest:https://backup.example:8000/acme-kitchens/", "env_file": "~/acme.env"}})
SFTP = load_site({**BASE, "offsite": {"repository": "sftp://restic@backup.example:2222//srv/restic/acme-kitchens",
                                      "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk"}})
RELEASE = "/srv/sum/acme-kitchens/releases/20261126T195308Z-1f817658"
ENTRY = {"sha": "1f8176581cedda8ce1a42675197bd2c16833c03d", "id": "20261126T195308Z-1f817658", "venv": "0123456789abcdef",
         "ref": "v1.2", "result": "good"}

# Each builder, called with sample arguments (several calls where its options change the script).
SAMPLES = {
    "backup.db_script": lambda s: [backup.db_script(s, ["list"])],
    "backup.upload_script": lambda s: [backup.upload_script(s, "x.sql.gz", "f" * 64, as_root) for as_root in (True, False)],
    "backup.running_script": lambda s: [backup.running_script(s)],
    "backup.start_unit_script": lambda s: [backup.start_unit_script(s.paths.scratch_create)],
    "check.check_script": lambda s: [check.check_script(s)],
    "colours.start_script": lambda s: [colours.start_script(s, "amber", RELEASE)],
    "colours.stop_script": lambda s: [colours.stop_script(s, "amber")],
    "colours.journal_script": lambda s: [colours.journal_script(s, "blue")],
    "colours.switch_script": lambda s: [colours.switch_script(s, RELEASE, "amber", retire, gate, migrations)
                                        for retire in ("", "blue") for gate in (False, True) for migrations in (False, True)],
    "colours.restart_script": lambda s: [colours.restart_script(s, "green")],
    "colours.live_socket_script": lambda s: [colours.live_socket_script(s)],
    "colours.identities_script": lambda s: [colours.identities_script(s)],
    "schedules.schedules_script": lambda s: [schedules.schedules_script(s)],
    "offsite.copy_script": lambda s: [offsite.copy_script(s)] if s.offsite.enabled else [],
    "offsite.snapshots_script": lambda s: [offsite.snapshots_script(s)] if s.offsite.enabled else [],
    "offsite.restore_script": lambda s: [offsite.restore_script(s, "latest")] if s.offsite.enabled else [],
    "offsite.rehearse_script": lambda s: [offsite.rehearse_script(s, snap, "op@laptop") for snap in ("latest", "0a1b2c3d")]
    if s.offsite.enabled else [],
    "offsite.public_key_script": lambda s: [offsite.public_key_script(s)] if s.offsite.enabled else [],
    "manage.manage_script": lambda s: [manage.manage_script(s, ["shell", "-c", "print('it''s')"])],
    "colours.celery_restart_script": lambda s: [colours.celery_restart_script(s)] if s.celery else [],
    "envfile.hook_script": lambda s: [envfile.hook_script(s, RELEASE, "before_migrate", "./manage.py check --deploy")],
    "envfile.write_script": lambda s: [envfile.write_script(s, s.paths.env + ".sum-AbC", "0" * 64, as_root) for as_root in (True, False)],
    "envfile.temp_script": lambda s: [envfile.temp_script(s)],
    "envfile.remove_script": lambda s: [envfile.remove_script(s.paths.env + ".sum-AbC")],
    "facts.os_release_script": lambda s: [facts.os_release_script()],
    "facts.facts_script": lambda s: [facts.facts_script(s)],
    "health.wait": lambda s: [health.wait(s), health.wait(s, s.paths.colour("blue").socket, 3)],
    "health.smoke": lambda s: [health.smoke(s)],
    "journal.journal_script": lambda s: [journal.journal_script(s, service, 50, follow)
                                         for service in ("app", "caddy", "celery", "redis", "schedule", "backup") for follow in (False, True)],
    "lock.hold_script": lambda s: [lock.hold_script(s, "release v1.2 by me@laptop since 2026-12-01 10:00:00Z", then)
                                   for then in ("", state.state_script(s).text)],
    "lock.holder_script": lambda s: [lock.holder_script(s)],
    "lock.unlock_script": lambda s: [lock.unlock_script(s, 4242)],
    "releases.fetch_server_script": lambda s: [releases.fetch_server_script(s, "v1.2", s.paths.releases + "/.incoming-1")],
    "releases.place_script": lambda s: [releases.place_script(s, s.paths.releases + "/.incoming-1", ENTRY, from_stdin)
                                        for from_stdin in (False, True)],
    "releases.venv_script": lambda s: [releases.venv_script(s, s.paths.venv("0123456789abcdef"), RELEASE)],
    "releases.freeze_script": lambda s: [releases.freeze_script(s.paths.venv("0123456789abcdef"))],
    "releases.manage_script": lambda s: [releases.manage_script(s, RELEASE, mode) for mode in ("check", "apply", "ahead")],
    "releases.changed_files_script": lambda s: [releases.changed_files_script(s, "a" * 40, "b" * 40)],
    "releases.failed_script": lambda s: [releases.failed_script(RELEASE, ""), releases.failed_script("", s.paths.releases + "/.incoming-1")],
    "releases.record_script": lambda s: [releases.record_script(s, ENTRY), releases.record_script(s, ENTRY, [RELEASE, s.paths.venv("x")])],
    "state.state_script": lambda s: [state.state_script(s), state.state_script(s, releases.migrations_script(s))],
}


def builders(package) -> dict[str, object]:
    """Every public function in `package`'s modules annotated to return a Script, as {module.function: function}."""
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and not name.startswith("_") and inspect.signature(fn).return_annotation in ("Script", Script):
                found[f"{info.name}.{name}"] = fn
    return found


def shellcheck(script: Script) -> str:
    """shellcheck's complaints about `script` ('' when there are none), as the shell that will run it."""
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck is needed (apt-get install shellcheck)")
    dialect = "bash" if script.shell == "bash" else "sh"
    # SC1091: a sourced file (the site's .env) exists only on the host, so shellcheck cannot follow it.
    result = subprocess.run(["shellcheck", "--shell", dialect, "--exclude", "SC1091", "--format", "gcc", "-"], input=script.text,
                            capture_output=True, text=True, check=False)
    return result.stdout.strip()


def test_every_script_builder_is_sampled():
    assert set(builders(sum_tasks.commands)) == set(SAMPLES)


def test_only_commands_build_scripts():
    assert builders(sum_tasks.cli) == {} and builders(sum_tasks.operations) == {}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("site", [PLAIN, FULL], ids=["plain", "full"])
def test_script_passes_shellcheck(name, site):
    for script in SAMPLES[name](site):
        assert isinstance(script, Script) and script.name
        assert shellcheck(script) == "", f"{script.name}:\n{script.text}\n{shellcheck(script)}"


@pytest.mark.parametrize("site", [PLAIN, FULL, REST, SFTP], ids=["plain", "full", "rest", "sftp"])
def test_every_provision_operation_passes_shellcheck(site):
    plan = host_plan(site, Facts(user="root", caddyfile=":80 {\n}\n"), offsite_credentials="AWS_DEFAULT_REGION=x\n" if site is REST else "")
    problems = {}
    for op in plan:
        for script in (check_script(op), apply_script(op)):
            if script.text and (found := shellcheck(script)):
                problems[script.name] = f"{script.text}\n{found}"
    assert not problems, "\n\n".join(f"{k}:\n{v}" for k, v in problems.items())


def test_every_root_command_a_task_sends_is_in_sudoers():
    """Each `sudo -n` in every sampled script is exactly a sudoers line of the site (the same builder makes both)."""
    for site in (PLAIN, FULL):
        allowed = set(site.paths.sudo_commands())
        for name, sample in SAMPLES.items():
            for script in sample(site):
                for part in script.text.split("sudo -n ")[1:]:
                    command = part.split(" 2>", 1)[0].split(";", 1)[0].split(" &&", 1)[0].split(" ||", 1)[0].split("}", 1)[0].strip()
                    if command.startswith("/usr/bin/systemctl"):
                        assert command in allowed, f"{name}: {command}"


@pytest.mark.parametrize("site", [FULL, REST, SFTP], ids=["target", "rest", "sftp"])
@pytest.mark.parametrize("name", ["alert.sh.j2", "offsite.sh.j2"])  # backup.sh.j2: through backup.db_script above
def test_shell_templates_pass_shellcheck(name, site):
    from sum_tasks.commands import templating

    text = templating.render(name, offsite.script_context(site))
    script = Script(name, text, shell="bash" if text.startswith("#!/bin/bash") else "sh")
    assert shellcheck(script) == "", f"{text}\n{shellcheck(script)}"
