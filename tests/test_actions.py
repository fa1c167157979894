"""Every action with its edge cases, through the engine."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from passlib.hash import apr_md5_crypt, ldap_sha1

from rules_helpers import load, request_state, run, summary
from sse_offload.config import RulesError
from sse_offload.config.actions import ACTION_ALIASES, ACTIONS
from sse_offload.routing import PendingAuth, RequestState, run_chain
from sse_offload.routing.engine import HANDLERS as ENGINE_ACTIONS

# (rules, path, vars, expected summary): the request chain's outcome.
OUTCOMES: list[tuple[str, str, dict[str, str], tuple[object, ...]]] = [
    # sse / sseraw: arguments expanded
    ("route = ^/(\\w+) sse:ch-$1\n", "/news", {}, ("offload", "sse", "ch-news", 2)),
    ("route = ^/ sseraw:${qs[c]}\n", "/?c=a", {}, ("offload", "sseraw", "a", 2)),
    # continue = last: stop, go on with the request
    ("route = ^/a continue:\nroute = ^/ return:500\n", "/a", {}, ("continue", 2)),
    ("route = ^/a last:\nroute = ^/ return:500\n", "/a", {}, ("continue", 2)),
    ("route = ^/a last:\nroute = ^/ return:500\n", "/b", {}, ("return", 500, 3)),
    # break and break:STATUS (not translated)
    ("route = ^/ break:\n", "/", {}, ("break", None, 2)),
    ("route = ^/ break:503 Slow Down\n", "/", {}, ("break", 503, 2)),
    # return = break-with-status; a status without a phrase is a plain BREAK
    ("route = ^/ return:404\n", "/", {}, ("return", 404, 2)),
    ("route = ^/ break-with-status:451\n", "/", {}, ("return", 451, 2)),
    ("route = ^/ return:299\n", "/", {}, ("break", None, 2)),
    # redirect = redirect-302, redirect-permanent = redirect-301; translated
    ("route = ^/(.*) redirect:https://x.test/$1\n", "/a/b", {},
     ("redirect", 302, "https://x.test/a/b", 2)),
    ("route = ^/ redirect-302:/login?next=${REQUEST_URI}\n", "/p?q=1", {},
     ("redirect", 302, "/login?next=/p?q=1", 2)),
    ("route = ^/ redirect-permanent:/new\n", "/", {}, ("redirect", 301, "/new", 2)),
    ("route = ^/ redirect-301:/new\n", "/", {}, ("redirect", 301, "/new", 2)),
    # rewrite: NEXT with the new PATH_INFO; rewrite-last: CONTINUE
    ("route = ^/old rewrite:/new\nroute = ^/new return:200\n", "/old", {}, ("return", 200, 3)),
    ("route = ^/old rewrite-last:/new\nroute = ^/new return:200\n", "/old", {}, ("continue", 2)),
    ("route = ^/old rewrite:/new\nroute = ^/old return:200\n", "/old", {}, ("continue", None)),
    # setpathinfo / setmethod / seturi change what later rules see
    ("route-run = setpathinfo:/x\nroute = ^/x$ return:200\n", "/y", {}, ("return", 200, 3)),
    ("route-run = setmethod:PUT\nroute-if = equal:${REQUEST_METHOD};PUT return:200\n", "/",
     {}, ("return", 200, 3)),
    ("route-run = seturi:/u?1\nroute-uri = ^/u\\?1$ return:200\n", "/", {}, ("return", 200, 3)),
    # addvar: later rules see the var; the name is literal, the value translated
    ("route = ^/(.*) addvar:CH=c-$1\nroute-run = sse:${CH}\n", "/z", {},
     ("offload", "sse", "c-z", 3)),
    ("route-run = addvar:HTTP_HOST=forged\nroute-host = ^forged$ return:200\n", "/", {},
     ("return", 200, 3)),
    # log / logvar / donotlog / addheader / delheader go on with the next rule
    ("route-run = log:x\nroute-run = logvar:k=v\nroute-run = donotlog:\n"
     "route-run = addheader:A: b\nroute-run = delheader:C\nroute-run = remheader:D\n"
     "route-run = return:200\n", "/", {}, ("return", 200, 8)),
]


@pytest.mark.parametrize(("rules", "path", "vars", "expected"), OUTCOMES)
def test_outcome(rules: str, path: str, vars: dict[str, str], expected: tuple[object, ...]) -> None:
    outcome, _ = run(rules, path, **vars)
    assert summary(outcome) == expected


def test_every_action_has_an_engine_handler_and_a_test() -> None:
    assert set(ENGINE_ACTIONS) == set(ACTIONS)
    tested = "".join(row[0] for row in OUTCOMES) + Path(__file__).read_text()
    for name in (*ACTIONS, *ACTION_ALIASES):
        assert f"{name}:" in tested, name


# --- goto ---------------------------------------------------------------------------------


GOTO = """\
route-run = goto:${qs[to]}
route-run = return:201
route-label = two
route-run = return:202
route-label = three
route-run = log:at three
route-run = return:203
"""


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("two", ("return", 202, 5)),  # forward to a label: rules before it are skipped
        ("three", ("return", 203, 8)),
        ("3", ("return", 202, 5)),  # a number is a rule position (labels count)
        ("4", ("return", 203, 8)),
        ("6", ("return", 203, 8)),
        ("99", ("continue", None)),  # past the end: the chain ends
        ("0", ("break", None, 2)),  # backward (itself): BREAK
        ("nolabel", ("break", None, 2)),  # not a label: atoi -> 0 -> backward
        ("", ("break", None, 2)),
    ],
)
def test_goto(to: str, expected: tuple[object, ...]) -> None:
    outcome, state = run(GOTO, f"/?to={to}")
    assert summary(outcome) == expected
    if expected[0] == "break":
        ((level, message),) = state.logs
        assert level == "error" and '"goto" can only jump forward' in message


def test_goto_backward_to_a_label() -> None:
    rules = (
        "route-label = top\nroute-run = log:once\nroute-run = goto:top\n"
        "route-run = return:200\n"
    )
    outcome, state = run(rules)
    assert summary(outcome) == ("break", None, 4)
    assert state.logs[0] == ("info", "once")


def test_goto_label_from_a_capture() -> None:
    rules = (
        "route-host = ^(\\w+)\\. goto:$1\nroute-run = return:500\n"
        "route-label = api\nroute-run = return:201\nroute-label = www\nroute-run = return:202\n"
    )
    assert summary(run(rules, HTTP_HOST="www.example.org")[0]) == ("return", 202, 7)
    assert summary(run(rules, HTTP_HOST="api.example.org")[0]) == ("return", 201, 5)


def test_goto_searches_only_its_own_chain() -> None:
    config = load(
        "final-route-label = end\nroute-run = goto:${X}\nroute-run = return:200\n"
    )
    state = request_state(X="end")
    assert summary(run_chain(config.request_rules, state)) == ("break", None, 3)


# --- captures ($N) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        ("route = ^/(a)(b)? sse:$0|$1|$2|$3\n", "/a", "/a|a||"),
        ("route = ^/x sse:$0|$1\n", "/x/y", "/x|"),  # no groups: $0 is the whole match
        ("route-run = sse:a$1b$0c\n", "/x", "abc"),  # no regex: $N vanish
        ("route-if = equal:a;a sse:a$1b\n", "/x", "ab"),  # non-regexp condition: $N vanish
        ("route-if = regexp:${PATH_INFO};/(x) sse:$1\n", "/x", "x"),
        ("route-status = 200 sse:$1\n", "/", None),  # not a request-chain key
    ],
)
def test_dollar_n(rules: str, path: str, expected: str | None) -> None:
    outcome, _ = run(rules, path)
    if expected is None:
        assert summary(outcome) == ("continue", None)
    else:
        assert summary(outcome)[:3] == ("offload", "sse", expected)


# --- state changes ---------------------------------------------------------------------------


def test_logging_actions_fill_the_state() -> None:
    _, state = run(
        "route = ^/(.*) log:saw $1 ${qs[a]}\nroute-run = logvar:user=${qs[u]}\n"
        "route-run = donotlog:\n",
        "/p?a=1&u=ann",
    )
    assert state.logs == [("info", "saw p 1")]
    assert state.logvars == {"user": "ann"}
    assert state.donotlog


def test_header_actions_fill_the_state() -> None:
    _, state = run(
        "route-run = addheader:X-A: 1\nroute-run = addheader:X-Path:  ${PATH_INFO}\n"
        "route-run = delheader:Server\nroute-run = remheader:X-Powered-By\n"
        "route-run = addheader:${BAD}\n",
        "/p",
    )
    assert state.add_headers == [("X-A", "1"), ("X-Path", "/p")]
    assert state.del_headers == {"server", "x-powered-by"}
    ((level, message),) = state.logs  # "${BAD}" expanded to nothing: not a header line
    assert level == "error" and "not a 'Name: value' header line" in message


@pytest.mark.parametrize(
    ("target", "query", "path_info", "query_after"),
    [
        ("/new", "", "/new", ""),
        ("/new", "a=1", "/new", "a=1"),
        ("/new?b=2", "a=1", "/new", "b=2&a=1"),
        ("/new?b=2", "", "/new", "b=2"),
        ("/a%20b/../c", "", "/a%20b/../c", ""),  # as written: not decoded, not normalised
    ],
)
def test_rewrite_sets_path_info_and_query_string(
    target: str, query: str, path_info: str, query_after: str
) -> None:
    _, state = run(f"route-run = rewrite:{target}\n", f"/old?{query}" if query else "/old")
    assert state.vars["PATH_INFO"] == path_info
    assert state.vars["QUERY_STRING"] == query_after
    assert state.vars["REQUEST_URI"] == ("/old?" + query if query else "/old")


# --- static: --------------------------------------------------------------------------------


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "a.html").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "www-other").mkdir()
    (tmp_path / "www-other" / "c").write_text("c")
    (root / "out").symlink_to(tmp_path / "secret")
    return root


@pytest.mark.parametrize(
    ("template", "value", "served"),
    [
        ("{www}/a.html", "", "a.html"),
        ("{www}/${{P}}", "a.html", "a.html"),
        ("{www}/${{P}}", "sub/b.txt", "sub/b.txt"),
        ("{www}/${{P}}", "../secret", None),
        ("{www}/${{P}}", "sub/../../secret", None),
        ("{www}/${{P}}", "out", None),  # a symlink out of the directory
        ("{www}/${{P}}", "sub", None),  # a directory: no listing
        ("{www}/${{P}}", "nothing", None),
        ("{www}/${{P}}", "/etc/passwd", None),
        ("{www}/sub/${{P}}", "../a.html", None),  # outside {www}/sub/
        # "…/www" + "-other/c": the literal text is a prefix of the path, and it resolves
        # inside the literal part's directory
        ("{www}${{P}}", "-other/c", "../www-other/c"),
        ("{www}${{P}}", "/../secret", None),
        ("${{P}}", "{www}/a.html", None),  # all expanded: only under the working directory
    ],
)
def test_static_confinement(www: Path, template: str, value: str, served: str | None) -> None:
    rules = f"route-run = static:{template.format(www=www)}\n"
    outcome, _ = run(rules, P=value.format(www=www))
    assert summary(outcome)[0] == "static"
    expected = None if served is None else str((www / served).resolve())
    assert outcome.path == expected  # type: ignore[union-attr]


def test_static_literal_path_is_served_as_written(www: Path) -> None:
    outcome, _ = run(f"route-run = static:{www}/../secret\n")
    assert outcome.path == str(www.parent / "secret")  # type: ignore[union-attr]


# --- basicauth --------------------------------------------------------------------------------


def creds(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(f"amy:{apr_md5_crypt.hash('a')}\nsam:{ldap_sha1.hash('s')}\n")
    return path


BASIC = [
    # (action argument, Authorization, expected outcome, REMOTE_USER)
    ("R,ann:pw", creds("ann", "pw"), ("return", 200, 3), "ann"),
    ("R,ann:pw", creds("ann", "pwx"), ("401", "R", 2), None),
    ("R,ann:pw", creds("ann", "p"), ("401", "R", 2), None),
    ("R,ann:pw", "", ("401", "R", 2), None),
    ("R,ann:pw", "basic " + creds("ann", "pw")[6:], ("401", "R", 2), None),  # case-sensitive
    ("R,ann:pw", "Basic", ("401", "R", 2), None),
    ("R,ann:pw", "Basic %%%%", ("401", "R", 2), None),
    ("R,ann:", creds("ann", ""), ("return", 200, 3), "ann"),  # empty password
    ("R,", creds("ann", "pw"), ("401", "R", 2), None),  # no credentials: always 401
    ("My Realm,{users}", creds("amy", "a"), ("return", 200, 3), "amy"),
    ("My Realm,{users}", creds("sam", "s"), ("return", 200, 3), "sam"),
    ("My Realm,{users}", creds("sam", "a"), ("401", "My Realm", 2), None),
    ("My Realm,{users}", creds("sam", ""), ("401", "My Realm", 2), None),
    ("My Realm,{users}.missing", creds("sam", "s"), ("401", "My Realm", 2), None),
]


@pytest.mark.parametrize(("arg", "authorization", "expected", "user"), BASIC)
def test_basicauth(users: Path, arg: str, authorization: str, expected, user) -> None:
    rules = f"route-run = basicauth:{arg.format(users=users)}\nroute-run = return:200\n"
    outcome, state = run(rules, HTTP_AUTHORIZATION=authorization)
    assert summary(outcome) == expected
    assert state.vars.get("REMOTE_USER") == user


def test_basicauth_next_lets_wrong_credentials_through_but_not_missing_ones() -> None:
    rules = "route-run = basicauth-next:R,ann:pw\nroute-run = return:200\n"
    assert summary(run(rules, HTTP_AUTHORIZATION=creds("bob", "x"))[0]) == ("return", 200, 3)
    assert summary(run(rules)[0]) == ("401", "R", 2)


def test_an_authenticated_request_skips_later_basicauth() -> None:
    rules = (
        "route-run = basicauth-next:R,ann:pw\nroute-run = basicauth:R,bob:x\n"
        "route-run = return:200\n"
    )
    outcome, state = run(rules, HTTP_AUTHORIZATION=creds("ann", "pw"))
    assert summary(outcome) == ("return", 200, 4)
    assert state.vars["REMOTE_USER"] == "ann"


def test_basicauth_missing_file_is_logged(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    outcome, state = run(f"route-run = basicauth:R,{missing}\n",
                         HTTP_AUTHORIZATION=creds("a", "b"))
    assert summary(outcome) == ("401", "R", 2)
    assert any(f"htpasswd file {missing}" in message for _, message in state.logs)


class SlowVerifier:
    """Says a hash is needed until called with slow=True (as the gateway's store does)."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def check(self, path: str, user: str, password: str, *, slow: bool) -> bool | None:
        self.calls.append(slow)
        return (password == "right") if slow else None

    def take_problems(self) -> list[str]:
        return []


@pytest.mark.parametrize(("password", "expected"), [("right", ("return", 200, 4)),
                                                     ("wrong", ("401", "R", 3))])
def test_basicauth_suspends_for_a_slow_hash_and_resumes(password: str, expected) -> None:
    config = load("route-run = log:before\nroute-run = basicauth:R,/f\nroute-run = return:200\n")
    verifier = SlowVerifier()
    state = request_state(HTTP_AUTHORIZATION=creds("u", password))
    state.verifier, state.slow_auth = verifier, False
    pending = run_chain(config.request_rules, state)
    assert isinstance(pending, PendingAuth) and pending.index == 1
    pending.verify()
    outcome = run_chain(config.request_rules, state, start=pending.index)
    assert summary(outcome) == expected
    assert verifier.calls == [False, True]  # the resumed rule used the remembered answer
    assert [m for _, m in state.logs] == ["before"]  # rules before it did not run again


# --- argument checks at load time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("^/ return:", "expected an HTTP status (100-599) after 'return:'"),
        ("^/ return:abc", "expected an HTTP status (100-599) after 'return:'"),
        ("^/ break-with-status:99", "after 'break-with-status:'"),
        ("^/ addvar:novalue", "expected NAME=VALUE after 'addvar:'"),
        ("^/ logvar:=x", "expected NAME=VALUE after 'logvar:'"),
        ("^/ addheader:NoColon", "expected 'Name: value' after 'addheader:'"),
        ("^/ basicauth:realm-only", "expected REALM,USER:PASSWORD or REALM,HTPASSWD-FILE"),
        ("^/ goto:", "expected a label or rule number after 'goto:'"),
        ("^/ delheader:", "expected a header name after 'delheader:'"),
        ("^/ redirect:", "expected an argument after 'redirect:'"),
        ("^/ static:", "expected an argument after 'static:'"),
        ("^/ rewrite:", "expected an argument after 'rewrite:'"),
    ],
)
def test_argument_errors(value: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        load(f"route = {value}\n")
    (diagnostic,) = info.value.diagnostics
    assert message in diagnostic.message
    assert diagnostic.pos is not None and diagnostic.pos.col == 9 + value.index(":") + 1


def test_return_without_a_reason_phrase_is_a_warning() -> None:
    (warning,) = load("route = ^/ return:299\n").warnings
    assert "no standard reason phrase" in warning.message


def test_plain_state_mapping_still_works_and_is_not_mutated() -> None:
    vars = {"PATH_INFO": "/a"}
    outcome = run_chain(load("route-run = addvar:X=1\nroute-run = sse:${X}\n").request_rules, vars)
    assert summary(outcome) == ("offload", "sse", "1", 3)
    assert vars == {"PATH_INFO": "/a"}
    assert isinstance(RequestState({}).uuid, str)
