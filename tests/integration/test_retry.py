"""Follow-up after a wave, as an admin types it: `report --only blocked`, fix the group, then
`wave retry <wave> --blocked` starts a wave of exactly those users, through intake and the rule."""

from __future__ import annotations

from pathlib import Path

from .conftest import E3, OpenStack, simulator, wait_processing_complete
from .test_cli_process import cli_env, licshift, tenant


async def test_retry_the_blocked_users_after_fixing_the_group(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(tenant()) as sim, open_stack(sim) as stack:
        env = cli_env(stack)
        partial = sim.scenario.id("partial")
        await wait_processing_complete(sim, partial)
        first = await licshift(
            env, "wave", "start", "--group", "Partial", "--sku", E3, "--first", "3", "--wait", "--json", cwd=tmp_path
        )
        wave_id = first.json()["wave_id"]
        blocked = await licshift(env, "report", wave_id[:8], "--only", "blocked", "--format", "json", cwd=tmp_path)
        nothing = await licshift(env, "wave", "retry", wave_id[:8], "--failed", "--json", cwd=tmp_path)
        no_choice = await licshift(env, "wave", "retry", wave_id[:8], cwd=tmp_path)
        bad_only = await licshift(env, "report", wave_id[:8], "--only", "blocked,lost", cwd=tmp_path)

        sim.tenant.set_group_license(partial, E3, frozenset())  # the admin enables Sway on the group
        await wait_processing_complete(sim, partial)
        retried = await licshift(env, "wave", "retry", wave_id[:8], "--blocked", "--wait", "--json", cwd=tmp_path)
        writes = sim.counters.writes

    assert first.code == 4, str(first)
    rows = blocked.json()["outcomes"]
    upns = sorted(r["user_principal_name"] for r in rows)
    assert upns == ["alice@contoso.onmicrosoft.com", "bob@contoso.onmicrosoft.com"]
    assert {r["reason"] for r in rows} == {"plans-would-be-lost"}
    assert nothing.code == 0, str(nothing)
    assert nothing.json()["wave_id"] is None
    assert "nothing to retry" in nothing.json()["summary"]
    assert no_choice.code == 2
    assert "--blocked, --failed" in no_choice.err
    assert bad_only.code == 2
    assert "unknown outcome 'lost'" in bad_only.err
    assert retried.code == 0, str(retried)
    wave = retried.json()["wave"]
    assert wave["wave_id"] != wave_id
    assert wave["selection"]["kind"] == "users"
    assert wave["counters"]["removed"] == 2
    assert writes == 3, "carol in the first wave, alice and bob in the retry"
