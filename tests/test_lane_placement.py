"""Where the lanes compute: the choice follows the measured times, and changes back."""

import pytest

from fcn_scratch.lane_placement import HERE, SPREAD, Placement


def drive(placement, times, runs, kind="step") -> list:
    """``runs`` runs of ``kind``, each taking ``times[way]`` (a dict, or a function of the
    run's index giving one); the ways chosen, in order."""
    ways = []
    for i in range(runs):
        way = placement.choose(kind)
        now = times(i) if callable(times) else times
        placement.record(kind, way, now[way])
        ways.append(way)
    return ways


def starts_of_trials(ways, chosen) -> list:
    """The run indices where a trial of the way other than ``chosen`` starts."""
    return [i for i, w in enumerate(ways) if w != chosen and (i == 0 or ways[i - 1] == chosen)]


def test_a_fixed_way_is_kept_whatever_the_times():
    for way in (SPREAD, HERE):
        placement = Placement(way)
        assert set(drive(placement, {SPREAD: 1.0, HERE: 9.0}, 200)) == {way}
        assert set(drive(placement, {SPREAD: 9.0, HERE: 1.0}, 200)) == {way}
        assert placement.way("step") == way


def test_a_fixed_way_must_be_one_of_the_two():
    with pytest.raises(ValueError, match="Placement: fixed must be None, 'spread' or 'here'"):
        Placement("threads")


def test_the_slower_way_is_tried_ever_more_rarely():
    """Spread faster: trials of HERE after 16 runs, then waits of 32, 64, ... up to 512."""
    placement = Placement()
    ways = drive(placement, {SPREAD: 1.0, HERE: 1.6}, 3000)
    assert ways[:16] == [SPREAD] * 16 and placement.way("step") == SPREAD
    starts = starts_of_trials(ways, SPREAD)
    gaps = [b - a - Placement.TRIAL_RUNS for a, b in zip(starts, starts[1:])]
    assert starts[0] == Placement.FIRST_WAIT
    assert gaps[:5] == [32, 64, 128, 256, 512] and set(gaps[5:]) == {Placement.LONGEST_WAIT}
    assert all(ways[s : s + Placement.TRIAL_RUNS] == [HERE] * 4 for s in starts)
    assert ways.count(HERE) == Placement.TRIAL_RUNS * len(starts)  # the trials' runs only


def test_a_faster_way_is_taken_after_its_first_trial():
    placement = Placement()
    ways = drive(placement, {SPREAD: 1.0, HERE: 0.7}, 100)
    first = Placement.FIRST_WAIT + Placement.TRIAL_RUNS
    assert ways[:first] == [SPREAD] * 16 + [HERE] * 4
    assert placement.way("step") == HERE
    # from then on HERE, with trials of SPREAD after 16 runs, then 32 (it loses)
    assert starts_of_trials(ways[first:], HERE) == [16, 16 + 4 + 32]


def test_a_trial_must_win_by_the_margin():
    placement = Placement()
    drive(placement, {SPREAD: 1.0, HERE: 0.97}, 500)
    assert placement.way("step") == SPREAD
    drive(placement, {SPREAD: 1.0, HERE: 0.9}, 600)
    assert placement.way("step") == HERE


def test_a_neighbour_that_comes_and_goes_is_followed():
    """Spread fast for 2000 runs, then HERE fast (a busy neighbour) for 1000, then spread
    again: each change is taken within the longest wait and a trial."""

    def times(i):
        busy = 2000 <= i < 3000
        return {SPREAD: 2.0 if busy else 1.0, HERE: 1.5}

    placement = Placement()
    ways = drive(placement, times, 4000)
    taken = Placement.LONGEST_WAIT + Placement.TRIAL_RUNS
    assert ways[2000 + taken :][: 1000 - taken].count(SPREAD) < 0.02 * 1000
    assert ways[3000 + taken :].count(HERE) < 0.02 * 1000
    assert ways[1000:2000].count(HERE) < 0.01 * 1000
    # the change restarts the waits: the first trial of SPREAD comes 16 runs after it
    won = next(i for i in range(2000, 3000) if ways[i : i + 5] == [HERE] * 5)
    changed = won + Placement.TRIAL_RUNS
    assert ways[changed : changed + 16] == [HERE] * 16 and ways[changed + 16] == SPREAD


def test_a_way_is_judged_by_its_mean_time():
    """HERE fast in three runs of four and slow in the fourth: its median is below
    SPREAD's time, its mean above; what many runs pay is the mean, so SPREAD stays."""
    placement = Placement()
    runs = iter(range(10**6))

    def times(i):
        here = 3.0 if next(runs) % 4 == 0 else 0.6  # mean 1.2
        return {SPREAD: 1.0, HERE: here}

    ways = drive(placement, times, 2000)
    assert ways.count(HERE) < 0.02 * len(ways) and placement.way("step") == SPREAD


def test_each_kind_chooses_for_itself():
    placement = Placement()
    for _ in range(100):
        for kind, times in (
            ("train", {SPREAD: 1.0, HERE: 0.6}),
            ("eval", {SPREAD: 0.5, HERE: 0.9}),
        ):
            way = placement.choose(kind)
            placement.record(kind, way, times[way])
    assert placement.way("train") == HERE and placement.way("eval") == SPREAD
    assert placement.way("never run") == SPREAD
