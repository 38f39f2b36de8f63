"""Consumers of the bridged stream (``tail``, ...).

Consumers depend on ``contracts`` and on the shared configuration
(``bridge.config``: the config tree and how its NATS secrets resolve), never on
the bridge's pipeline or adapters.
"""
