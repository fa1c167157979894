"""Pure parts of the app backends: the stream head, upstream addresses, uwsgi.opt, options."""

from __future__ import annotations

import re
import sys

import pytest

from rules_helpers import load
from sse_offload.answers import stream_head
from sse_offload.backends import uwsgi_compat
from sse_offload.backends.upstream import UpstreamError, parse_upstream
from sse_offload.options import ConfigurationError, Options, resolve_settings
from sse_offload.routing import RequestState


@pytest.mark.parametrize(
    ("headers", "mode", "expected"),
    [
        (
            [("Content-Type", "event/stream"), ("Cache-Control", "no-cache"), ("Foo", "Bar")],
            "sse",
            [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
             ("Foo", "Bar")],
        ),
        (
            [("Content-Type", "text/html"), ("Content-Length", "0"), ("Vary", "Cookie"),
             ("Transfer-Encoding", "chunked"), ("Connection", "close, X-Drop"), ("X-Drop", "1"),
             ("Keep-Alive", "timeout=5"), ("Content-Encoding", "gzip"), ("Trailer", "x"),
             ("Upgrade", "h2c")],
            "sse",
            [("Content-Type", "text/event-stream"), ("Vary", "Cookie")],
        ),
        ([("Foo", "Bar")], "sse", [("Content-Type", "text/event-stream"), ("Foo", "Bar")]),
        ([("Content-Type", "x/y"), ("Content-Length", "3")], "sseraw", [("Content-Type", "x/y")]),
    ],
)
def test_stream_head_keeps_the_apps_headers_less_framing(headers, mode, expected) -> None:
    assert stream_head(headers, mode) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://app:8000/", "http://app:8000"),
        ("unix:/run/gunicorn.sock", "unix:/run/gunicorn.sock"),
        ("unix:///run/g.sock", "unix:///run/g.sock"),
    ],
)
def test_upstream_addresses(text: str, expected: str) -> None:
    assert parse_upstream(text) == expected


@pytest.mark.parametrize("text", ["https://x:1", "127.0.0.1:8000", "http://x/path", "unix:"])
def test_bad_upstream_addresses(text: str) -> None:
    with pytest.raises(UpstreamError):
        parse_upstream(text)


def test_uwsgi_opt_is_bytes_lists_for_repeats_and_enable_threads() -> None:
    opt = uwsgi_compat.options_dict([("threads", "4"), ("env", "A=1"), ("env", "B=2")])
    assert opt == {"threads": b"4", "env": [b"A=1", b"B=2"], "enable-threads": True}


def test_add_var_binds_to_the_calling_threads_request() -> None:
    state = RequestState({})
    with pytest.raises(ValueError):
        uwsgi_compat.add_var("X-SSE-OFFLOAD", "clock")
    uwsgi_compat.bind(state)
    try:
        assert uwsgi_compat.add_var(b"X-SSE-OFFLOAD", "clock") is True
    finally:
        uwsgi_compat.bind(None)
    assert state.vars == {"X-SSE-OFFLOAD": "clock"}


def test_install_never_shadows_a_real_uwsgi(monkeypatch) -> None:
    real = type(sys)("uwsgi")
    monkeypatch.setitem(sys.modules, "uwsgi", real)
    assert uwsgi_compat.install([]) is False
    assert sys.modules["uwsgi"] is real
    monkeypatch.delitem(sys.modules, "uwsgi")
    assert uwsgi_compat.install([("threads", "2")]) is True
    assert sys.modules["uwsgi"].opt["threads"] == b"2"
    monkeypatch.delitem(sys.modules, "uwsgi")


def _settings(args: list[str], ini: str = "[uwsgi]\n"):
    options = Options()
    options.parseOptions(["--rules", "x.ini", *args])
    return resolve_settings(options, load(ini))


def test_app_and_proxy_settings() -> None:
    s = _settings(["--wsgi", "pkg.mod:app", "--threads", "3"], "[uwsgi]\nwsgi-file = f.py\n")
    assert s.app is not None and s.app.module == "pkg.mod:app" and s.app.wsgi_file is None
    assert s.app.threads == 3 and s.upstream is None
    s = _settings([], "[uwsgi]\nproxy = unix:/run/g.sock\nproxy-head-timeout = 2.5\n"
                      "trusted-proxy = 10.0.0.0/8\n")
    assert s.upstream is not None and s.upstream.unix_path == "/run/g.sock"
    assert s.upstream.head_timeout == 2.5 and s.upstream.trusted == ("10.0.0.0/8",)


