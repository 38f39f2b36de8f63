"""Drop-in shims for every legacy publisher API of the error bus: migrating an agent is a
one-line import change (``busclient/README.md`` lists each).

* ``busclient.compat.error_publisher``: ZMQ ``ErrorPublisher`` (``main_pc_code/agents/error_publisher.py``)
* ``busclient.compat.pc2_error_publisher``: ZMQ ``PC2ErrorPublisher`` (``pc2_code/utils/pc2_error_publisher.py``)
* ``busclient.compat.library_a``: NATS library A (``common/error_bus/nats_error_bus.py``,
  ``common/error_bus/unified_error_handler.py``)
* ``busclient.compat.library_b``: NATS library B (``common/error_bus/nats_client.py``, ``common.error_bus``)
* ``busclient.compat.base_agent``: BaseAgent's ``report_error`` (``common/core/base_agent.py``)

All of them publish through one shared ``BusClient`` per NATS server list
(``shared_client``); ``close_shared_clients`` closes them (they are also closed at exit).
``with_extras`` is how legacy fields without a slot in ``ErrorEvent`` land in ``details``.
"""

from busclient.compat._common import Completed, close_shared_clients, shared_client, with_extras

__all__ = ["Completed", "close_shared_clients", "shared_client", "with_extras"]
