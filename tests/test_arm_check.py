"""scripts/arm_check.sh: an exported folder runs on aarch64 (Debian arm64 userland under qemu-user)
with the same tokens, logits and perplexity as on the host.

The fast tests check the script's answers to bad input and the comparison's verdict without
building anything. The end-to-end test exports a tiny GPT-2 and runs the real check: about a
minute the first time (apt-get of qemu/debootstrap, debootstrap of the arm64 userland, aarch64
wheels from PyPI), about 20 s once the userland is cached in ~/.cache/tensorgpt/arm64.
It is skipped (exit code 3) only where the machine cannot run the check at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "arm_check.sh"
PROBE = REPO / "scripts" / "arm" / "probe.py"
BASH = shutil.which("bash") or "/bin/bash"  # absolute: some tests run the script with a bare PATH


def run_script(
    *args: str, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def fake_export(folder: Path) -> Path:
    """Passes the script's folder checks (only file presence is checked before the setup)."""
    folder.mkdir(parents=True)
    for name in ("model.onnx", "manifest.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("arm_check: error: ")
    for phrase in phrases:
        assert phrase in result.stderr


# ---------------------------------------------------------------- bad input (fast, no setup)


def test_help_exits_zero() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    assert "usage: scripts/arm_check.sh" in result.stdout


def test_missing_argument(tmp_path: Path) -> None:
    result = run_script(env={"TENSORGPT_ARM_CACHE": str(tmp_path / "cache")})
    assert_user_error(result, "missing EXPORT_DIR")
    assert not (tmp_path / "cache").exists()  # refused before any setup


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_script(str(missing), env={"TENSORGPT_ARM_CACHE": str(tmp_path / "cache")})
    assert_user_error(result, f"EXPORT_DIR '{missing}' does not exist")
    assert not (tmp_path / "cache").exists()


def test_file_instead_of_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.onnx"
    file.write_text("x")
    assert_user_error(run_script(str(file)), "is not a folder")


def test_folder_that_is_not_an_export(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    assert_user_error(run_script(str(folder)), "has no model.onnx", "tensorgpt export")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--bogus", "EXPORT"], "unknown option '--bogus'"),
        (["--new-tokens", "0", "EXPORT"], "--new-tokens must be a positive integer"),
        (["EXPORT", "--new-tokens"], "--new-tokens needs a value"),
        (["--eval-tokens", "1", "EXPORT"], "--eval-tokens must be an integer >= 2"),
        (["--cpu", "pentium", "EXPORT"], "--cpu 'pentium' is not one of"),
        (["--text", "/no/such/file.txt", "EXPORT"], "--text '/no/such/file.txt' does not exist"),
        (["--selftest", "EXPORT"], "--selftest takes no EXPORT_DIR"),
        (["EXPORT", "EXPORT"], "one EXPORT_DIR only"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], phrase: str) -> None:
    folder = str(fake_export(tmp_path / "export"))
    assert_user_error(run_script(*(folder if a == "EXPORT" else a for a in args)), phrase)


def test_missing_tools_are_named(tmp_path: Path) -> None:
    """Without qemu/debootstrap (and not allowed to apt-get them) it says what to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "basename", "id"):  # what the script runs before its tool check
        os.symlink(shutil.which(tool), bin_dir / tool)
    result = run_script(
        str(fake_export(tmp_path / "export")),
        env={"PATH": str(bin_dir), "TENSORGPT_ARM_NO_INSTALL": "1"},
    )
    assert result.returncode == 3, result.stderr
    assert "missing tools: qemu-user-static debootstrap" in result.stderr
    assert "apt-get install -y qemu-user-static debootstrap" in result.stderr


# ---------------------------------------------------------------- the comparison's verdict


def write_probe_result(prefix: Path, tokens: list[int], logits: np.ndarray, ppl: float) -> str:
    summary = {
        "kind": "export",
        "env": {"machine": "m", "python": "3", "numpy": "2", "onnxruntime": "1", "tokenizers": "0"},
        "prompt_ids": [1, 2],
        "eval_ids_sha256": "abc",
        "tokens": tokens,
        "text": "",
        "perplexity": ppl,
        "tokens_per_second": {"generate": 10.0},
    }
    prefix.with_suffix(".json").write_text(json.dumps(summary))
    np.savez(prefix.with_suffix(".npz"), logits=logits.astype(np.float32))
    return str(prefix)


def compare(host: str, arm: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), "compare", host, arm],
        capture_output=True,
        text=True,
        check=False,
    )


def test_compare_accepts_agreement_within_tolerance(tmp_path: Path) -> None:
    logits = np.random.default_rng(0).standard_normal((4, 10))
    host = write_probe_result(tmp_path / "host", [1, 2, 3, 4], logits, 100.0)
    arm = write_probe_result(tmp_path / "arm", [1, 2, 3, 4], logits + 5e-4, 100.005)
    result = compare(host, arm)
    assert result.returncode == 0, result.stdout
    assert "arm check PASSED" in result.stdout


@pytest.mark.parametrize(
    ("tokens", "shift", "ppl", "what"),
    [
        ([1, 2, 9, 4], 0.0, 100.0, "greedy tokens"),
        ([1, 2, 3, 4], 2e-3, 100.0, "logits"),
        ([1, 2, 3, 4], 0.0, 100.02, "perplexity"),
    ],
)
def test_compare_rejects_mismatch(
    tmp_path: Path, tokens: list[int], shift: float, ppl: float, what: str
) -> None:
    logits = np.random.default_rng(0).standard_normal((4, 10))
    host = write_probe_result(tmp_path / "host", [1, 2, 3, 4], logits, 100.0)
    arm = write_probe_result(tmp_path / "arm", tokens, logits + shift, ppl)
    result = compare(host, arm)
    assert result.returncode == 1
    assert f"MISMATCH {what}" in result.stdout
    assert "arm check FAILED" in result.stdout


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_tt_export(tiny_gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 of tests/conftest.py, exported with a TT-compressed embedding."""
    pytest.importorskip("torch")
    from tensorgpt.export.compress import CompressionSpec
    from tensorgpt.export.exporter import export_model

    out = tmp_path_factory.mktemp("arm") / "export"
    export_model(str(tiny_gpt2), out, spec=CompressionSpec(method="tt"), log=lambda _: None)
    return out


def test_tiny_export_matches_on_aarch64(tiny_tt_export: Path) -> None:
    result = run_script(str(tiny_tt_export), "--new-tokens", "12", timeout=900)
    if result.returncode == 3:  # this machine cannot run the check (no qemu, no network)
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("ARM_CHECK_RESULT "))
    summary = json.loads(line.removeprefix("ARM_CHECK_RESULT "))
    assert summary["passed"] and summary["tokens_match"]
    assert summary["max_abs_logit_diff"] <= 1e-3
    assert summary["perplexity_rel_diff"] <= 1e-4
    assert "aarch64 (qemu emulation)" in result.stdout


