#!/usr/bin/env python3
"""Rules benchmarks (issue 3, acceptance 5): parsing a 1,000-rule file, and the cost per
request of walking 100 rules that do not match.

    python benchmarks/rules_bench.py [--rules 1000] [--chain 100] [--repeat 5]

Prints a markdown table. Parsing includes the ini reader, the pyparsing grammars, regex
compilation and the cross-rule checks, as start-up and ``sse-offload check`` run them. The
per-request figure is ``run_chain`` alone (what the front resource adds per request: the
request vars and the response side, are measured separately on the same line).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sse_offload.config import parse_rules_text
from sse_offload.routing import RequestState, cgi_vars, respond, run_chain

#: A realistic mix of rule forms; each line is made unique by its number.
FORMS = (
    "route = ^/feed/{i}/(\\d+)$ sse:feed-{i}-$1",
    "route-if = equal:${{REQUEST_METHOD}};POST{i} return:405",
    "route-host = ^host{i}\\.example\\.org$ goto:label{next}",
    "route-label = label{i}",
    "route-if-not = empty:${{qs[ch{i}]}} sse:${{qs[ch{i}]}}",
    "route-qs = (^|&)v{i}=1 addheader:X-V{i}: 1",
    "route-if = startswith:${{PATH_INFO}};/api/{i}/ log:api {i} ${{REMOTE_ADDR}}",
    "route-user-agent = Bot{i} break:403",
    "final-route-status = {status} log:status {i}",
    "route-if = regexp:${{PATH_INFO}};^/users/{i}/(\\w+)$ sse:user-{i}-$1",
)


def rules_file(count: int) -> str:
    lines = ["[uwsgi]"]
    for i in range(count):
        lines.append(FORMS[i % len(FORMS)].format(i=i, next=i + 1, status=200 + i % 300))
    return "\n".join(lines) + "\n"


def non_matching_chain(count: int) -> str:
    """``count`` request rules, none of which matches ``GET /whattimeisit``."""
    lines = ["[uwsgi]"]
    forms = [f for f in FORMS if not f.startswith("final-")]
    for i in range(count):
        lines.append(forms[i % len(forms)].format(i=i, next=i + 1, status=200))
    return "\n".join(lines) + "\n"


def best(seconds: list[float]) -> float:
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    text = rules_file(args.rules)
    parse_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        config = parse_rules_text(text, "bench.ini", {})
        parse_times.append(time.perf_counter() - start)
    counted = len(config.request_rules) + len(config.final_rules)

    chain = parse_rules_text(non_matching_chain(args.chain), "chain.ini", {})
    rules = chain.request_rules
    base = cgi_vars(b"GET", b"/whattimeisit?x=1", b"HTTP/1.1",
                    [(b"Host", b"localhost:9090"), (b"User-Agent", b"curl/8.5"),
                     (b"Accept", b"text/event-stream")],
                    remote_addr="127.0.0.1", remote_port="50000", server_port="9090")

    def one_request() -> object:
        return run_chain(rules, RequestState(dict(base)))

    assert one_request().rule is None, "a rule matched: the chain is not all non-matching"
    number = 2000
    per_request = [t / number for t in timeit.repeat(one_request, number=number,
                                                     repeat=args.repeat)]
    empty = [t / number for t in timeit.repeat(
        lambda: run_chain((), RequestState(dict(base))), number=number, repeat=args.repeat)]
    building = [t / number for t in timeit.repeat(
        lambda: cgi_vars(b"GET", b"/whattimeisit?x=1", b"HTTP/1.1",
                         [(b"Host", b"localhost:9090"), (b"User-Agent", b"curl/8.5")]),
        number=number, repeat=args.repeat)]
    response = [t / number for t in timeit.repeat(
        lambda: respond(chain, RequestState(dict(base)), 200, [("Content-Type", "text/plain")]),
        number=number, repeat=args.repeat)]

    print(f"Python {sys.version.split()[0]}; best of {args.repeat}\n")
    print("| measurement | figure |")
    print("|---|---|")
    print(f"| parse a {args.rules}-rule file ({counted} rules, "
          f"{len(text.splitlines())} lines) | {best(parse_times) * 1000:.0f} ms "
          f"(median {statistics.median(parse_times) * 1000:.0f} ms) |")
    walk = best(per_request) - best(empty)
    conditions = sum(1 for r in rules if r.condition is not None)
    labels = sum(1 for r in rules if r.label is not None)
    print(f"| walk {args.chain} non-matching request rules ({conditions} conditions, "
          f"{len(rules) - conditions - labels} regexes on 4 subjects, {labels} labels) | "
          f"{best(per_request) * 1e6:.1f} µs per request "
          f"({walk / args.chain * 1e9:.0f} ns per rule) |")
    regex_rules = parse_rules_text(
        "[uwsgi]\n" + "".join(f"route = ^/feed/{i}/(\\d+)$ sse:f{i}-$1\n"
                              for i in range(args.chain)), "regex.ini", {}
    ).request_rules
    regex_only = [t / number for t in timeit.repeat(
        lambda: run_chain(regex_rules, RequestState(dict(base))), number=number,
        repeat=args.repeat)]
    print(f"| walk {args.chain} non-matching `route = REGEX` rules | "
          f"{best(regex_only) * 1e6:.1f} µs per request |")
    print(f"| an empty chain (state set-up) | {best(empty) * 1e6:.2f} µs |")
    print(f"| build the request vars (cgi_vars) | {best(building) * 1e6:.1f} µs |")
    print(f"| response side with no response rules | {best(response) * 1e6:.1f} µs |")


if __name__ == "__main__":
    main()
