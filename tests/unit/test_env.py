"""env.*: keys and values checked before connecting, edits of the file as data, and no value ever in a command or a message."""

import io
import subprocess
from types import SimpleNamespace

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit
from invoke.runners import Result

from sum_tasks.cli import env
from sum_tasks.commands import envfile
from sum_tasks.host.output import StepError

SECRET = "s3cret-Value-9f2c"
FILE = (
    envfile.HEADER
    + "ALLOWED_HOSTS=acme.example,www.acme.example\n"
    + "DJANGO_SECRET_KEY=abcdefghijklmnopqrstuvwxyz0123456789\n"
    + "REDIS_URL=redis://localhost:6379/0\n"
    + "# a comment the operator wrote\n"
    + "export SENTRY_DSN='https://k@sentry.example/1'\n"
    + "FEATURE=on\n"
)


# ---------------------------------------------------------------- keys and values


@pytest.mark.parametrize("key", ["FOO", "_X", "A1_B2", "DJANGO_SECRET_KEY"])
def test_good_keys(key):
    assert env.validate_key(key) == key


@pytest.mark.parametrize("key", ["foo", "1A", "A-B", "", "A B", "É"])
def test_bad_keys(key):
    with pytest.raises(Exit, match="not a valid key"):
        env.validate_key(key)


def test_an_option_in_a_keys_place_points_to_help():
    with pytest.raises(Exit, match=r"for help run `fab --help env.unset`"):
        env.validate_key("--help", "env.unset")


@pytest.mark.parametrize("value,words", [
    (f"{SECRET}\nX=1", "one line"),
    (f"{SECRET}\r", "one line"),
    (f"it's {SECRET}", "single quote"),
    (f"{SECRET}\x07", "control character"),
    (f"{SECRET}\t", "control character"),
])
def test_bad_values_are_refused_without_showing_them(value, words):
    with pytest.raises(Exit) as err:
        env.validate_value("API_KEY", value)
    assert words in err.value.message and "API_KEY" in err.value.message and SECRET not in err.value.message


@pytest.mark.parametrize("value", ["", "plain", "with space", 'dou"ble', "ünïcode", "a=b,c;d$e`f\\g"])
def test_good_values(value):
    assert env.validate_value("K", value) == value


def test_pairs_and_prompted_values():
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return SECRET

    assert env.parse_pairs(["A=1", "B==x=", "C"], ask) == {"A": "1", "B": "=x=", "C": SECRET}
    assert asked == ["value for C (not shown): "]
    with pytest.raises(Exit, match="A is given twice"):
        env.parse_pairs(["A=1", "A=2"], ask)

    def eof(prompt):
        raise EOFError

    with pytest.raises(Exit, match="C: no value given"):
        env.parse_pairs(["C"], eof)


def test_generated_secrets_need_force_and_synced_keys_are_never_edited(site):
    for key in envfile.GENERATED:
        assert "--force" in env.refusal(site, key, force=False)
        assert env.refusal(site, key, force=True) == ""
    assert "logs every user out" in env.refusal(site, "DJANGO_SECRET_KEY", False)
    assert "`fab provision` sets the new one on the role" in env.refusal(site, "DJANGO_DB_PASSWORD", False)
    for key in envfile.synced(site):
        assert "follows fabric.yaml" in env.refusal(site, key, force=True)
    assert env.refusal(site, "SENTRY_DSN", False) == env.refusal(site, "REDIS_URL", False) == ""


# ---------------------------------------------------------------- editing the file


def test_a_new_key_goes_last_and_nothing_else_moves():
    text, outcomes = envfile.edit(FILE, {"NEW": "with space"})
    assert outcomes == {"NEW": "added"}
    assert text == FILE + "NEW='with space'\n"


def test_a_changed_key_keeps_its_place_and_duplicates_go():
    text, outcomes = envfile.edit(FILE + "FEATURE=again\n", {"FEATURE": "off", "SENTRY_DSN": "https://new@sentry.example/2"})
    assert outcomes == {"FEATURE": "changed", "SENTRY_DSN": "changed"}
    lines = text.splitlines()
    assert lines[-2:] == ["SENTRY_DSN=https://new@sentry.example/2", "FEATURE=off"]
    assert lines[:5] == FILE.splitlines()[:5] and text.count("FEATURE=") == 1
    assert envfile.parse(text)["FEATURE"] == "off"


