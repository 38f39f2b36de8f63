"""Fleet health of one bridge (DESIGN §1 "health"): its heartbeat and probes of the local legacy agents.

``startup_config`` (both legacy YAML schemas) -> ``probes`` (one agent, legacy protocols) ->
``replies`` (every legacy reply shape -> one status) -> ``rounds`` (every agent, bounded) ;
``heartbeat`` (the bridge's own state) ; ``sink`` (latest per KV key, stream copies by policy) ;
``service`` (all of it as one task for ``bridge.app``).
"""

from bridge.health.service import HealthService

__all__ = ["HealthService"]
