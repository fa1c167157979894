"""Which file a ``static-map`` or a ``static:`` action serves, never outside where it may.

Pure functions over paths (they read the file system, nothing else), shared by the front
resource and the explainer.
"""

from __future__ import annotations

import os

from sse_offload.config.model import StaticMap


def _inside(base: str, candidate: str) -> bool:
    return os.path.commonpath([base, candidate]) == base


def static_map_target(mapping: StaticMap, rest: str) -> str | None:
    """The file ``mapping`` serves for ``rest`` of the path (after the mount), or None.

    A mount mapped to a file serves it for every path with the prefix (as uWSGI); a mount
    mapped to a directory serves the regular file under it, never outside it (symlinks
    resolved) and never a directory listing.
    """
    if "\0" in rest:
        return None  # a %00 in the URL: no file has that name
    base = os.path.realpath(mapping.path)
    if os.path.isfile(base):
        return base
    if not os.path.isdir(base):
        return None
    candidate = os.path.realpath(os.path.join(base, rest.lstrip("/")))
    if not _inside(base, candidate) or not os.path.isfile(candidate):
        return None  # outside the mapped directory, missing, or a directory (no listings)
    return candidate


def literal_prefix(template: str) -> str:
    """The part of a ``static:`` argument before its first ``$`` (all of it if none)."""
    cut = template.find("$")
    return template if cut < 0 else template[:cut]


def static_action_target(template: str, expanded: str) -> str | None:
    """The file ``static:TEMPLATE`` serves once expanded to ``expanded``, or None.

    A literal path is served as written. When the template expands vars or captures, the
    file must resolve (symlinks included) inside the directory its literal part names:
    ``static:/srv/www/$1`` never serves ``/etc/passwd``, whatever ``$1`` holds. Only
    regular files are served (no directory listings).
    """
    if not expanded or "\0" in expanded:
        return None
    try:
        candidate = os.path.realpath(expanded)
        prefix = literal_prefix(template)
        if prefix != template and not _confined(prefix, expanded, candidate):
            return None
        return candidate if os.path.isfile(candidate) else None
    except (OSError, ValueError):
        return None


def _confined(prefix: str, expanded: str, resolved: str) -> bool:
    """``expanded`` (resolved: ``resolved``) stays where the literal ``prefix`` points."""
    if prefix.endswith("/"):
        # "/srv/www/$1": inside the directory /srv/www, before and after symlinks.
        base = os.path.normpath(prefix)
        return _inside(base, os.path.normpath(expanded)) and _inside(
            os.path.realpath(base), resolved
        )
    # "/srv/www/file_$1": the path as written starts with the literal text, and resolves
    # inside its directory. "$1" alone: inside the working directory.
    if prefix and not os.path.normpath(expanded).startswith(os.path.normpath(prefix)):
        return False
    return _inside(os.path.realpath(os.path.dirname(prefix) or "."), resolved)
