"""The operator logs in with what the kubernetes client reads from its kubeconfig,
including a `tokenFile` (a projected ServiceAccount token), which kopf's own parser skips."""

from __future__ import annotations

from pathlib import Path

from voicefleet_operator.handlers import login_with_kubeconfig_file


def _kubeconfig(tmp_path: Path, user: str) -> Path:
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here\n")
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:6443', certificate-authority: '{ca}'}}}}]\n"
        f"users: [{{name: u, user: {user}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    return path


def test_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    info = login_with_kubeconfig_file(str(_kubeconfig(tmp_path, f"{{tokenFile: '{token}'}}")))
    assert info.server == "https://127.0.0.1:6443"
    assert (info.scheme, info.token) == ("Bearer", "projected-token")
    # A rotated token is read again on the next login.
    token.write_text("rotated\n")
    info = login_with_kubeconfig_file(str(_kubeconfig(tmp_path, f"{{tokenFile: '{token}'}}")))
    assert info.token == "rotated"


def test_inline_token(tmp_path: Path) -> None:
    info = login_with_kubeconfig_file(str(_kubeconfig(tmp_path, "{token: abc}")))
    assert (info.scheme, info.token) == ("Bearer", "abc")
    assert info.ca_path and not info.insecure
