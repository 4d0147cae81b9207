"""The platform-free conversation engine: policy, commands, context assembly and model backends.

Nothing here imports discord or nio; adapters translate platform events into the
frozen types of :mod:`engine.types` and render what the engine hands back.
"""
