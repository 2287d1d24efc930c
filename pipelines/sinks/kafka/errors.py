"""What the Kafka sink does with each aiokafka error: the one table, matched with isinstance
against the classes of aiokafka.errors (aiokafka 0.14.0; subclasses and aliases such as
InvalidMessageError = CorruptRecordException match their base).

    aiokafka error (aiokafka.errors)        Kafka code              the sink
    ──────────────────────────────────────  ──────────────────────  ─────────────────────────────
    MessageSizeTooLargeError                10 MESSAGE_TOO_LARGE     ┐
    RecordListTooLargeError                 18 RECORD_LIST_TOO_LARGE │ DEAD_LETTER: the record batch
    InvalidTopicError                       17 INVALID_TOPIC         │ can never be accepted as it is;
    CorruptRecordException                  2 CORRUPT_MESSAGE        │ its records go to the dead-letter
    RecordTooLargeError                     (aiokafka's own)         │ file with the reason, acknowledged
    TopicAuthorizationFailedError           29 TOPIC_AUTHORIZATION…  ┘ (and the topic is refused for a
                                                                       while: refusals.py)
    SaslAuthenticationFailed                58 SASL_AUTHENTICATION…  ┐
    AuthenticationFailedError               (aiokafka's own)         │ FATAL: credentials or rights of
    UnsupportedSaslMechanismError           33                       │ the whole sink refused; retrying
    IllegalSaslStateError                   34                       │ cannot help by itself (FatalSink-
    ClusterAuthorizationFailedError         31                       ┘ Error: `tail --once` stops, the
                                                                       daemon retries with a long backoff)
    any other KafkaError                                             RETRY (RetriableSinkError): e.g.
        KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError, RequestTimedOutError,
        NotEnoughReplicasError, LeaderNotAvailableError, UnknownError (which is also what aiokafka
        makes of codes it does not know, such as 87 INVALID_RECORD)

DEAD_LETTER applies to the failed future of one record batch, whose records are known; the same
error raised by a call that is not about one record batch (metadata, queueing) is retried (a
TopicAuthorizationFailedError refuses its topic first, so the retry dead-letters its records).

aiokafka's own `retriable` flag is not what decides RETRY: it says whether aiokafka retries inside
the producer. Several errors it does not retry are worth a retry by the sink, whose retry can
replace the producer (KafkaTimeoutError after an expired batch, OutOfOrderSequenceNumber, UnknownError).
Errors outside this table at start-up (bootstrap, TLS, `UnknownTopicOrPartitionError` for a
missing topic) are handled where they occur in the sink.
"""

from __future__ import annotations

import enum

from aiokafka import errors as ak

from pipelines import secrets
from pipelines.deadletter import Reason


class Action(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead letter"
    FATAL = "fatal"


TABLE: tuple[tuple[type[BaseException], Action], ...] = (
    (ak.MessageSizeTooLargeError, Action.DEAD_LETTER),
    (ak.RecordListTooLargeError, Action.DEAD_LETTER),
    (ak.InvalidTopicError, Action.DEAD_LETTER),
    (ak.CorruptRecordException, Action.DEAD_LETTER),
    (ak.RecordTooLargeError, Action.DEAD_LETTER),
    (ak.TopicAuthorizationFailedError, Action.DEAD_LETTER),
    (ak.SaslAuthenticationFailed, Action.FATAL),
    (ak.AuthenticationFailedError, Action.FATAL),
    (ak.UnsupportedSaslMechanismError, Action.FATAL),
    (ak.IllegalSaslStateError, Action.FATAL),
    (ak.ClusterAuthorizationFailedError, Action.FATAL),
)


def action(exc: BaseException) -> Action:
    """What the sink does with `exc` (RETRY when the table does not name it)."""
    for cls, act in TABLE:
        if isinstance(exc, cls):
            return act
    return Action.RETRY


def dead_reason(exc: BaseException) -> Reason:
    """The dead-letter reason code of a DEAD_LETTER error."""
    if isinstance(exc, ak.InvalidTopicError):
        return Reason.INVALID_DESTINATION
    if isinstance(exc, ak.CorruptRecordException):
        return Reason.REJECTED
    if isinstance(exc, ak.TopicAuthorizationFailedError):
        return Reason.NOT_AUTHORIZED
    return Reason.TOO_LARGE


def describe(exc: BaseException) -> str:
    """The cause for a message or a dead-letter reason: the class name once (aiokafka's str()
    already starts with it, OSError's does not), registered secrets masked."""
    text = str(exc)
    name = type(exc).__name__
    if name not in text:
        text = f"{name}: {text}" if text else name
    for secret in secrets.secrets():
        text = text.replace(secret, "***")
    return text
