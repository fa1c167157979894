"""Rules-file reading: the uWSGI-style ini, the route grammar and the typed rule objects."""

from sse_offload.config.loader import load_rules, parse_rules_text
from sse_offload.config.model import (
    Action,
    Condition,
    Config,
    Diagnostic,
    IniEntry,
    MuleSpec,
    Rule,
    RulesError,
    SourcePos,
    StaticMap,
)

__all__ = [
    "Action",
    "Condition",
    "Config",
    "Diagnostic",
    "IniEntry",
    "MuleSpec",
    "Rule",
    "RulesError",
    "SourcePos",
    "StaticMap",
    "load_rules",
    "parse_rules_text",
]
