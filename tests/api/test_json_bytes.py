"""``streaming.json_bytes``: an answer's JSON (a body, an event's data), by orjson, reads back as the JSON
Starlette's ``JSONResponse`` wrote, and is JSON where ``json.dumps`` was not."""

from __future__ import annotations

import json

import numpy as np
from starlette.responses import JSONResponse

from groupqwen.api.streaming import json_bytes, sse


def test_a_body_reads_back_as_jsonresponse_wrote_it() -> None:
    body = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {"content": 'naïve 雪 " \\ \n'},
                "logprobs": {"content": [{"logprob": -1.5e-07}, {"logprob": -0.25}]},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16},
        "groupqwen": {"confidence": None, "thinking": False, "escalations": 0},
    }
    ours, theirs = json_bytes(body), bytes(JSONResponse(body).body)
    assert json.loads(ours) == json.loads(theirs) == body
    # the same bytes (compact, UTF-8 as it is) but for the exponent's form: the same number
    assert ours == theirs.replace(b"-1.5e-07", b"-1.5e-7")


def test_numpy_numbers_are_written_as_numbers() -> None:
    similarity = round(np.float64(0.876543), 4)  # numpy's round keeps numpy's type
    body = {"similarity": similarity, "score": np.float32(0.5), "n": np.int64(3)}
    assert json.loads(json_bytes(body)) == {"similarity": 0.8765, "score": 0.5, "n": 3}


def test_a_non_finite_number_is_null_in_a_body_and_in_an_event() -> None:
    """A logprob of minus infinity (a token the sampler ruled out) was ``-Infinity`` in an event, which
    JavaScript's ``JSON.parse`` refuses, and a 500 in a body: ``null`` in both now."""
    chunk = {"logprobs": {"content": [{"logprob": float("-inf")}, {"logprob": float("nan")}]}}
    assert json_bytes(chunk) == b'{"logprobs":{"content":[{"logprob":null},{"logprob":null}]}}'
    event = sse(chunk)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:], parse_constant=_refuse) == {
        "logprobs": {"content": [{"logprob": None}, {"logprob": None}]}
    }


def _refuse(name: str) -> None:
    raise AssertionError(f"not JSON: {name}")
