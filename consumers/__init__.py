"""Consumers of the bridged stream (``tail``, ...).

Consumers depend on ``contracts``, on the shared configuration (``bridge.config``: the
config tree and how its NATS secrets resolve) and on ``bridge.adapters.nats_connect`` (how
every client connects), never on the bridge's pipeline. Nothing in ``bridge`` imports them,
except ``bridge.cli`` for the subcommand that runs.
"""
