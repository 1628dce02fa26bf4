"""The azd hooks (infra/hooks/*.sh) run by dash, as azd runs them on Linux and macOS, against a stand-in
`az` that answers like Microsoft Graph and Azure would: no tenant is reachable from tests. The stand-in
records every call, so the tests see which grants were attempted, how often and with what body.

The PowerShell twins cannot run here (no pwsh on these machines); they are checked for the same
contract by reading them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "infra" / "hooks"
MI = "11111111-2222-3333-4444-555555555555"
GRAPH_SP = "99999999-0000-0000-0000-000000000000"
ROLES = ["LicenseAssignment.ReadWrite.All", "LicenseAssignment.Read.All", "User.Read.All", "GroupMember.Read.All"]

FAKE_AZ = r'''#!{python}
"""A stand-in for the Azure CLI: answers from state.json, appends each call to calls.jsonl."""
import json, sys
from pathlib import Path

state_path = Path(__file__).with_name("state.json")
state = json.loads(state_path.read_text())
args = sys.argv[1:]
with Path(__file__).with_name("calls.jsonl").open("a") as log:
    log.write(json.dumps(args) + "\n")

def arg(name):
    return args[args.index(name) + 1] if name in args else ""

def save():
    state_path.write_text(json.dumps(state))

def fail(text):
    sys.stderr.write(text + "\n")
    sys.exit(1)

if args[:2] == ["account", "show"]:
    if not state.get("signed_in", True):
        fail("ERROR: Please run 'az login' to setup account.")
    print(state.get("subscription", "sub-1") if arg("--query") == "id" else "{{}}")
elif args[:3] == ["ad", "sp", "show"]:
    query = arg("--query")
    if query == "id":
        print(state["graph_sp"])
    else:
        role = query.split("value=='")[1].split("'")[0]
        if role in state["roles"]:
            print("id-" + role)
elif args[:2] == ["rest", "--method"]:
    method, uri = args[2], arg("--uri")
    if "/appRoleAssignments" in uri and method == "GET":
        if state.get("replication_misses", 0) > 0:
            state["replication_misses"] -= 1
            save()
            fail("ERROR: Not Found({{\"error\":{{\"code\":\"Request_ResourceNotFound\"}}}})")
        print("\n".join(state.get("held", [])))
    elif "/appRoleAssignments" in uri and method == "POST":
        if state.get("deny"):
            fail("ERROR: Forbidden({{\"error\":{{\"code\":\"Authorization_RequestDenied\"}}}})")
        if state.get("post_misses", 0) > 0:
            state["post_misses"] -= 1
            save()
            fail("ERROR: Bad Request(Resource '{mi}' does not exist or one of its queried objects are not present.)")
        body = json.loads(arg("--body"))
        state.setdefault("held", []).append(body["appRoleId"])
        save()
    elif "/directoryObjects/" in uri:
        print(state.get("odata_type", ""))
    elif "/me/transitiveMemberOf" in uri:
        print("\n".join(state.get("directory_roles", [])))
    else:
        fail("unexpected uri " + uri)
elif args[:3] == ["role", "assignment", "list"]:
    print("\n".join(state.get("rbac_roles", [])))
elif args[:2] == ["account", "get-access-token"]:
    print(state.get("token", ""))
else:
    fail("unexpected az call: " + " ".join(args))
'''

FAKE_AZD = """#!/bin/sh
printf '%s\\n' "$*" >> "$(dirname "$0")/azd-calls.txt"
"""


@dataclass
class Run:
    code: int
    out: str
    calls: list[list[str]]
    azd_calls: list[str]


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("az", FAKE_AZ.format(python=sys.executable, mi=MI)), ("azd", FAKE_AZD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "calls.jsonl").write_text("")
    return bin_dir


def _run(sandbox: Path, script: str, state: dict[str, Any], env: dict[str, str], *, with_az: bool = True) -> Run:
    (sandbox / "state.json").write_text(json.dumps({"graph_sp": GRAPH_SP, "roles": ROLES, **state}))
    if not with_az:
        (sandbox / "az").unlink()
    path = f"{sandbox}:/usr/bin:/bin"
    full_env = {"PATH": path, "HOME": str(sandbox), "LICSHIFT_GRANT_RETRY_SECONDS": "0", **env}
    done = subprocess.run(["dash", script], capture_output=True, text=True, env=full_env, timeout=60)
    calls = [json.loads(line) for line in (sandbox / "calls.jsonl").read_text().splitlines()]
    azd_log = sandbox / "azd-calls.txt"
    azd_calls = azd_log.read_text().splitlines() if azd_log.exists() else []
    return Run(done.returncode, done.stdout + done.stderr, calls, azd_calls)


def _post(sandbox: Path, state: dict[str, Any], **env: str) -> Run:
    base = {"AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": MI, "LICSHIFT_GRAPH_APP_ROLES": " ".join(ROLES)}
    return _run(sandbox, str(HOOKS / "postprovision.sh"), state, {**base, **env})


def _posts(run: Run) -> list[dict[str, str]]:
    return [json.loads(c[c.index("--body") + 1]) for c in run.calls if c[:3] == ["rest", "--method", "POST"]]


# --- postprovision ---------------------------------------------------------------------------------


def test_grants_every_role_once_after_the_identity_replicates(sandbox: Path) -> None:
    run = _post(sandbox, {"replication_misses": 2, "post_misses": 1})
    assert run.code == 0, run.out
    assert "retrying" in run.out
    bodies = _posts(run)
    assert {b["appRoleId"] for b in bodies} == {f"id-{role}" for role in ROLES}
    assert all(b["principalId"] == MI and b["resourceId"] == GRAPH_SP for b in bodies)
    assert len(bodies) == len(ROLES) + 1  # one POST failed on replication and was retried
    assert run.out.rstrip().endswith("every Microsoft Graph permission licshift needs is granted.")


def test_roles_already_held_are_not_granted_again(sandbox: Path) -> None:
    run = _post(sandbox, {"held": [f"id-{ROLES[0]}", f"id-{ROLES[2]}"]})
    assert run.code == 0, run.out
    assert [b["appRoleId"] for b in _posts(run)] == [f"id-{ROLES[1]}", f"id-{ROLES[3]}"]
    assert f"{ROLES[0]}: already granted" in run.out


def _printed_commands(out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  MI="))
    end = next(i for i, line in enumerate(lines) if line.strip() == "done")
    return "\n".join(line[2:] for line in lines[start : end + 1])


def test_without_the_rights_it_stops_at_once_and_prints_commands_that_grant_everything(sandbox: Path) -> None:
    run = _post(sandbox, {"deny": True})
    assert run.code == 0, "a missing grant must not fail azd up"
    assert len(_posts(run)) == 1, "Authorization_RequestDenied is not retried"
    assert "Privileged Role Administrator" in run.out
    commands = _printed_commands(run.out)
    assert MI in commands
    # The printed commands, run as printed by an admin who may, grant every role.
    state = json.loads((sandbox / "state.json").read_text())
    (sandbox / "state.json").write_text(json.dumps({**state, "deny": False, "held": []}))
    (sandbox / "calls.jsonl").write_text("")
    admin = subprocess.run(["dash", "-c", commands], env={"PATH": f"{sandbox}:/usr/bin:/bin"}, capture_output=True)
    assert admin.returncode == 0, admin.stderr
    granted = json.loads((sandbox / "state.json").read_text())["held"]
    assert sorted(granted) == sorted(f"id-{role}" for role in ROLES)


@pytest.mark.parametrize(
    ("state", "with_az", "reason"),
    [
        ({}, False, "is not installed"),
        ({"signed_in": False}, True, "is not signed in"),
    ],
)
def test_without_a_usable_az_it_prints_the_commands(
    sandbox: Path, state: dict[str, Any], with_az: bool, reason: str
) -> None:
    run = _run(
        sandbox,
        str(HOOKS / "postprovision.sh"),
        state,
        {"AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": MI, "LICSHIFT_GRAPH_APP_ROLES": " ".join(ROLES)},
        with_az=with_az,
    )
    assert run.code == 0
    assert reason in run.out
    assert f"for ROLE in {' '.join(ROLES)}; do" in _printed_commands(run.out)


def test_nothing_to_do_when_the_deployment_granted_them(sandbox: Path) -> None:
    run = _post(sandbox, {}, GRAPH_PERMISSIONS_GRANTED="true")
    assert run.code == 0
    assert run.calls == []


# --- preprovision ----------------------------------------------------------------------------------


def _pre(sandbox: Path, state: dict[str, Any], **env: str) -> Run:
    base = {"AZURE_PRINCIPAL_ID": "p-1", "AZURE_SUBSCRIPTION_ID": "sub-1"}
    return _run(sandbox, str(HOOKS / "preprovision.sh"), state, {**base, **env})


def _token(roles: list[str]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'roles': roles, 'oid': 'p-1'})}.sig"


PRA = "e8611ab8-c189-46e8-94e1-60213ab1f814"


def test_preprovision_reports_an_owner_who_may_grant(sandbox: Path) -> None:
    state = {"odata_type": "#microsoft.graph.user", "rbac_roles": ["Owner"], "directory_roles": [PRA]}
    run = _pre(sandbox, state, AZURE_PRINCIPAL_TYPE="User")
    assert run.code == 0, run.out
    assert "OK: you may create the role assignments (Owner)" in run.out
    assert "OK: you may grant Microsoft Graph application permissions" in run.out


def test_preprovision_says_an_owner_without_an_entra_role_cannot_grant(sandbox: Path) -> None:
    state = {"odata_type": "#microsoft.graph.user", "rbac_roles": ["Owner"], "directory_roles": []}
    run = _pre(sandbox, state, AZURE_PRINCIPAL_TYPE="User")
    assert run.code == 0, run.out
    assert "NOTE: you may not grant Microsoft Graph application permissions" in run.out
    assert "WARNING" not in run.out


def test_preprovision_stops_a_graph_grant_in_the_deployment_that_would_fail(sandbox: Path) -> None:
    state = {"odata_type": "#microsoft.graph.user", "rbac_roles": ["Owner"], "directory_roles": []}
    run = _pre(sandbox, state, AZURE_PRINCIPAL_TYPE="User", LICSHIFT_GRANT_GRAPH_PERMISSIONS="true")
    assert run.code == 1
    assert "azd env set LICSHIFT_GRANT_GRAPH_PERMISSIONS false" in run.out


def test_preprovision_stops_a_principal_type_that_would_fail_every_role_assignment(sandbox: Path) -> None:
    run = _pre(sandbox, {"odata_type": "#microsoft.graph.servicePrincipal"}, AZURE_PRINCIPAL_TYPE="User")
    assert run.code == 1
    assert "azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal" in run.out


def test_preprovision_sets_a_missing_principal_type_and_reads_a_ci_principals_token(sandbox: Path) -> None:
    state = {
        "odata_type": "#microsoft.graph.servicePrincipal",
        "rbac_roles": ["Contributor", "Role Based Access Control Administrator"],
        "token": _token(["Application.Read.All", "AppRoleAssignment.ReadWrite.All"]),
    }
    run = _pre(sandbox, state)
    assert run.code == 0, run.out
    assert run.azd_calls == ["env set AZURE_PRINCIPAL_TYPE ServicePrincipal"]
    assert "OK: you may grant Microsoft Graph application permissions" in run.out
    assert "(Role Based Access Control Administrator)" in run.out


def test_preprovision_warns_a_deployer_who_cannot_assign_roles(sandbox: Path) -> None:
    state = {"odata_type": "#microsoft.graph.user", "rbac_roles": ["Contributor"], "directory_roles": []}
    run = _pre(sandbox, state, AZURE_PRINCIPAL_TYPE="User")
    assert run.code == 0
    assert "WARNING: no Owner, User Access Administrator or Role Based Access Control Administrator" in run.out


def test_preprovision_without_az_says_it_cannot_tell(sandbox: Path) -> None:
    run = _run(sandbox, str(HOOKS / "preprovision.sh"), {}, {"AZURE_PRINCIPAL_ID": "p-1"}, with_az=False)
    assert run.code == 0
    assert "CANNOT TELL" in run.out


# --- wiring ----------------------------------------------------------------------------------------


def test_azure_yaml_runs_both_hooks_on_every_platform_and_pins_azd() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert project["requiredVersions"]["azd"] == ">= 1.17.2"
    for event in ("preprovision", "postprovision"):
        hook = project["hooks"][event]
        assert hook["posix"] == {"shell": "sh", "run": f"infra/hooks/{event}.sh"}
        assert hook["windows"] == {"shell": "pwsh", "run": f"infra/hooks/{event}.ps1"}
        assert (ROOT / hook["posix"]["run"]).is_file()
        assert (ROOT / hook["windows"]["run"]).is_file()
        assert os.access(ROOT / hook["posix"]["run"], os.X_OK)
    assert "LICSHIFT_GRANT_GRAPH_PERMISSIONS" in project["pipeline"]["variables"]


def test_hooks_grant_the_roles_main_bicep_names_and_no_others() -> None:
    for path in sorted(HOOKS.iterdir()):
        text = path.read_text()
        assert not [role for role in ROLES if role in text], f"{path.name} hard-codes a Graph role"
        if path.name.startswith("postprovision"):
            assert "LICSHIFT_GRAPH_APP_ROLES" in text
            assert "GRAPH_PERMISSIONS_GRANTED" in text
            assert "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID" in text


def test_powershell_twins_keep_the_same_contract() -> None:
    pairs = [("preprovision.sh", "preprovision.ps1"), ("postprovision.sh", "postprovision.ps1")]
    for posix, windows in pairs:
        sh, ps = (HOOKS / posix).read_text(), (HOOKS / windows).read_text()
        for needle in ("Authorization_RequestDenied", "already granted", "LICSHIFT_GRANT_RETRY_SECONDS"):
            assert (needle in sh) == (needle in ps), f"{windows} and {posix} differ on {needle}"
        for message in ("azd env set AZURE_PRINCIPAL_TYPE", "azd env set LICSHIFT_GRANT_GRAPH_PERMISSIONS false"):
            assert (message in sh) == (message in ps), f"{windows} and {posix} differ on {message!r}"
        assert "exit 0" in ps
