"""The `licshift` command as an admin runs it: a separate process against the local stack (Azurite,
the Graph simulator, licshift's functions on the local host), checked by exit code, by what it
prints, and by what lands in the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from licshift.adapters.ledger import Ledger
from licshift.settings import Settings
from licshift_local.stack import LocalStack

from .conftest import E3, OpenStack, simulator, small_tenant, wait_processing_complete

CLI = Path(sys.executable).with_name("licshift")
README = Path(__file__).resolve().parents[2] / "README.md"
SETTING_NAMES = re.compile(r"^(LICSHIFT_|LicshiftStorage|AzureWebJobs|AZURE_)")


@dataclass(frozen=True)
class Ran:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"licshift {' '.join(self.argv)} -> {self.code}\nstdout: {self.out[-1500:]}\nstderr: {self.err[-1500:]}"


def base_env() -> dict[str, str]:
    """This process's environment without any licshift setting (the tests give their own)."""
    return {k: v for k, v in os.environ.items() if not SETTING_NAMES.match(k)}


async def licshift(env: Mapping[str, str], *argv: str, cwd: Path, limit: float = 240) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        str(CLI),
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit)
    ran = Ran(tuple(argv), proc.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in ran.err, str(ran)
    return ran


def tenant() -> dict[str, Any]:
    """12 users in "All users" (assigns E3); alice and bob (direct E3 with every plan) only in
    "Partial", which disables SWAY (so they block); carol in "Partial" with SWAY disabled directly
    too (so she can move); a group without a license; two groups both named "Sales"."""
    doc = small_tenant(12)
    doc["groups"][0]["members"] = ["@population:pop"]
    doc["users"] += [
        {"key": "alice", "upn": "alice@contoso.onmicrosoft.com", "direct": [{"sku": E3}]},
        {"key": "bob", "upn": "bob@contoso.onmicrosoft.com", "direct": [{"sku": E3}]},
        {"key": "carol", "upn": "carol@contoso.onmicrosoft.com", "direct": [{"sku": E3, "disabled_plans": ["SWAY"]}]},
    ]
    doc["groups"] += [
        {
            "key": "partial",
            "name": "Partial",
            "members": ["alice", "bob", "carol"],
            "licenses": [{"sku": E3, "disabled_plans": ["SWAY"]}],
        },
        {"key": "none", "name": "No license", "members": ["@all"]},
        {"key": "sales1", "name": "Sales", "members": []},
        {"key": "sales2", "name": "Sales", "members": []},
    ]
    return doc


def cli_env(stack: LocalStack) -> dict[str, str]:
    return {**base_env(), **stack.env}


async def kill_switch_row(stack: LocalStack) -> bool:
    async with Ledger.from_settings(Settings.from_env(stack.env)) as ledger:
        return (await ledger.get_control()).value.kill_switch


# --- refusals, names, prefixes, exit codes -------------------------------------------------------------


async def test_refusals_come_back_as_exit_3_with_the_reason(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(tenant()) as sim, open_stack(sim) as stack:
        env = cli_env(stack)
        all_users = sim.scenario.id("all")
        await wait_processing_complete(sim, all_users)
        cases = [
            (["plan", "--group", "No license", "--sku", E3], "does not assign ENTERPRISEPACK"),
            (["plan", "--group", "All users", "--sku", "EMS"], "not subscribed"),
            (["plan", "--group", "0b8e4f4e-4a3f-4a59-9c55-1d2f1f3a0a77", "--sku", E3], "does not exist"),
            (["wave", "start", "--group", "All users", "--sku", E3, "--first", "30"], "canary"),
            (["wave", "pause", "0b8e4f4e-4a3f-4a59-9c55-1d2f1f3a0a78"], "does not exist"),
        ]
        for argv, reason in cases:
            ran = await licshift(env, *argv, "--timeout", "60", cwd=tmp_path)
            assert ran.code == 3, str(ran)
            assert reason in ran.err, str(ran)
            assert ran.err.strip().splitlines()[-1].startswith("licshift: rejected: "), str(ran)

        # A wave in the wrong state: the refusal says why, as JSON too.
        done = await licshift(env, "plan", "--group", "All users", "--sku", E3, "--json", cwd=tmp_path)
        assert done.code == 0, str(done)
        resumed = await licshift(env, "wave", "resume", done.json()["wave_id"][:8], "--json", cwd=tmp_path)
        assert resumed.code == 3, str(resumed)
        answer = resumed.json()
        assert answer["verdict"] == "rejected"
        assert "cannot resume" in answer["message"]
        assert answer["exit_code"] == 3


async def test_names_prefixes_exit_codes_and_json_shapes(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(tenant()) as sim, open_stack(sim) as stack:
        env = cli_env(stack)
        ids = sim.scenario.id
        await wait_processing_complete(sim, ids("all"))
        await wait_processing_complete(sim, ids("partial"))

        groups = await licshift(env, "groups", "--json", cwd=tmp_path)
        assert groups.code == 0, str(groups)
        listed = {g["display_name"]: g for g in groups.json()["groups"]}
        assert set(listed) == {"All users", "Partial"}, "only groups that assign licenses"
        assert listed["All users"] == {
            "group_id": ids("all"),
            "display_name": "All users",
            "sku_ids": ["6fd2c87f-b296-42f0-b197-1e91e994b900"],
            "skus": [E3],
            "processing_state": "ProcessingComplete",
            "members": 12,
            "members_with_license_errors": 0,
        }
        assert_readme_keys("groups", groups.json())
        table = await licshift(env, "groups", cwd=tmp_path)
        assert "All users" in table.out
        assert ids("all") in table.out
        assert E3 in table.out

        skus = await licshift(env, "skus", "--json", cwd=tmp_path)
        assert skus.code == 0, str(skus)
        (e3,) = skus.json()["skus"]
        assert (e3["part_number"], e3["product_name"], e3["enabled"]) == (E3, "Office 365 E3", 62)
        assert e3["consumed"] == 15
        assert e3["available"] == 47
        assert "EXCHANGE_S_ENTERPRISE" in {p["name"] for p in e3["service_plans"]}
        assert_readme_keys("skus", skus.json())

        # --group by exact name; ambiguous and unknown names are refused with what to do.
        two = await licshift(env, "plan", "--group", "Sales", "--sku", E3, cwd=tmp_path)
        assert two.code == 2, str(two)
        assert ids("sales1") in two.err
        assert ids("sales2") in two.err
        nope = await licshift(env, "plan", "--group", "Nope", "--sku", E3, cwd=tmp_path)
        assert nope.code == 2, str(nope)
        assert "licshift groups" in nope.err, str(nope)

        # A plan by name, chosen ids sharing a prefix.
        first, second = "abcdef01-0000-4000-8000-00000000000a", "abcdef01-0000-4000-8000-00000000000b"
        plan = await licshift(
            env, "plan", "--group", "All users", "--sku", E3, "--wave-id", first, "--json", cwd=tmp_path
        )
        assert plan.code == 0, str(plan)
        shown = plan.json()
        assert_readme_keys("plan", shown)
        assert shown["wave"]["group_name"] == "All users"
        assert shown["wave"]["skus"] == [E3]
        assert len(shown["outcomes"]) == 12
        assert {o["decision"] for o in shown["outcomes"]} == {"remove"}
        assert shown["summary"] == "planned: 12 to remove, 0 blocked, 0 skipped -> licshift report abcdef01"
        again = await licshift(env, "plan", "--group", ids("all"), "--sku", E3, "--wave-id", second, cwd=tmp_path)
        assert again.code == 0, str(again)
        assert "planned: 12 to remove" in again.out.splitlines()[-1]
        ambiguous = await licshift(env, "status", "abcdef01", cwd=tmp_path)
        assert ambiguous.code == 2, str(ambiguous)
        assert "matches 2 waves" in ambiguous.err, str(ambiguous)
        one = await licshift(env, "status", "abcdef01-0000-4000-8000-00000000000", "--json", cwd=tmp_path)
        assert one.code == 2, "still two"
        exact = await licshift(env, "status", second.upper(), "--json", cwd=tmp_path)
        assert exact.code == 0, str(exact)
        assert_readme_keys("status WAVE", exact.json())
        assert exact.json()["wave"]["wave_id"] == second
        report = await licshift(env, "report", second[:12], "--format", "json", cwd=tmp_path)
        assert report.code == 2, "a prefix of both is ambiguous"

        # Blocked users: exit 4, UPNs for --users, the summary names the report.
        users = "alice@contoso.onmicrosoft.com,bob@contoso.onmicrosoft.com," + ids("carol")
        wave = await licshift(
            env, "wave", "start", "--group", "Partial", "--sku", E3, "--users", users, "--wait", "120", "--json",
            cwd=tmp_path,
        )  # fmt: skip
        assert wave.code == 4, str(wave)
        result = wave.json()
        assert_readme_keys("wave start", result)
        assert result["verdict"] == "accepted"
        assert result["wave"]["status"] == "completed"
        assert result["wave"]["selection"] == {
            "kind": "users",
            "users": sorted([ids("alice"), ids("bob"), ids("carol")]),
        }
        assert (result["wave"]["counters"]["removed"], result["wave"]["counters"]["blocked"]) == (1, 2)
        wave_id = result["wave_id"]
        assert result["summary"] == f"completed: 1 removed, 2 blocked -> licshift report {wave_id[:8]}"

        clean = await licshift(
            env, "wave", "start", "--group", "All users", "--sku", E3, "--first", "3", "--wait", "120", cwd=tmp_path
        )
        assert clean.code == 0, str(clean)
        assert re.search(r"^completed: 3 removed, 0 blocked -> licshift report [0-9a-f]{8}$", clean.out, re.M)

        listing = await licshift(env, "status", "--json", cwd=tmp_path)
        assert listing.code == 0
        assert_readme_keys("status", listing.json())
        assert {w["group_name"] for w in listing.json()["waves"]} == {"All users", "Partial"}
        text = await licshift(env, "status", cwd=tmp_path)
        assert wave_id[:8] in text.out
        assert "Partial" in text.out
        assert E3 in text.out

        rows = await licshift(env, "report", wave_id[:6], "--format", "json", cwd=tmp_path)
        assert rows.code == 0, str(rows)
        drift = await licshift(env, "drift", "--json", "--fail-on-drift", cwd=tmp_path)
        assert drift.code == 0, str(drift)
        assert drift.json() == {"open": 0, "cleared": 0, "summary": [], "drift": []}, str(drift)


async def test_kill_switch_holds_waves_and_a_cancel_ends_the_wait_with_5(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(tenant()) as sim, open_stack(sim) as stack:
        env = cli_env(stack)
        await wait_processing_complete(sim, sim.scenario.id("all"))
        on = await licshift(env, "kill-switch", "on", "--json", cwd=tmp_path)
        assert on.code == 2, "confirmation is required without a terminal"
        assert "--yes" in on.err, "confirmation is required without a terminal"
        on = await licshift(env, "kill-switch", "on", "--yes", "--json", cwd=tmp_path)
        assert on.code == 0, str(on)
        assert_readme_keys("kill-switch", on.json())
        wave_id = "cafe0001-0000-4000-8000-000000000001"
        waiting = asyncio.create_task(
            licshift(env, "wave", "start", "--group", "All users", "--sku", E3, "--first", "3", "--wave-id", wave_id,
                     "--wait", "120", cwd=tmp_path)
        )  # fmt: skip

        async def removing() -> bool:
            found = await stack.get_wave(wave_id)
            return found is not None and found.status.value == "removing"

        assert await stack.run_until(removing, timeout=60)
        status = await licshift(env, "status", "cafe", "--json", cwd=tmp_path)
        assert status.json()["wave"]["held_by_kill_switch"] is True, str(status)
        assert status.json()["kill_switch"]["on"] is True
        assert any(e["kind"] == "kill-switch" for e in status.json()["events"]), "the timeline shows the switch"
        text = await licshift(env, "status", "cafe", cwd=tmp_path)
        assert "HELD: kill switch: ON" in text.out, str(text)
        await stack.idle(3)
        assert (await stack.get_wave(wave_id)).counters.removed == 0  # type: ignore[union-attr]

        no = await licshift(env, "wave", "cancel", "cafe", cwd=tmp_path)
        assert no.code == 2
        assert "--yes" in no.err
        cancel = await licshift(env, "wave", "cancel", "cafe", "--yes", cwd=tmp_path)
        assert cancel.code == 0, str(cancel)
        ended = await waiting
        assert ended.code == 5, str(ended)
        assert ended.err.strip().splitlines()[-1].startswith("licshift: cancelled: 0 removed"), str(ended)
        off = await licshift(env, "kill-switch", "off", cwd=tmp_path)
        assert off.code == 0, str(off)
        assert "kill switch off" in off.out, str(off)


async def test_the_kill_switch_works_with_the_function_app_stopped(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(tenant()) as sim:
        async with open_stack(sim) as stack:
            env = cli_env(stack)
        # The host is stopped: nothing reads the waves queue any more.
        on = await licshift(env, "kill-switch", "on", "--yes", "--requested-by", "oncall@contoso", cwd=tmp_path)
        assert on.code == 0, str(on)
        assert "kill switch on (confirmed in the ledger" in on.out
        assert await kill_switch_row(stack)
        status = await licshift(env, "status", "--json", cwd=tmp_path)
        assert status.json()["kill_switch"]["on"] is True
        assert status.json()["kill_switch"]["updated_by"] == "oncall@contoso"
        changes = await switch_changes(stack)
        assert [(e.kind, e.actor, e.data) for e in changes] == [
            ("kill-switch", "oncall@contoso", {"on": True, "via": "cli"})
        ], "recorded beside the switch, where an operator may write"
        again = await licshift(env, "kill-switch", "on", "--yes", cwd=tmp_path)
        assert again.code == 0
        assert "already on" in again.out

        # Without the function app, a queued command times out with exit 6 and says so.
        waited = await licshift(env, "wave", "pause", "0b8e4f4e-4a3f-4a59-9c55-1d2f1f3a0a78", "--timeout", "2",
                                cwd=tmp_path)  # fmt: skip
        assert waited.code == 6, str(waited)
        assert "timed out after 2 s" in waited.err
        queued = await licshift(env, "wave", "pause", "0b8e4f4e-4a3f-4a59-9c55-1d2f1f3a0a78", "--no-wait",
                                cwd=tmp_path)  # fmt: skip
        assert queued.code == 0
        assert "queued" in queued.out


async def switch_changes(stack: LocalStack) -> list[Any]:
    async with Ledger.from_settings(Settings.from_env(stack.env)) as ledger:
        return [e async for e in ledger.iter_switch_changes()]


# --- the README's command table -----------------------------------------------------------------------


def readme_commands() -> dict[str, tuple[set[str], set[int]]]:
    """The README's command table: command -> (top-level --json keys, exit codes). Keys in parentheses
    describe nested objects and are not top-level."""
    section = README.read_text(encoding="utf-8").split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], set[int]]] = {}
    for line in section.splitlines():
        match = re.match(r"^\| `licshift ([a-z -]+?)( <wave>)?` \|[^|]*\|([^|]*)\|([^|]*)\|$", line)
        if match:
            keys = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", match.group(3))))
            codes = {int(c) for c in re.findall(r"\d", match.group(4))}
            rows[match.group(1) + (" WAVE" if match.group(2) else "")] = (keys, codes)
    return rows


def assert_readme_keys(command: str, document: Mapping[str, Any]) -> None:
    keys, _ = readme_commands()[command]
    assert set(document) == keys, f"README lists {sorted(keys)} for `licshift {command} --json`, got {sorted(document)}"


def test_the_readme_table_lists_every_command() -> None:
    from licshift.cli.main import parser

    commands: set[str] = set()
    top = parser()
    for name, sub in top._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        commands |= {f"{name} {child}" for a in nested for child in a.choices} if nested else {name}
    listed = set(readme_commands())
    assert commands <= listed | {"status WAVE"}, f"missing from the README: {sorted(commands - listed)}"
    for name, (_, codes) in readme_commands().items():
        assert codes, name
        assert codes <= {0, 1, 2, 3, 4, 5, 6}, name
