"""Release and rollback decisions made from data: refs, venv reuse, pins, records, pruning, rollback targets."""

import dataclasses
from datetime import UTC

import pytest
from invoke.exceptions import Exit

from sum_tasks.commands import colours, releases
from sum_tasks.commands.colours import free_colour, live_colour, stale_colours, standby_colour, warm_standby
from sum_tasks.commands.releases import (
    backup_undoing,
    choose_source,
    good_releases,
    new_release_id,
    prune_list,
    requirements_digest,
    rollback_target,
    unpinned,
    validate_ref,
)
from sum_tasks.commands.state import ReleaseState
from sum_tasks.configuration import COLOURS


@pytest.mark.parametrize("ref", ["v1.2", "main", "feature/x", "0123abc", "a" * 40, "release-2026.11", "v1.2+build"])
def test_good_refs(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", "-v1", "--upload-pack=x", "a..b", "v1;id", "v1 2", "$(id)", "x.lock", "x/", "x@{1}",
                                 "a" * 201, "v1\n", "`id`", "x//y"])
def test_bad_refs_refused_before_anything_runs(ref):
    with pytest.raises(Exit):
        validate_ref(ref)


def test_source_choice(site_config):
    from sum_tasks.configuration import load_site

    with_repo = load_site(site_config)
    without = load_site({**site_config, "repo_url": ""})
    assert choose_source(with_repo, "auto") == "server" and choose_source(without, "auto") == "local"
    assert choose_source(with_repo, "local") == "local"
    with pytest.raises(Exit):
        choose_source(without, "server")


def test_release_ids_sort_by_time_and_name_the_commit():
    from datetime import datetime

    first = new_release_id("0123456789abcdef", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert first == "20260102T030405Z-01234567"
    assert new_release_id("ff" * 20, datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)) > first


def test_venv_follows_exact_requirements_and_interpreter():
    base = requirements_digest(b"Django==5.2\n", "python3")
    assert base == requirements_digest(b"Django==5.2\n", "python3")
    assert base != requirements_digest(b"Django==5.2\nhumanize==4.9\n", "python3")
    assert base != requirements_digest(b"Django==5.2\n", "python3.12")


def test_git_requirements_on_branches_are_flagged():
    text = (
        "Django==5.2\n"
        "sum_core @ git+https://github.com/x/sum-core.git@v1.4.0\n"
        "other @ git+https://github.com/x/other.git@main#egg=other\n"
        "git+ssh://git@github.com/x/third.git\n"
        "pinned @ git+https://github.com/x/p.git@0a1b2c3d4e\n"
        "# comment git+https://x/y.git@main\n"
    )
    assert unpinned(text) == ["other @ git+https://github.com/x/other.git@main#egg=other", "git+ssh://git@github.com/x/third.git"]


RECORDS = [
    {"id": "r1", "ref": "v1", "sha": "aaa1", "result": "good"},
    {"id": "r2", "ref": "bad", "sha": "bbb2", "result": "failed: migrate"},
    {"id": "r3", "ref": "v2", "sha": "ccc3", "result": "good", "backup": "/b/before-r3.sql.gz"},
    {"id": "r4", "ref": "v3", "sha": "ddd4", "result": "good"},
]


def test_prune_keeps_live_previous_and_newest_good():
    present = {"r1", "r2", "r3", "r4"}
    assert prune_list(RECORDS, present, "r4", keep=2) == ["r1", "r2"]
    assert prune_list(RECORDS, present, "r4", keep=5) == ["r2"]
    assert "r1" not in prune_list(RECORDS, present, "r1", keep=2)
    assert prune_list(RECORDS, present, "r3", keep=2) == ["r1", "r2"]


def test_rollback_targets():
    present = {"r1", "r2", "r3", "r4"}
    assert rollback_target(RECORDS, present, "r4") == "r3"
    assert rollback_target(RECORDS, present, "r4", to="v1") == "r1"
    assert rollback_target(RECORDS, present, "r4", to="aaa") == "r1"
    assert rollback_target(RECORDS, present, "r4", to="r3") == "r3"
    with pytest.raises(Exit):
        rollback_target(RECORDS, present, "r4", to="bad")
    with pytest.raises(Exit):
        rollback_target(RECORDS, {"r4"}, "r4")
    assert good_releases(RECORDS, {"r1", "r4"}) == ["r1", "r4"]


