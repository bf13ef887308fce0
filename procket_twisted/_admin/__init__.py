"""
The administration layer: the procket-twisted command (install-helper, doctor, run, plugin-cache) and the helper's build.
"""
