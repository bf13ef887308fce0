"""
Twisted's plugin cache (C{twisted/plugins/dropin.cache}): regenerating it, and saying whether the
C{procket:} plugin is found and its cache fresh.

Twisted rewrites the cache whenever a plugin file is newer than it. When the package was installed
by another user (root) into a directory the running user cannot write, every run then logs
"Unable to write to plugin cache". Running C{plugin-cache} once as the installing user
(C{install-helper} does) brings the cache up to date for everyone.
"""

from __future__ import annotations

import os
from typing import List, Tuple

__all__ = ["regenerate_plugin_cache", "plugin_state"]

_PLUGIN_FILE = "procket_twisted_endpoints.py"


def _stale_caches() -> List[Tuple[str, bool]]:
    """Each plugin directory whose cache is missing or older than a plugin file, and if writable."""
    import twisted.plugins

    stale = []
    for directory in twisted.plugins.__path__:
        if not os.path.isdir(directory):
            continue
        cache = os.path.join(directory, "dropin.cache")
        try:
            cached = os.stat(cache).st_mtime
        except OSError:
            cached = None
        sources = [name for name in os.listdir(directory) if name.endswith(".py")]
        newest = max((os.stat(os.path.join(directory, n)).st_mtime for n in sources), default=0)
        if sources and (cached is None or newest > cached):
            writable = os.access(cache if cached is not None else directory, os.W_OK)
            stale.append((cache, writable and os.access(directory, os.W_OK)))
    return stale


def regenerate_plugin_cache() -> Tuple[List[str], bool]:
    """
    Rewrite every stale plugin cache this user can write.

    @return: a line per plugin directory that needed it, and whether every cache is now fresh.
    """
    from twisted.plugin import IPlugin, getPlugins

    before = _stale_caches()
    list(getPlugins(IPlugin))  # loading the plugins rewrites the stale caches it may write
    left = {cache for cache, _ in _stale_caches()}
    lines = []
    for cache, _ in before:
        if cache in left:
            lines.append(
                f"cannot write {cache}: run procket-twisted plugin-cache as the user who "
                "installed the package (root, for a system-wide install)"
            )
        else:
            lines.append(f"plugin cache rewritten: {cache}")
    if not before:
        lines.append("plugin caches up to date")
    return lines, not left


def plugin_state() -> List[str]:
    """
    For doctor: whether Twisted finds the C{procket:} endpoint parser, and whether the caches
    are fresh (a stale one that this user cannot write makes every twistd run log a warning).
    Loading the plugins does not write any cache here.
    """
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    import twisted.plugins

    stale = _stale_caches()  # before getPlugins, which rewrites what it may
    parsers = getPlugins(IStreamServerEndpointStringParser)
    if not any(getattr(parser, "prefix", None) == "procket" for parser in parsers):
        return [
            "- twisted plugin: NOT FOUND: Twisted finds no procket: endpoint parser in this "
            f"Python ({_PLUGIN_FILE} belongs in site-packages/twisted/plugins), so procket: "
            "strings will not parse: reinstall with a regular pip install (not editable)"
        ]
    homes = [d for d in twisted.plugins.__path__ if os.path.exists(os.path.join(d, _PLUGIN_FILE))]
    where = os.path.join(homes[0], _PLUGIN_FILE) if homes else _PLUGIN_FILE
    lines = [f"- twisted plugin: found ({where}): procket: endpoint strings parse"]
    for cache, writable in stale:
        if writable:
            lines.append(f"- plugin cache: {cache} is stale; Twisted rewrites it on the next run")
        else:
            lines.append(
                f"- plugin cache: {cache} is stale and this user cannot write it, so every twistd "
                "run logs 'Unable to write to plugin cache': as the user who installed the "
                "package, run procket-twisted plugin-cache"
            )
    return lines
