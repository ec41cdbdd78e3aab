"""`sum.offsite.repository` and `sum.offsite.env_file`: validation, the host's credentials file, and the script and plan
each kind of repository gets."""

import pytest

from sum_tasks.commands import offsite
from sum_tasks.commands.credentials import redact
from sum_tasks.commands.facts import Facts
from sum_tasks.commands.templating import render
from sum_tasks.configuration import ConfigError, load_site
from sum_tasks.operations.plan import host_plan

BASE = {"site_slug": "acme", "domains": ["acme.example"], "project_module": "acme"}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk"


def site_with(**offsite_settings):
    return load_site({**BASE, "offsite": offsite_settings})


@pytest.mark.parametrize("url", [
    "s3:https://s3.example.com/bucket/acme", "s3:s3.amazonaws.com/bucket", "rest:https://backup.example:8000/acme/",
    "rest:http://10.0.0.2:8000/acme/", "rest:https://restic@backup.example/acme/", "b2:bucket:acme", "azure:container:/acme",
    "gs:bucket:/acme", "swift:container:/acme",
])
def test_repository_urls_restic_takes(url):
    site = site_with(repository=url)
    assert site.offsite.enabled and site.offsite.ssh_login is None


@pytest.mark.parametrize(("settings", "key", "words"), [
    ({"repository": "rest:https://acme:hunter2@backup.example/acme/"}, "offsite.repository", "must not hold a password"),
    ({"repository": "s3:https://key:secret@s3.example.com/bucket"}, "offsite.repository", "must not hold a password"),
    ({"repository": "rest:https://acme:pa ss@backup.example/acme/"}, "offsite.repository", "must not hold a password"),
    ({"repository": "rest:https://backup.example/acme/?pa ss"}, "offsite.repository", "must be a restic repository URL"),
    ({"repository": "sftp:user:pw@host:/srv/x", "host_key": HOST_KEY}, "offsite.repository", "must not hold a password"),
    ({"repository": "ftp://backup.example/x"}, "offsite.repository", "must be a restic repository URL"),
    ({"repository": "/srv/restic/acme"}, "offsite.repository", "must be a restic repository URL"),
    ({"repository": "rclone:remote:acme"}, "offsite.repository", "must be a restic repository URL"),
    ({"repository": "s3:https://host/b'; rm -rf /"}, "offsite.repository", "must be a restic repository URL"),
    ({"repository": "sftp:/srv/x", "host_key": HOST_KEY}, "offsite.repository", "sftp:user@host:/path"),
    ({"repository": "s3:https://host/b", "target": "restic@backup.example", "host_key": HOST_KEY}, "offsite.repository",
     "exclude each other"),
    ({"repository": "sftp:restic@backup.example:/srv/restic/acme"}, "offsite.host_key", "is required with an sftp:"),
    ({"repository": "s3:https://host/b", "host_key": HOST_KEY}, "offsite.host_key", "only applies to offsite.target or an sftp:"),
    ({"target": "restic@backup.example", "host_key": HOST_KEY, "env_file": "~/x.env"}, "offsite.env_file", "only applies to"),
])
def test_repository_mistakes_are_one_line_naming_the_key(settings, key, words):
    with pytest.raises(ConfigError) as err:
        site_with(**settings)
    message = err.value.message
    assert message.startswith(f"sum.{key}: ") and words in message and "\n" not in message, message
    assert "hunter2" not in message and "key:secret" not in message and "pa ss" not in message


def test_an_sftp_repository_is_reached_with_the_site_key_and_host_key():
    site = site_with(repository="sftp://restic@backup.example:2222//srv/restic/acme", host_key=HOST_KEY)
    assert site.offsite.ssh_login == ("restic@backup.example", 2222)
    assert offsite.known_hosts_line(site) == f"[backup.example]:2222 {HOST_KEY}\n"
    assert offsite.authorized_keys_line(site, "ssh-ed25519 AAAAkey sum-acme off-site\n") == "restrict ssh-ed25519 AAAAkey sum-acme off-site\n"
    assert site_with(repository="sftp:restic@backup.example:/srv/restic/acme", host_key=HOST_KEY).offsite.ssh_login == \
        ("restic@backup.example", 22)
    script = render("offsite.sh.j2", offsite.script_context(site))
    assert "RESTIC_REPOSITORY=sftp://restic@backup.example:2222//srv/restic/acme " in script
    assert 'OPTIONS=(-o sftp.command="$SSH -s sftp")' in script and "-p 2222 restic@backup.example" in script


S3 = {"repository": "s3:https://s3.example.com/bucket/acme", "env_file": "~/acme.env"}
REST = {"repository": "rest:https://backup.example:8000/acme/", "env_file": "~/acme.env"}


def test_env_file_names_are_restic_documented_variables():
    site = site_with(**S3)
    text = "# the agency's bucket\n\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=\"wJalr/XUtnFEMI+K7MDENG\"\nAWS_DEFAULT_REGION=eu-west-1\n"
    values = offsite.parse_env_file(site, text)
    assert values == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalr/XUtnFEMI+K7MDENG", "AWS_DEFAULT_REGION": "eu-west-1"}
    content, secrets = offsite.host_env(site, values)
    assert content == "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=wJalr/XUtnFEMI+K7MDENG\nAWS_DEFAULT_REGION=eu-west-1\n"
    assert secrets == ["wJalr/XUtnFEMI+K7MDENG"]