# ---------------------------------------------------------------- files with a precision choice


def test_compare_with_reference_allows_the_level_effect_only(tmp_path: Path) -> None:
    """A level-4 file: the host runs int8 activations (0.02 off the exact grid), aarch64 the
    exact grid. That passes; an aarch64 run off the exact grid by more than the host's own
    deviation plus the fp32 tolerance fails, and so do different tokens."""
    rng = np.random.default_rng(0)
    ref_logits = rng.standard_normal((4, 10))
    host_logits = ref_logits.copy()
    host_logits[2, 3] += 0.02
    ref = write_probe_result(tmp_path / "ref", [1, 2, 3, 4], ref_logits, 100.0)
    host = write_probe_result(tmp_path / "host", [1, 2, 3, 4], host_logits, 100.01)

    def check(arm_logits: np.ndarray, ppl: float, tokens=(1, 2, 3, 4)) -> tuple[int, str]:
        arm = write_probe_result(tmp_path / "arm", list(tokens), arm_logits, ppl)
        result = subprocess.run(
            [sys.executable, str(PROBE), "compare", host, arm, "--reference", ref],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode, result.stdout

    code, out = check(ref_logits + 1e-5, 100.0)  # aarch64 without the int8 kernel
    assert code == 0, out
    assert "tolerance 0.021" in out
    code, out = check(host_logits, 100.01)  # aarch64 with the host's int8 result
    assert code == 0, out
    code, out = check(ref_logits + 0.022, 100.0)  # beyond 1e-3 + 0.02
    assert code == 1 and "MISMATCH logits" in out
    code, out = check(ref_logits, 100.03)  # perplexity beyond 1e-4 + 1e-4
    assert code == 1 and "MISMATCH perplexity" in out
    code, out = check(ref_logits, 100.0, tokens=(1, 2, 9, 4))
    assert code == 1 and "MISMATCH greedy tokens" in out


def test_compare_with_reference_accepts_the_reference_tokens_only(tmp_path: Path) -> None:
    """When the host's int8 run picks another token than the exact grid (a real model with a
    level-4 body), an aarch64 run on the exact grid follows the reference's tokens: that
    passes; tokens equal to neither fail, and so does the reference's tokens with logits off."""
    rng = np.random.default_rng(1)
    ref_logits = rng.standard_normal((4, 10))
    host_logits = ref_logits.copy()
    host_logits[:2] += 0.01
    ref = write_probe_result(tmp_path / "ref", [1, 2, 3, 4], ref_logits, 100.0)
    host = write_probe_result(tmp_path / "host", [1, 2, 7, 8], host_logits, 100.01)

    def check(tokens, arm_logits: np.ndarray) -> tuple[int, str, dict]:
        arm = write_probe_result(tmp_path / "arm", list(tokens), arm_logits, 100.0)
        result = subprocess.run(
            [sys.executable, str(PROBE), "compare", host, arm, "--reference", ref],
            capture_output=True,
            text=True,
            check=False,
        )
        line = next(x for x in result.stdout.splitlines() if x.startswith("ARM_CHECK_RESULT "))
        return result.returncode, result.stdout, json.loads(line.split(" ", 1)[1])

    code, out, summary = check([1, 2, 3, 4], ref_logits + 1e-5)
    assert code == 0, out
    assert "identical to the exact-grid reference's" in out
    assert summary["tokens_match"] and not summary["tokens_match_host"]
    code, out, summary = check([1, 2, 3, 9], ref_logits + 1e-5)
    assert code == 1 and "MISMATCH greedy tokens" in out and not summary["tokens_match"]
    code, out, _ = check([1, 2, 3, 4], ref_logits + 0.05)
    assert code == 1 and "MISMATCH logits" in out
