"""The adaptive send rate: confirmed overloads only, CUBIC-like recovery, a floor; and the
budget's throughput when Kisi answers 429 at random (virtual time, seeded)."""

import pytest

from bench.noise import LIMIT, run
from kisi_gateway.core.ratecontrol import ControlState, RateControl

CONTROL = RateControl(confirm=2)  # beta 0.7, C 0.4, floor 30 %; two 429s confirm here


@pytest.mark.parametrize(
    ("strikes", "struck_at", "now", "busy", "overload", "rate"),
    [
        (0, None, 10.0, True, False, 5.0),  # a first 429 is only counted
        (1, 9.5, 10.0, True, True, 3.5),  # a second within 1 s: our overload
        (1, 8.9, 10.0, True, False, 5.0),  # a second 1.1 s later: two isolated ones
        (1, 9.5, 10.0, False, False, 5.0),  # the line was idle: not our rate's doing
        (5, 9.9, 10.0, False, False, 5.0),
    ],
)
def test_which_429s_lower_the_rate(
    strikes: int, struck_at: float | None, now: float, busy: bool, overload: bool, rate: float
) -> None:
    state = ControlState(5.0, strikes=strikes, struck_at=struck_at)
    after, confirmed = CONTROL.throttled(state, 5.0, now=now, busy=busy)
    assert confirmed is overload
    assert CONTROL.rate_at(after, 5.0, now) == pytest.approx(rate)


def test_exact_sequence_of_decreases_cooldown_and_recovery_in_between() -> None:
    state = ControlState(5.0)
    steps = []
    for now in (100.0, 100.1, 100.5, 100.6, 101.2, 101.3, 102.4, 102.5, 103.6, 103.7):
        state, confirmed = CONTROL.throttled(state, 5.0, now=now, busy=True)
        steps.append((confirmed, round(CONTROL.rate_at(state, 5.0, now), 3)))
    assert steps == [
        (False, 5.0), (True, 3.5),  # two 429s within 1 s: x0.7
        (False, 4.386), (False, 4.532),  # within the 1 s cooldown: counted once, recovering
        (False, 4.963), (True, 3.488),  # a pair again: x0.7 of where the curve had got to
        (False, 4.234), (True, 2.964),
        (False, 3.6), (True, 2.52),  # an overload that persists keeps lowering the rate
    ]


def test_every_request_rejected_brings_the_rate_to_its_floor_and_no_lower() -> None:
    state = ControlState(5.0)
    lowest = 5.0
    for n in range(200):  # Kisi rejects everything for 20 s
        state, _ = CONTROL.throttled(state, 5.0, now=n * 0.1, busy=True)
        lowest = min(lowest, CONTROL.rate_at(state, 5.0, n * 0.1))
    assert lowest == 1.5  # 30 % of 5/s: a trickle goes on, so a success can show recovery


def test_recovery_follows_the_cubic_curve_back_to_the_peak_and_no_further() -> None:
    state = ControlState(rate=3.5, peak=5.0, lowered_at=0.0)
    curve = [round(CONTROL.rate_at(state, 5.0, t), 3) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 60.0)]
    assert curve == [3.5, 4.532, 4.932, 5.0, 5.0, 5.0]
    assert curve == sorted(curve)  # recovery never dips


def test_an_overload_before_the_old_peak_lowers_the_peak() -> None:
    state = ControlState(rate=3.5, peak=5.0, lowered_at=0.0)
    state = ControlState(state.rate, state.peak, state.lowered_at, strikes=1, struck_at=0.9)
    after, confirmed = CONTROL.throttled(state, 5.0, now=1.0, busy=True)
    assert confirmed
    current = CONTROL.rate_at(state, 5.0, 1.0)
    assert after.peak == pytest.approx(current * 1.7 / 2)
    assert after.rate == pytest.approx(current * 0.7)


def test_a_configuration_lowered_since_clamps_the_stored_rate() -> None:
    assert CONTROL.rate_at(ControlState(5.0), 1.0, now=0.0) == 1.0
    assert CONTROL.rate_at(ControlState(0.01), 5.0, now=0.0) == 1.5


def test_by_default_three_429s_in_a_row_confirm_an_overload() -> None:
    control = RateControl()
    state = ControlState(5.0)
    confirmed = []
    for now in (10.0, 10.5, 11.4, 13.0, 13.2):
        state, overload = control.throttled(state, 5.0, now=now, busy=True)
        confirmed.append(overload)
    assert confirmed == [False, False, True, False, False]


@pytest.mark.parametrize(
    "kwargs",
    [{"beta": 1.0}, {"beta": 0.0}, {"floor_fraction": 0.0}, {"scale": 0.0}, {"confirm": 0},
     {"window_s": -1.0}],
)
def test_control_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RateControl(**kwargs)  # type: ignore[arg-type]


def test_ten_percent_random_429s_keep_throughput_above_eighty_percent_of_the_limit() -> None:
    quiet = run(0.0, duration_s=300.0)
    noisy = run(0.1, duration_s=300.0)
    assert quiet.own_429 == 0  # paced below Kisi's bucket, late wake-ups do not empty it
    assert noisy.own_429 == 0
    assert noisy.random_429 > 0.08 * noisy.attempts  # the noise was really there
    assert noisy.throughput >= 0.8 * LIMIT
    # the attempt rate did not fall at all: only the random 429s themselves are lost
    assert noisy.attempts >= 0.97 * quiet.attempts
