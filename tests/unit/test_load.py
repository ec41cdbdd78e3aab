"""The load generator's downtime figures, read from a made-up timeline of requests (no host, no HTTP)."""

from sum_tasks.testing.load import Load


def timeline(events: list[tuple[float, float, bool]], seconds: float) -> Load:
    load = Load("10.0.0.1", "acme.test")
    load.started, load.seconds = 100.0, seconds
    load.events = [(100.0 + sent, 100.0 + answered, ok) for sent, answered, ok in events]
    load.results.update("ok" if ok else "http 502" for _, _, ok in events)
    return load


def test_a_run_of_failures_and_the_gap_it_leaves():
    events = [(0.0, 0.1, True), (0.5, 0.6, False), (1.0, 1.1, False), (1.5, 1.6, False), (2.0, 2.1, True), (2.5, 2.6, False)]
    load = timeline(events, 3.0)
    assert load.failure_run()[0] == 3 and round(load.failure_run()[1], 2) == 1.1
    assert round(load.longest_gap(), 2) == 2.0
    assert load.failed == 4 and "4 of 6 requests failed, longest run 3 (1.10s)" in load.downtime()


def test_requests_that_wait_are_downtime_too():
    # Nothing failed, but for 3 s nothing was answered: a proxy held the requests while the app was away.
    events = [(0.0, 0.1, True), (0.5, 3.4, True), (1.0, 3.5, True), (3.6, 3.7, True)]
    load = timeline(events, 4.0)
    assert load.failure_run() == (0, 0.0)
    assert round(load.longest_gap(), 2) == 3.3 and round(load.slowest(), 2) == 2.9


def test_no_good_answer_at_all_is_the_whole_run():
    load = timeline([(0.0, 0.1, False), (1.0, 1.1, False)], 2.0)
    assert load.longest_gap() == 2.0 and load.failure_run()[0] == 2
