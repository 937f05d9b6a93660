"""Backoff: exact sequences with an injected random source, bounds as properties."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kisi_gateway.core.backoff import (
    MAX_RETRY_AFTER_S,
    SQS_MAX_DELAY_S,
    SQS_MAX_VISIBILITY_S,
    BackoffPolicy,
    Expire,
    RetryAt,
    full_jitter,
    parse_retry_after,
    schedule_retry,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86_400.0


def top(_: float = 0.0) -> float:
    return 1.0


def test_full_jitter_doubles_up_to_the_cap() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=20.0)
    assert [full_jitter(n, policy, top) for n in range(7)] == [1, 2, 4, 8, 16, 20, 20]
    assert full_jitter(3, policy, lambda: 0.5) == 4.0
    assert full_jitter(10_000, policy, top) == 20.0  # no overflow


def test_exact_schedule_with_fixed_random() -> None:
    policy = BackoffPolicy(base_s=2.0, cap_s=3600.0)
    delays = [
        schedule_retry(n, policy, now=NOW, deadline=NOW + DAY, rng=top, first=n == 0)
        for n in range(12)
    ]
    assert [d.delay_s for d in delays if isinstance(d, RetryAt)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600,
    ]


def test_minimum_delay_floors_a_zero_draw() -> None:
    result = schedule_retry(0, BackoffPolicy(), now=NOW, deadline=NOW + 60, rng=lambda: 0.0,
                            first=True)
    assert result == RetryAt(delay_s=1, at=NOW + 1)


def test_first_delay_is_bounded_by_sqs_delay_seconds() -> None:
    policy = BackoffPolicy(base_s=1000.0, cap_s=5000.0)
    first = schedule_retry(0, policy, now=NOW, deadline=NOW + DAY, rng=top, first=True)
    later = schedule_retry(0, policy, now=NOW, deadline=NOW + DAY, rng=top, first=False)
    assert first == RetryAt(delay_s=SQS_MAX_DELAY_S, at=NOW + SQS_MAX_DELAY_S)
    assert later == RetryAt(delay_s=1000, at=NOW + 1000)


def test_retry_after_is_a_lower_bound() -> None:
    result = schedule_retry(0, BackoffPolicy(), now=NOW, deadline=NOW + 600, rng=top,
                            first=True, retry_after_s=42.2)
    assert result == RetryAt(delay_s=43, at=NOW + 43)


def test_delay_past_deadline_expires() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=8.0)
    assert schedule_retry(3, policy, now=NOW, deadline=NOW + 5, rng=top, first=False) == Expire(
        "deadline"
    )
    assert schedule_retry(
        0, policy, now=NOW, deadline=NOW + 30, rng=top, first=True, retry_after_s=60
    ) == Expire("retry_after_past_deadline")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),  # NOW + 2 minutes
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # in the past
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # RFC 850, obsolete but allowed
        ("Tue Nov 14 22:14:20 2023", None),  # asctime has no zone: not trusted
        ("Mon, 99 Foo 2023 99:99:99 GMT", None),
        ("99999999999", MAX_RETRY_AFTER_S),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


policies = st.builds(
    BackoffPolicy,
    base_s=st.floats(0.01, 1000),
    cap_s=st.floats(1000, SQS_MAX_VISIBILITY_S),
    min_delay_s=st.floats(0, 10),
)


@given(
    retry_index=st.integers(0, 200),
    policy=policies,
    draw=st.floats(0, 1, exclude_max=True),
    deadline_in=st.floats(0, 14 * DAY),
    retry_after=st.none() | st.floats(0, 10 * DAY),
    first=st.booleans(),
)
def test_delays_respect_sqs_limits_deadline_and_retry_after(
    retry_index, policy, draw, deadline_in, retry_after, first
) -> None:
    result = schedule_retry(retry_index, policy, now=NOW, deadline=NOW + deadline_in,
                            rng=lambda: draw, first=first, retry_after_s=retry_after)
    if isinstance(result, Expire):
        wanted = max(draw * min(policy.cap_s, policy.base_s * 2.0 ** min(retry_index, 62)),
                     policy.min_delay_s, retry_after or 0)
        assert NOW + math.ceil(wanted) > NOW + deadline_in
        return
    assert result.delay_s >= 1 or policy.min_delay_s == 0
    assert result.delay_s <= (SQS_MAX_DELAY_S if first else SQS_MAX_VISIBILITY_S)
    assert result.at <= NOW + deadline_in
    assert result.at == NOW + result.delay_s
    limit = SQS_MAX_DELAY_S if first else SQS_MAX_VISIBILITY_S
    if retry_after is not None and retry_after <= limit:
        assert result.delay_s >= retry_after


@given(st.text(max_size=40), st.floats(0, 2e9))
def test_parse_retry_after_never_raises_and_is_bounded(header: str, now: float) -> None:
    value = parse_retry_after(header, now)
    assert value is None or 0 <= value <= MAX_RETRY_AFTER_S
