"""`licshift check` as an admin runs it (a separate process) against the simulated tenants: every
member decided as the wave's rule will, what blocks and the fix, exit 4 until ready, and no write."""

from __future__ import annotations

from pathlib import Path

from .conftest import OpenStack, simulator, small_tenant, wait_processing_complete
from .test_cli_process import assert_readme_keys, cli_env, licshift
from .test_migrations import assign_wave_licenses


async def test_check_on_the_adversarial_tenant_names_what_blocks_and_writes_nothing(
    open_stack: OpenStack, tmp_path: Path
) -> None:
    async with simulator("adversarial") as sim, open_stack(sim) as stack:
        group, _ = await assign_wave_licenses(sim)
        writes = sim.counters.writes
        env = cli_env(stack)
        summary = await licshift(env, "check", "--group", group, "--sku", "ENTERPRISEPACK", "--json", cwd=tmp_path)
        detailed = await licshift(
            env, "check", "--group", group, "--sku", "ENTERPRISEPACK", "--details", "--json", cwd=tmp_path
        )
        people = await licshift(env, "check", "--group", group, "--sku", "ENTERPRISEPACK", cwd=tmp_path)
        scenario = sim.scenario
        after = sim.counters.writes

    assert after == writes, "check only reads"
    assert (summary.code, detailed.code, people.code) == (4, 4, 4), str(summary)
    doc = summary.json()
    assert_readme_keys("check", doc)
    assert doc["ready"] is False
    assert doc["group"] == sim.tenant.group(group).display_name
    users = {u["user_id"]: u for u in detailed.json()["users"]}
    mismatches = []
    for user_id, expected in scenario.wave.expected.items():
        if expected == "not-selected" or user_id in scenario.wave.timing_dependent or user_id not in users:
            continue
        got = users[user_id]["decision"] if expected == "remove" else users[user_id]["reason"]
        if got != expected:
            mismatches.append((user_id, expected, users[user_id]))
    assert mismatches == [], "check decides every member as the wave's rule does"
    upn = {u.id: u.upn for u in scenario.users}
    assert sorted(doc["nested_only"]) == sorted(upn[scenario.id(k)] for k in ("nested-1", "nested-2"))
    assert {"plan": "SWAY", "users": 1} in doc["plan_unlocks"], "loses-sway needs SWAY alone"
    errors = {e["error"]: e for e in doc["license_errors"]}
    assert len(errors["CountViolation"]["users"]) == 2
    assert "seats" in errors["CountViolation"]["fix"]
    assert doc["next_step"]
    assert "NOT READY - next step:" in people.out
    assert "only in a nested group: 2 user(s)" in people.out


async def test_check_says_ready_when_every_member_would_migrate(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(small_tenant(5)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await wait_processing_complete(sim, group)
        ran = await licshift(cli_env(stack), "check", "--group", "All users", "--sku", "ENTERPRISEPACK", cwd=tmp_path)
        missing = await licshift(cli_env(stack), "check", "--group", "All users", "--sku", "EMS", cwd=tmp_path)
        plan = await licshift(
            cli_env(stack), "plan", "--group", "All users", "--sku", "ENTERPRISEPACK", "--no-wait", cwd=tmp_path
        )

    assert ran.code == 0, str(ran)
    assert "members: 5; the rule decides now: remove 5" in ran.out
    assert "READY - next step: ready: record a plan with `licshift plan --group" in ran.out
    assert missing.code == 2, str(missing)
    assert "is not subscribed" in missing.err or "does not assign" in missing.err
    assert plan.code == 0, str(plan)
    assert "READY - next step" in plan.err, "plan shows the readiness summary first"