def test_the_same_value_is_unchanged_even_when_quoted_differently():
    text, outcomes = envfile.edit(FILE, {"SENTRY_DSN": "https://k@sentry.example/1", "FEATURE": "on"})
    assert text == FILE and outcomes == {"SENTRY_DSN": "unchanged", "FEATURE": "unchanged"}


def test_removing_keys():
    text, outcomes = envfile.edit(FILE + "FEATURE=twice\n", {"FEATURE": None, "NOPE": None})
    assert outcomes == {"FEATURE": "removed", "NOPE": "not set"}
    assert "FEATURE" not in text and "# a comment the operator wrote\n" in text
    assert envfile.edit(FILE, {"NOPE": None}) == (FILE, {"NOPE": "not set"})


def test_a_file_without_a_final_newline():
    text, _ = envfile.edit("A=1", {"B": "2"})
    assert text == "A=1\nB=2\n"
    assert envfile.edit("", {"A": "1"})[0] == "A=1\n"


def test_every_value_written_reads_back_the_same():
    values = {"A": "", "B": "x y", "C": 'q"uote', "D": "$HOME `id` \\n", "E": "ünï"}
    text, _ = envfile.edit(FILE, values)
    assert {k: envfile.parse(text)[k] for k in values} == values
    # and a shell reads them back the same way
    script = "set -a; . /dev/stdin; set +a; " + "; ".join(f'printf "%s\\0" "${k}"' for k in values)
    out = subprocess.run(["sh", "-c", script], input=text, capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == list(values.values())


def test_list_lines_never_show_a_value(site):
    for key, value in envfile.parse(FILE).items():
        line = env.describe_key(site, key, value)
        assert key in line and (not value or value not in line)
    assert "generated secret" in env.describe_key(site, "DJANGO_SECRET_KEY", "x" * 50)
    assert "from fabric.yaml" in env.describe_key(site, "ALLOWED_HOSTS", "a")
    assert "(empty)" in env.describe_key(site, "EMPTY", "")


# ---------------------------------------------------------------- the host commands


class FakeConnection:
    """Records what env asks of a host: commands, uploads, downloads."""

    def __init__(self, user="deploy", env_text=FILE, fail_finish=False):
        self.user, self.host, self.original_host, self.config = user, "vps", "vps", SimpleNamespace()
        self.is_connected = True
        self.commands, self.puts, self.env_text, self.fail_finish = [], [], env_text, fail_finish

    def run(self, command, **kwargs):
        self.commands.append(command)
        failed = self.fail_finish and "mv -f" in command
        out = "/srv/sum/acme-kitchens/.env.sum-AbC123\n" if "mktemp" in command else ""
        return Result(stdout=out, stderr="boom" if failed else "", exited=1 if failed else 0, command=command)

    def put(self, local, remote):
        self.puts.append((local.getvalue(), remote))

    def get(self, remote, local):
        local.write(self.env_text.encode())


def test_the_new_file_goes_over_sftp_and_replaces_env_in_one_rename(site):
    c = FakeConnection()
    new = (FILE + f"API_KEY={SECRET}\n").encode()
    env.write_env(c, site, new, FILE.encode())
    assert c.puts == [(new, "/srv/sum/acme-kitchens/.env.sum-AbC123")]
    assert "umask 077 && mktemp /srv/sum/acme-kitchens/.env.sum-XXXXXXXX" in c.commands[0]
    finish = c.commands[1]
    assert "chmod 600 /srv/sum/acme-kitchens/.env.sum-AbC123" in finish and "chown" not in finish
    assert "mv -f /srv/sum/acme-kitchens/.env.sum-AbC123 /srv/sum/acme-kitchens/.env" in finish
    assert all(SECRET not in command for command in c.commands)


def test_as_root_the_file_is_given_to_the_deploy_user(site):
    script = envfile.write_script(site, "/srv/sum/acme-kitchens/.env.sum-x", "0" * 64, as_root=True).text
    assert "chown deploy:deploy /srv/sum/acme-kitchens/.env.sum-x" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_a_failed_write_removes_the_temporary_file(site):
    c = FakeConnection(fail_finish=True)
    with pytest.raises(StepError, match="boom"):
        env.write_env(c, site, b"A=1\n", FILE.encode())

    class Unreachable(FakeConnection):
        def put(self, local, remote):
            raise OSError("SFTP went away")

    c = Unreachable()
    with pytest.raises(OSError):
        env.write_env(c, site, b"A=1\n", FILE.encode())
    assert c.commands[-1] == "sh -c 'rm -f /srv/sum/acme-kitchens/.env.sum-AbC123'"


def test_the_finish_script_refuses_an_env_changed_since_it_was_read(site, tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / ".env").write_text("A=1\n")
    (root / ".env.new").write_text("A=2\n")
    local = site.__class__(**{**site.__dict__, "site_slug": "x"})
    script = envfile.write_script(local, str(root / ".env.new"), "f" * 64, as_root=False).text.replace("/srv/sum/x/.env", str(root / ".env"))
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "changed on the host while this ran" in result.stderr
    assert (root / ".env").read_text() == "A=1\n" and not (root / ".env.new").exists()


def test_an_unchanged_value_writes_nothing(site, monkeypatch, capsys):
    from contextlib import nullcontext

    monkeypatch.setattr(env, "site_lock", lambda *a: nullcontext())
    c = FakeConnection()
    env.change_env(c, site, "env.set", {"FEATURE": "on"}, restart=True)
    assert c.puts == [] and c.commands == []
    out = capsys.readouterr().out
    assert "FEATURE unchanged: nothing written" in out and "not restarting" in out


def test_a_change_is_written_and_a_restart_offered(site, monkeypatch, capsys):
    from contextlib import nullcontext

    monkeypatch.setattr(env, "site_lock", lambda *a: nullcontext())
    c = FakeConnection()
    env.change_env(c, site, "env.set", {"API_KEY": SECRET}, restart=False)
    assert c.puts[0][0].decode().endswith(f"API_KEY={SECRET}\n")
    out = capsys.readouterr().out
    assert "API_KEY added" in out and "fab env.restart" in out and SECRET not in out


# ---------------------------------------------------------------- tasks refuse before connecting


def context(site_config):
    return Context(Config(overrides={"sum": {**site_config, "hosts": ["unreachable.invalid"]}}))


def test_set_refuses_protected_keys_before_asking_or_connecting(site_config):
    with pytest.raises(Exit, match="refused: DJANGO_SECRET_KEY is a generated secret"):
        env.set_(context(site_config), f"DJANGO_SECRET_KEY={SECRET}")
    with pytest.raises(Exit, match="refused: ALLOWED_HOSTS follows fabric.yaml"):
        env.set_(context(site_config), "FOO=1", also=["ALLOWED_HOSTS"], force=True)
    with pytest.raises(Exit, match="not a valid key"):
        env.set_(context(site_config), "lower=1")
    with pytest.raises(Exit, match="single quote"):
        env.set_(context(site_config), "FOO=it's")


def test_unset_refuses_protected_keys_before_connecting(site_config):
    with pytest.raises(Exit, match="refused: DJANGO_DB_PASSWORD"):
        env.unset(context(site_config), "FOO", also=["DJANGO_DB_PASSWORD"])
    with pytest.raises(Exit, match="refused: SITE_DOMAIN follows fabric.yaml"):
        env.unset(context(site_config), "SITE_DOMAIN", force=True)


def test_the_collection_and_its_syntax():
    names = set(env.env.task_names)
    assert names == {"list", "set", "unset", "restart"}
    assert env.set_.positional == ["pair"] and env.set_.iterable == ["also"]
    assert env.unset.positional == ["key"]


def test_read_env_says_what_to_do_when_the_file_is_missing(site):
    class Missing(FakeConnection):
        def get(self, remote, local):
            raise FileNotFoundError(remote)

    with pytest.raises(StepError, match="does not exist") as err:
        env.read_env(Missing(), site)
    assert err.value.hint == "run `fab provision`"
    assert env.read_env(FakeConnection(), site) == FILE.encode()
    assert isinstance(io.BytesIO(env.read_env(FakeConnection(), site)), io.BytesIO)
