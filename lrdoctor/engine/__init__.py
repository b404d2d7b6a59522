"""The rule engine: rule files (spec), detector kinds (registry), running rules (runner)."""

from .diagnose import diagnose_runs
from .spec import RuleSpec, apply_overrides, load_rules, parse_set, select_rules

__all__ = ["RuleSpec", "apply_overrides", "diagnose_runs", "load_rules", "parse_set", "select_rules"]
