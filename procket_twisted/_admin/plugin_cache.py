"""
Regenerating Twisted's plugin cache (C{twisted/plugins/dropin.cache}).

Twisted rewrites the cache whenever a plugin file is newer than it. When the package was installed
by another user (root) into a directory the running user cannot write, every run then logs
"Unable to write to plugin cache". Running this once as the installing user (C{install-helper}
does) brings the cache up to date for everyone.
"""

from __future__ import annotations

import os
from typing import List

__all__ = ["regenerate_plugin_cache"]


def regenerate_plugin_cache() -> List[str]:
    """Rewrite every stale plugin cache this user can write; return a line per plugin directory."""
    from twisted.plugin import IPlugin, getPlugins

    import twisted.plugins

    list(getPlugins(IPlugin))  # loading the plugins rewrites stale caches it may write
    lines = []
    for directory in twisted.plugins.__path__:
        cache = os.path.join(directory, "dropin.cache")
        if os.path.exists(cache) and os.access(cache, os.W_OK):
            lines.append(f"plugin cache up to date: {cache}")
        elif os.path.isdir(directory) and not os.access(directory, os.W_OK):
            lines.append(f"cannot write {cache}: run this as the user who installed the package")
    return lines