@pytest.mark.parametrize(("settings", "text", "words"), [
    (S3, "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\nLD_PRELOAD=/tmp/evil.so\n", "line 3: LD_PRELOAD: not one of restic's"),
    (S3, "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\nRESTIC_PASSWORD=topsecret\n", "line 3: RESTIC_PASSWORD: set by sum_tasks"),
    (S3, "RESTIC_PASSWORD_COMMAND=cat /x\n", "RESTIC_PASSWORD_COMMAND: set by sum_tasks"),
    (S3, "RESTIC_REPOSITORY=s3:elsewhere\n", "RESTIC_REPOSITORY: set by sum_tasks"),
    (S3, "AWS_SHARED_CREDENTIALS_FILE=/root/.aws/credentials\n", "names a file on the host"),
    (S3, "AWS_ACCESS_KEY_ID=a\n", "a s3: repository needs AWS_SECRET_ACCESS_KEY"),
    (S3, "export AWS_ACCESS_KEY_ID=a\n", "line 1: each line must be NAME=value"),
    (S3, "AWS_ACCESS_KEY_ID\n", "line 1: AWS_ACCESS_KEY_ID: each line must be NAME=value"),
    (S3, "AWS_ACCESS_KEY_ID=\n", "line 1: AWS_ACCESS_KEY_ID: has no value"),
    (S3, "AWS_ACCESS_KEY_ID=a\nAWS_ACCESS_KEY_ID=b\n", "line 2: AWS_ACCESS_KEY_ID: given twice"),
    (S3, "# nothing yet\n", "holds no NAME=value line"),
    (S3, "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\nRESTIC_REST_USERNAME=u\nRESTIC_REST_PASSWORD=p\n", "only apply to a rest:"),
    (REST, "RESTIC_REST_PASSWORD=topsecret\n", "go together"),
])
def test_env_file_mistakes_name_the_line_and_variable_never_the_value(settings, text, words):
    with pytest.raises(ConfigError) as err:
        offsite.parse_env_file(site_with(**settings), text)
    message = err.value.message
    assert message.startswith("sum.offsite.env_file: ") and words in message and "\n" not in message, message
    assert "topsecret" not in message and "evil" not in message and "/root/.aws" not in message


def test_rest_credentials_go_into_the_hosts_file_as_the_url_restic_0_14_reads():
    # restic 0.14 (Debian 12) ignores RESTIC_REST_USERNAME/PASSWORD: the login goes into the URL in the 0640 file only.
    site = site_with(**REST)
    content, secrets = offsite.host_env(site, offsite.parse_env_file(site, "RESTIC_REST_USERNAME=acme\nRESTIC_REST_PASSWORD=p@ss:w/rd%\n"))
    assert content == "RESTIC_REPOSITORY=rest:https://acme:p%40ss%3Aw%2Frd%25@backup.example:8000/acme/\n"
    assert "p@ss:w/rd%" in secrets and "p%40ss%3Aw%2Frd%25" in secrets
    script = render("offsite.sh.j2", offsite.script_context(site))
    assert "RESTIC_REPOSITORY=rest:https://backup.example:8000/acme/ " in script and "p%40ss" not in script
    assert "mapfile -t CREDENTIALS < /etc/sum/sum-acme-offsite.env" in script


def test_the_operator_env_file_is_read_validated_and_its_secrets_redacted(tmp_path):
    from sum_tasks.cli.offsite import operator_credentials

    env = tmp_path / "acme.env"
    env.write_text("AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=verySecretKeyValue42\n")
    site = site_with(repository=S3["repository"], env_file=str(env))
    assert operator_credentials(site) == env.read_text()
    assert redact("it was verySecretKeyValue42") == "it was ********"
    with pytest.raises(ConfigError, match=r"offsite.env_file.*cannot read .*missing.env"):
        operator_credentials(site_with(repository=S3["repository"], env_file=str(tmp_path / "missing.env")))
    assert operator_credentials(site_with(repository=S3["repository"])) == ""


def test_the_plan_for_a_repository_installs_the_credentials_and_no_ssh_key():
    site = site_with(**REST)
    ops = {op.name: op for op in host_plan(site, Facts(user="root", caddyfile=":80 {\n}\n"), offsite_password="p" * 32,
                                           offsite_credentials="RESTIC_REPOSITORY=rest:https://a:b@h/acme/\n")}
    credentials = ops["off-site credentials"]
    assert credentials.stdin == b"RESTIC_REPOSITORY=rest:https://a:b@h/acme/\n"
    assert "640 root deploy" in credentials.check and "rest:https://a:b" not in credentials.check + credentials.apply
    assert "off-site ssh key" not in ops and "/etc/sum/sum-acme-offsite.key" in ops[
        "no off-site ssh key (the repository is not reached over SSH)"].apply
    sudoers = ops["sudoers rule"].stdin.decode()
    assert "start sum-acme-offsite.service" in sudoers and "start sum-acme-offsite-rehearse.service" in sudoers
    assert "OnSuccess=sum-acme-offsite.service" in ops["backup service"].stdin.decode()
    target = site_with(target="restic@backup.example", host_key=HOST_KEY)
    names = [op.name for op in host_plan(target, Facts(user="root", caddyfile=":80 {\n}\n"), offsite_password="p" * 32)]
    assert "off-site ssh key" in names and "no off-site credentials file" in names


def test_key_refuses_a_repository_not_reached_over_ssh_before_connecting():
    from fabric import Config, Connection
    from invoke.exceptions import Exit

    from sum_tasks.cli import offsite as tasks

    conn = Connection("deploy@vps.invalid", config=Config(overrides={"sum": {**BASE, "offsite": {"repository": S3["repository"]}}}))
    with pytest.raises(Exit, match="not reached over SSH") as err:
        tasks.key(conn)
    assert err.value.code == 2
