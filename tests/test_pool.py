"""The lending pool the face finders borrow their cascades and interpreters from."""

from __future__ import annotations

import threading

from emotion.faces.pool import LendingPool


def test_each_caller_at_once_borrows_its_own_and_they_are_reused():
    made = []
    pool = LendingPool(lambda key: made.append(key) or object())
    inside, release = threading.Barrier(3), threading.Event()
    borrowed = []

    def borrow() -> None:
        with pool.borrow() as item:
            borrowed.append(item)
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=borrow) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()  # both hold one now
    release.set()
    for thread in threads:
        thread.join()
    assert len(made) == 2 and borrowed[0] is not borrowed[1]
    with pool.borrow() as again:
        assert again in borrowed  # given back, lent again
    assert len(made) == 2


def test_objects_are_kept_per_key_for_the_keys_used_last_and_not_when_asked():
    pool = LendingPool(lambda key: [key], max_keys=2)
    with pool.borrow((1, 1)) as first:
        pass
    with pool.borrow((1, 1)) as same:
        assert same is first
    with pool.borrow((2, 2)), pool.borrow((3, 3)):
        pass
    with pool.borrow((1, 1)) as fresh:  # (1, 1) was used longest ago: forgotten
        assert fresh == [(1, 1)] and fresh is not first
    with pool.borrow((4, 4), keep=False) as once:
        pass
    with pool.borrow((4, 4)) as other:
        assert other is not once
