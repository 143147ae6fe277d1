"""Where the lanes of a step compute: side by side in their processes, or in turn here.

    placement = Placement()              # what ProcessLanes uses unless told otherwise
    way = placement.choose(kind)         # SPREAD or HERE for the next run of this kind
    ...                                  # the run, done that way, timed
    placement.record(kind, way, seconds)

``ProcessLanes`` runs lane 0 in the calling process and lanes 1.. in processes of their own,
which compute side by side when each has a core. Beside a program that keeps a core busy
they do not: on two cores, Linux leaves the busy program a core of its own and puts both our
lanes on the other, where they take turns (measured: the neighbour ran on 0.88-0.94 of a
core, our two lanes together on 1.00-1.03, and a default step took 1.0-1.4x the time of the
same lanes computed one after the other in one process, which the neighbour leaves a core).
The lanes can compute in turn in the calling process instead, lane after lane on the model
itself: the same slices, generators and kernels, and the gradients added in lane order, so
the same bits either way; only the time differs, and only a measurement tells which way is
faster now.

So ``Placement`` measures. Each kind of run (the function, the batch's size) keeps the way it
has chosen (first ``SPREAD``) and the wall times of its last runs; after ``FIRST_WAIT`` runs
it tries the other way for ``TRIAL_RUNS`` runs, and changes if the trial's mean is below
``MARGIN`` times the chosen way's. Means, not medians: beside two busy programs, lanes in
turn here took 20 ms in some runs and 45-80 in others where lanes side by side took a
steady 35-37, and what a run of many steps pays is the mean. A trial that loses doubles the
wait before the next (up to ``LONGEST_WAIT`` runs), so on a quiet machine the trials of the
slower way cost a few runs in a thousand; a change starts the waits again from
``FIRST_WAIT``, so a neighbour that comes or goes is noticed within tens of runs after a
change, and within ``LONGEST_WAIT`` runs after a long quiet or busy stretch.
``Placement(SPREAD)`` or ``Placement(HERE)`` fixes the way (benchmarks, tests).
"""

import statistics
from collections import deque

SPREAD = "spread"  # lanes 1.. in their processes, side by side with lane 0
HERE = "here"  # every lane in the calling process, one after the other


class Placement:
    """Chooses, run by run, where the lanes of each kind of run compute, from the wall times
    of that kind's recent runs (given to ``record``)."""

    TRIAL_RUNS = 4  # runs of the other way in a trial
    RECENT = 8  # runs of the chosen way whose mean it is measured by
    FIRST_WAIT = 16  # runs of a kind before its first trial, and after a change of way
    LONGEST_WAIT = 512  # the wait doubles after each trial that loses, up to this
    MARGIN = 0.95  # a trial wins when its mean is below this share of the chosen way's

    def __init__(self, fixed: str | None = None):
        if fixed not in (None, SPREAD, HERE):
            raise ValueError(
                f"Placement: fixed must be None, {SPREAD!r} or {HERE!r}, got {fixed!r}"
            )
        self.fixed = fixed
        self._kinds: dict = {}

    def choose(self, kind) -> str:
        """The way the next run of ``kind`` (any hashable) computes."""
        if self.fixed:
            return self.fixed
        state = self._kinds.setdefault(kind, _Kind(self.FIRST_WAIT))
        return state.other() if state.wait == 0 else state.way

    def record(self, kind, way: str, seconds: float) -> None:
        """A run of ``kind`` done ``way`` (as ``choose`` said) took ``seconds``."""
        if self.fixed:
            return
        state = self._kinds[kind]
        if way == state.way:
            state.recent.append(seconds)
            state.wait = max(0, state.wait - 1)
            return
        state.trial.append(seconds)
        if len(state.trial) < self.TRIAL_RUNS:
            return
        if statistics.fmean(state.trial) < self.MARGIN * statistics.fmean(state.recent):
            state.way, state.gap = way, self.FIRST_WAIT
            state.recent = deque(state.trial, maxlen=self.RECENT)
        else:
            state.gap = min(2 * state.gap, self.LONGEST_WAIT)
        state.trial, state.wait = [], state.gap

    def way(self, kind) -> str:
        """The way ``kind`` has chosen (``SPREAD`` for a kind not run yet)."""
        if self.fixed:
            return self.fixed
        state = self._kinds.get(kind)
        return SPREAD if state is None else state.way


class _Kind:
    """What ``Placement`` knows of one kind of run."""

    def __init__(self, wait: int):
        self.way = SPREAD
        self.recent: deque = deque(maxlen=Placement.RECENT)  # the chosen way's last times
        self.trial: list = []  # the other way's times in the trial under way
        self.gap = wait  # runs between trials
        self.wait = wait  # runs of the chosen way before the next trial

    def other(self) -> str:
        return HERE if self.way == SPREAD else SPREAD
