"""Scenarios: a tenant described as a document (JSON or YAML file, or a built-in), validated and
resolved into a `Scenario`, from which `build_tenant` makes the live model. The schema is documented
in src/graphsim/README.md; every error names the field and what to write instead.

Ids that a document leaves out are generated from the scenario seed, so the same document always
builds the same tenant. Objects get a short `key` (e.g. "alice", "wave") usable everywhere a
reference is expected, in the document and from Python (`sim.tenant.remove_member("wave", "alice")`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from graphsim import catalog
from graphsim.clock import SimClock
from graphsim.faults import FaultRule
from graphsim.guids import GuidSource, is_guid
from graphsim.legacy import LegacySpec, LegacyTargets
from graphsim.licensing import ERROR, STATES, PlanInfo, Rules, SkuInfo
from graphsim.tenant import Group, ProcessingTiming, Tenant, User
from graphsim.throttle import ThrottleLimits

OUTCOMES = frozenset(
    {
        "remove",
        "not-selected",
        "no-direct-assignment",
        "group-processing-incomplete",
        "not-inherited-from-group",
        "inherited-error",
        "inherited-not-active",
        "relied-on-group-processing",
        "plans-would-be-lost",
        "plans-differ",
    }
)
"""What licshift's decision rule must decide for a user: "remove", or a skip/block reason value."""


class ScenarioError(ValueError):
    """A scenario document that cannot be used; the message says where and what to fix."""


class UserSpec(NamedTuple):
    id: str
    upn: str
    display_name: str
    given_name: str | None
    surname: str | None
    department: str | None
    job_title: str | None
    usage_location: str | None
    direct: tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    id: str
    name: str
    description: str | None
    security_enabled: bool
    mail_enabled: bool
    members: tuple[str, ...]
    licenses: tuple[tuple[str, frozenset[str]], ...]
    timing: ProcessingTiming | None
    pending: bool
    stuck: tuple[str, ...]
    forced: tuple[tuple[str, str | None, str, str | None], ...]
    previous_licenses: tuple[tuple[str, frozenset[str]], ...] | None = None
    """`initial: changed`: the options members' entries still show; `licenses` are the new ones."""


@dataclass(frozen=True, slots=True)
class WaveSelection:
    """Mirrors licshift's wave selection (kind all | first | percent | users)."""

    kind: str = "all"
    users: frozenset[str] = frozenset()
    count: int = 0
    percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Wave:
    """What a test should migrate in this scenario, and what the decision rule must decide."""

    name: str
    group: str
    skus: tuple[str, ...]
    selection: WaveSelection
    group_license: tuple[tuple[str, frozenset[str]], ...]
    """Licenses the group must carry for the migration (the demo assigns them if missing)."""
    expected: Mapping[str, str]
    """user id -> outcome under policy no-loss, for every direct user member of the group whose
    outcome does not depend on timing."""
    expected_identical: Mapping[str, str]
    """The same under policy identical."""
    timing_dependent: Mapping[str, frozenset[str]]
    """user id -> outcomes that are all correct depending on when licshift reaches the user
    (timed events); such users are not in `expected`."""


