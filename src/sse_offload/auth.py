"""htpasswd files for ``basicauth:REALM,FILE``: bcrypt, apr1, {SHA} and crypt(3) hashes.

Hashes are checked by libpass (the maintained passlib fork). uWSGI's router_basicauth only
knows ``{SHA}`` and 13-character DES crypt (it cuts every other hash at 13 characters);
we accept what Apache's ``htpasswd`` writes: bcrypt (``$2y$``), apr1 MD5 (``$apr1$``),
``{SHA}``, and the crypt(3) schemes (DES, ``$1$``, ``$5$``, ``$6$``). Plain-text passwords
in the file are refused, as Apache on Unix refuses them.

A file is re-read when it changes (mtime, size or inode), so users can be added without a
restart. bcrypt is slow on purpose (a quarter of a second at cost 12), so answers are
remembered: the key is an HMAC of the password under a random per-process secret, never
the password itself. A caller on an event loop passes ``slow=False`` and gets None instead
of a hash computation; it then runs the check with ``slow=True`` in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from passlib.apache import HtpasswdFile
from passlib.context import CryptContext

#: The schemes accepted in htpasswd files (Apache's htpasswd writes the first four).
HTPASSWD_SCHEMES = (
    "bcrypt",
    "apr_md5_crypt",
    "ldap_sha1",
    "des_crypt",
    "md5_crypt",
    "sha256_crypt",
    "sha512_crypt",
)
#: Remembered answers: enough for every user of a busy site to reconnect without rehashing;
#: each entry is a few hundred bytes.
CACHE_SIZE = 4096

_context = CryptContext(schemes=list(HTPASSWD_SCHEMES))


@dataclass
class _Loaded:
    stamp: tuple[int, int, int]
    file: HtpasswdFile | None
    error: str | None


class HtpasswdStore:
    """Checks passwords against htpasswd files, re-reading a file when it changes.

    Thread-safe: the gateway checks slow hashes in Twisted's thread pool.
    """

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._files: dict[str, _Loaded] = {}
        self._answers: OrderedDict[tuple[str, tuple[int, int, int], str, bytes], bool] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.problems: list[str] = []

    def _load(self, path: str) -> _Loaded:
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp = (0, 0, 0)
            message = f"htpasswd file {path}: {exc.strerror or exc}"
            loaded = self._files.get(path)
            if loaded is None or loaded.error != message:
                self.problems.append(message)  # said once per change, not per request
            self._files[path] = _Loaded(stamp, None, message)
            return self._files[path]
        loaded = self._files.get(path)
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        error: str | None = None
        try:
            file = HtpasswdFile(path, context=_context)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            file, error = None, f"htpasswd file {path}: {exc}"
            self.problems.append(error)
        loaded = _Loaded(stamp, file, error)
        self._files[path] = loaded
        return loaded

    def _key(
        self, path: str, stamp: tuple[int, int, int], user: str, password: str
    ) -> tuple[str, tuple[int, int, int], str, bytes]:
        mac = hmac.new(self._secret, password.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return path, stamp, user, mac.digest()

    def check(self, path: str, user: str, password: str, *, slow: bool) -> bool | None:
        """Is ``password`` right for ``user`` in the htpasswd file at ``path``?

        An unreadable file or an unknown user is False. With ``slow`` False, an answer not
        remembered yet is None (the caller should call again with ``slow=True`` off its
        event loop).
        """
        with self._lock:
            loaded = self._load(path)
            if loaded.file is None:
                return False
            key = self._key(path, loaded.stamp, user, password)
            known = self._answers.get(key)
            if known is not None:
                self._answers.move_to_end(key)
                return known
            file = loaded.file
        if not slow:
            return None
        try:
            answer = file.check_password(user, password)
            if answer is None:
                # An unknown user costs the same time as a known one, so response times
                # do not tell which users exist.
                _context.dummy_verify()
            ok = bool(answer)
        except (ValueError, TypeError):
            ok = False  # an unrecognised hash, or a password bcrypt refuses (> 72 bytes)
        with self._lock:
            self._answers[key] = ok
            while len(self._answers) > self._cache_size:
                self._answers.popitem(last=False)
        return ok

    def take_problems(self) -> list[str]:
        """Problems with files found since the last call (each said once per change)."""
        with self._lock:
            problems, self.problems = self.problems, []
        return problems


_default: HtpasswdStore | None = None
_default_lock = threading.Lock()


def default_store() -> HtpasswdStore:
    """The process-wide store (one per process, so its cache serves every request)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = HtpasswdStore()
        return _default