def test_backup_that_undoes_migrations():
    assert backup_undoing(RECORDS, "r1") == "/b/before-r3.sql.gz"
    assert backup_undoing(RECORDS, "r3") == ""


def host_state(**changes):
    """The state read on a host where green serves r4, blue is the warm standby on r3 and amber is free."""
    state = {
        "current": "r4", "live": "green", "env": "e1", "dirs": {"r2", "r3", "r4"}, "building": [],
        "colours": {"blue": "r3", "green": "r4", "amber": ""}, "active": {"blue": True, "green": True, "amber": False},
        "env_stamps": {"blue": "e1", "green": "e1", "amber": ""},
        "records": [{"id": r, "result": "good"} for r in ("r2", "r3", "r4")],
    }
    state |= changes
    return ReleaseState(**{**state, "dirs": frozenset(state["dirs"]), "building": tuple(state["building"]), "records": tuple(state["records"])})


def test_colours():
    state = host_state()
    assert (live_colour(state), standby_colour(state), free_colour(state)) == ("green", "blue", "amber")
    first = host_state(current="", live="", colours={"blue": "", "green": "", "amber": ""}, active=dict.fromkeys(COLOURS, False))
    assert (live_colour(first), standby_colour(first), free_colour(first)) == ("", "", "blue")
    # live.sock decides when two colours run the live release; a host without live.sock goes by the links.
    both = host_state(colours={"blue": "r4", "green": "r4", "amber": ""})
    assert live_colour(both) == "green" and live_colour(dataclasses.replace(both, live="blue")) == "blue"
    assert live_colour(host_state(live="")) == "green"
    # live.sock naming a colour that does not run the live release is not believed.
    assert live_colour(host_state(live="blue")) == "green"
    # A colour on the live release (a killed env.restart's) is never the standby: rollback needs the release before.
    restarted = host_state(colours={"blue": "r3", "green": "r4", "amber": "r4"}, active=dict.fromkeys(COLOURS, True))
    assert standby_colour(restarted) == "blue" and stale_colours(restarted) == ["amber"]
    # Two colours on good releases besides the live one: the standby is the one live most recently.
    crowded = host_state(colours={"blue": "r3", "green": "r4", "amber": "r2"}, active=dict.fromkeys(COLOURS, True))
    assert standby_colour(crowded) == "blue" and free_colour(crowded) == "amber"
    # A free colour still stopping is taken only when no stopped one is left.
    assert free_colour(host_state(active={"blue": True, "green": True, "amber": True})) == "amber"


def test_rollback_reuses_the_standby_only_when_it_runs_the_target_with_todays_env():
    assert warm_standby(host_state(), "r3")
    assert not warm_standby(host_state(), "r2")
    assert not warm_standby(host_state(active={"blue": False, "green": True, "amber": False}), "r3")
    assert not warm_standby(host_state(env="e2"), "r3")
    assert not warm_standby(host_state(env_stamps={"blue": "", "green": "e1", "amber": ""}), "r3")
    assert not warm_standby(host_state(env="", env_stamps=dict.fromkeys(COLOURS, "")), "r3")
    assert not warm_standby(host_state(colours={"blue": "", "green": "r4", "amber": ""}), "")


def test_stale_colours_are_what_a_killed_task_left():
    assert stale_colours(host_state()) == []
    # A colour started on a half-built, failed or deleted release; or running with no link at all.
    assert stale_colours(host_state(building=["r3"])) == ["blue"]
    assert stale_colours(host_state(records=[{"id": "r3", "result": "failed: switch"}, {"id": "r4", "result": "good"}])) == ["blue"]
    assert stale_colours(host_state(dirs={"r4"})) == ["blue"]
    assert stale_colours(host_state(active={"blue": True, "green": True, "amber": True})) == ["amber"]
    # Of two colours on good releases, the older one.
    assert stale_colours(host_state(colours={"blue": "r3", "green": "r4", "amber": "r2"})) == ["amber"]
    # Never the live colour, whatever it runs.
    assert stale_colours(host_state(building=["r4"], dirs={"r4"})) == ["blue"]