def test_workers_take_an_app_a_proxy_and_the_admin_listener() -> None:
    s = _settings(["--admin", "9091"], "[uwsgi]\nmodule = m\nprocesses = 2\n")
    assert s.processes == 2 and s.app is not None and s.app.module == "m"
    assert s.admin == "tcp:9091:interface=127.0.0.1"
    s = _settings(["--processes", "3", "--proxy", "http://127.0.0.1:8000"])
    assert s.processes == 3 and s.upstream is not None


def test_worker_arguments_carry_the_resolved_app_upstream_and_limits() -> None:
    from sse_offload.processes.worker_args import read_spec as _spec
    from sse_offload.processes.worker_args import spec_argv

    s = _settings(["--wsgi", "pkg.mod:app", "--threads", "3"],
                  "[uwsgi]\npythonpath = /a\npythonpath = /b\nenv = X=1\n")
    argv = spec_argv(s.app, None)
    assert argv[0] == "--app" and _spec(type(s.app), argv[1]) == s.app
    s = _settings(["--proxy", "unix:/run/g.sock", "--trusted-proxy", "10.0.0.0/8"])
    argv = spec_argv(None, s.upstream)
    assert argv[0] == "--upstream" and _spec(type(s.upstream), argv[1]) == s.upstream
    limits = _settings(
        ["--max-clients", "7", "--header-timeout", "3.5", "--redis-outage-limit", "9"]
    ).limits
    assert (limits.max_clients, limits.header_timeout, limits.outage_limit) == (7, 3.5, 9)
    argv = spec_argv(None, None, limits)
    assert argv[0] == "--limits" and _spec(type(limits), argv[1]) == limits


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--wsgi", "a:b", "--proxy", "http://x:1"], "[uwsgi]\n", "choose one"),
        (["--proxy", "ftp://x"], "[uwsgi]\n", "--proxy"),
        ([], "[uwsgi]\nproxy = http://x:1\nproxy-connect-timeout = 0\n", "> 0"),
        ([], "[uwsgi]\nproxy = http://x:1\ntrusted-proxy = nope\n", "trusted-proxy"),
        ([], "[uwsgi]\nmodule = m\nthreads = 0\n", "threads"),
    ],
)
def test_bad_app_settings(args: list[str], ini: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _settings(args, ini)


def test_prepare_process_applies_chdir_env_home_and_pythonpath(tmp_path, monkeypatch) -> None:
    from sse_offload.backends.wsgi import AppSpec, prepare_process

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SSE_TEST_VAR", raising=False)
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (tmp_path / "app").mkdir()
    prepare_process(AppSpec(
        module="m", chdir=str(tmp_path / "app"), env=("SSE_TEST_VAR=a=b",),
        home=str(tmp_path / "venv"), pythonpath=("/p1", "/p2"),
    ))
    import os

    assert os.getcwd() == str(tmp_path / "app")
    assert os.environ["SSE_TEST_VAR"] == "a=b"
    assert str(site) in sys.path
    assert sys.path[:3] == ["/p1", "/p2", str(tmp_path / "app")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"wsgi_file": "/nonexistent/app.py"}, "no such file"),
        ({"module": "no_such_module_here"}, "ModuleNotFoundError"),
        ({"module": "json:nothing"}, "no callable named 'nothing'"),
        ({"module": "m", "env": ("NOEQUALS",)}, "NAME=VALUE"),
        ({"module": "m", "home": "/nonexistent"}, "site-packages"),
    ],
)
def test_load_app_errors_say_what(spec, message: str, monkeypatch) -> None:
    from sse_offload.backends.wsgi import AppError, AppSpec, load_app

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "uwsgi", raising=False)
    with pytest.raises(AppError, match=re.escape(message)):
        load_app(AppSpec(**spec))
    sys.modules.pop("uwsgi", None)