@dataclass(slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    tenant_id: str
    domain: str
    default_usage_location: str | None
    timing: ProcessingTiming
    skus: tuple[tuple[SkuInfo, int], ...]
    rules: Rules
    users: list[UserSpec]
    groups: list[GroupSpec]
    events: list[tuple[float, dict[str, Any]]]
    legacy: LegacySpec | None
    faults: tuple[FaultRule, ...]
    fault_seed: int
    throttling: Mapping[str, Any]
    waves: tuple[Wave, ...]
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def wave(self) -> Wave:
        if not self.waves:
            raise ScenarioError(f"scenario {self.name!r} names no wave")
        return self.waves[0]

    @property
    def expected(self) -> Mapping[str, str]:
        return self.wave.expected

    def id(self, key: str) -> str:
        """The object id behind a scenario key (KeyError if none)."""
        try:
            return self.keys[key]
        except KeyError:
            raise KeyError(f"scenario {self.name!r} has no key {key!r}") from None

    def throttle_limits(self, users: int) -> ThrottleLimits:
        base = ThrottleLimits.for_tenant_size(users)
        t = self.throttling
        size = str(t.get("tenant_size", "auto")).upper()
        if size in ("S", "M", "L"):
            base = ThrottleLimits.for_tenant_size({"S": 1, "M": 100, "L": 1000}[size])
        return ThrottleLimits(
            ru_per_window=int(t.get("ru_per_10s", base.ru_per_window)),
            ru_window_seconds=base.ru_window_seconds,
            app_writes=int(t.get("app_writes_per_150s", base.app_writes)),
            app_write_window_seconds=base.app_write_window_seconds,
            tenant_writes=int(t.get("tenant_writes_per_300s", base.tenant_writes)),
            tenant_write_window_seconds=base.tenant_write_window_seconds,
            enabled=bool(t.get("enabled", True)),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "tenantId": self.tenant_id,
            "users": len(self.users),
            "groups": {g.name: g.id for g in self.groups},
            "skus": {s.part_number: s.sku_id for s, _ in self.skus},
            "waves": [
                {
                    "name": w.name,
                    "group": w.group,
                    "skus": list(w.skus),
                    "selection": {
                        "kind": w.selection.kind,
                        "users": sorted(w.selection.users),
                        "count": w.selection.count,
                        "percent": w.selection.percent,
                    },
                    "groupLicense": [{"skuId": s, "disabledPlans": sorted(d)} for s, d in w.group_license],
                    "expected": dict(w.expected),
                    "expectedIdentical": dict(w.expected_identical),
                    "timingDependent": {u: sorted(o) for u, o in w.timing_dependent.items()},
                }
                for w in self.waves
            ],
            "keys": dict(self.keys) if len(self.keys) <= 5000 else {},
        }


# ------------------------------------------------------------------------------ loading
def load_scenario(ref: str | Path, *, users: int | None = None, seed: int | None = None) -> Scenario:
    """A built-in by name ("seed-example", "adversarial", "large") or a .json/.yaml file.
    `users` resizes a built-in; `seed` overrides the document's seed."""
    from graphsim.builtins import BUILTINS

    name = str(ref)
    if name in BUILTINS:
        doc = BUILTINS[name](users=users, seed=seed if seed is not None else 1)
        return parse(doc)
    path = Path(name)
    if not path.exists():
        raise ScenarioError(
            f"unknown scenario {name!r}: use a built-in ({', '.join(sorted(BUILTINS))}) or a path to a .json/.yaml file"
        )
    if users is not None:
        raise ScenarioError("--users resizes built-in scenarios only; edit the counts in the scenario file instead")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        doc = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}: not valid JSON ({exc})") from exc
    else:
        raise ScenarioError(f"{path}: scenario files must end in .json, .yaml or .yml")
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: the document must be an object (mapping) at the top level")
    if seed is not None:
        doc = {**doc, "seed": seed}
    return parse(doc, source=str(path))


_TOP_LEVEL = {
    "name",
    "description",
    "seed",
    "tenant",
    "processing",
    "skus",
    "rules",
    "users",
    "groups",
    "events",
    "legacy",
    "faults",
    "throttling",
    "waves",
}