def test_django_is_skipped_only_when_nothing_it_reads_changed():
    from sum_tasks.commands.releases import needs_django

    assert not needs_django(["notes/templates/notes/index.html", "notes/views.py", "README.md"])
    assert not needs_django([])
    for path in ("notes/migrations/0003_x.py", "static/site.css", "notes/static/notes/app.js",
                 "examplesite/settings/production.py", "acme/settings.py"):
        assert needs_django(["notes/views.py", path]), path


def test_rollback_goes_to_the_release_live_before_this_one():
    records = [
        {"id": "A", "result": "good"}, {"id": "B", "result": "good", "backup": "/b/pre-B"},
        {"id": "A", "result": "good", "rollback": True}, {"id": "C", "result": "good", "backup": "/b/pre-C"},
    ]
    present = {"A", "B", "C"}
    assert rollback_target(records, present, "C") == "A"
    assert good_releases(records, present) == ["B", "A", "C"]
    assert prune_list(records, present, "C", keep=2) == ["B"]
    # A release some colour still runs (one left unrecorded by a killed task, say) is never deleted under it.
    assert prune_list(records, present, "C", keep=2, running=["B", ""]) == []
    assert backup_undoing(records, "A") == "/b/pre-C"
    assert backup_undoing(records, "B") == "/b/pre-C"


def test_rollback_skips_django_only_with_a_fingerprint_from_a_clean_switch():
    from sum_tasks.commands.releases import last_fingerprint

    records = [{"id": "A", "migrations": "f1"}, {"id": "B", "migrations": "f2"}, {"id": "A", "rollback": True}]
    assert last_fingerprint(records, "A") == "f1"
    assert last_fingerprint(records, "B") == "f2"
    assert last_fingerprint(records, "C") == ""


def test_status_says_whether_a_rollback_would_be_instant():
    from sum_tasks.cli.status import describe_standby

    assert describe_standby(host_state()) == "blue running r3: `fab rollback` to it switches without a restart"
    assert "a rollback restarts it" in describe_standby(host_state(env="e2"))
    assert describe_standby(host_state(colours={"blue": "", "green": "r4", "amber": ""})).startswith("none")


@pytest.mark.parametrize("answer,sha,words", [
    ('{"status": "ok", "version": {"git_sha": "%s"}}' % ("a" * 40), "a" * 40, "HTTP 200 ok at aaaaaaaaaaaa"),
    ('{"status": "ok", "version": {"git_sha": "%s"}}' % ("b" * 40), "a" * 40, "WARNING: /health/ through Caddy reports bbbbbbbbbbbb, not aaaaaaaaaaaa"),
    ('{"status": "unhealthy"}', "a" * 40, "WARNING: /health/ through Caddy: HTTP 503 unhealthy"),
])
def test_the_smoke_check_warns_unless_caddy_serves_the_new_release(site, answer, sha, words):
    import io

    from invoke.runners import Result

    from sum_tasks.cli.release import smoke_checks
    from sum_tasks.host.output import Report

    code = "503" if "unhealthy" in answer else "200"

    class Answering:
        is_connected, user = True, "deploy"

        def run(self, command, **kwargs):
            assert "--next" in command and "/sitemap.xml" in command and "/health/" in command
            return Result(stdout=f"200\n{answer}\n\n{code}", exited=0)

    report = Report("release", "deploy@vps", stream=io.StringIO())
    smoke_checks(Answering(), site, report, sha)
    assert any(note.startswith(words) for note in report.steps[-1].notes), report.steps[-1].notes
    assert "sitemap.xml HTTP 200 (not blocking)" in report.steps[-1].notes


