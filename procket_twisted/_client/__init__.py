"""
The client layer: requests, the helper's wire format, running it, checking what comes back. It never imports Twisted.
"""
