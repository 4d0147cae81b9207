"""Platform edges: turn events into engine messages and render what comes back.

An adapter never builds a prompt; it imports engine types only.
"""
