"""The chat protocol as pure code: no trio, no sockets, no agents.

What clients send (:func:`decode_client_message` and the message classes),
what the server sends (the ``encode_*`` functions), the run invariants, a
session's state machine and limits, ids and timestamps, and the project's one
exception tree (see :mod:`server.protocol._errors`). Everything else in the
project builds on this package; it imports nothing of the project.
"""

from ._errors import ERROR_CODES as ERROR_CODES
from ._errors import AgentError as AgentError
from ._errors import AgentFailed as AgentFailed
from ._errors import AgentNotFoundError as AgentNotFoundError
from ._errors import AgentTimeout as AgentTimeout
from ._errors import BrokerUnavailableError as BrokerUnavailableError
from ._errors import ChatServerError as ChatServerError
from ._errors import CloseConnection as CloseConnection
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import FormatError as FormatError
from ._errors import HandshakeRejected as HandshakeRejected
from ._errors import InjectedFault as InjectedFault
from ._errors import InternalError as InternalError
from ._errors import InvariantViolation as InvariantViolation
from ._errors import ProtocolError as ProtocolError
from ._errors import ProviderError as ProviderError
from ._errors import RateLimitedError as RateLimitedError
from ._errors import RunNotFoundError as RunNotFoundError
from ._errors import ShuttingDownError as ShuttingDownError
from ._errors import StoreUnavailableError as StoreUnavailableError
from ._errors import ThreadBusyError as ThreadBusyError
from ._errors import ThreadNotFoundError as ThreadNotFoundError
from ._errors import ToolParameterError as ToolParameterError
from ._errors import TooManyRunsError as TooManyRunsError
from ._errors import TooManySubscriptionsError as TooManySubscriptionsError
from ._errors import UnknownTypeError as UnknownTypeError
from ._frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._frames import EventEncoder as EventEncoder
from ._frames import as_replay as as_replay
from ._frames import encode_connection_established as encode_connection_established
from ._frames import encode_error as encode_error
from ._frames import encode_heartbeat_ack as encode_heartbeat_ack
from ._frames import encode_json as encode_json
from ._frames import encode_pong as encode_pong
from ._frames import encode_reply as encode_reply
from ._frames import encode_run_event as encode_run_event
from ._frames import shrink_data as shrink_data
from ._ids import is_valid_id as is_valid_id
from ._ids import new_id as new_id
from ._ids import utc_timestamp as utc_timestamp
from ._invariants import RUN_EVENT_TYPES as RUN_EVENT_TYPES
from ._invariants import check_run_invariants as check_run_invariants
from ._limits import ErrorStreak as ErrorStreak
from ._limits import TokenBucket as TokenBucket
from ._messages import DEFAULT_AGENT as DEFAULT_AGENT
from ._messages import MAX_TITLE as MAX_TITLE
from ._messages import MESSAGE_TYPES as MESSAGE_TYPES
from ._messages import ClientMessage as ClientMessage
from ._messages import DeleteThread as DeleteThread
from ._messages import GetThread as GetThread
from ._messages import Heartbeat as Heartbeat
from ._messages import ListThreads as ListThreads
from ._messages import Ping as Ping
from ._messages import RenameThread as RenameThread
from ._messages import ResumeRun as ResumeRun
from ._messages import StartRun as StartRun
from ._messages import StopRun as StopRun
from ._messages import SubscribeThread as SubscribeThread
from ._messages import decode_client_message as decode_client_message
from ._messages import peek_message_id as peek_message_id
from ._session import Session as Session
from ._session import SessionState as SessionState

__all__ = [
    "DEFAULT_AGENT",
    "ERROR_CODES",
    "MAX_TITLE",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "RUN_EVENT_TYPES",
    "AgentError",
    "AgentFailed",
    "AgentNotFoundError",
    "AgentTimeout",
    "BrokerUnavailableError",
    "ChatServerError",
    "ClientMessage",
    "CloseConnection",
    "ConfigurationError",
    "ConnectionClosed",
    "DeleteThread",
    "ErrorStreak",
    "EventEncoder",
    "FormatError",
    "GetThread",
    "HandshakeRejected",
    "Heartbeat",
    "InjectedFault",
    "InternalError",
    "InvariantViolation",
    "ListThreads",
    "Ping",
    "ProtocolError",
    "ProviderError",
    "RateLimitedError",
    "RenameThread",
    "ResumeRun",
    "RunNotFoundError",
    "Session",
    "SessionState",
    "ShuttingDownError",
    "StartRun",
    "StopRun",
    "StoreUnavailableError",
    "SubscribeThread",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "TokenBucket",
    "TooManyRunsError",
    "TooManySubscriptionsError",
    "ToolParameterError",
    "UnknownTypeError",
    "as_replay",
    "check_run_invariants",
    "decode_client_message",
    "encode_connection_established",
    "encode_error",
    "encode_heartbeat_ack",
    "encode_json",
    "encode_pong",
    "encode_reply",
    "encode_run_event",
    "is_valid_id",
    "new_id",
    "peek_message_id",
    "shrink_data",
    "utc_timestamp",
]
