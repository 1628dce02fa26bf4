"""Offline checks of the Azure deployment (infra/, azure.yaml): no Bicep compiler is available here, so
every .bicep file is parsed with pycep-parser and cross-checked against the code it deploys: binding
expressions, settings defaults, queue and table names, telemetry event kinds, role ids, runtime.

pycep returns identifiers and string literals alike as plain strings; `_resolve` treats a string
that names a parameter or variable in scope as a reference to it, which is how Bicep reads it too
for every expression these files use.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from pycep import BicepParser

from licshift.adapters.entities import table_names
from licshift.adapters.queues import poison_queue
from licshift.services import telemetry
from licshift.settings import STORAGE_CONNECTION, Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
GRAPH_FILE = INFRA / "app" / "graph-permissions.bicep"
BINDING_SOURCES = (ROOT / "function_app.py", *sorted((ROOT / "src" / "licshift" / "functions").glob("*.py")))

# Settings the Flex Consumption plan rejects or ignores (functions-app-settings, "Flex Consumption
# plan deprecations"); WEBSITE_* as a whole is checked by prefix.
DEPRECATED_ON_FLEX = frozenset(
    {
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
        "AzureWebJobsStorage",  # a connection string: keys are off, the identity settings replace it
    }
)

# Azure built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
BUILT_IN_ROLES = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Storage Table Data Reader": "76199698-9eea-4c19-bc75-cec21354c6b6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

# Graph application permissions, each for the calls licshift makes (the least privileged one Microsoft's
# permission tables name for them; LicenseAssignment.Read.All is the one they name for GET /subscribedSkus).
GRAPH_ROLES = {"LicenseAssignment.ReadWrite.All", "LicenseAssignment.Read.All", "User.Read.All", "GroupMember.Read.All"}

ALERTED_KINDS = {
    telemetry.RESTORED,
    telemetry.SETTLE_LOSS,
    telemetry.HALTED,
    telemetry.PROCESSING_TIMEOUT,
    telemetry.POISON,
    telemetry.REMOVAL_FAILED,
    telemetry.DRIFT,
    telemetry.DRIFT_REMOVE_HELD,
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KIND_FILTER = re.compile(r'tostring\(customDimensions\.licshift_kind\)\s*(?:==\s*"([^"]*)"|in\s*\(([^)]*)\))')


# --- parsing and a small evaluator for the constant part of the templates ---------------------------


@cache
def _parse(path: Path) -> dict[str, Any]:
    try:
        return dict(BicepParser().parse(file_path=path))
    except Exception as exc:  # lark raises several unrelated types; any of them is a failure here
        pytest.fail(f"{path.relative_to(ROOT)} does not parse with pycep-parser: {exc}")


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def _dotted(expr: Any) -> str | None:
    """`a.b.c` for a pure property-accessor chain (pycep nests them to the right), else None."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        head, tail = _dotted(operands["operand_1"]), _dotted(operands["operand_2"])
        return None if head is None or tail is None else f"{head}.{tail}"
    return None


def _resolve(value: Any, scope: Mapping[str, Any]) -> Any:
    """The value of a constant expression; anything depending on deployment outputs stays as parsed."""
    if isinstance(value, str):
        if value in scope:
            return scope[value]

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            resolved = scope.get(name)
            return str(resolved) if isinstance(resolved, str | int) and not isinstance(resolved, bool) else match[0]

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, list):
        return [_resolve(item, scope) for item in value]
    if not isinstance(value, dict):
        return value
    if "function" in value and len(value) == 1:
        return _call(value["function"], scope, value)
    if "operator" in value and len(value) == 1:
        return _operate(value["operator"], scope, value)
    return {_unquote(key): _resolve(item, scope) for key, item in value.items()}


def _call(function: dict[str, Any], scope: Mapping[str, Any], original: Any) -> Any:
    args = [_resolve(arg, scope) for arg in function["parameters"].values()]
    if function["type"] == "string" and isinstance(args[0], int) and not isinstance(args[0], bool):
        return str(args[0])
    if function["type"] == "concat" and all(isinstance(arg, list) for arg in args):
        return [item for arg in args for item in arg]
    if function["type"] == "union" and all(isinstance(arg, dict) for arg in args):
        merged: dict[str, Any] = {}
        for arg in args:
            merged.update(arg)
        return merged
    return original