class _Parser:
    def __init__(self, doc: Mapping[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source
        unknown = set(doc) - _TOP_LEVEL
        if unknown:
            self.fail("", f"unknown field(s) {sorted(unknown)}; known: {sorted(_TOP_LEVEL)}")
        self.seed = int(doc.get("seed", 1))
        self.guids = GuidSource(self.seed)
        self.keys: dict[str, str] = {}
        self.skus: dict[str, SkuInfo] = {}
        self.users: list[UserSpec] = []
        self.user_index: dict[str, int] = {}
        self.populations: dict[str, list[str]] = {}
        self.groups: list[GroupSpec] = []
        self.group_ids: set[str] = set()
        self.seat_counts: dict[str, int] = {}

    def fail(self, where: str, message: str) -> None:
        raise ScenarioError(f"{self.source}: {where + ': ' if where else ''}{message}")

    # ---- references
    def sku(self, ref: object, where: str) -> str:
        text = str(ref)
        if text.lower() in self.skus:
            return text.lower()
        for sku in self.skus.values():
            if sku.part_number.lower() == text.lower():
                return sku.sku_id
        self.fail(where, f"no SKU {text!r} in skus (give a skuId or skuPartNumber listed under skus)")
        raise AssertionError

    def plans(self, refs: Iterable[object], where: str, sku_id: str | None = None) -> frozenset[str]:
        out: set[str] = set()
        for ref in refs or ():
            text = str(ref)
            if is_guid(text):
                out.add(text.lower())
                continue
            pool = [self.skus[sku_id]] if sku_id else list(self.skus.values())
            found = [p.plan_id for s in pool for p in s.plans if p.name.lower() == text.lower()]
            if not found:
                found = [p.plan_id for c in catalog.SKUS.values() for p in c.plans if p.name.lower() == text.lower()]
            if not found:
                self.fail(where, f"no service plan {text!r} (give a servicePlanId or a servicePlanName of the SKU)")
            out.add(found[0])
        return frozenset(out)

    def user_ref(self, ref: object, where: str) -> str:
        text = str(ref)
        uid = self.keys.get(text, text.lower())
        if uid not in self.user_index:
            self.fail(where, f"no user {text!r} (give a user key or id defined under users)")
        return uid

    def member_refs(self, refs: Iterable[object], where: str) -> list[str]:
        out: list[str] = []
        for ref in refs or ():
            text = str(ref)
            if text == "@all":
                out.extend(u.id for u in self.users)
            elif text.startswith("@department:"):
                dept = text.split(":", 1)[1]
                out.extend(u.id for u in self.users if u.department == dept)
            elif text.startswith("@population:"):
                name = text.split(":", 1)[1]
                if name not in self.populations:
                    self.fail(where, f"no generated population {name!r} (see users[].generate.name)")
                out.extend(self.populations[name])
            else:
                oid = self.keys.get(text, text.lower())
                if oid not in self.user_index and oid not in self.group_ids:
                    self.fail(where, f"no user or group {text!r} (define it before the group that lists it)")
                out.append(oid)
        return out

    def licenses(self, items: Iterable[Mapping[str, Any]], where: str) -> tuple[tuple[str, frozenset[str]], ...]:
        out = []
        for i, item in enumerate(items or ()):
            if not isinstance(item, Mapping) or "sku" not in item:
                self.fail(f"{where}[{i}]", 'expected {"sku": <skuId|partNumber>, "disabled_plans": [...]}')
            sku = self.sku(item["sku"], f"{where}[{i}].sku")
            out.append((sku, self.plans(item.get("disabled_plans") or (), f"{where}[{i}].disabled_plans", sku)))
        return tuple(out)

    def new_id(self, given: object, key: str | None, where: str) -> str:
        if given is not None:
            if not is_guid(given):
                self.fail(where, f"id must be a GUID, got {given!r}")
            oid = str(given).lower()
        else:
            oid = self.guids.next()
        if key is not None:
            if key in self.keys:
                self.fail(where, f"duplicate key {key!r}")
            self.keys[key] = oid
        return oid

    # ---- sections
    def parse(self) -> Scenario:
        doc = self.doc
        tenant = doc.get("tenant") or {}
        tenant_id = self.new_id(tenant.get("id"), None, "tenant.id")
        domain = str(tenant.get("domain") or "contoso.onmicrosoft.com")
        default_location = tenant.get("default_usage_location", "US")
        timing = self.timing(doc.get("processing") or {}, "processing") or ProcessingTiming()
        for i, item in enumerate(doc.get("skus") or ()):
            self.sku_spec(item, f"skus[{i}]")
        if not self.skus:
            self.fail("skus", "a scenario needs at least one SKU")
        rules = self.rules(doc.get("rules") or {})
        for i, item in enumerate(doc.get("users") or ()):
            self.user_spec(item, f"users[{i}]", domain)
        for i, item in enumerate(doc.get("groups") or ()):
            self.group_spec(item, f"groups[{i}]")
        events = self.events(doc.get("events") or ())
        legacy = self.legacy(doc.get("legacy"))
        faults_doc = doc.get("faults") or {}
        try:
            faults = tuple(FaultRule.from_json(r) for r in faults_doc.get("rules") or ())
        except (TypeError, ValueError) as exc:
            self.fail("faults.rules", str(exc))
        throttling = dict(doc.get("throttling") or {})
        waves = tuple(self.wave(w, f"waves[{i}]") for i, w in enumerate(doc.get("waves") or ()))
        seat_table = tuple((sku, self.seat_counts[sku.sku_id]) for sku in self.skus.values())
        return Scenario(
            name=str(doc.get("name") or "unnamed"),
            description=str(doc.get("description") or ""),
            seed=self.seed,
            tenant_id=tenant_id,
            domain=domain,
            default_usage_location=str(default_location).upper() if default_location else None,
            timing=timing,
            skus=seat_table,
            rules=rules,
            users=self.users,
            groups=self.groups,
            events=events,
            legacy=legacy,
            faults=faults,
            fault_seed=int(faults_doc.get("seed", self.seed)),
            throttling=throttling,
            waves=waves,
            keys=self.keys,
        )

    def timing(self, doc: Mapping[str, Any], where: str) -> ProcessingTiming | None:
        if not doc:
            return None
        known = {"queued_seconds", "in_progress_seconds", "per_member_seconds"}
        if set(doc) - known:
            self.fail(where, f"unknown field(s) {sorted(set(doc) - known)}; known: {sorted(known)}")
        values = {k: float(v) for k, v in doc.items()}
        if any(v < 0 for v in values.values()):
            self.fail(where, "processing times must be >= 0")
        return ProcessingTiming(**values)

    def sku_spec(self, item: Mapping[str, Any], where: str) -> None:
        if "seats" not in item:
            self.fail(where, "every SKU needs seats (prepaidUnits.enabled)")
        seats = int(item["seats"])
        if "catalog" in item:
            entry = catalog.SKUS.get(str(item["catalog"]))
            if entry is None:
                self.fail(where, f"catalog has no {item['catalog']!r}; known: {sorted(catalog.SKUS)}")
            assert entry is not None
            sku = SkuInfo.make(
                entry.sku_id, entry.part_number, (PlanInfo(p.plan_id, p.name, p.service) for p in entry.plans)
            )
        else:
            for needed in ("sku_id", "part_number", "plans"):
                if needed not in item:
                    self.fail(where, f"needs {needed!r} (or use {{'catalog': 'ENTERPRISEPACK', 'seats': N}})")
            if not is_guid(item["sku_id"]):
                self.fail(f"{where}.sku_id", "must be a GUID")
            plans = []
            for j, plan in enumerate(item["plans"]):
                if not is_guid(plan.get("id")) or not plan.get("name"):
                    self.fail(f"{where}.plans[{j}]", 'expected {"id": <GUID>, "name": "PLAN_NAME"}')
                plans.append(
                    PlanInfo(
                        str(plan["id"]).lower(),
                        str(plan["name"]),
                        str(plan.get("service", "")),
                        str(plan.get("applies_to", "User")),
                    )
                )
            sku = SkuInfo.make(
                str(item["sku_id"]).lower(), str(item["part_number"]), plans, str(item.get("applies_to", "User"))
            )
        if sku.sku_id in self.skus:
            self.fail(where, f"SKU {sku.part_number} listed twice")
        self.skus[sku.sku_id] = sku
        self.seat_counts[sku.sku_id] = seats
        if "key" in item:
            self.keys[str(item["key"])] = sku.sku_id

    def rules(self, doc: Mapping[str, Any]) -> Rules:
        known = {"mutually_exclusive", "dependencies", "prohibited_locations"}
        if set(doc) - known:
            self.fail("rules", f"unknown field(s) {sorted(set(doc) - known)}; known: {sorted(known)}")
        pairs = []
        for i, pair in enumerate(doc.get("mutually_exclusive") or ()):
            ids = sorted(self.plans(pair, f"rules.mutually_exclusive[{i}]"))
            if len(ids) != 2:
                self.fail(f"rules.mutually_exclusive[{i}]", "each entry is a pair of two different plans")
            pairs.append((ids[0], ids[1]))
        deps = {}
        for plan, required in (doc.get("dependencies") or {}).items():
            (pid,) = self.plans([plan], "rules.dependencies")
            deps[pid] = self.plans(required, f"rules.dependencies.{plan}")
        prohibited = {}
        for plan, locations in (doc.get("prohibited_locations") or {}).items():
            (pid,) = self.plans([plan], "rules.prohibited_locations")
            prohibited[pid] = [str(x).upper() for x in locations]
        return Rules.make(pairs, deps, prohibited)

    def user_spec(self, item: Mapping[str, Any], where: str, domain: str) -> None:
        if "generate" in item:
            self.population(item["generate"], f"{where}.generate", domain)
            return
        key = item.get("key")
        uid = self.new_id(item.get("id"), str(key) if key is not None else None, where)
        n = len(self.users) + 1
        nick = str(key or f"user{n}")
        upn = str(item.get("upn") or f"{nick}@{domain}")
        display = str(item.get("display_name") or nick.replace("-", " ").replace("_", " ").title())
        location = item.get("usage_location", "US")
        self.add_user(
            UserSpec(
                uid,
                upn,
                display,
                item.get("given_name"),
                item.get("surname"),
                item.get("department"),
                item.get("job_title"),
                str(location).upper() if location else None,
                self.licenses(item.get("direct") or (), f"{where}.direct"),
            ),
            where,
        )

    def add_user(self, spec: UserSpec, where: str) -> None:
        if spec.id in self.user_index:
            self.fail(where, f"duplicate user id {spec.id}")
        self.user_index[spec.id] = len(self.users)
        self.users.append(spec)

    def population(self, gen: Mapping[str, Any], where: str, domain: str) -> None:
        count = int(gen.get("count", 0))
        if count < 0:
            self.fail(f"{where}.count", "must be >= 0")
        prefix = str(gen.get("prefix", "user"))
        name = str(gen.get("name", prefix))
        departments = gen.get("department") or [None]
        if isinstance(departments, str):
            departments = [departments]
        location = gen.get("usage_location", "US")
        location = str(location).upper() if location else None
        direct = self.licenses(gen.get("direct") or (), f"{where}.direct")
        first = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn"]
        last = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kowalski", "Haddad", "Ito", "Larsen"]
        ids: list[str] = []
        width = max(len(str(count)), 4)
        for i in range(count):
            uid = self.guids.next()
            nick = f"{prefix}{i + 1:0{width}d}"
            given, surname = first[i % 10], last[(i // 10) % 10]
            self.add_user(
                UserSpec(
                    uid,
                    f"{nick}@{domain}",
                    f"{given} {surname} {i + 1}",
                    given,
                    surname,
                    departments[i % len(departments)],
                    gen.get("job_title"),
                    location,
                    direct,
                ),
                where,
            )
            ids.append(uid)
        self.populations[name] = ids

    def group_spec(self, item: Mapping[str, Any], where: str) -> None:
        if "name" not in item:
            self.fail(where, "every group needs a name (displayName)")
        key = item.get("key")
        gid = self.new_id(item.get("id"), str(key) if key is not None else None, where)
        members = self.member_refs(item.get("members") or (), f"{where}.members")
        initial = str(item.get("initial", "complete"))
        if initial not in ("complete", "queued", "changed"):
            self.fail(
                f"{where}.initial",
                "must be 'complete' (processed long ago), 'queued' (a job starts now) or 'changed' (members "
                "show previous_licenses until the job queued now reaches them)",
            )
        if (initial == "changed") != ("previous_licenses" in item):
            self.fail(f"{where}.previous_licenses", "give previous_licenses exactly when initial is 'changed'")
        previous = (
            self.licenses(item["previous_licenses"] or (), f"{where}.previous_licenses")
            if initial == "changed"
            else None
        )
        forced = []
        for i, f in enumerate(item.get("forced") or ()):
            state = str(f.get("state", ERROR))
            if state not in STATES:
                self.fail(f"{where}.forced[{i}].state", f"must be one of {sorted(STATES)}")
            user = "*" if f.get("user", "*") == "*" else self.user_ref(f["user"], f"{where}.forced[{i}].user")
            sku = self.sku(f["sku"], f"{where}.forced[{i}].sku") if f.get("sku") else None
            forced.append((user, sku, state, f.get("error")))
        self.group_ids.add(gid)
        self.groups.append(
            GroupSpec(
                id=gid,
                name=str(item["name"]),
                description=item.get("description"),
                security_enabled=bool(item.get("security_enabled", True)),
                mail_enabled=bool(item.get("mail_enabled", False)),
                members=tuple(dict.fromkeys(members)),
                licenses=self.licenses(item.get("licenses") or (), f"{where}.licenses"),
                timing=self.timing(item.get("processing") or {}, f"{where}.processing"),
                pending=initial == "queued",
                stuck=tuple(self.user_ref(u, f"{where}.stuck") for u in item.get("stuck") or ()),
                forced=tuple(forced),
                previous_licenses=previous,
            )
        )

    def events(self, items: Iterable[Mapping[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for i, item in enumerate(items):
            if "at" not in item or "action" not in item:
                self.fail(f"events[{i}]", 'expected {"at": <sim seconds>, "action": "remove_member", ...}')
            if item["action"] not in Tenant.ACTIONS:
                self.fail(f"events[{i}].action", f"unknown action; expected one of {', '.join(Tenant.ACTIONS)}")
            action = {k: v for k, v in item.items() if k != "at"}
            out.append((float(item["at"]), action))
        return out

    def legacy(self, doc: Mapping[str, Any] | None) -> LegacySpec | None:
        if not doc:
            return None
        if "sku" not in doc:
            self.fail("legacy", "needs the SKU the script assigns: legacy.sku")
        sku = self.sku(doc["sku"], "legacy.sku")
        targets_doc = doc.get("targets") or {"all": True}
        targets = LegacyTargets(
            everyone=bool(targets_doc.get("all", False)),
            departments=frozenset(targets_doc.get("departments") or ()),
            groups=frozenset(self.keys.get(str(g), str(g).lower()) for g in targets_doc.get("groups") or ()),
            users=frozenset(self.user_ref(u, "legacy.targets.users") for u in targets_doc.get("users") or ()),
        )
        every = float(doc.get("every_seconds", 60))
        if every <= 0:
            self.fail("legacy.every_seconds", "must be > 0")
        return LegacySpec(
            sku,
            self.plans(doc.get("disabled_plans") or (), "legacy.disabled_plans", sku),
            every,
            targets,
            bool(doc.get("enabled", False)),
        )

    def wave(self, doc: Mapping[str, Any], where: str) -> Wave:
        group_ref = str(doc.get("group", ""))
        gid = self.keys.get(group_ref, group_ref.lower())
        spec = next((g for g in self.groups if g.id == gid), None)
        if spec is None:
            self.fail(f"{where}.group", f"no group {group_ref!r}")
        assert spec is not None
        skus = tuple(self.sku(s, f"{where}.skus") for s in doc.get("skus") or ())
        if not skus:
            self.fail(f"{where}.skus", "name at least one SKU to migrate")
        sel = doc.get("selection") or {"kind": "all"}
        kind = str(sel.get("kind", "all"))
        if kind not in ("all", "first", "percent", "users"):
            self.fail(f"{where}.selection.kind", "must be all, first, percent or users")
        selection = WaveSelection(
            kind,
            frozenset(self.user_ref(u, f"{where}.selection.users") for u in sel.get("users") or ()),
            int(sel.get("count", 0)),
            float(sel.get("percent", 0.0)),
        )
        member_users = [m for m in spec.members if m in self.user_index]
        timing_dep: dict[str, frozenset[str]] = {}
        for ref, outcomes in (doc.get("timing_dependent") or {}).items():
            bad = set(outcomes) - OUTCOMES
            if bad:
                self.fail(
                    f"{where}.timing_dependent.{ref}", f"unknown outcome(s) {sorted(bad)}; known: {sorted(OUTCOMES)}"
                )
            timing_dep[self.user_ref(ref, f"{where}.timing_dependent")] = frozenset(outcomes)
        expected = self.expected(doc.get("expected") or {}, member_users, timing_dep, f"{where}.expected")
        identical_doc = doc.get("expected_identical")
        identical = (
            {**expected, **self.expected(identical_doc, member_users, timing_dep, f"{where}.expected_identical", True)}
            if identical_doc
            else dict(expected)
        )
        return Wave(
            name=str(doc.get("name") or spec.name),
            group=gid,
            skus=skus,
            selection=selection,
            group_license=self.licenses(doc.get("group_license") or (), f"{where}.group_license") or spec.licenses,
            expected=expected,
            expected_identical=identical,
            timing_dependent=timing_dep,
        )

    def expected(
        self,
        doc: Mapping[str, str],
        members: list[str],
        timing_dep: Mapping[str, frozenset[str]],
        where: str,
        partial: bool = False,
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        default = doc.get("*")
        for ref, outcome in doc.items():
            if outcome not in OUTCOMES:
                self.fail(f"{where}.{ref}", f"unknown outcome {outcome!r}; known: {sorted(OUTCOMES)}")
            if ref != "*":
                out[self.user_ref(ref, where)] = outcome
        if default is not None and not partial:
            for member in members:
                if member not in out and member not in timing_dep:
                    out[member] = default
        return out


def parse(doc: Mapping[str, Any], *, source: str = "scenario") -> Scenario:
    """Validate and resolve a scenario document (see README.md for the schema)."""
    return _Parser(doc, source).parse()


# ------------------------------------------------------------------------------ building
def build_tenant(scenario: Scenario, clock: SimClock) -> Tenant:
    tenant = Tenant(
        clock,
        tenant_id=scenario.tenant_id,
        domain=scenario.domain,
        default_usage_location=scenario.default_usage_location,
        rules=scenario.rules,
        timing=scenario.timing,
    )
    for sku, seats in scenario.skus:
        tenant.add_sku(sku, seats)
    intern: Callable[[Any], Any] = tenant.intern
    for spec in scenario.users:
        user = tenant.add_user(
            User(
                spec.id,
                spec.upn,
                spec.display_name,
                given_name=spec.given_name,
                surname=spec.surname,
                mail=spec.upn,
                department=intern(spec.department),
                job_title=intern(spec.job_title),
                usage_location=intern(spec.usage_location),
            )
        )
        for sku_id, disabled in spec.direct:
            tenant.load_direct(user.id, sku_id, disabled)
    for group_spec in scenario.groups:
        tenant.add_group(
            Group(
                group_spec.id,
                group_spec.name,
                description=group_spec.description,
                security_enabled=group_spec.security_enabled,
                mail_enabled=group_spec.mail_enabled,
                timing=group_spec.timing,
            )
        )
    for group_spec in scenario.groups:
        group = tenant.groups[group_spec.id]
        for member in group_spec.members:
            tenant.load_member(group.id, member)
        for sku_id, disabled in group_spec.licenses:
            tenant.load_group_license(group.id, sku_id, disabled)
        group.stuck.update(group_spec.stuck)
        for forced_user, forced_sku, state, error in group_spec.forced:
            group.forced[forced_user] = (forced_sku, state, error)
    tenant.finish_load(
        pending=[g.id for g in scenario.groups if g.pending],
        changed={g.id: dict(g.previous_licenses) for g in scenario.groups if g.previous_licenses is not None},
    )
    for at, action in scenario.events:
        tenant.schedule_event(at, action)
    tenant.keys.update(scenario.keys)
    if scenario.legacy is not None:
        tenant.set_legacy(scenario.legacy)
    return tenant