def test_probes_send_what_caddy_sends_and_name_a_redirect(site_config):
    from sum_tasks.commands.health import curl_health, parse_answer
    from sum_tasks.configuration import load_site

    site = load_site(site_config)
    probe = curl_health(site, "/run/sum/acme-kitchens/blue.sock")
    assert "-H 'X-Forwarded-Proto: https'" in probe and "-H 'X-Forwarded-For: 127.0.0.1'" in probe
    assert "-H 'X-Forwarded-Host: acme.example'" in probe and "http://acme.example/health/" in probe
    assert "X-Forwarded-Proto: http'" in curl_health(load_site({**site_config, "tls": "off"}), "/run/x.sock")
    assert "X-Forwarded" not in curl_health(site), "through Caddy, Caddy sets them"
    redirected = parse_answer("\nhttps://acme.example/health/\n301")
    assert not redirected.ok and redirected.describe() == "HTTP 301 redirect to https://acme.example/health/"
    assert parse_answer('{"status": "ok"}\n\n200').ok


def test_a_failed_first_release_says_nothing_was_serving():
    from sum_tasks.cli.release import serving_text

    assert serving_text(ReleaseState()) == "no release was live before this one, so nothing serves the site yet"
    assert serving_text(host_state()) == "the previous release is still serving"


def test_outdated_units_are_those_of_another_user_or_older_than_their_unit_or_env(site):
    output = ("sum-acme-kitchens-gunicorn@blue.service sum-acme-kitchens 1700000100\n"
              "sum-acme-kitchens-gunicorn@green.service deploy 1700000200\n"
              "sum-acme-kitchens-gunicorn@amber.service sum-acme-kitchens 1700000000\n"
              "@files 1700000050\n")
    assert colours.outdated(site, output) == ["sum-acme-kitchens-gunicorn@green.service", "sum-acme-kitchens-gunicorn@amber.service"]
    assert colours.outdated(site, "sum-acme-kitchens-gunicorn@blue.service sum-acme-kitchens 1700000100\n@files 1700000100\n") == []
    assert colours.outdated(site, "@files 1700000100\n") == []


REAL_REQUIREMENTS = """Django==5.2
./wheels/core-0.6.0-py3-none-any.whl
--find-links ./wheels
-c constraints.txt
-r other.txt
-e ./src/pkg
-e git+https://git.example/y.git@v1#egg=y
https://example.com/x-1.0-py3-none-any.whl
--find-links=https://pypi.example/simple
-rbase.txt
# a comment naming ./nope.whl
gunicorn  # ./not-this.whl
"""
TREE = ("100644 blob aaa\twheels/core-0.6.0-py3-none-any.whl\n100644 blob bbb\tother.txt\n"
        "100644 blob ccc\tsrc/pkg/pyproject.toml\n100644 blob ddd\tREADME.md\n")


def test_local_references_are_the_repository_paths_requirements_name():
    assert releases.local_references(REAL_REQUIREMENTS) == [
        "base.txt", "constraints.txt", "other.txt", "src/pkg", "wheels", "wheels/core-0.6.0-py3-none-any.whl"]
    assert releases.local_references("Django==5.2\n/opt/wheels/x.whl\n-r ../outside.txt\n") == []


def test_the_venv_key_covers_every_local_file_the_requirements_name():
    key = releases.requirements_digest(REAL_REQUIREMENTS.encode(), "python3", TREE)
    # A wheel rebuilt with the same name and version, or a changed local project: a new venv.
    assert releases.requirements_digest(REAL_REQUIREMENTS.encode(), "python3", TREE.replace("aaa", "aab")) != key
    assert releases.requirements_digest(REAL_REQUIREMENTS.encode(), "python3", TREE.replace("ccc", "ccd")) != key
    # A file the requirements do not name changes nothing; nor does the tree for requirements without local paths.
    assert releases.requirements_digest(REAL_REQUIREMENTS.encode(), "python3", TREE.replace("ddd", "dde")) == key
    plain = b"Django==5.2\n"
    assert releases.requirements_digest(plain, "python3", TREE) == releases.requirements_digest(plain, "python3")
