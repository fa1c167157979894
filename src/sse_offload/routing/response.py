"""The response side, pure: response headers into vars, then the response and final chains.

The app-integration issue calls :func:`respond` with the backend's status and headers;
the front resource calls it for the responses the gateway makes itself; ``sse-offload
explain`` calls it with ``--status``/``--response-header``. One code path for all three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sse_offload.config.model import Config
from sse_offload.routing.engine import run_chain
from sse_offload.routing.outcomes import Break, Continue, Offload, Outcome
from sse_offload.routing.state import RequestState


def take_response_header(config: Config, state: RequestState, name: str, value: str) -> bool:
    """Apply ``del-header``/``delheader``, ``pull-header`` and ``collect-header`` to one
    response header as it is added (as uWSGI does); return True when it is to be sent.

    A deleted header is dropped and not collected; the first matching ``pull-header`` sets
    its var and drops the header; every matching ``collect-header`` sets its var and the
    header is sent. Names match case-insensitively; values are stored verbatim.
    """
    lower = name.lower()
    if lower in config.del_headers or lower in state.del_headers:
        return False
    mappings = [m for m in config.header_vars if m.lower == lower]
    for mapping in mappings:
        if mapping.pull:
            state.vars[mapping.var] = value
            return False
    for mapping in mappings:
        state.vars[mapping.var] = value
    return True


def response_headers(
    config: Config, state: RequestState, headers: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Apply :func:`take_response_header` to each header in order; return those to send."""
    return [(n, v) for n, v in headers if take_response_header(config, state, n, v)]


def added_headers(config: Config, state: RequestState) -> list[tuple[str, str]]:
    """The ``add-header`` lines, then the ``addheader:`` ones: appended to every response,
    never collected nor pulled (uWSGI appends them as raw lines when writing the head)."""
    return [(h.name, h.value) for h in config.add_headers] + list(state.add_headers)


def final_headers(
    config: Config, state: RequestState, headers: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The head to write: ``headers`` less any removed since they were taken (a
    ``delheader:`` in the response chain), plus :func:`added_headers`."""
    dropped = state.del_headers
    kept = [(n, v) for n, v in headers if n.lower() not in dropped] if dropped else list(headers)
    return kept + added_headers(config, state)


@dataclass(frozen=True)
class ResponseDecision:
    """What the response side decided for one response.

    - ``headers``: the head to send (pulled and deleted headers gone, added ones in);
    - ``response``, ``final``: the outcomes of the two chains (``Continue(None)`` when a
      chain is empty);
    - ``offload``: the stream to start, if any. From the response chain the defaults
      replace the app's headers (``replace_headers``); from the final chain the app's
      status and headers are kept (docs/architecture.md, difference 7). None when the
      request is already a stream.
    - ``discard_body``: the response chain ended with BREAK (uWSGI ignores the body then).
    """

    status: int
    headers: list[tuple[str, str]]
    response: Outcome
    final: Outcome
    offload: Offload | None
    replace_headers: bool
    discard_body: bool


def respond(
    config: Config,
    state: RequestState,
    status: int,
    headers: Iterable[tuple[str, str]],
) -> ResponseDecision:
    """Run the response side for a response of ``status`` with ``headers``.

    Headers are taken one by one first (so ``collect-header``/``pull-header`` vars exist
    when the chains run), then the response chain runs, then the final chain. An offload
    in the final chain is ignored when the response chain, or the request chain before it
    (``state.streaming``), already made the request a stream.
    """
    state.status = status
    kept = response_headers(config, state, headers)
    response = run_chain(config.response_rules, state) if config.response_rules else Continue(None)
    offload: Offload | None = None
    replace = False
    if isinstance(response, Offload) and not state.streaming:
        offload, replace = response, True
        state.streaming = True
    final = run_chain(config.final_rules, state) if config.final_rules else Continue(None)
    if isinstance(final, Offload) and not state.streaming:
        offload = final
        state.streaming = True
    return ResponseDecision(
        status=status,
        headers=final_headers(config, state, kept),
        response=response,
        final=final,
        offload=offload,
        replace_headers=replace,
        discard_body=isinstance(response, Break),
    )