def _operate(operator: dict[str, Any], scope: Mapping[str, Any], original: Any) -> Any:
    operands = operator["operands"]
    if operator["type"] == "not":
        value = _resolve(operands["bool_value"], scope)
        if isinstance(value, bool):
            return not value
    if operator["type"] == "conditional":
        condition = _resolve(operands["condition"], scope)
        if isinstance(condition, bool):
            return _resolve(operands["true_value" if condition else "false_value"], scope)
    if operator["type"] == "index_accessor":
        target, index = _resolve(operands["operand_1"], scope), _resolve(operands["operand_2"], scope)
        if isinstance(target, dict) and isinstance(index, str) and index in target:
            return target[index]
    return original


def _scope(parsed: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters at their defaults (or `overrides`), then variables in file order."""
    scope: dict[str, Any] = {
        name: param.get("default") for name, param in parsed.get("parameters", {}).items() if "default" in param
    }
    scope.update(overrides or {})
    for name, variable in parsed.get("variables", {}).items():
        scope[name] = _resolve(variable["value"], scope)
    return scope


def _module_scope(module_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parsed module file, its scope) with the parameters main.bicep passes at their defaults."""
    main = _parse(MAIN)
    module = main["modules"][module_name]
    main_scope = _scope(main)
    passed = {name: _resolve(value, main_scope) for name, value in _body(module["config"])["params"].items()}
    parsed = _parse(INFRA / module["detail"]["path"])
    return parsed, _scope(parsed, passed)


def _resources(parsed: Mapping[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """Configs of the resources of one type (a loop's or condition's body)."""
    return [
        _body(resource["config"])
        for resource in parsed.get("resources", {}).values()
        if resource["type"] == resource_type
    ]


def _body(config: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's own properties, under its loop and condition if it has them."""
    return _body(config["config"]) if "loop_type" in config or "condition" in config else config


def _one(parsed: Mapping[str, Any], resource_type: str) -> dict[str, Any]:
    found = _resources(parsed, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {len(found)}"
    return found[0]


def _app_settings() -> dict[str, Any]:
    api, scope = _module_scope("api")
    config = _one(api, "Microsoft.Web/sites/config")
    assert config["name"] == "appsettings"
    settings = _resolve(config["properties"], scope)
    assert isinstance(settings, dict), f"app settings did not resolve to one object: {settings}"
    return settings


def _binding_names() -> set[str]:
    return {name for path in BINDING_SOURCES for name in re.findall(r"%([A-Za-z0-9_]+)%", path.read_text())}


def _kinds_in(kql: str) -> set[str]:
    kinds: set[str] = set()
    for single, listed in _KIND_FILTER.findall(kql):
        kinds.update([single] if single else re.findall(r'"([^"]*)"', listed))
    return kinds


def _telemetry_kinds() -> set[str]:
    """The closed set of event kinds telemetry.py defines."""
    return {
        value
        for name, value in vars(telemetry).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z]+(-[a-z]+)*", value)
    }


def _logged_kinds() -> set[str]:
    """Event kinds plus the record kinds logged directly with extra={"licshift_kind": ...}."""
    direct = {
        kind
        for path in (ROOT / "src" / "licshift").rglob("*.py")
        for kind in re.findall(r'"licshift_kind":\s*"([a-z-]+)"', path.read_text())
    }
    return _telemetry_kinds() | direct


def _cron_interval_seconds(schedule: str) -> int:
    """Seconds between runs of the NCRONTAB forms the tick uses (every N seconds or every M minutes)."""
    second, minute, *rest = schedule.split()
    assert len(rest) == 4, schedule
    assert all(field == "*" for field in rest), schedule
    if second.startswith("*/") and minute == "*":
        return int(second[2:])
    if second == "0" and minute == "*":
        return 60
    if second == "0" and minute.startswith("*/"):
        return 60 * int(minute[2:])
    raise AssertionError(f"unrecognised tick schedule {schedule!r}")


# --- the templates parse ---------------------------------------------------------------------------


def test_infra_has_the_expected_files() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in _bicep_files()}
    assert {
        "main.bicep",
        "app/api.bicep",
        "app/storage.bicep",
        "app/rbac.bicep",
        "app/graph-permissions.bicep",
    } <= names
    assert (INFRA / "app" / "workbook.json").is_file()


@pytest.mark.parametrize("path", _bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    parsed = _parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path.name} declares nothing"


def test_every_module_main_uses_exists() -> None:
    main = _parse(MAIN)
    assert main["globals"]["scope"]["value"] == "subscription"
    for name, module in main["modules"].items():
        assert module["type"] == "local", f"module {name} comes from a registry; keep infra offline-checkable"
        assert (INFRA / module["detail"]["path"]).is_file(), f"module {name}: {module['detail']['path']} missing"


def test_loaded_files_exist_and_abbreviations_cover_their_uses() -> None:
    main_text = MAIN.read_text()
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.([A-Za-z]+)", main_text))
    assert used
    assert used <= set(abbreviations), f"abbreviations.json lacks {used - set(abbreviations)}"
    for path in _bicep_files():
        for loaded in re.findall(r"load(?:Text|Json)Content\('([^']+)'\)", path.read_text()):
            assert (path.parent / loaded).is_file(), f"{path.name} loads missing {loaded}"


def test_main_parameters_map_azd_variables_to_declared_parameters() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = _parse(MAIN)["parameters"]
    assert set(parameters) <= set(declared)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    # azd >= 1.17.1 sets AZURE_PRINCIPAL_TYPE (ServicePrincipal under azd pipeline config); a CI principal
    # given principalType User fails every role assignment with UnmatchedPrincipalType.
    assert parameters["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    assert set(_decorator(declared["principalType"], "allowed")) == {"User", "ServicePrincipal", "Group"}
    required = {name for name, param in declared.items() if param.get("default") is None}
    assert required <= set(parameters), f"azd cannot supply {required - set(parameters)}"
    # Opt-in behaviour an admin switches on with `azd env set`, off unless set.
    assert parameters["driftRemove"]["value"] == "${LICSHIFT_DRIFT_REMOVE=false}"
    assert declared["driftRemove"]["default"] is False


def test_outputs_azd_and_the_admin_need() -> None:
    outputs = _parse(MAIN)["outputs"]
    for name in ("AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME"):
        assert name in outputs
    for name in ("AZURE_STORAGE_QUEUE_ENDPOINT", "AZURE_STORAGE_TABLE_ENDPOINT", "LICSHIFT_WAVES_QUEUE"):
        assert name in outputs
    # azd may change an output name's case; environment variables are case-sensitive on Linux.
    assert all(name == name.upper() for name in outputs), "keep output names upper case"


# --- app settings ----------------------------------------------------------------------------------


def test_every_binding_expression_is_an_app_setting() -> None:
    names = _binding_names()
    assert {"LICSHIFT_WAVES_QUEUE", "LICSHIFT_REMOVALS_QUEUE", "LICSHIFT_TICK_SCHEDULE"} <= names
    missing = names - set(_app_settings())
    assert not missing, f"the host cannot resolve %{'%, %'.join(sorted(missing))}%: set them in infra/main.bicep"


def test_deployed_defaults_configure_the_same_app_as_settings_defaults() -> None:
    deployed = {name: value for name, value in _app_settings().items() if isinstance(value, str)}
    from_bicep, defaults = Settings.from_env(deployed), Settings()
    for field in (
        "graph_endpoint",
        "waves_queue",
        "removals_queue",
        "table_prefix",
        "tick_schedule",
        "tick_seconds",
        "drift_schedule",
        "write_rate_ceiling",
        "policy",
        "group_allowlist",
        "canary_max_users",
        "kill_switch",
        "drift_remove",
        "reprocess_enabled",
    ):
        assert getattr(from_bicep, field) == getattr(defaults, field), field


def test_admin_knobs_are_parameters() -> None:
    knobs = _parse(MAIN)["variables"]["licshiftSettings"]["value"]
    parameters = _parse(MAIN)["parameters"]
    for setting in ("LICSHIFT_POLICY", "LICSHIFT_GROUP_ALLOWLIST", "LICSHIFT_WRITE_RATE_CEILING"):
        assert knobs[setting] in parameters, f"{setting} is not a parameter"
    for setting in ("LICSHIFT_CANARY_MAX_USERS", "LICSHIFT_KILL_SWITCH", "LICSHIFT_DRIFT_REMOVE"):
        assert set(re.findall(r"[A-Za-z]+", json.dumps(knobs[setting]))) & set(parameters), setting


def test_tick_seconds_follow_the_tick_schedule() -> None:
    main = _parse(MAIN)
    schedules = _scope(main)["tickSchedules"]
    allowed = next(d["argument"] for d in main["parameters"]["tickSeconds"]["decorators"] if d["type"] == "allowed")
    assert sorted(int(key) for key in schedules) == sorted(allowed)
    for seconds, schedule in schedules.items():
        assert _cron_interval_seconds(schedule) == int(seconds), schedule
    deployed = _app_settings()
    assert _cron_interval_seconds(deployed["LICSHIFT_TICK_SCHEDULE"]) == int(deployed["LICSHIFT_TICK_SECONDS"])


def test_no_setting_deprecated_on_flex_is_emitted() -> None:
    names = set(_app_settings())
    assert not names & DEPRECATED_ON_FLEX
    assert not [name for name in names if name.startswith("WEBSITE_")]
    # Nowhere else either (e.g. siteConfig.appSettings): comments are not part of the parse.
    for path in _bicep_files():
        dumped = json.dumps(_parse(path))
        for name in DEPRECATED_ON_FLEX - {"AzureWebJobsStorage"}:
            assert name not in dumped, f"{path.name} emits {name}"
        assert "WEBSITE_" not in dumped, f"{path.name} emits a WEBSITE_* setting"
        for invalid in ("linuxFxVersion", "alwaysOn"):
            assert invalid not in dumped, f"{path.name}: {invalid} is not valid on Flex"


def test_storage_and_telemetry_settings_use_the_managed_identity() -> None:
    deployed = _app_settings()
    client_id = "identity.outputs.clientId"  # main.bicep passes the user-assigned identity's
    for connection in ("AzureWebJobsStorage", STORAGE_CONNECTION):
        assert deployed[f"{connection}__credential"] == "managedidentity"
        assert _dotted(deployed[f"{connection}__clientId"]) == client_id
        for service in ("queue", "table"):
            uri = _dotted(deployed[f"{connection}__{service}ServiceUri"])
            assert uri == f"storageAccount.properties.primaryEndpoints.{service}"
    assert _dotted(deployed["AzureWebJobsStorage__blobServiceUri"]) == "storageAccount.properties.primaryEndpoints.blob"
    assert _dotted(deployed["AZURE_CLIENT_ID"]) == client_id
    assert _dotted(deployed["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "appInsights.properties.ConnectionString"
    assert deployed["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert deployed["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"


# --- resources -------------------------------------------------------------------------------------


def test_function_app_is_flex_consumption_python_matching_pyproject() -> None:
    api, scope = _module_scope("api")
    plan = _one(api, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    app = _resolve(_one(api, "Microsoft.Web/sites"), scope)
    assert app["kind"] == "functionapp,linux"
    assert app["tags"]["azd-service-name"] == "api"
    assert "azd-env-name" in app["tags"]
    flex = app["properties"]["functionAppConfig"]
    runtime = flex["runtime"]
    assert runtime["name"] == "python"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert runtime["version"] in SpecifierSet(requires), f"runtime {runtime['version']} vs pyproject {requires}"
    assert flex["scaleAndConcurrency"] == {"instanceMemoryMB": 2048, "maximumInstanceCount": 40}
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"


def test_storage_account_has_no_keys_and_no_public_blobs() -> None:
    storage, _ = _module_scope("storage")
    properties = _one(storage, "Microsoft.Storage/storageAccounts")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"


def test_queues_are_the_settings_queues_and_their_poison_queues() -> None:
    storage, scope = _module_scope("storage")
    queue = _one(storage, "Microsoft.Storage/storageAccounts/queueServices/queues")
    loop = storage["resources"]["queues"]["config"]["loop_type"]["detail"]
    assert queue["name"] == loop["item_name"]
    defaults = Settings()
    expected = [defaults.waves_queue, defaults.removals_queue]
    assert sorted(scope[loop["array_name"]]) == sorted([*expected, *map(poison_queue, expected)])
    # and every queue a trigger listens on (e.g. %LICSHIFT_WAVES_QUEUE%-poison) is one of them
    deployed = _app_settings()
    for path in BINDING_SOURCES:
        for queue_name in re.findall(r'queue_name="([^"]+)"', path.read_text()):
            resolved = re.sub(r"%([A-Za-z0-9_]+)%", lambda m: deployed[m.group(1)], queue_name)
            assert resolved in scope[loop["array_name"]], f"{path.name} listens on {resolved}, not declared"


def test_tables_are_the_ledger_tables() -> None:
    storage, scope = _module_scope("storage")
    loop = storage["resources"]["tables"]["config"]["loop_type"]["detail"]
    assert sorted(scope[loop["array_name"]]) == sorted(table_names(Settings().table_prefix).values())


def test_app_insights_and_log_analytics_disable_local_auth() -> None:
    monitoring, _ = _module_scope("monitoring")
    properties = _one(monitoring, "Microsoft.Insights/components")["properties"]
    assert properties["DisableLocalAuth"] is True
    assert _dotted(properties["WorkspaceResourceId"]) == "workspace.id"
    workspace = _one(monitoring, "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_no_ftp_and_no_basic_publishing_credentials() -> None:
    api, scope = _module_scope("api")
    app = _resolve(_one(api, "Microsoft.Web/sites"), scope)
    assert app["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    assert app["properties"]["httpsOnly"] is True
    policies = _resources(api, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(policy["name"] for policy in policies) == ["ftp", "scm"]
    for policy in policies:
        assert _dotted(policy["parent"]) == "functionApp"
        assert policy["properties"] == {"allow": False}


def _decorator(param: Mapping[str, Any], kind: str) -> Any:
    return next(d["argument"] for d in param["decorators"] if d["type"] == kind)


def test_ledger_storage_is_zone_redundant_by_default() -> None:
    main = _parse(MAIN)
    sku = main["parameters"]["storageSkuName"]
    assert sku["default"] == "Standard_ZRS"
    assert {"Standard_ZRS", "Standard_LRS"} <= set(_decorator(sku, "allowed"))
    storage, scope = _module_scope("storage")
    account = _resolve(_one(storage, "Microsoft.Storage/storageAccounts"), scope)
    assert account["sku"]["name"] == "Standard_ZRS"


def test_instance_ceiling_goes_down_to_one_in_both_files() -> None:
    for path, parsed in ((MAIN, _parse(MAIN)), (INFRA / "app" / "api.bicep", _parse(INFRA / "app" / "api.bicep"))):
        param = parsed["parameters"]["maximumInstanceCount"]
        assert (_decorator(param, "min_value"), _decorator(param, "max_value")) == (1, 1000), path.name
        assert param["default"] == 40, path.name


def _role_assignments() -> list[tuple[str, str, str]]:
    """(role name, scope expression, principal expression) of every role assignment in rbac.bicep."""
    rbac, scope = _module_scope("rbac")
    found = []
    for name, resource in rbac["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        body = _body(config)
        role_ref = _dotted(body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        assert role_ref is not None, name
        assert role_ref.endswith(".id"), name
        role_var = role_ref.removesuffix(".id")
        if "loop_type" in config and config["loop_type"]["detail"]["item_name"] == role_var:
            roles = scope[config["loop_type"]["detail"]["array_name"]]
        else:
            roles = [scope[role_var]]
        target = body["scope"]
        if isinstance(target, dict):  # readTables[i]: the loop's own existing resources
            target = _dotted(target["operator"]["operands"]["operand_1"])
        found += [(role["name"], str(target), str(body["properties"]["principalId"])) for role in roles]
    return found


def test_role_ids_are_the_built_in_roles_they_are_named_for() -> None:
    _, scope = _module_scope("rbac")
    roles = [
        *scope["storageRoles"],
        scope["monitoringRole"],
        scope["operatorQueueRole"],
        scope["operatorReadRole"],
        scope["operatorControlRole"],
    ]
    for role in roles:
        assert BUILT_IN_ROLES[role["name"]] == role["id"], role["name"]
    assert {role["name"] for role in roles} == set(BUILT_IN_ROLES)


def test_the_app_identity_gets_the_roles_the_functions_host_documents() -> None:
    app = {(role, target) for role, target, principal in _role_assignments() if principal == "identityPrincipalId"}
    assert app == {
        ("Storage Blob Data Owner", "storageAccount"),
        ("Storage Queue Data Contributor", "storageAccount"),
        ("Storage Table Data Contributor", "storageAccount"),
        ("Monitoring Metrics Publisher", "appInsights"),
    }


def test_the_operator_can_send_wave_commands_read_the_ledger_and_flip_the_kill_switch_only() -> None:
    operator = {(role, target) for role, target, principal in _role_assignments() if principal == "principalId"}
    assert operator == {
        ("Storage Queue Data Message Sender", "wavesQueue"),
        ("Storage Table Data Reader", "readTables"),
        ("Storage Table Data Contributor", "controlTable"),
    }
    # no role on the account (and so none on the app package blobs), nothing on Application Insights
    assert not [role for role, target in operator if "Blob" in role or target == "storageAccount"]


def test_operator_scopes_are_the_waves_queue_and_the_ledger_tables() -> None:
    rbac, scope = _module_scope("rbac")
    resources = rbac["resources"]
    settings = Settings()
    ledger = table_names(settings.table_prefix)
    queue = resources["wavesQueue"]["config"]
    assert resources["wavesQueue"]["existing"]
    assert _dotted(queue["parent"]) == "queueService"
    assert scope[queue["name"]] == settings.waves_queue
    tables = resources["readTables"]["config"]
    assert resources["readTables"]["existing"]
    read_loop = tables["loop_type"]["detail"]
    assert _body(tables)["name"] == read_loop["item_name"]
    assert sorted(scope["ledgerReadTableNames"]) == sorted(ledger[name] for name in ("Waves", "Outcomes", "Events"))
    assert scope[resources["controlTable"]["config"]["name"]] == ledger["Control"]
    # a new ledger table makes this fail: decide whether operators read it, then list it in main.bicep
    assert sorted([*scope["ledgerReadTableNames"], ledger["Control"]]) == sorted(ledger.values())
    readers = resources["operatorTableReaders"]["config"]["loop_type"]["detail"]
    assert readers["array_name"] == read_loop["array_name"], "one Reader assignment per table read"
    for name in ("operatorQueueSender", "operatorControl"):
        assert resources[name]["config"]["condition"] == "hasOperator"
    main_rbac = _body(_parse(MAIN)["modules"]["rbac"]["config"])["params"]
    assert main_rbac["principalType"] == "principalType"


def test_the_app_starts_after_its_roles_are_granted() -> None:
    assert "rbac" in _parse(MAIN)["modules"]["api"]["config"]["dependsOn"]


# --- Microsoft Graph permissions -------------------------------------------------------------------


def graph_app_roles() -> list[str]:
    """The Graph app roles main.bicep grants (in the deployment or through the postprovision hook)."""
    roles = _scope(_parse(MAIN))["graphAppRoles"]
    assert isinstance(roles, list)
    return [str(role) for role in roles]


def test_graph_permissions_are_off_in_the_deployment_by_default_and_least_privilege() -> None:
    main = _parse(MAIN)
    assert main["parameters"]["grantGraphPermissions"]["default"] is False
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["grantGraphPermissions"]["value"] == "${LICSHIFT_GRANT_GRAPH_PERMISSIONS=false}"
    module = next(m for m in main["modules"].values() if INFRA / m["detail"]["path"] == GRAPH_FILE)
    assert module["config"]["condition"] == "grantGraphPermissions"
    params = _body(module["config"])["params"]
    assert _dotted(params["principalId"]) == "identity.outputs.principalId"
    assert params["appRoleNames"] == "grantedAppRoles"
    assert set(graph_app_roles()) == GRAPH_ROLES
    # the hook grants exactly these: main.bicep hands them over as an output
    output = main["outputs"]["LICSHIFT_GRAPH_APP_ROLES"]["value"]["function"]
    assert output["type"] == "join"
    assert output["parameters"] == {"input_array": "grantedAppRoles", "delimiter": " "}
    graph = _parse(GRAPH_FILE)
    assert {r["type"] for r in graph["resources"].values()} == {
        "Microsoft.Graph/servicePrincipals",
        "Microsoft.Graph/appRoleAssignedTo",
    }, "keep the Graph extension file to the grant alone"
    assert graph["parameters"]["appRoleNames"].get("default") is None, "one list of roles: main.bicep's graphAppRoles"
    roles = set(graph_app_roles())
    assert not {role for role in roles if "Directory." in role or role.endswith("User.ReadWrite.All")}
    grant = json.dumps(_one(graph, "Microsoft.Graph/appRoleAssignedTo")["appRoleId"])
    assert '"filter"' in grant, "resolve app roles by value from the Graph service principal"


def test_reprocessing_adds_user_readwrite_all_only_when_enabled() -> None:
    """reprocessLicenseAssignment needs User.ReadWrite.All (nothing narrower): granted, and the app
    setting turned on, only with reprocessEnabled, which is off by default."""
    main = _parse(MAIN)
    assert main["parameters"]["reprocessEnabled"]["default"] is False
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["reprocessEnabled"]["value"] == "${LICSHIFT_REPROCESS_ENABLED=false}"
    assert _scope(main)["grantedAppRoles"] == graph_app_roles(), "off: the least-privilege list alone"
    assert _scope(main)["reprocessAppRoles"] == ["User.ReadWrite.All"]
    granted = main["variables"]["grantedAppRoles"]["value"]["operator"]
    assert granted["type"] == "conditional"
    assert granted["operands"]["condition"] == "reprocessEnabled"
    assert granted["operands"]["false_value"] == "graphAppRoles"
    assert granted["operands"]["true_value"]["function"]["parameters"] == {
        "arg_1": "graphAppRoles",
        "arg_2": "reprocessAppRoles",
    }
    assert _app_settings()["LICSHIFT_REPROCESS_ENABLED"] == "false"
    assert Settings.from_env({"LICSHIFT_REPROCESS_ENABLED": "false"}).reprocess_enabled is False


def test_the_apps_permission_hint_names_the_roles_the_deployment_grants() -> None:
    """A 403 from Graph tells the admin what to grant: the same list the hook and the Bicep grant."""
    from licshift.adapters.graph import GRAPH_PERMISSIONS

    named = re.split(r", | and ", GRAPH_PERMISSIONS)
    assert sorted(named) == sorted(graph_app_roles())


def test_graph_extension_alias_is_configured_and_deployer_rights_documented() -> None:
    alias = next(iter(_parse(GRAPH_FILE)["extensions"]))
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"][alias].startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    text = GRAPH_FILE.read_text()
    assert "AppRoleAssignment.ReadWrite.All" in text
    assert "Application.Read.All" in text


# --- workbook and alerts ---------------------------------------------------------------------------


def test_workbook_is_valid_and_queries_only_known_kinds() -> None:
    workbook = json.loads((INFRA / "app" / "workbook.json").read_text())
    assert workbook["version"] == "Notebook/1.0"
    queries = [item["content"]["query"] for item in workbook["items"] if item["type"] == 3]
    assert len(queries) >= 6
    known = _logged_kinds()
    shown: set[str] = set()
    for query in queries:
        kinds = _kinds_in(query)
        assert kinds, f"workbook query filters on no licshift_kind: {query}"
        assert kinds <= known, f"workbook queries kinds nobody logs: {kinds - known}"
        shown |= kinds
    assert {telemetry.THROTTLED, telemetry.RESTORED, telemetry.HALTED, telemetry.DRIFT, "outcome"} <= shown


def test_workbook_resource_loads_the_json_under_a_stable_guid_name() -> None:
    insights, _ = _module_scope("insights")
    workbook = _one(insights, "Microsoft.Insights/workbooks")
    assert workbook["name"]["function"]["type"] == "guid"
    dumped = json.dumps(workbook["properties"]["serializedData"])
    assert "load_text_content" in dumped
    assert "workbook.json" in dumped
    placeholder = json.loads((INFRA / "app" / "workbook.json").read_text())["fallbackResourceIds"][0]
    assert placeholder in dumped, "the workbook's resource placeholder is not replaced"


def test_alerts_fire_on_the_alert_level_events_telemetry_defines() -> None:
    insights, scope = _module_scope("insights")
    rules = scope["alertRules"]
    defined = _telemetry_kinds()
    alerted: set[str] = set()
    for rule in rules:
        kinds = _kinds_in(rule["query"])
        assert kinds, f"alert {rule['name']} filters on no licshift_kind"
        assert kinds <= defined, f"alert {rule['name']} queries {kinds}; telemetry defines {defined}"
        assert 0 <= rule["severity"] <= 4
        alerted |= kinds
    assert alerted == ALERTED_KINDS
    loop = insights["resources"]["alerts"]["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "alertRules"
    rule = _one(insights, "Microsoft.Insights/scheduledQueryRules")
    assert rule["kind"] == "LogAlert"
    criteria = rule["properties"]["criteria"]["allOf"][0]
    assert _dotted(criteria["query"]) == f"{loop['item_name']}.query"
    assert rule["properties"]["actions"]["actionGroups"]


# --- azd -------------------------------------------------------------------------------------------


def test_azure_yaml_deploys_the_repo_root_as_a_python_function_app() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    api = project["services"]["api"]
    assert api["language"] == "python"
    assert api["host"] == "function"
    root = (ROOT / api["project"]).resolve()
    assert root == ROOT
    for name in ("function_app.py", "host.json", "requirements.txt"):
        assert (root / name).is_file()


# --- checkov ---------------------------------------------------------------------------------------


def test_every_checkov_skip_says_why_and_names_a_real_file() -> None:
    """`make checkov` scans infra/ with infra/checkov.yaml; a skip without its reason is a silent hole."""
    config_path = INFRA / "checkov.yaml"
    config = yaml.safe_load(config_path.read_text())
    assert config["directory"] == ["infra"]
    assert config["framework"] == ["bicep"]
    lines = config_path.read_text().splitlines()
    for check in config["skip-check"]:
        (line,) = [line for line in lines if line.strip().startswith(f"- {check} ")]
        reason = line.partition("#")[2].strip()
        assert len(reason) > 20, f"{check} is skipped without a reason"
    for path in config.get("skip-path", []):
        assert (ROOT / path).is_file(), f"checkov skips {path}, which does not exist"
        assert path.endswith("graph-permissions.bicep"), "only the Graph extension file may escape checkov"
        _parse(ROOT / path)  # still parsed here, by the newer pycep-parser
    makefile = (ROOT / "Makefile").read_text()
    assert "CKV_PARSE_ERROR_FAIL=true $(CHECKOV_VENV)/bin/checkov --config-file infra/checkov.yaml" in makefile


# --- the README's deployment section ---------------------------------------------------------------


def _readme_deployment() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Deployment\n", 1)[1].split("\n## ", 1)[0]


def test_readme_manual_grant_names_the_roles_the_deployment_grants() -> None:
    section = _readme_deployment()
    (loop,) = re.findall(r"^for ROLE in ([A-Za-z. ]+); do$", section, flags=re.MULTILINE)
    assert loop.split() == graph_app_roles()
    assert "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID" in section
    assert "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID" in _parse(MAIN)["outputs"]


def test_readme_operator_and_viewer_commands_use_the_deployed_roles_and_names() -> None:
    section = _readme_deployment()
    _, scope = _module_scope("rbac")
    operator_roles = {scope[name]["name"] for name in ("operatorQueueRole", "operatorReadRole", "operatorControlRole")}
    commands = re.findall(r'az role assignment create \$AS --role "([^"]+)" --scope "([^"]+)"', section)
    assert {role for role, _ in commands} == operator_roles
    settings = Settings()
    ledger = table_names(settings.table_prefix)
    assert f"$ACCOUNT/queueServices/default/queues/{settings.waves_queue}" in {target for _, target in commands}
    for table in ledger.values():
        assert table in section
    assert "Blob" not in " ".join(role for role, _ in commands)
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert project["requiredVersions"]["azd"].removeprefix(">= ") in section


# --- optional network isolation --------------------------------------------------------------------


def test_network_isolation_is_off_by_default_and_wired_through_when_on() -> None:
    main = _parse(MAIN)
    assert main["parameters"]["vnetEnabled"]["default"] is False
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["vnetEnabled"]["value"] == "${LICSHIFT_VNET_ENABLED=false}"
    assert main["modules"]["network"]["config"]["condition"] == "vnetEnabled"
    storage, scope = _module_scope("storage")
    account = _resolve(_one(storage, "Microsoft.Storage/storageAccounts"), scope)
    assert account["properties"]["publicNetworkAccess"] == "Enabled"  # vnetEnabled false: public endpoint, Entra ID
    on = _resolve(_one(storage, "Microsoft.Storage/storageAccounts"), {**scope, "publicNetworkAccess": False})
    assert on["properties"]["publicNetworkAccess"] == "Disabled"
    assert on["properties"]["networkAcls"]["defaultAction"] == "Deny"
    api_params = _body(main["modules"]["api"]["config"])["params"]
    subnet = api_params["virtualNetworkSubnetId"]["operator"]
    assert subnet["operands"]["condition"] == "vnetEnabled"
    assert _dotted(subnet["operands"]["true_value"]) == "network.outputs.appSubnetId"


def test_private_endpoints_cover_every_storage_service_the_app_uses() -> None:
    network = _parse(INFRA / "app" / "network.bicep")
    scope = _scope(network, {"addressPrefix": "10.0.0.0/16"})
    assert scope["storageServices"] == ["blob", "queue", "table"]  # host (blob, queue, table), queues, ledger
    for name in ("dnsZones", "dnsLinks", "endpoints", "endpointDns"):
        loop = network["resources"][name]["config"]["loop_type"]["detail"]
        assert loop["array_name"] == "storageServices", name
    endpoint = _one(network, "Microsoft.Network/privateEndpoints")
    connection = endpoint["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert _dotted(connection["privateLinkServiceId"]) == "storageAccount.id"
    vnet = _one(network, "Microsoft.Network/virtualNetworks")
    app_subnet, endpoint_subnet = vnet["properties"]["subnets"]
    assert app_subnet["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert _dotted(app_subnet["properties"]["natGateway"]["id"]) == "nat.id", "Graph is reached through the NAT"
    assert endpoint_subnet["properties"]["privateEndpointNetworkPolicies"] == "Disabled"
