"""openintent: embedded, in-process asyncio coordination of many agents.

The friendly public API, re-exported here; everything else lives in private modules.

>>> from openintent import Runtime
>>> from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
"""

from __future__ import annotations

from ._client import AsyncOpenIntentClient as AsyncOpenIntentClient
from ._client import OpenIntentClient as OpenIntentClient
from ._client_views import ClientIntent as ClientIntent
from ._client_views import ClientPortfolio as ClientPortfolio
from ._clock import Clock as Clock
from ._clock import RealClock as RealClock
from ._context import sleep as sleep
from ._event_types import register_event_type as register_event_type
from ._handle import RunHandle as RunHandle
from ._leases import Lease as Lease
from ._stores import RunInfo as RunInfo
from ._virtual_clock import VirtualClock as VirtualClock
from .agents import Agent as Agent
from .agents import Coordinator as Coordinator
from .agents import IntentSpec as IntentSpec
from .agents import PortfolioSpec as PortfolioSpec
from .errors import AgentError as AgentError
from .errors import ApprovalError as ApprovalError
from .errors import CostError as CostError
from .errors import DataError as DataError
from .errors import DelegationError as DelegationError
from .errors import DependencyCycleError as DependencyCycleError
from .errors import DuplicateIntentError as DuplicateIntentError
from .errors import EffectInDoubtError as EffectInDoubtError
from .errors import Escalate as Escalate
from .errors import EscalationError as EscalationError
from .errors import GuardrailError as GuardrailError
from .errors import IntentFailedError as IntentFailedError
from .errors import IntentTimeoutError as IntentTimeoutError
from .errors import LeaseError as LeaseError
from .errors import LeaseExpiredError as LeaseExpiredError
from .errors import LeaseHeldError as LeaseHeldError
from .errors import LeaseLostError as LeaseLostError
from .errors import OpenIntentError as OpenIntentError
from .errors import OpenIntentWarning as OpenIntentWarning
from .errors import OutputCheckError as OutputCheckError
from .errors import QuorumError as QuorumError
from .errors import RemoteAgentError as RemoteAgentError
from .errors import ResponseConflictError as ResponseConflictError
from .errors import ResumeMismatchError as ResumeMismatchError
from .errors import RunCancelledError as RunCancelledError
from .errors import RunFailedError as RunFailedError
from .errors import RunHaltedError as RunHaltedError
from .errors import RunInUseError as RunInUseError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import SpecError as SpecError
from .errors import StateConflictError as StateConflictError
from .errors import StoreError as StoreError
from .errors import UnknownAgentError as UnknownAgentError
from .errors import UnknownDependencyError as UnknownDependencyError
from .errors import UnresolvableInputError as UnresolvableInputError
from .errors import WorkflowError as WorkflowError
from .errors import WorkflowNotFoundError as WorkflowNotFoundError
from .errors import WorkflowValidationError as WorkflowValidationError
from .guardrails import ApprovalRequest as ApprovalRequest
from .guardrails import Breach as Breach
from .guardrails import Guardrail as Guardrail
from .guardrails import register_guardrail as register_guardrail
from .models import Decision as Decision
from .models import EffectRecord as EffectRecord
from .models import Event as Event
from .models import EventLog as EventLog
from .models import EventType as EventType
from .models import Intent as Intent
from .models import IntentResult as IntentResult
from .models import IntentStatus as IntentStatus
from .models import Portfolio as Portfolio
from .models import Response as Response
from .models import RetryPolicy as RetryPolicy
from .models import RunResult as RunResult
from .models import RunStatus as RunStatus
from .runtime import Runtime as Runtime

__version__ = "0.1.0.dev0"

__all__ = [
    "Agent",
    "AgentError",
    "ApprovalError",
    "ApprovalRequest",
    "AsyncOpenIntentClient",
    "Breach",
    "ClientIntent",
    "ClientPortfolio",
    "Clock",
    "Coordinator",
    "CostError",
    "DataError",
    "Decision",
    "DelegationError",
    "DependencyCycleError",
    "DuplicateIntentError",
    "EffectInDoubtError",
    "EffectRecord",
    "Escalate",
    "EscalationError",
    "Event",
    "EventLog",
    "EventType",
    "Guardrail",
    "GuardrailError",
    "Intent",
    "IntentFailedError",
    "IntentResult",
    "IntentSpec",
    "IntentStatus",
    "IntentTimeoutError",
    "Lease",
    "LeaseError",
    "LeaseExpiredError",
    "LeaseHeldError",
    "LeaseLostError",
    "OpenIntentClient",
    "OpenIntentError",
    "OpenIntentWarning",
    "OutputCheckError",
    "Portfolio",
    "PortfolioSpec",
    "QuorumError",
    "RealClock",
    "RemoteAgentError",
    "Response",
    "ResponseConflictError",
    "ResumeMismatchError",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunHaltedError",
    "RunHandle",
    "RunInUseError",
    "RunInfo",
    "RunNotFoundError",
    "RunResult",
    "RunStatus",
    "Runtime",
    "SpecError",
    "StateConflictError",
    "StoreError",
    "UnknownAgentError",
    "UnknownDependencyError",
    "UnresolvableInputError",
    "VirtualClock",
    "WorkflowError",
    "WorkflowNotFoundError",
    "WorkflowValidationError",
    "register_event_type",
    "register_guardrail",
    "sleep",
]
