"""What JupiterOne's data model says about classes: names, required properties, relationship verbs.

Source: JupiterOne's ``@jupiterone/data-model`` package (its class schemas under
``src/schemas`` and ``RelationshipClass.ts``).
"""

from __future__ import annotations

RELATIONSHIP_CLASSES = frozenset(
    """
ALLOWS APPROVED ASSIGNED CONNECTS CONTAINS COMPLETED CREATED DEFINES DENIES DEPLOYED ENFORCES
EVALUATES EXPLOITS EXTENDS GENERATED HAS HOSTS IDENTIFIED IMPLEMENTS IS KNOWS LIMITS LOGS MANAGES
MITIGATES MONITORS NOTIFIES OPENED OVERRIDES OWNS PERFORMED PROTECTS PROVIDES PUBLISHED PUBLISHES
RESTRICTS REVIEWED REPORTED RUNS SCANS SENDS TRIGGERS TRUSTS UPDATED USES INSTALLED VIOLATES
""".split()
)

ENTITY_CLASSES = frozenset(
    """
AccessKey AccessPolicy AccessRole Account Alert Application ApplicationEndpoint Assessment Attacker
Backup Certificate Channel Cluster CodeCommit CodeDeploy CodeModule CodeRepo CodeReview
ConfigurableHostAgent Configuration Contact Container Control ControlPolicy CryptoKey DataCollection
DataObject DataStore DataTable Database Deployment Device Directory Disk Document Domain DomainRecord
DomainZone Entity Finding Firewall FirewallRule Framework Function Gateway Group Host HostAgent Image
Incident Internet IpAddress Issue Key Logs Model Module Network NetworkEndpoint NetworkInterface
Organization PR PasswordPolicy Person Policy Problem Procedure Process Product Program Project
Question Queue Record Repository Requirement Resource Review Risk Root Rule Ruleset Scanner Secret
Section Service Site Standard Subscription Task Team ThreatIntel Training User UserGroup Vault Vendor
Vulnerability Weakness Workflow Workload
""".split()
)

# Required properties beyond the GraphObject/Entity basics (_key, _type, _class, name, displayName).
# Each entry: property -> the JSON types allowed ("array" means an array of primitives).
CLASS_REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    "Domain": {"domainName": ("string",)},
    "Finding": {
        "category": ("string", "array"),
        "severity": ("string",),
        "numericSeverity": ("number",),
        "open": ("boolean",),
    },
    "Service": {"category": ("array",), "function": ("array",)},
    "Vulnerability": {
        "category": ("string", "null"),
        "severity": ("string", "null"),
        "blocking": ("boolean", "null"),
        "open": ("boolean", "null"),
        "production": ("boolean", "null"),
        "public": ("boolean", "null"),
    },
}

ENTITY_REQUIRED: dict[str, tuple[str, ...]] = {"name": ("string",), "displayName": ("string",)}


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def relationship_type(relationship_class: str, from_type: str, to_type: str) -> str:
    """JupiterOne's ``generateRelationshipType``: drop the leading parts ``to`` shares with ``from``.

    ``acme_account`` HAS ``acme_user`` -> ``acme_account_has_user``; at least the
    last part of ``to`` is always kept.
    """
    from_parts = from_type.split("_")
    to_parts = to_type.split("_")
    shared = 0
    while shared < len(from_parts) and shared < len(to_parts) - 1 and from_parts[shared] == to_parts[shared]:
        shared += 1
    suffix = "_".join(to_parts[shared:])
    return f"{from_type}_{relationship_class.lower()}_{suffix}"
