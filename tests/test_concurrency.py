"""One pipeline called from many threads: every good request gets its sequential result, every bad one its own error."""

import threading

import pytest

from hybrid.errors import HybridError

GOOD = [
    ("The history of Rome", {"max_new_tokens": 8, "refine_steps": 2}),
    ("A short story about a cat", {"max_new_tokens": 12, "refine_steps": 1, "strength": 0.3}),
    ("Rivers of Europe", {"max_new_tokens": 6, "refine_steps": 0}),
    ("Ships and the sea", {"max_new_tokens": 10, "refine_steps": 2, "mode": "diffusion"}),
    ("Mountains", {"max_new_tokens": 9, "refine_steps": 3, "select": "random", "seed": 4}),
    ("The moon landing", {"max_new_tokens": 7, "refine_steps": 2, "temperature": 0.8, "seed": 1}),
]


class Boom(Exception):
    pass


def explode(tokens):
    raise Boom("a callback failed half way through drafting")


BAD = [  # (prompt, settings, what the error must say)
    ("Bad setting", {"max_new_token": 8}, "unknown setting 'max_new_token'"),
    ("Bad strength", {"max_new_tokens": 8, "strength": 1.5}, "strength must be in"),
    ("", {"max_new_tokens": 8}, "empty"),
    ("Bad mode", {"max_new_tokens": 8, "mode": "sideways"}, "unknown mode 'sideways'"),
    ("Failing callback", {"max_new_tokens": 8, "callback_on_token": explode}, "a callback failed"),
]


def call(pipe, index):
    """Request `index` of a thread's ten: mostly good ones in mixed settings, every fourth a bad one."""
    if index % 4 == 3:
        prompt, settings, _ = BAD[index % len(BAD)]
        return pipe(prompt, **settings)
    prompt, settings = GOOD[index % len(GOOD)]
    if index % 5 == 4:  # the draft stage alone takes the same lock
        return pipe.draft(prompt, max_new_tokens=settings["max_new_tokens"]).texts[0]
    if index % 7 == 6:  # and so does streaming
        return list(pipe.stream(prompt, **settings))[-1].result
    return pipe(prompt, **settings)


def outcome(pipe, index):
    try:
        result = call(pipe, index)
    except (HybridError, Boom) as exc:
        return ("error", str(exc))
    return ("ok", result if isinstance(result, str) else (result.text, result.token_ids, result.draft_text))


def test_eight_threads_of_ten_requests_match_their_sequential_results(tiny_pipeline):
    threads, requests = 8, 10
    jobs = [(t, (t * 3 + i) % 35) for t in range(threads) for i in range(requests)]  # each thread its own mix
    expected = {index: outcome(tiny_pipeline, index) for _, index in jobs}
    got: dict[tuple[int, int], tuple] = {}
    start = threading.Barrier(threads)

    def worker(thread):
        start.wait()
        for position, (t, index) in enumerate(jobs):
            if t == thread:
                got[(thread, position)] = outcome(tiny_pipeline, index)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(got) == threads * requests
    bad = 0
    for (thread, position), result in got.items():
        index = jobs[position][1]
        assert result == expected[index], (thread, index)
        if index % 4 == 3:
            bad += 1
            assert result[0] == "error" and BAD[index % len(BAD)][2] in result[1]
    assert bad >= 8


def test_a_failed_call_leaves_the_pipeline_as_it_was(tiny_pipeline):
    before = tiny_pipeline("The history of Rome", max_new_tokens=8, refine_steps=2)
    with pytest.raises(Boom):
        tiny_pipeline("The history of Rome", max_new_tokens=8, refine_steps=2, callback_on_token=explode)
    after = tiny_pipeline("The history of Rome", max_new_tokens=8, refine_steps=2)
    assert after.token_ids == before.token_ids
    free = []
    other = threading.Thread(target=lambda: free.append(tiny_pipeline.lock.acquire(blocking=False)))
    other.start(), other.join()
    assert free == [True]  # the lock was released after the error
