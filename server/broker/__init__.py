"""The Redis broker: what crosses processes and machines (``--broker redis://…``).

:func:`open_broker` connects a node; the :class:`Broker` it yields offers
node liveness, the global per-user connection limit, thread interest, run
event streams and commands to nodes, each bounded in time and failing with
:class:`BrokerUnavailableError` instead of hanging. :func:`open_publisher`
batches a run's appends off its hot path. See ``docs/broker.md``.
"""

from server.protocol import BrokerUnavailableError as BrokerUnavailableError

from ._broker import MAX_BLOCK as MAX_BLOCK
from ._broker import Broker as Broker
from ._broker import BrokerStatistics as BrokerStatistics
from ._broker import CommandHandler as CommandHandler
from ._broker import Observer as Observer
from ._broker import PublishOutcome as PublishOutcome
from ._broker import StreamEntry as StreamEntry
from ._broker import open_broker as open_broker
from ._keys import Keys as Keys
from ._keys import RunStream as RunStream
from ._keys import seq_of as seq_of
from ._keys import stream_id as stream_id
from ._publisher import Publisher as Publisher
from ._publisher import PublisherStatistics as PublisherStatistics
from ._publisher import open_publisher as open_publisher

__all__ = [
    "MAX_BLOCK",
    "Broker",
    "BrokerStatistics",
    "BrokerUnavailableError",
    "CommandHandler",
    "Keys",
    "Observer",
    "PublishOutcome",
    "Publisher",
    "PublisherStatistics",
    "RunStream",
    "StreamEntry",
    "open_broker",
    "open_publisher",
    "seq_of",
    "stream_id",
]
